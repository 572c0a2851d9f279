"""brsf — batchwise random-magnitude sign-concordant feedback (Liao, Leibo & Poggio 2016, AAAI, "How
important is weight symmetry in backpropagation?", arXiv:1510.05067; as BioTorch 0.0.16 defines it,
``biotorch/layers/brsf``).

As frsf (``algorithms/frsf.py``), but the random magnitudes are redrawn for every training batch:

    δ_L = e,   δ_{l-1} = (B_lᵀ δ_l) ⊙ f'(a_{l-1}),   ∇W_l = δ_l h_{l-1}ᵀ,
    B_l = |R_l^(t)| ⊙ sign(W_l),   R_l^(t) ~ U(−r_l, r_l) i.i.d.,   r_l = √(6 / (fan_in_l + fan_out_l))

R_l^(t), Glorot-uniform of W_l's shape, is drawn afresh from the trial's generator (layer order
l = 2..L) at the start of every training update t (``step``), and that update uses it. Updates on
probe batches (``compute_update``) draw nothing: they use the magnitudes of the latest training update
(before the first one, those drawn at setup). sign(W_l) is read from the current W_l whenever credit
is assigned. BioTorch redraws in every forward pass of the layer, i.e. once per mini-batch in training
(``M is redrawn after each update of W``). The redraw is counted as credit work.
"""

from harness.registry import register_algorithm

from algorithms.frsf import FixedRandomSignFeedback


@register_algorithm
class BatchwiseRandomSignFeedback(FixedRandomSignFeedback):
    name = "brsf"
    version = 1
    description = ("batchwise random-magnitude sign-concordant feedback: errors sent down through "
                   "|R_l| ⊙ sign(W_l), R redrawn every batch")
    reference = "Liao, Leibo & Poggio 2016, AAAI (arXiv:1510.05067), as in BioTorch 0.0.16"
    plausibility_notes = ("feedback |R_l| ⊙ sign(W_l): reads the sign of every W_l, not its magnitude; "
                          "|R_l| random, redrawn every training batch")

    def step(self, x, y):
        with self.phase("credit"):  # this batch's feedback magnitudes
            self.R = self.draw_magnitudes()
        return self.compute_update(x, y)

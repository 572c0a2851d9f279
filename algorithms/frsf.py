"""frsf — fixed random-magnitude sign-concordant feedback (Liao, Leibo & Poggio 2016, AAAI, "How important
is weight symmetry in backpropagation?", arXiv:1510.05067; as BioTorch 0.0.16 defines it,
``biotorch/layers/frsf``).

As usf (``algorithms/usf.py``), but every entry of the feedback has its own random magnitude, drawn
once and kept for the whole run, with the sign of the current forward weight:

    δ_L = e,   δ_{l-1} = (B_lᵀ δ_l) ⊙ f'(a_{l-1}),   ∇W_l = δ_l h_{l-1}ᵀ,
    B_l = |R_l| ⊙ sign(W_l),   R_l ~ U(−r_l, r_l) i.i.d.,   r_l = √(6 / (fan_in_l + fan_out_l))

R_l is Glorot-uniform of W_l's shape (BioTorch's default ``xavier`` draw of its ``weight_backward``),
drawn at setup from the trial's generator in layer order (l = 2..L); |R_l| is stored, sign(W_l) is read
from the current W_l whenever credit is assigned. Its root mean square, r_l/√3, is usf's s_l.
Convolutions use B_l as the kernel of the transposed convolution.
"""

import torch

from harness.registry import register_algorithm

from algorithms.usf import SignConcordantFeedback


@register_algorithm
class FixedRandomSignFeedback(SignConcordantFeedback):
    name = "frsf"
    version = 1
    description = ("fixed random-magnitude sign-concordant feedback: errors sent down through "
                   "|R_l| ⊙ sign(W_l), R fixed")
    reference = "Liao, Leibo & Poggio 2016, AAAI (arXiv:1510.05067), as in BioTorch 0.0.16"
    plausibility_notes = ("feedback |R_l| ⊙ sign(W_l): reads the sign of every W_l, not its magnitude; "
                          "|R_l| random, drawn once")

    def setup(self):
        self.R = self.draw_magnitudes()

    def draw_magnitudes(self) -> list[torch.Tensor]:
        """|R_l| for l = 2..L (stored 0-based, as fa's B): |Glorot-uniform| of W_l's shape, from ``self.gen``."""
        return [self.glorot_like(layer).abs() for layer in self.net.layers[1:]]

    def magnitude(self, l):
        return self.R[l - 1]

    def extra_state(self):
        return {"R": [r.clone() for r in self.R]}

    def load_extra_state(self, state):
        self.R = [r.to(self.device) for r in state["R"]]

"""pc-kp — predictive coding with learned (Kolen–Pollack) feedback (Millidge, Tschantz, Seth & Buckley 2020,
"Relaxing the constraints on predictive coding models", arXiv:2010.01047, "learnable backwards weights";
the rule: Kolen & Pollack 1994, as in ``algorithms/kp.py``).

As pc-fa (``algorithms/pc_fa.py``): inference sends δ_j down through B_j (W_j's shape, fa's seeded draw
at the start), but B_j learns with W_j's own local update, and both decay:

    G_j = −δ_j v_jᵀ / (β n)        (pc's pseudo-gradient, at the end of inference)
    ΔW_j = −η (G_j + λ W_j),        ΔB_j = −η_B (G_j + λ B_j)          (j ≥ 1; layer 0 has no B)

W's decay enters its pseudo-gradient (``.grad = G_j + λ W_j``, every layer; biases do not decay), applied
by the shared optimizer; B_j is updated here by plain SGD in ``step()`` after the credit pass, with the
G_j of that pass (computed with the B_j before its update). With ``optimizer=sgd`` and ``feedback_lr`` =
``lr``, W_j − B_j ← (1 − ηλ)(W_j − B_j) every update, so B_j → W_j (pc's feedback) at rate ηλ. B's update
is ``feedback`` work (2 FLOPs per entry), W's decay ``credit``: kp's ``KolenPollackRule`` on pc's pass.
"""

from harness.algorithm import Plausibility
from harness.registry import register_algorithm

from algorithms.kp import KolenPollackRule, decay_hp, feedback_lr_hp
from algorithms.pc_fa import PredictiveCodingFA


@register_algorithm
class PredictiveCodingKP(KolenPollackRule, PredictiveCodingFA):
    name = "pc-kp"
    version = 1
    description = ("predictive coding with feedback B_l learned by the Kolen–Pollack rule "
                   "(W_l's local update and decay on both), so B_l → W_l")
    reference = ("Millidge, Tschantz, Seth & Buckley 2020, arXiv:2010.01047; Kolen & Pollack 1994, Proc. IEEE "
                 "ICNN")

    class Params(PredictiveCodingFA.Params):
        feedback_lr: float = feedback_lr_hp("B_l ← B_l − η_B(G_l + λB_l)")
        decay: float = decay_hp()

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases="single", feedback_learning=True,
                            notes="B_l learns from the local δ_l v_lᵀ that W_l learns from; both decay, "
                                  "so B_l − W_l → 0 without reading W")

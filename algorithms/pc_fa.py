"""pc-fa — predictive coding with random feedback (Millidge, Tschantz, Seth & Buckley 2020, "Relaxing the
constraints on predictive coding models", arXiv:2010.01047, "feedback alignment" relaxation).

As pc (``algorithms/pc.py``), with the same energy, inference and local updates, except that the error of
layer j reaches the value node below through a fixed random matrix B_j (W_j's shape, drawn as fa's:
``feedback_scale`` · Glorot-uniform, seeded) instead of W_jᵀ:

    v_j ← v_j + γ (−ε_{j−1} + B_jᵀ δ_j),     δ_j = ε_j ⊙ f_j'(a_j)           (j = 1 .. L−1)

With B_j = W_j this is pc bit for bit (tested). The dynamics are then no longer gradient descent on E:
the equilibrium is the fixed point ε_{j−1} = B_jᵀ δ_j, and the updates ∇W_j = −δ_j v_jᵀ/(βn) are those
of fa applied to the equilibrium errors as the nudge β → 0. Diagnostic ``angle_b_w_l<l>`` = ∠(B_l, W_l),
as fa's. Cost phases as pc's.
"""

from harness.algorithm import Capabilities, Plausibility
from harness.registry import register_algorithm

from algorithms.fa import FeedbackAlignment, RandomFeedback
from algorithms.pc import PredictiveCoding


@register_algorithm
class PredictiveCodingFA(RandomFeedback, PredictiveCoding):
    name = "pc-fa"
    version = 1
    description = "predictive coding with the errors sent down through fixed random feedback B_l instead of W_lᵀ"
    reference = "Millidge, Tschantz, Seth & Buckley 2020, arXiv:2010.01047"
    capabilities = Capabilities(layers=frozenset({"linear"}))
    report_labels = {**PredictiveCoding.report_labels,
                     "angle_b_w_l*": {"label": "angle of layer l's feedback B_l to W_l (pc's)", "unit": "degrees"}}

    class Params(FeedbackAlignment.Params, PredictiveCoding.Params):  # pc's knobs, then fa's feedback_scale
        pass

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases="single", feedback_learning=False,
                            notes="errors sent down through fixed random B_l, drawn independently of W")

    def diagnostics(self, x, y):
        return {**super().diagnostics(x, y), **self.feedback_angles()}

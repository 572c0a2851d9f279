"""usf — uniform sign-concordant feedback (Liao, Leibo & Poggio 2016, AAAI, "How important is weight
symmetry in backpropagation?", arXiv:1510.05067; scaled as in Xiao, Chen, Liao & Poggio 2018,
arXiv:1811.03567, and BioTorch 0.0.16, ``biotorch/layers/usf``).

As fa (``algorithms/fa.py``), but the error crosses a matrix with W_l's *signs* and one uniform
magnitude per layer:

    δ_L = e,   δ_{l-1} = (B_lᵀ δ_l) ⊙ f'(a_{l-1}),   ∇W_l = δ_l h_{l-1}ᵀ,
    B_l = s_l · sign(W_l),   s_l = √(2 / (fan_in_l + fan_out_l))

s_l is the standard deviation of Glorot-uniform initialisation of W_l's shape (BioTorch's
``scaling_factor`` for its default ``xavier`` init, there "to avoid exploding gradients"; Liao et al.
use sign(W_l) itself). sign(W_l) is read from the current W_l whenever credit is assigned (and
sign(0) = 0). Convolutions use B_l as the kernel of the transposed convolution; fan_in = c_in·k²,
fan_out = c_out·k². With W_l = s_l · sign(W_l) (every |W_l| entry equal to s_l) this is bp.

This module also holds :class:`SignConcordantFeedback`, the base of the three sign-symmetry rules
(usf here, ``frsf``, ``brsf``): B_l = M_l ⊙ sign(W_l), each rule saying only what M_l is.
"""

import math

import torch

from harness.algorithm import Algorithm, Capabilities, Plausibility
from harness.hparams import HParams
from harness.registry import register_algorithm

from algorithms.fa import FeedbackAlignment


class SignConcordantFeedback(FeedbackAlignment):
    """fa's backward loop with B_l = magnitude(l) ⊙ sign(W_l), sign(W_l) read from the current W_l at
    credit time (the sign and the product are credit work). Not registered: a base for usf/frsf/brsf."""

    capabilities = Capabilities(layers=frozenset({"linear", "conv", "maxpool"}))
    Params = HParams  # no knobs: the magnitudes are fixed by W's shape (BioTorch has no scale option)
    plausibility_notes = ""  # one line, set by each rule: what the feedback reads

    def plausibility(self):
        return Plausibility(weight_transport=True, transport="sign", local=True, phases="single",
                            feedback_learning=False, notes=self.plausibility_notes)

    def setup(self):
        """No random feedback matrices (fa's B): the rules below draw what they need."""

    def magnitude(self, l: int):
        """M_l, the magnitudes of B_l (a number, or a tensor of W_l's shape)."""
        raise NotImplementedError

    def feedback(self, l: int) -> torch.Tensor:
        return self.magnitude(l) * torch.sign(self.net.layers[l].weight)

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        Algorithm.load_extra_state(self, state)


@register_algorithm
class UniformSignFeedback(SignConcordantFeedback):
    name = "usf"
    version = 1
    description = "uniform sign-concordant feedback: errors sent down through s_l·sign(W_l), s_l the Glorot std"
    reference = ("Liao, Leibo & Poggio 2016, AAAI (arXiv:1510.05067); scale of Xiao et al. 2018, "
                 "arXiv:1811.03567, as in BioTorch 0.0.16")
    plausibility_notes = ("feedback s_l·sign(W_l): reads the sign of every W_l, not its magnitude "
                          "(s_l from W_l's shape)")

    @staticmethod
    def scale(layer) -> float:
        """s_l = √(2/(fan_in + fan_out)), the standard deviation of Glorot-uniform of W_l's shape."""
        return math.sqrt(2.0 / (layer.fan_in + layer.fan_out))

    def magnitude(self, l):
        return self.scale(self.net.layers[l])

"""drtp — direct random target projection (Frenkel, Lefebvre & Bol 2021, Front. Neurosci. 15:629892,
"Learning without feedback: fixed random learning signals allow for feedforward training of deep
neural networks").

As dfa (``algorithms/dfa.py``: notation, the K × d_l matrices B_l, their scale and seeding), but the
hidden layers learn from a fixed random projection of the one-hot target y*, never from the output error:

    δ_L = e,   δ_l = (y* B_l / n) ⊙ f'(a_l)  (l < L),   ∇W_l = δ_l h_{l-1}ᵀ,   ∇b_l = Σ_batch δ_l

y* B_l stands where dfa has e B_l, with the same sign (it replaces the gradient of a hidden layer's
output and is descended, as in the authors' published code, its function.py); the target class's component of e = p − y* has the opposite sign, which a zero-mean
random B_l absorbs (−B_l is as likely as B_l). The 1/n is e's batch mean, so that hidden and output
layers learn from the same mean loss (the authors' code leaves it out of the hidden layers). Each
hidden layer's update is known before the output is: no feedback pathway and no update locking.
"""

import torch
import torch.nn.functional as F

from harness.algorithm import Plausibility
from harness.registry import register_algorithm

from algorithms.dfa import DirectFeedbackAlignment


@register_algorithm
class DirectRandomTargetProjection(DirectFeedbackAlignment):
    name = "drtp"
    version = 1
    description = "direct random target projection: hidden layers learn from fixed random projections of the target"
    reference = "Frenkel, Lefebvre & Bol 2021, Front. Neurosci. 15:629892"

    def plausibility(self):
        return Plausibility(
            weight_transport=False, local=True, phases="single", feedback_learning=False,
            notes="hidden layers never see the output error: fixed random B_l project the one-hot target")

    def hidden_error(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y* / n: the one-hot target with e's batch-mean 1/n."""
        return F.one_hot(y, e.shape[1]).to(e.dtype) / len(y)

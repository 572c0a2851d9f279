"""bp — backpropagation (Rumelhart, Hinton & Williams 1986).

    δ_L = e = ∂L/∂a_L,   δ_{l-1} = (W_lᵀ δ_l) ⊙ f'(a_{l-1}),   ∇W_l = δ_l h_{l-1}ᵀ

The reference every other rule is compared against: the gradient through autograd.
"""

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput
from harness.registry import register_algorithm

import torch.nn.functional as F


@register_algorithm
class Backprop(Algorithm):
    name = "bp"
    description = "backpropagation: exact gradient through autograd (the reference)"
    reference = "Rumelhart, Hinton & Williams 1986, Nature 323:533"
    capabilities = Capabilities(layers=frozenset({"linear", "conv", "maxpool"}))

    def plausibility(self):
        return Plausibility(weight_transport=True, local=False, phases="single", feedback_learning=False,
                            notes="the backward pass reads every W_lᵀ (autograd)")

    def compute_update(self, x, y):
        with self.phase("forward"):
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
        with self.phase("credit"):
            for p in self.net.parameters():
                p.grad = None
            loss.backward()
        return StepOutput(loss.detach(), logits.detach())

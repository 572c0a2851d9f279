"""drl — difference target propagation with the difference reconstruction loss (Meulemans, Carzaniga, Suykens,
Sacramento & Grewe 2020, NeurIPS, "A theoretical framework for target propagation", §4; their DTPDRL).

Targets as dtp with the inverse penultimate target (no weight transport; see ``algorithms/tp.py`` for the
notation and the local losses):

    h_L* = h_L − β ∂ℓ/∂h_L,      h_{l-1}* = h_{l-1} + g_l(h_l*) − g_l(h_l),      g_l(h) = f_{l-1}(V_l h + c_l)

Only the feedback training differs. Layer l's feedback (V_l, c_l) learns to reconstruct a perturbation of its
input *after the perturbation has gone through the rest of the network and come back down the difference path*:

    h̃_{l-1} = h_{l-1} + σε,   ε ~ N(0, I)                          (noise at layer l's input)
    r_L = F_{l→L}(h̃_{l-1})                                          (forward through layers l .. L to the logits)
    r_{k-1} = h_{k-1} + g_k(r_k) − g_k(h_k),   k = L .. l           (the difference targets, as in training)
    L_DRL,l = ‖r_{l-1} − h̃_{l-1}‖² / (σ² n d_{l-1})                  (mean over the batch and the d_{l-1} units)

minimised over (V_l, c_l) only, the feedback of the layers above held fixed. Its minimum (σ → 0) makes the
feedback path, layer by layer, invert the forward path from h_{l-1} to the output on the noise directions, which
is what makes the propagated targets approximate Gauss–Newton targets (the paper's Theorem on the DRL).

One feedback iteration computes every layer's gradient from the same state (noise drawn layer by layer,
l = 2 .. L), then takes one step of the feedback optimizer (Adam, ``feedback_lr``); ``feedback_steps`` iterations
per forward update, ``pretrain_epochs`` before training and ``feedback_epochs`` after every forward epoch, all
counted as feedback work. Meulemans et al.'s Fashion-MNIST configuration (their ``final_configs``) trains the
feedback 6 epochs before and 1 epoch after every forward epoch, with the forward and feedback updates of a batch
computed from the same state (``schedule=parallel``); their ``target_stepsize`` multiplies the gradient of the
*batch-mean* loss, so it is this β times the batch size. One difference: their feedback Adam has its own β₁, β₂
and ε, and a weight decay; here it has torch's defaults and none.

Cost: layer l's loss runs a forward pass through L − l + 1 layers and L − l + 1 feedback maps, so one iteration is
O(L²) layer operations (the reason DRL is costly, Kao & Hariharan 2024, Table 2).
"""

from __future__ import annotations

from typing import Literal

import torch

from harness.algorithm import Capabilities, Plausibility
from harness.hparams import HParams, hp, loguniform
from harness.networks import Forward
from harness.registry import register_algorithm

from algorithms.dtp import DifferenceTargetProp
from algorithms.tp import feedback_epochs_hp, feedback_lr_hp, feedback_steps_hp, pretrain_epochs_hp, schedule_hp


# A declaration run at import, not mutated (see tp's knob declarations); pinned through docs/algorithms.md.
# pragma: no mutate start
def noise_hp(where: str):
    return hp(0.1, f"std σ of the Gaussian noise {where} in the feedback loss", gt=0, le=10,
              search=loguniform(0.01, 1.0))
# pragma: no mutate end


@register_algorithm
class DifferenceReconstruction(DifferenceTargetProp):
    name = "drl"
    version = 1
    description = "dtp whose feedback learns the difference reconstruction loss through the rest of the network"
    reference = "Meulemans et al. 2020, NeurIPS (A theoretical framework for target propagation)"
    capabilities = Capabilities(layers=frozenset({"linear"}), activations=frozenset({"tanh", "leaky-relu", "linear"}))

    class Params(HParams):
        beta: float = hp(0.01, "output target step: h_L* = h_L − β ∂ℓ/∂h_L (per-example loss)", gt=0, le=1000,
                         search=loguniform(1e-4, 1.0))
        sigma: float = noise_hp("added to layer l's input")
        feedback_lr: float = feedback_lr_hp()
        feedback_steps: int = feedback_steps_hp()
        pretrain_epochs: int = pretrain_epochs_hp()
        feedback_epochs: int = feedback_epochs_hp()
        schedule: Literal["alternating", "parallel"] = schedule_hp("parallel")

    def learned(self) -> bool:
        return True

    def penultimate_rule(self) -> str:
        return "inverse"

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases="two", feedback_learning=True,
                            notes="learned inverses trained on the difference reconstruction loss: noise at a layer's "
                                  "input sent up to the output and back down the feedback path, every update")

    def feedback_gradients(self, fw: Forward) -> None:
        """∂L_DRL,l/∂(V_l, c_l) of every layer l ≥ 2 into ``.grad`` (noise drawn in layer order)."""
        layers, top = self.net.layers, len(self.net.layers) - 1
        out = self.outputs(fw)
        g_out = {k: self.g(k, out[k]) for k in self.V}  # g_k(h_k): the difference path's reference terms
        for i in self.V:
            noisy = fw.h[i] + self.noise(fw.h[i])
            r = noisy
            for k in range(i, top + 1):
                r = layers[k].post(layers[k].pre(r))
            for k in range(top, i, -1):
                r = fw.h[k] + self.g(k, r) - g_out[k]
            self.reconstruction_gradient(i, fw.h[i], noisy, r, out[i])

    def reconstruction_gradient(self, i: int, h: torch.Tensor, noisy: torch.Tensor, r: torch.Tensor,
                                ref: torch.Tensor) -> None:
        """Gradient of ‖h + g_i(r) − g_i(ref) − noisy‖² / (σ² n d) w.r.t. layer i's (V_i, c_i)."""
        difference_reconstruction_grad(self.net.layers[i - 1].act, self.V[i], self.c[i], h, noisy, r, ref,
                                       self.hp.sigma)


def difference_reconstruction_grad(act, V: torch.Tensor, c: torch.Tensor, h: torch.Tensor, noisy: torch.Tensor,
                                   r: torch.Tensor, ref: torch.Tensor, sigma: float) -> None:
    """Into V.grad, c.grad: the gradient of ‖h + f(V r + c) − f(V ref + c) − noisy‖² / (σ² · noisy.numel())."""
    u1, u0 = r @ V.t() + c, ref @ V.t() + c
    z1, z0 = act(u1), act(u0)
    dz = (h + z1 - z0 - noisy) * (2.0 / (sigma ** 2 * noisy.numel()))
    d1, d0 = act.backward(dz, u1, z1), act.backward(dz, u0, z0)
    V.grad = d1.t() @ r - d0.t() @ ref
    c.grad = d1.sum(0) - d0.sum(0)

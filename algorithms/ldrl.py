"""l-drl — difference target propagation with the local difference reconstruction loss (Ernoult, Normandin,
Moudgil, Spinney, Belilovsky, Rish, Richards & Bengio 2022, ICML, "Towards scaling difference target propagation
by learning backprop targets").

Targets as drl and dtp with the inverse penultimate target (``algorithms/drl.py``, ``algorithms/tp.py``):
h_{l-1}* = h_{l-1} + g_l(h_l*) − g_l(h_l), g_l(h) = f_{l-1}(V_l h + c_l). Each feedback map is trained on its own
layer only (local), with two independent perturbations, of the layer's input x = h_{l-1} and of its output
y = h_l = F_l(x):

    r = g_l(y)
    Δr_x = g_l(F_l(x + σε)) − r,      ε ~ N(0, I)      (input noise, through the forward layer)
    Δr_y = g_l(y + ση) − r,           η ~ N(0, I)      (output noise)
    L_L-DRL,l = [ −2 Σ_b (σε_b)·Δr_x,b + Σ_b ‖Δr_y,b‖² ] / n

Its minimum makes g_l's Jacobian the *transpose* of F_l's (to first order in σ: −2 tr(J_g J_F) + tr(J_g J_gᵀ) is
least at J_g = J_Fᵀ), so the difference targets carry backprop's error: the targets are "backprop targets".
Training is layer after layer (l = 2 .. L), ``feedback_steps`` iterations per layer per forward update (the paper's
code uses 20–55 per layer), each with fresh noise (ε then η) and one step of the feedback optimizer on that layer's
(V_l, c_l). The paper trains the feedback with SGD and momentum, one learning rate and noise scale per layer; here
one Adam (``feedback_lr``) and one σ serve every layer. ``schedule=alternating`` (default) trains the feedback on a
batch before computing its targets, as the paper's training step does.
"""

from __future__ import annotations

from typing import Literal

import torch

from harness.hparams import HParams, hp, loguniform, randint
from harness.algorithm import Plausibility
from harness.networks import Forward
from harness.registry import register_algorithm

from algorithms.drl import DifferenceReconstruction, noise_hp
from algorithms.tp import feedback_epochs_hp, feedback_lr_hp, feedback_steps_hp, pretrain_epochs_hp, schedule_hp


@register_algorithm
class LocalDifferenceReconstruction(DifferenceReconstruction):
    name = "l-drl"
    version = 1
    description = "dtp whose feedback learns the local difference reconstruction loss (backprop targets)"
    reference = "Ernoult et al. 2022, ICML (Towards scaling difference target propagation by learning backprop targets)"

    class Params(HParams):
        beta: float = hp(0.01, "output target step: h_L* = h_L − β ∂ℓ/∂h_L (per-example loss)", gt=0, le=1000,
                         search=loguniform(1e-4, 1.0))
        sigma: float = noise_hp("added to a layer's input and, independently, to its output")
        feedback_lr: float = feedback_lr_hp()
        feedback_steps: int = feedback_steps_hp(default=5, search=randint(1, 20))
        pretrain_epochs: int = pretrain_epochs_hp()
        feedback_epochs: int = feedback_epochs_hp()
        schedule: Literal["alternating", "parallel"] = schedule_hp("alternating")

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases="two", feedback_learning=True,
                            notes="learned inverses trained layer by layer on the local difference reconstruction "
                                  "loss (noise at each layer's input and output), every update")

    @torch.no_grad()
    def train_inverses(self, fw: Forward) -> None:
        """Layer after layer, ``feedback_steps`` optimizer steps on that layer's feedback alone."""
        out = self.outputs(fw)
        for i in self.V:
            for _ in range(self.hp.feedback_steps):
                self.layer_gradient(i, fw.h[i], out[i])
                self.inv_opt.step()
            self.V[i].grad = self.c[i].grad = None  # the next layer's steps leave this one alone

    def feedback_gradients(self, fw: Forward) -> None:
        """∂L_L-DRL,l/∂(V_l, c_l) of every layer from the same state (noise in layer order); for tests."""
        out = self.outputs(fw)
        for i in self.V:
            self.layer_gradient(i, fw.h[i], out[i])

    def layer_gradient(self, i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Gradient of L_L-DRL,i w.r.t. (V_i, c_i) into ``.grad``; noise ε (input) then η (output)."""
        layer, act, V, c = self.net.layers[i], self.net.layers[i - 1].act, self.V[i], self.c[i]
        dx = self.noise(x)
        y1 = layer.post(layer.pre(x + dx))
        y2 = y + self.noise(y)
        u0, u1, u2 = y @ V.t() + c, y1 @ V.t() + c, y2 @ V.t() + c
        r0, r1, r2 = act(u0), act(u1), act(u2)
        n = len(x)
        g1 = dx * (-2.0 / n)  # ∂L/∂r1
        g2 = (r2 - r0) * (2.0 / n)  # ∂L/∂r2
        d0, d1, d2 = act.backward(-g1 - g2, u0, r0), act.backward(g1, u1, r1), act.backward(g2, u2, r2)
        V.grad = d0.t() @ y + d1.t() @ y1 + d2.t() @ y2
        c.grad = d0.sum(0) + d1.sum(0) + d2.sum(0)

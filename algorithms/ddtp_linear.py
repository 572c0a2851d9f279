"""ddtp-linear — direct difference target propagation with linear direct feedback (Meulemans, Carzaniga,
Suykens, Sacramento & Grewe 2020, NeurIPS, "A theoretical framework for target propagation", §5; their
DMLPDTP2 network with a linear feedback map).

Every hidden layer i gets its target straight from the output, through its own feedback matrix Q_i (d_i × K):

    h_L* = h_L − β ∂ℓ/∂h_L,      h_i* = h_i + Q_i (h_L* − h_L)               (i = 1 .. L−1)

and learns it locally as tp does (``algorithms/tp.py``): δa_i = (h_i − h_i*) ⊙ f′(a_i) / (βn), so

    δa_i = (Q_i e) ⊙ f′(a_i)      (e = ∂L/∂a_L, the mean-loss output error; the top layer learns with e itself)

which does not depend on β: the feedback is linear, so β has no knob here (DDTP-linear is dfa with learned
feedback). Q_i is trained with the difference reconstruction loss of direct feedback: a noisy copy of layer i's
output, h̃_i = h_i + σε, goes forward through the rest of the network to the logits ã_L, and comes back through
the difference path,

    L_DRL,i = ‖h_i + Q_i (ã_L − h_L) − h̃_i‖² / (σ² n d_i)

whose minimum (σ → 0, one example) is Q_i = J_i⁺, J_i = ∂h_L/∂h_i: then the target is the Gauss–Newton target
h_i − J_i⁺ β ∂ℓ/∂h_L of the paper's theorem. A feedback bias would cancel in both the target and the loss, so
there is none. Feedback iterations, pre-training and between-epoch feedback epochs, the schedules and the Adam
feedback optimizer are tp's (all feedback work). Meulemans et al.'s Fashion-MNIST configuration: 6 feedback
epochs before training, 1 after every forward epoch, ``schedule=parallel``; Q initialised Xavier-normal.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from harness.algorithm import Capabilities, Plausibility, output_error
from harness.hparams import HParams, hp, loguniform
from harness.networks import Forward
from harness.registry import register_algorithm

from algorithms.drl import noise_hp
from algorithms.tp import (Targets, TargetProp, feedback_epochs_hp, feedback_lr_hp, feedback_steps_hp,
                           pretrain_epochs_hp, schedule_hp)


@register_algorithm
class DirectDTP(TargetProp):
    name = "ddtp-linear"
    version = 1
    description = "direct difference target propagation: linear feedback from the output to every hidden layer"
    reference = "Meulemans et al. 2020, NeurIPS (A theoretical framework for target propagation)"
    capabilities = Capabilities(layers=frozenset({"linear"}), activations=frozenset({"tanh", "leaky-relu", "linear"}))
    report_labels = {}

    class Params(HParams):
        sigma: float = noise_hp("added to a hidden layer's output")
        feedback_lr: float = feedback_lr_hp()
        feedback_steps: int = feedback_steps_hp()
        pretrain_epochs: int = pretrain_epochs_hp()
        feedback_epochs: int = feedback_epochs_hp()
        schedule: Literal["alternating", "parallel"] = schedule_hp("parallel")

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases="two", feedback_learning=True,
                            notes=f"direct {self.feedback_kind()} feedback from the output to each hidden layer, "
                                  f"trained on the difference reconstruction loss every update")

    def feedback_kind(self) -> str:
        return "linear"

    # ---------------------------------------------------------------- state
    def inverse_layers(self) -> list[int]:
        """0-based indices of the hidden layers, each with direct feedback from the output."""
        return list(range(len(self.net.layers) - 1))

    def feedback_bias(self) -> bool:
        return False

    def feedback_width(self, i: int) -> int:
        """Width of what feeds layer i's feedback: the output."""
        return self.net.layers[-1].weight.shape[0]

    def setup(self):
        self.V: dict[int, torch.Tensor] = {}  # Q_i, d_i × (feedback width)
        self.c: dict[int, torch.Tensor] = {}  # feedback biases (none for linear feedback)
        for i in self.inverse_layers():  # Xavier-normal Q_i (every network has a hidden layer)
            w, k = self.net.layers[i].weight, self.feedback_width(i)
            self.V[i] = (torch.randn(w.shape[0], k, generator=self.gen, device=w.device, dtype=w.dtype)
                         * math.sqrt(2 / (w.shape[0] + k)))
            if self.feedback_bias():
                self.c[i] = torch.zeros(w.shape[0], device=w.device, dtype=w.dtype)
        self.inv_opt = torch.optim.Adam([*self.V.values(), *self.c.values()], lr=self.hp.feedback_lr, foreach=True)

    def extra_state(self):
        return {"V": {i: v.clone() for i, v in self.V.items()}, "c": {i: c.clone() for i, c in self.c.items()},
                "opt": self.inv_opt.state_dict()}

    def load_extra_state(self, state):
        with torch.no_grad():
            for name in ("V", "c"):
                for i, t in getattr(self, name).items():
                    t.copy_(state[name][i])
        self.inv_opt.load_state_dict(state["opt"])

    # ---------------------------------------------------------------- feedback map
    def direct(self, i: int, o: torch.Tensor) -> torch.Tensor:
        """Layer i's feedback of the output o: Q_i o."""
        return o @ self.V[i].t()

    # ---------------------------------------------------------------- targets
    @torch.no_grad()
    def compute_targets(self, fw: Forward, y: torch.Tensor) -> Targets:
        _, e = output_error(fw.logits, y)
        d = [e @ self.V[i].t() for i in self.inverse_layers()] + [e]  # (h_i − h_i*)/(βn) = Q_i e
        return Targets(None, d)  # no β, so no target h_i*: only its direction

    # ---------------------------------------------------------------- feedback training
    def to_output(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """The logits reached from layer i's output h through layers i+1 .. L."""
        for layer in self.net.layers[i + 1:]:
            h = layer.post(layer.pre(h))
        return h

    def feedback_gradients(self, fw: Forward) -> None:
        """∂L_DRL,i/∂Q_i of every hidden layer into ``.grad`` (noise drawn in layer order)."""
        out = self.outputs(fw)
        for i in self.V:
            noisy = out[i] + self.noise(out[i])
            self.reconstruction_gradient(i, out[i], noisy, self.to_output(i, noisy), fw.logits)

    def reconstruction_gradient(self, i: int, h: torch.Tensor, noisy: torch.Tensor, o: torch.Tensor,
                                ref: torch.Tensor) -> None:
        """Gradient of ‖h + Q_i (o − ref) − noisy‖² / (σ² n d) w.r.t. Q_i."""
        do = o - ref
        dz = (h + do @ self.V[i].t() - noisy) * (2.0 / (self.hp.sigma ** 2 * noisy.numel()))
        self.V[i].grad = dz.t() @ do

    def diagnostics(self, x, y):
        return {}

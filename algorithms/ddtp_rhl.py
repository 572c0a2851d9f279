"""ddtp-rhl — direct difference target propagation through a random hidden feedback layer (Meulemans, Carzaniga,
Suykens, Sacramento & Grewe 2020, NeurIPS, "A theoretical framework for target propagation", §5; their DKDTP2
network, "DDTP-RHL").

As ddtp-linear (``algorithms/ddtp_linear.py``), but the output is first expanded by a *fixed* random layer of
width D (``hidden_width``; 1024 in their Fashion-MNIST configuration), s(o) = tanh(R o + r) with R, r drawn once
uniformly in ±1/√K (torch's default for such a layer), and each hidden layer i < L−1 reads it through its own
learned map g_i(s) = f_i(Q_i s + c_i) (f_i: the layer's activation); the last hidden layer reads the output
directly, g_{L−1}(o) = f_{L−1}(Q_{L−1} o + c_{L−1}). Targets and the difference reconstruction loss are

    h_i* = h_i + g_i(s(h_L*)) − g_i(s(h_L)),       h_L* = h_L − β ∂ℓ/∂h_L
    L_DRL,i = ‖h_i + g_i(s(ã_L)) − g_i(s(h_L)) − h̃_i‖² / (σ² n d_i),   h̃_i = h_i + σε, ã_L its logits

so β acts here (the feedback is nonlinear) and the local losses are tp's, scaled by 1/(βn). With feedback whose
Jacobian at h_L is J_i⁺ (J_i = ∂h_L/∂h_i), the target tends to the Gauss–Newton target as β → 0.
"""

from __future__ import annotations

import math

import torch

from harness.algorithm import output_error
from harness.hparams import hp, loguniform
from harness.networks import Forward
from harness.registry import register_algorithm

from algorithms.ddtp_linear import DirectDTP
from algorithms.drl import difference_reconstruction_grad
from algorithms.tp import Targets


@register_algorithm
class DirectDTPRandomHidden(DirectDTP):
    name = "ddtp-rhl"
    version = 1
    description = "direct difference target propagation through a fixed random hidden feedback layer"

    class Params(DirectDTP.Params):
        beta: float = hp(0.01, "output target step: h_L* = h_L − β ∂ℓ/∂h_L (per-example loss)", gt=0, le=1000,
                         search=loguniform(1e-4, 1.0))
        hidden_width: int = hp(1024, "width D of the fixed random tanh layer the output is expanded into", ge=1,
                               le=65536)

    def feedback_kind(self) -> str:
        return f"random-hidden-layer (tanh, width {self.hp.hidden_width})"

    def feedback_bias(self) -> bool:
        return True

    def expanded(self, i: int) -> bool:
        """Whether layer i reads the random hidden layer (every hidden layer but the last)."""
        return i < len(self.net.layers) - 2

    def feedback_width(self, i: int) -> int:
        return self.hp.hidden_width if self.expanded(i) else super().feedback_width(i)

    def setup(self):
        w = self.net.layers[-1].weight
        k = w.shape[0]
        bound = 1 / math.sqrt(k)
        draw = lambda *shape: (torch.rand(*shape, generator=self.gen, device=w.device, dtype=w.dtype) * 2 - 1) * bound
        self.R, self.r = draw(self.hp.hidden_width, k), draw(self.hp.hidden_width)
        super().setup()

    def extra_state(self):
        return super().extra_state() | {"R": self.R.clone(), "r": self.r.clone()}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.R.copy_(state["R"])
        self.r.copy_(state["r"])

    def hidden(self, o: torch.Tensor) -> torch.Tensor:
        """s(o) = tanh(R o + r)."""
        return torch.tanh(o @ self.R.t() + self.r)

    def read(self, i: int, o: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """What layer i's feedback reads: s(o) (precomputed) or o itself."""
        return s if self.expanded(i) else o

    def direct(self, i: int, o: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.net.layers[i].act(self.read(i, o, s) @ self.V[i].t() + self.c[i])

    @torch.no_grad()
    def compute_targets(self, fw: Forward, y: torch.Tensor):
        n, beta = len(y), self.hp.beta
        _, e = output_error(fw.logits, y)
        t_top = fw.logits - (beta * n) * e
        s_t, s_0 = self.hidden(t_top), self.hidden(fw.logits)
        out = self.outputs(fw)
        target = [out[i] + self.direct(i, t_top, s_t) - self.direct(i, fw.logits, s_0) for i in self.inverse_layers()]
        d = [(out[i] - t) / (beta * n) for i, t in enumerate(target)] + [e]
        return Targets(target + [t_top], d)

    def feedback_gradients(self, fw: Forward) -> None:
        out, s_0 = self.outputs(fw), self.hidden(fw.logits)
        for i in self.V:
            noisy = out[i] + self.noise(out[i])
            o = self.to_output(i, noisy)
            difference_reconstruction_grad(self.net.layers[i].act, self.V[i], self.c[i], out[i], noisy,
                                           self.read(i, o, self.hidden(o) if self.expanded(i) else None),
                                           self.read(i, fw.logits, s_0), self.hp.sigma)

"""dinv — dynamic inversion (Podlaski & Machens 2020, NeurIPS 33, "Biological credit assignment through
dynamic inversion of feedforward networks").

Layers j = 0 .. L−1 as ``net.layers`` (a_j = W_j h_j + b_j, h_j the layer's input, as rfl). The output
error is turned into a displacement and sent down, layer by layer; at each layer j ≥ 1 the displacement
δa_j of its output is *inverted* by a fast feedback-control loop, with no learned inverse: the candidate
input displacement u drives the forward synapses W_j, the mismatch r = δa_j − W_j u is fed back through
the loop's feedback synapses, and u leaks at rate λ. K = ``settle_steps`` Euler steps of rate
η = ``settle_rate`` from u = 0:

    r_k = δa_j − W_j u_k,        u_{k+1} = u_k + η (W_jᵀ r_k − λ u_k)

This is gradient descent on ½‖δa_j − W_j u‖² + ½λ‖u‖², so it settles (stable for η < 2/(σ_max(W_j)² + λ);
contraction 1 − η(σ_min² + λ) per step) to the damped least-squares, i.e. damped-pseudoinverse, solution

    u* = (W_jᵀW_j + λI)⁻¹ W_jᵀ δa_j = W_jᵀ(W_jW_jᵀ + λI)⁻¹ δa_j = Q_j* δa_j,

rfl's fixed point, here reached by dynamics on every update instead of learned into a matrix (started from
u = 0 the iterates stay in W_j's row space: the minimum-norm solution as λ → 0). Then, as rfl's ``chain``,

    Δh_j = u_K,      δa_{j−1} = Δh_j ⊙ f'(a_{j−1}),      ∇W_j = −δa_j h_jᵀ / (β n),  ∇b_j = −Σ δa_j / (β n)

from δa_{L−1} = −β n e (e = ∂L/∂a of bp's *mean* cross-entropy, ``output_error``). Everything is linear
in δa from u = 0, so β cancels and the loop runs on g_j = −δa_j/(βn) (g_{L−1} = e): no β knob.

What the loop reads. Its forward leg is the forward synapses themselves (W_j u); its feedback leg carries
W_jᵀ — the transpose that makes the fixed point the pseudoinverse (the case the paper analyses). A
feedback leg equal to W_jᵀ is weight transport (``values``); we implement only that leg and declare it.

The step. A fixed η diverges as soon as training grows σ_max(W_j)² past 2/η − λ (in our first Fashion-MNIST
runs, η = 0.3, after one or two epochs). By default (``settle_rate_mode=normalized``) the loop's step follows
the layer's gain, η_j = ``settle_rate`` / (σ̂_j² + λ), with σ̂_j² = ‖W_jᵀW_j v_j‖ from one power-iteration step
per update on a unit vector v_j kept between updates (warm start; ``POWER_PRIME`` steps before the first
update, in ``pretrain``); ``fixed`` uses η = ``settle_rate`` as given. Reading σ_max of W_j is part of the
transport already declared.

Cost: per layer j ≥ 1, K steps of two matmuls (W_j u, W_jᵀ r) and the power step's two matrix–vector
products, all ``credit``; L weight gradients. The priming power steps are pre-training work.
Diagnostics, rfl's (``pinv_residual``, ``pinv_angles``) applied to the settled map Q_K (the loop run on
the identity, so Δh_j = Q_K δa_j exactly): the residual ‖Q_K(W_jW_jᵀ + λI) − W_jᵀ‖_F/‖W_jᵀ‖_F (how far K
steps are from settled) and the angles of Q_K to the Moore–Penrose W_j⁺ and to W_jᵀ.
"""

from __future__ import annotations

import torch

from typing import Literal

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput, output_error, set_grad
from harness.hparams import HParams, choice, hp, loguniform, randint, uniform
from harness.registry import register_algorithm

from algorithms.rfl import pinv_angles, pinv_residual


POWER_PRIME = 30  # power-iteration steps before the first update (warm start: one per update after)


@register_algorithm
class DynamicInversion(Algorithm):
    name = "dinv"
    version = 1
    description = ("dynamic inversion: each layer's output displacement is inverted by a feedback-control loop "
                   "that settles to the damped pseudoinverse solution; bp's structure otherwise")
    reference = "Podlaski & Machens 2020, NeurIPS 33 (arXiv:2006.06438)"
    capabilities = Capabilities(layers=frozenset({"linear"}))
    report_labels = {  # rfl's diagnostics, of the settled map Q_K
        "pinv_residual": {"label": "pseudoinverse residual ‖Q_K(WWᵀ+λI) − Wᵀ‖/‖Wᵀ‖ of the settled loop",
                          "unit": "dimensionless"},
        "pinv_residual_l*": {"label": "pseudoinverse residual of layer l's settled loop", "unit": "dimensionless"},
        "angle_q_pinv_l*": {"label": "angle of layer l's settled loop Q_K to the pseudoinverse W_l⁺", "unit": "degrees"},
        "angle_q_wt_l*": {"label": "angle of layer l's settled loop Q_K to W_lᵀ", "unit": "degrees"},
    }

    class Params(HParams):
        settle_steps: int = hp(20, "K: Euler steps of the control loop per layer per update (from u = 0)",
                               ge=1, le=100000, search=randint(5, 50))
        settle_rate: float = hp(1.0, "the loop's step u ← u + η(Wᵀ(δa − Wu) − λu): η = settle_rate/(σ̂_max(W)² + λ) "
                                "(normalized; stable below 2) or η itself (fixed; stable for η < 2/(σ_max(W)² + λ))",
                                gt=0, le=10, search=uniform(0.2, 1.8))
        settle_rate_mode: Literal["normalized", "fixed"] = hp(
            "normalized", "normalized: the step follows the layer's gain σ̂_max(W)² (a power-iteration step per "
                          "update); fixed: settle_rate is η", search=choice("normalized", "fixed"))
        damping: float = hp(0.5, "λ: leak of the loop, the damping of the pseudoinverse W_jᵀ(W_jW_jᵀ + λI)⁻¹",
                            ge=0, le=1e6, search=loguniform(1e-2, 10.0))

    def plausibility(self):
        return Plausibility(weight_transport=True, local=True, phases="single", feedback_learning=False,
                            notes="the loop drives W_l forward and feeds the mismatch back through synapses equal "
                                  "to W_lᵀ (transported values); updates δa_l h_lᵀ are local")

    # ---------------------------------------------------------------- the loop's step
    def setup(self):
        """A unit vector v_j per layer j ≥ 1 for the power iteration on W_jᵀW_j (``normalized`` only)."""
        self.v: dict[int, torch.Tensor] = {}
        self.sigma2: dict[int, torch.Tensor] = {}
        self.primed = self.hp.settle_rate_mode == "fixed"
        if not self.primed:
            for j, layer in enumerate(self.net.layers[1:], start=1):
                w = layer.weight
                v = torch.randn(w.shape[1], generator=self.gen, device=w.device, dtype=w.dtype)
                self.v[j] = v / v.norm()

    def gram_v(self, j: int) -> torch.Tensor:
        """W_jᵀW_j v_j; its norm is σ̂_j² (v_j of unit length: a lower bound of σ_max(W_j)²)."""
        w = self.net.layers[j].weight
        return w.t() @ (w @ self.v[j])

    def power_step(self, j: int) -> None:
        """v_j ← W_jᵀW_j v_j / ‖·‖ and σ̂_j² = ‖W_jᵀW_j v_j‖."""
        t = self.gram_v(j)
        self.sigma2[j] = t.norm()
        self.v[j] = t / self.sigma2[j]

    def _prime(self) -> None:
        if not self.primed:
            for j in self.v:
                for _ in range(POWER_PRIME):
                    self.power_step(j)
            self.primed = True

    def pretrain(self, data, batch_size):
        self._prime()  # the pre-training window counts it

    def update_kind(self):
        return "update" if self.primed else "prime"

    def step_size(self, j: int) -> torch.Tensor | float:
        """η of layer j's loop: settle_rate, or settle_rate/(σ̂_j² + λ) (``normalized``; σ̂_j² as of this update)."""
        if self.hp.settle_rate_mode == "fixed":
            return self.hp.settle_rate
        # before any update (a diagnostic): the estimate of v_j as it stands, read only
        sigma2 = self.sigma2[j] if j in self.sigma2 else self.gram_v(j).norm()
        return self.hp.settle_rate / (sigma2 + self.hp.damping)

    def extra_state(self):
        return {"v": {j: v.clone() for j, v in self.v.items()},
                "sigma2": {j: s.clone() for j, s in self.sigma2.items()}, "primed": self.primed}

    def load_extra_state(self, state):
        if state:
            self.v = {int(j): v.clone() for j, v in state["v"].items()}
            self.sigma2 = {int(j): s.clone() for j, s in state["sigma2"].items()}
            self.primed = state["primed"]

    def settle(self, j: int, g: torch.Tensor) -> torch.Tensor:
        """u_K for δa = g (rows are examples): the control loop of layer j, K steps from u = 0."""
        w, eta, lam = self.net.layers[j].weight, self.step_size(j), self.hp.damping
        u = torch.zeros(g.shape[0], w.shape[1], dtype=g.dtype, device=g.device)
        for _ in range(self.hp.settle_steps):
            r = g - u @ w.t()  # the mismatch δa − W u, through the forward synapses
            u = u + eta * (r @ w - lam * u)  # fed back through Wᵀ, with the leak
        return u

    @torch.no_grad()
    def step(self, x, y):
        """The loops' gains as of this update (one power-iteration step per layer), then the update."""
        with self.phase("credit"):
            self._prime()  # here when stepped without pretrain() first (the update of kind "prime")
            for j in self.v:
                self.power_step(j)
        return self.compute_update(x, y)

    @torch.no_grad()
    def compute_update(self, x, y):
        with self.phase("forward"):
            fw = self.net.forward_all(x)
            loss, e = output_error(fw.logits, y)
        with self.phase("credit"):
            layers, g = self.net.layers, e
            for j in range(len(layers) - 1, -1, -1):
                _, gw, gb = layers[j].backward(g, fw.h[j], None)
                set_grad(layers[j].weight, gw)
                set_grad(layers[j].bias, gb)
                if j > 0:
                    g = layers[j - 1].act.backward(self.settle(j, g), fw.a[j - 1], fw.z[j - 1])
        return StepOutput(loss, fw.logits)

    @torch.no_grad()
    def settled_map(self, j: int) -> torch.Tensor:
        """Q_Kᵀ (W_j's shape): the loop run on the identity, so that settle(j, g) = g @ Q_Kᵀ."""
        w = self.net.layers[j].weight
        return self.settle(j, torch.eye(w.shape[0], dtype=w.dtype, device=w.device))

    @torch.no_grad()
    def diagnostics(self, x, y):
        out = {}
        for j in range(1, len(self.net.layers)):
            qt, w = self.settled_map(j), self.net.layers[j].weight.detach()
            out[f"pinv_residual_l{j + 1}"] = pinv_residual(qt, w, self.hp.damping)
            out[f"angle_q_pinv_l{j + 1}"], out[f"angle_q_wt_l{j + 1}"] = pinv_angles(qt, w)
        out["pinv_residual"] = max(v for k, v in out.items() if k.startswith("pinv_residual_l"))
        return out

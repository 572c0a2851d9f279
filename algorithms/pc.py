"""pc — supervised predictive coding (Whittington & Bogacz 2017, Neural Computation 29:1229, "An
approximation of the error backpropagation algorithm in a predictive coding network with local Hebbian
synaptic plasticity"; settings as PCX: Pinchetti, Qi, Lokshyn, Olivers, Emde, Tang, M'Charrak, Frieder,
Menzat, Bogacz, Lukasiewicz & Salvatori 2024, "Benchmarking predictive coding networks -- made simple").

Layers j = 0 .. L−1 as ``net.layers``; layer j reads the value node v_j (v_0 = x, clamped) and predicts
the next one:

    a_j = W_j v_j + b_j,      μ_j = f_j(a_j),      ε_j = v_{j+1} − μ_j          (hidden layers j < L−1)

The top layer's prediction μ_{L−1} = a_{L−1} (logits) meets the label through the output energy ℓ
(``output_energy``: ``ce`` = Σ_n cross-entropy(softmax(a), y), ``mse`` = Σ_n ½‖a − onehot(y)‖²), weighted
by β (``target``: ``clamp``, the output node clamped to the label, β = 1 — PCX's supervised setting;
``nudge``, a weak clamp, β = ``nudge``). The energy of a batch is

    E(v) = Σ_{j<L−1} ½‖ε_j‖² + β ℓ(a_{L−1}, y),      and we write ε_{L−1} = −β ∂ℓ/∂a_{L−1}

(the top "error"; for ``mse`` with β = 1 it is literally y − μ, the error of the clamped node).

Inference: the value nodes start at the forward pass (v_j = h_j, so every hidden ε_j = 0) and take
T = ``inference_steps`` gradient steps of rate γ = ``inference_rate`` on E, all layers at once:

    δ_j = ε_j ⊙ f_j'(a_j)                                   (δ_{L−1} = ε_{L−1})
    v_j ← v_j + γ (−ε_{j−1} + F_jᵀ δ_j)        j = 1 .. L−1,    then a, ε from the new v

with F_j = W_j (``pc``: the error is sent down through W_jᵀ, weight transport) or a feedback matrix B_j
of W_j's shape (``pc-fa``, ``pc-kp``: ``feedback(j)``). Learning, from the errors after T steps:

    ΔW_j ∝ δ_j v_jᵀ = −∂E/∂W_j,    pseudo-gradient  ∇W_j = −δ_j v_jᵀ / (β n),  ∇b_j = −Σ_n δ_j / (β n)

Convention. bp's gradient is of the *mean* cross-entropy (``harness.algorithm.output_error``:
e = (softmax − onehot)/n); E sums over the batch and ε_{L−1} = −β n e, hence the division by β n and the
minus sign. With T = 0 only the top layer learns, by the delta rule ∇W_{L−1} = eᵀ h_{L−1} (bp's top
gradient, for ``ce``). At equilibrium ε_{L−2} = W_{L−1}ᵀ ε_{L−1}, ε_{j−1} = W_jᵀ δ_j: bp's recursion on
the perturbed state, which tends to the forward pass as β → 0, so the update tends to bp's gradient
(``nudge`` → 0; tested). Every inference matmul is ``credit`` work: per step L−1 signals F_jᵀ δ_j and
L−1 predictions (a_0 never changes), then L weight gradients; the forward pass is ``forward``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput, output_error, set_grad
from harness.hparams import HParams, choice, hp, loguniform, randint
from harness.registry import register_algorithm


class PCState:
    """Value nodes v[j] (the input of layer j; v[0] = x), pre-activations a[j], predictions z[j] = f_j(a[j])
    of the hidden layers and errors eps[j] (eps[L−1] = −β ∂ℓ/∂a_{L−1})."""

    def __init__(self, v, a, z, eps):
        self.v, self.a, self.z, self.eps = v, a, z, eps


@register_algorithm
class PredictiveCoding(Algorithm):
    name = "pc"
    version = 1
    description = ("predictive coding: value nodes relax for T steps on Σ‖v_{l+1} − f(W_l v_l)‖²/2 with the "
                   "output clamped (or nudged) to the label, then local updates from the errors")
    reference = ("Whittington & Bogacz 2017, Neural Comput. 29:1229; Pinchetti et al. 2024, "
                 "'Benchmarking predictive coding networks -- made simple' (PCX)")
    capabilities = Capabilities(layers=frozenset({"linear"}))
    report_labels = {"energy_ratio": {"label": "energy after inference / energy at the forward pass",
                                      "unit": "dimensionless"}}

    class Params(HParams):
        inference_steps: int = hp(20, "T: inference steps on the value nodes per update (0: only the top layer "
                                  "learns, by the delta rule)", ge=0, le=10000, search=randint(5, 50))
        inference_rate: float = hp(0.1, "γ: step of the value nodes' gradient descent on the energy", gt=0, le=10,
                                   search=loguniform(0.01, 0.5))
        output_energy: Literal["ce", "mse"] = hp("ce", "ℓ at the output: cross-entropy of softmax(a_L) (ce) or "
                                                 "½‖a_L − onehot‖² (mse)", search=choice("ce", "mse"))
        target: Literal["clamp", "nudge"] = hp("clamp", "clamp: output clamped to the label (β = 1); nudge: the "
                                               "output energy weighted by β = nudge (a weak clamp)")
        nudge: float = hp(0.1, "β: weight of the output energy (target=nudge); updates are divided by β",
                          gt=0, le=10, search=loguniform(1e-3, 1.0), when={"target": ("nudge",)})

    def plausibility(self):
        return Plausibility(weight_transport=True, local=True, phases="single", feedback_learning=False,
                            notes="errors sent down through W_lᵀ during inference; updates δ_l v_lᵀ are local")

    # ------------------------------------------------------------------ the energy's pieces
    @property
    def beta(self) -> float:
        return self.hp.nudge if self.hp.target == "nudge" else 1.0

    def feedback(self, j: int) -> torch.Tensor:
        """F_j, W_j's shape: what carries δ_j down to v_j (W_j here; pc-fa and pc-kp override it)."""
        return self.net.layers[j].weight

    def output_grad(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∂ℓ/∂a_{L−1} of the summed output energy, one row per example."""
        if self.hp.output_energy == "ce":
            return output_error(logits, y)[1] * logits.shape[0]  # n e = softmax − onehot
        return logits - F.one_hot(y, logits.shape[1]).to(logits.dtype)

    def errors(self, v, a, y) -> PCState:
        layers = self.net.layers
        top = len(layers) - 1
        z = [layers[j].act(a[j]) for j in range(top)]
        eps = [v[j + 1] - z[j] for j in range(top)]
        eps.append(self.output_grad(a[top], y) * (-self.beta))
        return PCState(v, a, z, eps)

    def deltas(self, s: PCState) -> list[torch.Tensor]:
        """δ_j = ε_j ⊙ f_j'(a_j) (the top layer is linear: δ_{L−1} = ε_{L−1})."""
        layers = self.net.layers
        top = len(layers) - 1
        return [layers[j].act.backward(s.eps[j], s.a[j], s.z[j]) for j in range(top)] + [s.eps[top]]

    def relax(self, fw, y, steps: int) -> PCState:
        """Value nodes from the forward pass ``fw``, then ``steps`` inference steps; returns the final state."""
        layers, gamma = self.net.layers, self.hp.inference_rate
        s = self.errors(list(fw.h[:len(layers)]), list(fw.a), y)
        for _ in range(steps):
            d = self.deltas(s)
            v = [s.v[0]] + [s.v[j] + gamma * (d[j] @ self.feedback(j) - s.eps[j - 1]) for j in range(1, len(layers))]
            a = [s.a[0]] + [layers[j].pre(v[j]) for j in range(1, len(layers))]
            s = self.errors(v, a, y)
        return s

    def energy(self, s: PCState, y) -> torch.Tensor:
        """E = Σ_{j<L−1} ½‖ε_j‖² + β ℓ(a_{L−1}, y), summed over the batch (a diagnostic)."""
        top = len(self.net.layers) - 1
        logits = s.a[top]
        if self.hp.output_energy == "ce":
            out = F.cross_entropy(logits, y, reduction="sum")
        else:
            out = 0.5 * (logits - F.one_hot(y, logits.shape[1]).to(logits.dtype)).square().sum()
        return sum(0.5 * e.square().sum() for e in s.eps[:top]) + self.beta * out

    # ------------------------------------------------------------------ the update
    @torch.no_grad()
    def compute_update(self, x, y):
        with self.phase("forward"):
            fw = self.net.forward_all(x)
            loss, _ = output_error(fw.logits, y)
        with self.phase("credit"):
            s = self.relax(fw, y, self.hp.inference_steps)
            scale = -1.0 / (self.beta * x.shape[0])
            for j, (layer, d) in enumerate(zip(self.net.layers, self.deltas(s), strict=True)):
                _, gw, gb = layer.backward(d * scale, s.v[j], None)
                set_grad(layer.weight, gw)
                set_grad(layer.bias, gb)
        return StepOutput(loss, fw.logits)

    @torch.no_grad()
    def diagnostics(self, x, y):
        fw = self.net.forward_all(x)
        start = self.energy(self.relax(fw, y, 0), y)
        end = self.energy(self.relax(fw, y, self.hp.inference_steps), y)
        return {"energy_ratio": (end / start).item()}

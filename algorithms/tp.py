"""tp — target propagation (Bengio 2014, arXiv:1407.7906; Lee, Zhang, Fischer & Bengio 2015, ECML-PKDD).

Layers l = 1..L, ``a_l = W_l h_{l-1} + b_l``, ``h_l = f_l(a_l)``, logits ``h_L = a_L``. Instead of
carrying errors down, every layer gets a *target* for its output and learns locally to reach it:

    output target        h_L* = h_L − β ∂ℓ/∂h_L                   (ℓ: per-example cross-entropy)
    targets below        h_{l-1}* = g_l(h_l*)                       (l = L .. 2)
    local losses         L_l = ‖h_l − h_l*‖² / (2βn)                (summed over the batch of n)
    pseudo-gradients     δa_l = (h_l − h_l*) ⊙ f_l'(a_l) / (βn),   ∇W_l = δa_l h_{l-1}ᵀ,   ∇b_l = Σ δa_l

The factor 1/β makes the output layer's update the cross-entropy gradient itself (δa_L = e = ∂L/∂a_L,
used as is, so this layer matches bp bit for bit) and keeps hidden updates finite as β → 0. The targets
never go through autograd: each layer's update uses only its own input, output and target.

Inverses (``inverse=learned``, Lee et al.'s form): layer l ≥ 2 has a learned approximate inverse

    g_l(h_l) = f_{l-1}(V_l h_l + c_l)

whose outer nonlinearity is that of the layer *below* (f_{l-1}), so its output lies where h_{l-1} lives.
For the top layer, whose output is the (linear) logits, the same form is used: V_L maps the logits back
into the last hidden layer and f_{L-1} (e.g. tanh) is applied; no inverse is needed for layer 1 (the
input has no target). The inverses are trained on noise-corrupted reconstruction (Lee et al. 2015 §2.3),

    h̃_{l-1} = h_{l-1} + ε,  ε ~ N(0, σ²I),   L_inv,l = ‖g_l(f_l(W_l h̃_{l-1} + b_l)) − h̃_{l-1}‖² / (2n),

with their own Adam optimizer (own state and learning rate ``feedback_lr``, not the shared optimizer),
``feedback_steps`` updates per forward update (fresh noise each), optional ``pretrain_epochs`` of
inverse-only training before forward training and ``feedback_epochs`` of it after every forward epoch
(as Meulemans et al. 2020 do; both counted as feedback work, the first as pre-training). ``inverse=exact`` uses the
analytic inverse of the forward layer instead, g_l(h_l) = W_l⁺ (f_l⁻¹(clip(h_l)) − b_l) (pseudoinverse
of W_l; f_L⁻¹ is the identity), and learns nothing: an oracle for tests and diagnostics (weight transport,
declared), in which the feedback hyperparameters do not act; its pseudoinverses are counted with the
LAPACK SVD formula (``harness.cost.svd_flops``).

Schedules (Bartunov et al. 2018's terms): ``alternating`` — on each batch the inverses are first
updated (``feedback_steps`` times), then the targets are computed with the updated inverses and the
forward weights updated; ``parallel`` — forward and inverse updates are computed from the same state
(targets from the current inverses, inverse training on the current forward weights).

Cost phases: forward pass in ``forward``, targets and pseudo-gradients in ``credit``, inverse training
(including its noisy pass through each layer) in ``feedback``. Diagnostics per epoch:
``inv_recon_l{l}`` = ‖g_l(h_l) − h_{l-1}‖_F / ‖h_{l-1}‖_F on the probe batch, for each inverse used.

Supported networks: MLPs whose hidden activations are invertible (tanh, leaky-relu, linear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput, output_error, set_grad
from harness.hparams import HParams, choice, hp, loguniform, randint
from harness.networks import Forward
from harness.registry import register_algorithm


LEARNED = {"inverse": ("learned",)}  # the inverse-training knobs act only with learned inverses


# The knobs of learned feedback, shared by the rules built on tp (dtp, drl, l-drl, ddtp-*); ``when``: where they act.
# Declarations, run once at import (before a mutation run activates any mutant, like every class-body hp()):
# not mutated; tests/test_algorithms_contract.py pins every declared knob through docs/algorithms.md.
# pragma: no mutate start
def feedback_lr_hp(when=None, default=1e-3):
    return hp(default, "Adam learning rate of the feedback weights (own optimizer state)", gt=0, le=10,
              search=loguniform(1e-4, 1e-2), when=when)


def feedback_steps_hp(when=None, default=1, search=randint(1, 5)):
    return hp(default, "feedback-training iterations per forward update (fresh noise each)", ge=1, le=1000,
              search=search, when=when)


def pretrain_epochs_hp(when=None, default=0, search=randint(0, 5)):
    return hp(default, "epochs of feedback-only training before forward training", ge=0, le=1000,
              search=search, when=when)


def feedback_epochs_hp(when=None, default=0):
    return hp(default, "epochs of feedback-only training after every forward epoch", ge=0, le=100, when=when)


def schedule_hp(default: str, when=None):
    return hp(default, "alternating: feedback updated first, then targets from it; parallel: both from the "
                       "same state (Bartunov et al. 2018)", search=choice("alternating", "parallel"), when=when)
# pragma: no mutate end


@dataclass
class Targets:
    """Per layer (0-based index i = l − 1): the target of the layer's output and its scaled displacement
    ``d[i] = (h_i − h_i*) / (βn)`` (what the layer's local-loss gradient uses). ``target`` is None for a rule
    without β (ddtp-linear), whose targets are defined only through ``d``."""

    target: list[torch.Tensor] | None
    d: list[torch.Tensor]


@register_algorithm
class TargetProp(Algorithm):
    name = "tp"
    version = 2  # v2: exact inverses' pseudoinverse FLOP-counted
    description = "target propagation: layer targets through learned inverses, local losses per layer"
    reference = "Bengio 2014, arXiv:1407.7906; Lee et al. 2015, ECML-PKDD (LNCS 9284:498)"
    capabilities = Capabilities(layers=frozenset({"linear"}),
                                activations=frozenset({"tanh", "leaky-relu", "linear"}), needs_invertible=True)
    report_labels = {"inv_recon_l*": {"label": "reconstruction error of layer l's inverse ‖g_l(h_l) − h_{l-1}‖/‖h_{l-1}‖",
                                      "unit": "dimensionless"}}

    difference = False  # dtp overrides: h_{l-1}* = h_{l-1} + g_l(h_l*) − g_l(h_l)

    class Params(HParams):
        beta: float = hp(10.0, "output target step: h_L* = h_L − β ∂ℓ/∂h_L (per-example loss)", gt=0, le=1000,
                         search=loguniform(0.1, 30.0))
        inverse: Literal["learned", "exact"] = hp(
            "learned", "learned: g_l(h) = f_{l-1}(V_l h + c_l) trained on noisy reconstruction; "
                       "exact: analytic f⁻¹ and pseudoinverse of W (oracle, learns nothing)")
        feedback_lr: float = feedback_lr_hp(LEARNED)
        sigma: float = hp(0.1, "std of the Gaussian noise corrupting h_{l-1} in inverse training", ge=0, le=10,
                          search=loguniform(0.01, 1.0), when=LEARNED)
        feedback_steps: int = feedback_steps_hp(LEARNED)
        pretrain_epochs: int = pretrain_epochs_hp(LEARNED)
        feedback_epochs: int = feedback_epochs_hp(LEARNED)
        schedule: Literal["alternating", "parallel"] = schedule_hp("alternating", LEARNED)

    # ---------------------------------------------------------------- plausibility
    def plausibility(self):
        if self.hp.inverse == "exact":
            return Plausibility(weight_transport=True, local=True, phases="single", feedback_learning=False,
                                notes="exact inverses: targets through f⁻¹ and the pseudoinverse of W_l (oracle)")
        return Plausibility(weight_transport=False, local=True, phases="two", feedback_learning=True,
                            notes="learned inverses trained on noisy reconstruction in their own pass every update")

    # ---------------------------------------------------------------- state
    def learned(self) -> bool:
        """Whether the inverses are learned (else exact: the oracle)."""
        return self.hp.inverse == "learned"

    def inverse_layers(self) -> list[int]:
        """0-based indices i ≥ 1 of the layers whose inverse g_i the target rule uses."""
        return list(range(1, len(self.net.layers)))

    def setup(self):
        layers = self.net.layers
        self.V: dict[int, torch.Tensor] = {}
        self.c: dict[int, torch.Tensor] = {}
        self.inv_opt = None
        if not self.learned():
            return
        for i in self.inverse_layers():
            w = layers[i].weight  # (out_i, in_i); V_i maps out_i → in_i
            bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
            self.V[i] = (torch.rand(w.shape[1], w.shape[0], generator=self.gen, device=w.device, dtype=w.dtype)
                         * 2 - 1) * bound
            self.c[i] = torch.zeros(w.shape[1], device=w.device, dtype=w.dtype)
        params = [t for i in self.V for t in (self.V[i], self.c[i])]
        if params:
            self.inv_opt = torch.optim.Adam(params, lr=self.hp.feedback_lr, foreach=True)

    def extra_state(self):
        return {"V": {i: v.clone() for i, v in self.V.items()}, "c": {i: c.clone() for i, c in self.c.items()},
                "opt": self.inv_opt.state_dict() if self.inv_opt is not None else None}

    def load_extra_state(self, state):
        with torch.no_grad():
            for i in self.V:
                self.V[i].copy_(state["V"][i])
                self.c[i].copy_(state["c"][i])
        if self.inv_opt is not None:
            self.inv_opt.load_state_dict(state["opt"])

    # ---------------------------------------------------------------- inverses
    def outputs(self, fw: Forward) -> list[torch.Tensor]:
        """Output of each layer: h_1 .. h_{L-1}, then the logits."""
        return fw.h[1:] + [fw.logits]

    def g(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """The inverse of layer i (0-based, i ≥ 1): maps its output back to its input space."""
        layers = self.net.layers
        if not self.learned():
            layer = layers[i]
            a = layer.act.inverse(h) - layer.bias
            return a @ torch.linalg.pinv(layer.weight).t()
        return layers[i - 1].act(h @ self.V[i].t() + self.c[i])

    @torch.no_grad()
    def train_inverses(self, fw: Forward) -> None:
        """``feedback_steps`` Adam updates of every learned inverse (gradients from ``feedback_gradients``)."""
        if self.inv_opt is None:
            return
        for _ in range(self.hp.feedback_steps):
            self.feedback_gradients(fw)
            self.inv_opt.step()

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """σ·ε, ε ~ N(0, I), drawn from the algorithm's generator."""
        return self.hp.sigma * torch.randn(like.shape, generator=self.gen, device=like.device, dtype=like.dtype)

    def feedback_gradients(self, fw: Forward) -> None:
        """Gradient of every inverse's noisy-reconstruction loss L_inv,l into ``.grad`` (noise in layer order)."""
        layers = self.net.layers
        for i in self.V:
            h = fw.h[i].flatten(1)
            noisy = h + self.noise(h)
            z = layers[i].act(layers[i].pre(noisy))
            u = z @ self.V[i].t() + self.c[i]
            r = layers[i - 1].act(u)
            d = layers[i - 1].act.backward((r - noisy) / len(h), u, r)
            self.V[i].grad = d.t() @ z
            self.c[i].grad = d.sum(0)

    # ---------------------------------------------------------------- targets and update
    def penultimate(self, fw: Forward, out: list[torch.Tensor], t_top: torch.Tensor, e: torch.Tensor):
        """Target of the last hidden layer, and its scaled displacement if known exactly (else None)."""
        return self.propagate(len(self.net.layers) - 1, fw, out, t_top), None

    def propagate(self, i: int, fw: Forward, out: list[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """Target for the input of layer i from the target t of its output."""
        if self.difference:
            return fw.h[i] + self.g(i, t) - self.g(i, out[i])
        return self.g(i, t)

    @torch.no_grad()
    def compute_targets(self, fw: Forward, y: torch.Tensor) -> Targets:
        layers = self.net.layers
        L, n, beta = len(layers), len(y), self.hp.beta
        out = self.outputs(fw)
        _, e = output_error(fw.logits, y)
        target, d = [None] * L, [None] * L
        target[L - 1] = fw.logits - (beta * n) * e  # h_L* = h_L − β ∂ℓ/∂h_L, with ∂ℓ/∂h_L = n e per example
        d[L - 1] = e
        if L >= 2:
            target[L - 2], d[L - 2] = self.penultimate(fw, out, target[L - 1], e)
        for i in range(L - 2, 0, -1):
            target[i - 1] = self.propagate(i, fw, out, target[i])
        for i in range(L - 2, -1, -1):
            if d[i] is None:
                d[i] = (out[i] - target[i]) / (beta * n)
        return Targets(target, d)

    def _update(self, y, fw: Forward) -> StepOutput:
        with self.phase("forward"):
            loss, _ = output_error(fw.logits, y)
        with self.phase("credit"):
            t = self.compute_targets(fw, y)
            out, top = self.outputs(fw), len(self.net.layers) - 1
            for i, layer in enumerate(self.net.layers):
                delta = t.d[i] if i == top else layer.act.backward(t.d[i], fw.a[i], out[i])
                _, gw, gb = layer.backward(delta, fw.h[i], None)
                set_grad(layer.weight, gw)
                set_grad(layer.bias, gb)
        return StepOutput(loss, fw.logits)

    def _forward(self, x) -> Forward:
        with self.phase("forward"):
            return self.net.forward_all(x)

    @torch.no_grad()
    def compute_update(self, x, y):
        return self._update(y, self._forward(x))

    @torch.no_grad()
    def step(self, x, y):
        fw = self._forward(x)
        if self.hp.schedule == "alternating":
            with self.phase("feedback"):
                self.train_inverses(fw)
            return self._update(y, fw)
        out = self._update(y, fw)
        with self.phase("feedback"):
            self.train_inverses(fw)
        return out

    @torch.no_grad()
    def feedback_epochs(self, data, batch_size: int, epochs: int) -> None:
        """``epochs`` passes over the training set (batches and augmentation from the algorithm's generator)
        training only the inverses; the forward weights are untouched."""
        if self.inv_opt is None or epochs == 0:
            return
        n = len(data.y_train)
        bs = min(batch_size, n)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=self.gen, device=self.device)
            for b in range(max(1, n // bs)):
                x, _ = data.train_batch(perm[b * bs:(b + 1) * bs], self.gen)
                self.train_inverses(self.net.forward_all(x))

    def pretrain(self, data, batch_size):
        self.feedback_epochs(data, batch_size, self.hp.pretrain_epochs)  # the meter counts it as pre-training

    def between_epochs(self, data, batch_size):
        self.feedback_epochs(data, batch_size, self.hp.feedback_epochs)  # the meter counts it as feedback work

    @torch.no_grad()
    def diagnostics(self, x, y):
        fw = self.net.forward_all(x)
        out = self.outputs(fw)
        diag = {}
        for i in self.inverse_layers():
            h = fw.h[i].flatten(1)
            diag[f"inv_recon_l{i + 1}"] = ((self.g(i, out[i]) - h).norm() / h.norm()).item()
        return diag

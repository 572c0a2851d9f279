"""rfl — reciprocal feedback: learned (damped) pseudoinverse feedback with Newton-like credit.

Feedback by recirculation: Hinton & McClelland 1988 (NIPS, "Learning representations by
recirculation"); the pseudoinverse as the feedback that turns output displacements into
layer targets: Podlaski & Machens 2020 (arXiv:2006.06438); convergence of the Newton-like
iteration with an approximate inverse: Hildebrandt & Graves 1927 (Trans. AMS 29:127).

1. Feedback learning, every layer l ≥ 2 (Q_l has shape d_{l-1}×d_l, W_l has d_l×d_{l-1}):

       v ~ N(0, I) (n samples),   u = W_l v,   v̂ = Q_l u,
       ΔQ_l = η_Q [ (v − v̂) uᵀ / n − λ Q_l ]

   (recirculation; local: it sees v, u, v̂ and Q_l only). Its mean fixed point is the damped
   pseudoinverse Q_l* = W_lᵀ (W_l W_lᵀ + λI)⁻¹ → W_l⁺ as λ → 0; it is stable for
   η_Q < 2 / (σ_max(W_l)² + λ). The noise scale σ is fixed at 1: with noise N(0, σ²I) the
   rule is the same one with η_Q and λ rescaled by σ², so σ is not a separate knob.
   ``eta_q_mode=normalized`` uses η_Q = eta_q / (σ̂² + λ) with σ̂² a warm-started power-
   iteration estimate of σ_max(W_l)² (one step per feedback iteration, counted as feedback
   work); ``damping_mode=relative`` uses λ = damping · σ̂². Floor-lowering options: more noise
   samples (``noise_batch``), a harmonic step decay within each feedback phase
   (η_i = η_Q / (1 + eta_q_decay · i), i the iteration within the phase) and Polyak averaging
   (credit uses Q̄ ← polyak · Q̄ + (1 − polyak) · Q, updated after every iteration).
   Baselines: ``newton_schulz`` iterates Y ← Y(2I − M Y) on M = W_l W_lᵀ + λI (the damped
   form of Q ← Q(2I − W Q): with Q = W_lᵀ Y it converges to the same Q_l*; started from
   Y = I / (σ̂² + λ), i.e. Q = W_lᵀ / (σ̂² + λ)); ``exact`` is the SVD oracle
   Q_l* = V diag(s / (s² + λ)) Uᵀ (one SVD per feedback phase; PyTorch's FLOP counter does not
   count SVDs, so its feedback FLOPs are a lower bound).

2. Schedule: ``sleep_wake`` — K = ``feedback_iters`` iterations before the first update and
   again before every S-th update (S = ``sleep_every``), forward weights frozen;
   ``concurrent`` — k = ``feedback_iters`` iterations before every update, warm-started
   from the previous Q.

3. Credit (Newton-like). δa_L = −β e (e = ∂L/∂a_L, which already holds the 1/n of the mean
   loss); Δh_{l-1} = Q_l δa_l; then, by ``propagation``:
       chain       δa_{l-1} = Δh_{l-1} ⊙ f'(a_{l-1})
       inverse     δa_{l-1} = f⁻¹(clip(h_{l-1} + Δh_{l-1})) − a_{l-1}
       linearized  δa_{l-1} = Δh_{l-1} / f'(a_{l-1})     (f' floored at 1e-6)
   Pseudo-gradient  ∇W_l = −δa_l h_{l-1}ᵀ / β  (the 1/n is in e), ∇b_l = −Σ_n δa_l / β.
   ``chain`` and ``linearized`` are linear in δa_L, so β cancels exactly and they are
   computed on g_l = −δa_l / β directly; with Q_l = W_lᵀ, ``chain`` is bp bit for bit.

Storage: Q_l is kept transposed, with W_l's shape (as fa's B), so that ``Layer.backward``
computes Δh_{l-1} = δa_l @ Q_lᵀ and Q_l = W_lᵀ is literally ``feedback = W``.

Diagnostics: pseudoinverse residual ‖Q_l (W_l W_lᵀ + λI) − W_lᵀ‖_F / ‖W_lᵀ‖_F per layer
(``pinv_residual`` = max); Hildebrandt–Graves contraction ρ = ‖δa_L − J Δh_1‖ / ‖δa_L‖
(J = ∂a_L/∂h_1 by a JVP); angles of the update to bp's gradient and to the Gauss–Newton
direction (each hidden output's target replaced by the damped minimum-norm network-level
target J_lᵀ (J_l J_lᵀ + λ_l I)⁻¹ δa_L, J_l = ∂a_L/∂h_l per example, λ_l as ``damping_mode``
with σ_max(J_l)², then carried to a_l by the same ``propagation``).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput, output_error, set_grad
from harness.hparams import HParams, choice, hp, loguniform, randint, uniform
from harness.metrics import angle_degrees, bp_gradients
from harness.registry import register_algorithm

POWER_WARMUP = 20  # power-iteration steps at construction (one-time, like drawing fa's B)
DERIV_FLOOR = 1e-6  # floor of f' in propagation=linearized


def recirculation_step(P: torch.Tensor, v: torch.Tensor, u: torch.Tensor, v_hat: torch.Tensor,
                       eta: torch.Tensor | float, lam: torch.Tensor | float) -> torch.Tensor:
    """One recirculation update of P = Q_lᵀ (W_l's shape), returned as a new tensor; rows of v, u, v̂
    are samples. Q ← Q + η[(v − v̂)uᵀ/n − λQ], i.e. P ← (1 − ηλ) P + (η/n) uᵀ(v − v̂): it uses only
    v, u, v̂ and Q. (Out of place: the cost meter counts out-of-place elementwise ops.)"""
    n = v.shape[0]
    grad = u.t() @ (v - v_hat)
    return P * (1 - eta * lam) + grad * (eta / n)


def damped_pinv_t(W: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """(W_lᵀ (W_l W_lᵀ + λI)⁻¹)ᵀ = U diag(s / (s² + λ)) Vᵀ for W = U diag(s) Vᵀ (W's shape)."""
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    return (U * (s / (s * s + lam))) @ Vh


@register_algorithm
class ReciprocalFeedback(Algorithm):
    name = "rfl"
    description = "reciprocal feedback: learned damped-pseudoinverse feedback (recirculation), Newton-like credit"
    reference = ("Hinton & McClelland 1988 (recirculation); Podlaski & Machens 2020, arXiv:2006.06438; "
                 "Hildebrandt & Graves 1927, Trans. AMS 29:127")
    capabilities = Capabilities(layers=frozenset({"linear"}), activations=frozenset({"tanh", "leaky-relu", "linear"}),
                                needs_invertible=True)

    class Params(HParams):
        feedback: Literal["recirculation", "newton_schulz", "exact"] = hp(
            "recirculation", "how Q_l is learned: local recirculation rule, Newton–Schulz (non-local) or exact SVD")
        schedule: Literal["concurrent", "sleep_wake"] = hp(
            "concurrent", "concurrent: feedback_iters before every update; sleep_wake: feedback_iters before the "
            "first and every sleep_every-th update", search=choice("concurrent", "sleep_wake"))
        feedback_iters: int = hp(1, "feedback iterations per phase (k per update, or K per sleep); "
                                 "exact does one SVD per phase", ge=1, le=100000, search=randint(1, 20))
        sleep_every: int = hp(100, "S: forward updates between sleep phases (schedule=sleep_wake only)",
                              ge=1, le=10**7, search=choice(10, 30, 100, 300))
        noise_batch: int = hp(64, "n: noise samples per recirculation iteration", ge=1, le=65536,
                              search=choice(16, 32, 64, 128, 256))
        eta_q: float = hp(0.5, "recirculation step: η_Q itself (fixed) or η_Q·(σ̂_max² + λ) (normalized; stable "
                          "below 2)", gt=0, le=100, search=uniform(0.1, 1.5))
        eta_q_mode: Literal["normalized", "fixed"] = hp(
            "normalized", "normalized: η_Q = eta_q / (σ̂_max(W_l)² + λ) with a warm-started power-iteration σ̂; "
            "fixed: η_Q = eta_q")
        eta_q_decay: float = hp(0.0, "harmonic step decay within each feedback phase: η_i = η_Q / (1 + eta_q_decay·i)",
                                ge=0, le=1e6)
        polyak: float = hp(0.99, "Polyak (exponential) averaging of Q for credit: Q̄ ← polyak·Q̄ + (1−polyak)·Q "
                           "after every iteration; 0 = off", ge=0, lt=1, search=choice(0.0, 0.9, 0.99))
        damping: float = hp(0.1, "λ: absolute, or relative to σ̂_max(W_l)² (damping_mode)", ge=0, le=1e6,
                            search=loguniform(1e-3, 1.0))
        damping_mode: Literal["relative", "absolute"] = hp("relative", "λ = damping·σ̂_max² (relative) or damping")
        init_scale: float = hp(1.0, "initial Q_l = init_scale · W_lᵀ / (σ̂_max² + λ) (0: Q = 0); recirculation only",
                               ge=0, le=1.9)
        beta: float = hp(0.1, "β: output displacement δa_L = −β e (changes the update only for "
                         "propagation=inverse; chain and linearized are linear in δa_L)", gt=0, le=100,
                         search=loguniform(0.01, 1.0))
        propagation: Literal["chain", "inverse", "linearized"] = hp(
            "chain", "how Δh_{l-1} crosses the nonlinearity: ⊙f' (chain), f⁻¹ of the target (inverse) or ÷f'")

    def plausibility(self):
        hp_ = self.hp
        phases = "sleep_wake" if hp_.schedule == "sleep_wake" else "two"
        if hp_.feedback != "recirculation":
            return Plausibility(weight_transport=True, local=False, phases=phases, feedback_learning=False,
                                notes=f"{hp_.feedback} oracle: Q computed from W itself")
        return Plausibility(weight_transport=True, local=True, phases=phases, feedback_learning=True,
                            notes="recirculation; power iteration on W and init from Wᵀ read W")

    # ------------------------------------------------------------------ state
    def setup(self):
        hp_ = self.hp
        ws = [layer.weight.detach() for layer in self.net.layers[1:]]
        self.updates = 0  # forward updates made by step()
        self.fb_iters = 0  # feedback iterations run (all layers at once count as one)
        self.primed = False
        self.p = [self._unit(torch.randn(1, w.shape[1], generator=self.gen, device=w.device, dtype=w.dtype))
                  for w in ws]
        self.s2 = [torch.zeros((), device=w.device, dtype=w.dtype) for w in ws]
        with torch.no_grad():
            for i in range(len(ws)):
                for _ in range(POWER_WARMUP):
                    self._power_step(i)
            if hp_.feedback == "exact":
                self.P = [self._exact(i) for i in range(len(ws))]
            elif hp_.feedback == "newton_schulz":
                self.Y = [torch.eye(w.shape[0], device=w.device, dtype=w.dtype) / (self.s2[i] + self._lam(i))
                          for i, w in enumerate(ws)]
                self.P = [self.Y[i].t() @ w for i, w in enumerate(ws)]
            else:
                self.P = [w * (hp_.init_scale / (self.s2[i] + self._lam(i))) for i, w in enumerate(ws)]
        self.Pbar = [p.clone() for p in self.P] if hp_.polyak > 0 else None

    @staticmethod
    def _unit(p):
        return p / p.norm()

    def _power_step(self, i: int) -> None:
        """One warm-started power-iteration step on W_lᵀW_l: σ̂² = ‖W p‖², p ← Wᵀ W p / ‖·‖."""
        w = self.net.layers[i + 1].weight.detach()
        q = self.p[i] @ w.t()
        self.s2[i] = (q * q).sum()
        self.p[i] = self._unit(q @ w)

    def _lam(self, i: int):
        return self.hp.damping * self.s2[i] if self.hp.damping_mode == "relative" else self.hp.damping

    def _exact(self, i: int) -> torch.Tensor:
        w = self.net.layers[i + 1].weight.detach()
        if self.hp.damping_mode == "relative":
            self.s2[i] = torch.linalg.matrix_norm(w, 2) ** 2
        return damped_pinv_t(w, self._lam(i))

    @property
    def feedback_for_credit(self) -> list[torch.Tensor]:
        """Q_lᵀ used by the credit pass (Polyak average if enabled), one per layer l ≥ 2."""
        return self.Pbar if self.Pbar is not None else self.P

    # ------------------------------------------------------------------ feedback learning
    def _needs_sigma(self) -> bool:
        return self.hp.eta_q_mode == "normalized" or self.hp.damping_mode == "relative"

    @torch.no_grad()
    def _recirculate(self, i: int, it: int) -> None:
        hp_ = self.hp
        w = self.net.layers[i + 1].weight.detach()
        if self._needs_sigma():
            self._power_step(i)
        lam = self._lam(i)
        eta = hp_.eta_q / (self.s2[i] + lam) if hp_.eta_q_mode == "normalized" else hp_.eta_q
        if hp_.eta_q_decay > 0:
            eta = eta / (1 + hp_.eta_q_decay * it)
        v = torch.randn(hp_.noise_batch, w.shape[1], generator=self.gen, device=w.device, dtype=w.dtype)
        u = v @ w.t()
        v_hat = u @ self.P[i]
        self.P[i] = recirculation_step(self.P[i], v, u, v_hat, eta, lam)

    @torch.no_grad()
    def _newton_schulz(self, i: int) -> None:
        w = self.net.layers[i + 1].weight.detach()
        if self.hp.damping_mode == "relative":
            self._power_step(i)
        m = w @ w.t() + self._lam(i) * torch.eye(w.shape[0], device=w.device, dtype=w.dtype)
        y = self.Y[i]
        self.Y[i] = 2 * y - y @ (m @ y)
        self.P[i] = self.Y[i].t() @ w

    def feedback_phase(self, iters: int) -> None:
        """Run one feedback phase (forward weights untouched): ``iters`` iterations, or one SVD for exact."""
        with self.phase("feedback"):
            self._feedback_iterations(iters)

    @torch.no_grad()
    def _feedback_iterations(self, iters: int) -> None:
        n_layers = len(self.P)
        if self.hp.feedback == "exact":
            self.P = [self._exact(i) for i in range(n_layers)]
            if self.Pbar is not None:
                self.Pbar = [torch.lerp(pb, p, 1 - self.hp.polyak) for pb, p in zip(self.Pbar, self.P)]
            self.fb_iters += 1
            return
        for it in range(iters):
            for i in range(n_layers):
                if self.hp.feedback == "newton_schulz":
                    self._newton_schulz(i)
                else:
                    self._recirculate(i, it)
                if self.Pbar is not None:
                    self.Pbar[i] = torch.lerp(self.Pbar[i], self.P[i], 1 - self.hp.polyak)
            self.fb_iters += 1

    def _prime(self, run) -> None:
        if self.hp.schedule == "sleep_wake":
            run(self.hp.feedback_iters)
        self.primed = True

    def pretrain(self, data, batch_size):
        """The sleep phase before the first update (schedule=sleep_wake). The trainer counts all
        pre-training FLOPs as feedback work itself, outside any update, so no phase is marked here."""
        if not self.primed:
            self._prime(self._feedback_iterations)

    def step(self, x, y):
        if not self.primed:  # used without the trainer's pretrain()
            self._prime(self.feedback_phase)
        if self.hp.schedule == "concurrent":
            self.feedback_phase(self.hp.feedback_iters)
        elif self.updates > 0 and self.updates % self.hp.sleep_every == 0:
            self.feedback_phase(self.hp.feedback_iters)
        out = self.compute_update(x, y)
        self.updates += 1
        return out

    def flop_period(self):
        return self.hp.sleep_every if self.hp.schedule == "sleep_wake" else 1

    # ------------------------------------------------------------------ credit
    def _carry(self, j: int, s: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Normalised target displacement s = Δh_j / (−β) at layer j's output → g_j = δa_j / (−β)."""
        act, prop = self.net.layers[j].act, self.hp.propagation
        if prop == "chain":
            return act.backward(s, a, h)
        if prop == "linearized":
            return s / act.deriv(a, h).clamp_min(DERIV_FLOOR)
        beta = self.hp.beta
        return (act.inverse(act.clip(h - beta * s)) - a) / (-beta)

    def _credit(self, fw, e: torch.Tensor, feedback: list[torch.Tensor], *, set_grads: bool):
        """Returns the normalised displacement s_1 = Δh_1 / (−β) at the first hidden output."""
        layers = self.net.layers
        g, s_first = e, None
        for l in range(len(layers) - 1, -1, -1):
            s, gw, gb = layers[l].backward(g, fw.h[l], feedback[l - 1] if l > 0 else None)
            if set_grads:
                set_grad(layers[l].weight, gw)
                set_grad(layers[l].bias, gb)
            if l > 0:
                if l == 1:
                    s_first = s
                g = self._carry(l - 1, s, fw.a[l - 1], fw.h[l])
        return s_first

    @torch.no_grad()
    def compute_update(self, x, y):
        with self.phase("forward"):
            fw = self.net.forward_all(x)
            loss, e = output_error(fw.logits, y)
        with self.phase("credit"):
            self._credit(fw, e, self.feedback_for_credit, set_grads=True)
        return StepOutput(loss, fw.logits)

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def pinv_residuals(self) -> list[float]:
        out = []
        for i, p in enumerate(self.feedback_for_credit):
            w = self.net.layers[i + 1].weight.detach()
            lam = self._lam(i)
            m = w @ w.t()
            m.diagonal().add_(lam)
            out.append(((m @ p - w).norm() / w.norm()).item())  # ‖Q(WWᵀ+λI) − Wᵀ‖ / ‖Wᵀ‖, transposed
        return out

    def contraction(self, x, y) -> float:
        """ρ = ‖δa_L − J Δh_1‖ / ‖δa_L‖, J = ∂a_L/∂h_1 by a JVP, on (x, y)."""
        with torch.no_grad():
            fw = self.net.forward_all(x)
            _, e = output_error(fw.logits, y)
            s1 = self._credit(fw, e, self.feedback_for_credit, set_grads=False)
        beta = self.hp.beta
        top = self.net.layers[1:]

        def upper(h):
            for layer in top:
                h = layer.act(layer.pre(h))
            return h

        with torch.no_grad(), warnings.catch_warnings():
            # torch's forward-AD decompositions still call the deprecated torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            _, jdh = torch.func.jvp(upper, (fw.h[1],), (-beta * s1,))
            da = -beta * e
            return ((da - jdh).norm() / da.norm()).item()

    @torch.no_grad()
    def gauss_newton_update(self, x, y) -> list[torch.Tensor]:
        """Weight directions with each hidden output's target set to the damped minimum-norm
        network-level target J_lᵀ(J_lJ_lᵀ + λ_l I)⁻¹ δa_L (per example), carried by ``propagation``."""
        layers = self.net.layers
        fw = self.net.forward_all(x)
        _, e = output_error(fw.logits, y)
        n, k = e.shape
        L = len(layers)
        grads: list[torch.Tensor] = [None] * L
        grads[L - 1] = e.t() @ fw.h[L - 1].flatten(1)
        jac = torch.eye(k, device=e.device, dtype=e.dtype).expand(n, k, k)  # ∂a_L/∂a_{L}
        for l in range(L - 1, 0, -1):
            jac = jac @ layers[l].weight  # ∂a_L/∂h_l-ish: (n, k, d of layer l-1 output)
            gram = jac @ jac.transpose(1, 2)
            if self.hp.damping_mode == "relative":
                lam = self.hp.damping * torch.linalg.eigvalsh(gram)[:, -1]
            else:
                lam = torch.full((n,), self.hp.damping, device=e.device, dtype=e.dtype)
            gram = gram + lam[:, None, None] * torch.eye(k, device=e.device, dtype=e.dtype)
            s = (jac.transpose(1, 2) @ torch.linalg.solve(gram, e.unsqueeze(2))).squeeze(2)
            g = self._carry(l - 1, s, fw.a[l - 1], fw.h[l])
            grads[l - 1] = g.t() @ fw.h[l - 1].flatten(1)
            jac = jac * layers[l - 1].act.deriv(fw.a[l - 1], fw.h[l]).unsqueeze(1)
        return grads

    def diagnostics(self, x, y):
        res = self.pinv_residuals()
        out = {f"pinv_residual_l{i + 2}": r for i, r in enumerate(res)}
        out["pinv_residual"] = max(res)
        out["contraction"] = self.contraction(x, y)
        bp = bp_gradients(self.net, x, y)
        gn = self.gauss_newton_update(x, y)
        self.compute_update(x, y)
        mine = [layer.weight.grad for layer in self.net.layers]
        out["angle_bp"] = angle_degrees(torch.cat([m.flatten() for m in mine]), torch.cat([b.flatten() for b in bp]))
        out["angle_gn"] = angle_degrees(torch.cat([m.flatten() for m in mine]), torch.cat([g.flatten() for g in gn]))
        for i, (m, g) in enumerate(zip(mine, gn)):
            out[f"angle_gn_l{i + 1}"] = angle_degrees(m, g)
        out["feedback_iters_per_update"] = self.fb_iters / max(self.updates, 1)
        return out

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self):
        st = {"P": [p.clone() for p in self.P], "p": [p.clone() for p in self.p], "s2": [s.clone() for s in self.s2],
              "updates": self.updates, "fb_iters": self.fb_iters, "primed": self.primed}
        if self.Pbar is not None:
            st["Pbar"] = [p.clone() for p in self.Pbar]
        if self.hp.feedback == "newton_schulz":
            st["Y"] = [y.clone() for y in self.Y]
        return st

    def load_extra_state(self, state):
        dev = self.device
        self.P = [p.to(dev) for p in state["P"]]
        self.p = [p.to(dev) for p in state["p"]]
        self.s2 = [s.to(dev) for s in state["s2"]]
        self.updates, self.fb_iters, self.primed = state["updates"], state["fb_iters"], state["primed"]
        if self.Pbar is not None:
            self.Pbar = [p.to(dev) for p in state["Pbar"]]
        if self.hp.feedback == "newton_schulz":
            self.Y = [y.to(dev) for y in state["Y"]]

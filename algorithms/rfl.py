"""rfl — reciprocal feedback: learned damped-pseudoinverse feedback in bp's structure.

Feedback by recirculation: Hinton & McClelland 1988 (NIPS, "Learning representations by
recirculation"); the pseudoinverse as the feedback that turns output displacements into layer
targets: Podlaski & Machens 2020 (arXiv:2006.06438); convergence of a Newton-like iteration with an
approximate inverse: Hildebrandt & Graves 1927 (Trans. AMS 29:127).

Notation, one index convention throughout: layers j = 0 .. L−1 (0-based, as ``net.layers``),
a_j = W_j h_j + b_j with h_j the layer's input (``fw.h[j]``, ``fw.a[j]``); every layer j ≥ 1 has
feedback Q_j (shape d_in×d_out of W_j), kept transposed as ``Qt[j]`` with W_j's shape, so that
Q_j = W_jᵀ is literally ``Qt[j] = W_j`` (as fa's B). Only the names of per-layer diagnostics number
layers from 1 (``pinv_residual_l{j+1}``), as every per-layer column of the harness does (``angle_l1``).
State names: ``Qt`` (Q_jᵀ), ``Qt_avg`` (its Polyak average), ``sigma_max_sq`` (σ̂_max(W_j)²),
``power_vec`` (the power iteration's vector), ``Y`` (Newton–Schulz's (W_jW_jᵀ + λI)⁻¹ estimate).

1. Feedback learning (``feedback``):

   recirculation (local)   v ~ N(0, I) (n samples),  u = W_j v,  v̂ = Q_j u,
                           ΔQ_j = η [ (v − v̂) uᵀ / n − λ Q_j ]
       Its mean fixed point is the damped pseudoinverse Q_j* = W_jᵀ (W_j W_jᵀ + λI)⁻¹, which tends to
       the Moore–Penrose W_j⁺ as λ → 0; started from Q = 0 the iterates stay in the row space that
       gives the minimum-norm solution. Stable for η < 2 / (σ_max(W_j)² + λ). The noise scale is 1
       (N(0, σ²I) is the same rule with η and λ rescaled). ``eta_q_mode=normalized``: η = eta_q /
       (σ̂² + λ); ``damping_mode=relative``: λ = damping · σ̂². σ̂² = σ_max(W_j)² is estimated
       (``sigma_source``) either from what the pathway itself sees — a warm-started power iteration
       on the covariance of its samples u, r ← Σ_n u (uᵀ r) / n normalised, σ̂² ← EMA of
       Σ_n (uᵀ r)² / n (``noise``, local) — or by power iteration on W_jᵀ W_j (``power``: reads Wᵀ,
       declared as weight transport). Options that lower the noise floor: ``noise_batch``, a harmonic
       step decay within a phase (η_i = η / (1 + eta_q_decay · i)) and Polyak averaging of the Q used
       for credit (Q̄ ← polyak · Q̄ + (1 − polyak) · Q after every iteration). Q starts at
       ``init_scale`` · W_jᵀ / (σ̂² + λ): 0 by default; > 0 copies Wᵀ (weight transport, declared).
   newton_schulz (non-local baseline)   Y ← Y (2I − M Y) on M = W_j W_jᵀ + λI, Q_j = W_jᵀ Y,
       from Y = I / (σ̂² + λ) (σ̂² by power iteration on W); converges to the same Q_j*.
   exact (oracle)   Q_j* = V diag(s / (s² + λ)) Uᵀ from one SVD of W_j = U diag(s) Vᵀ per phase
       (relative λ from the same s_max); counted with the LAPACK formula (``harness.cost.svd_flops``).
   The oracles give the exact damped pseudoinverse of the W they credit (no averaging).

2. Schedule: ``sleep_wake`` — K = ``feedback_iters`` iterations before the first update and before
   every S-th update (S = ``sleep_every``), forward weights frozen; ``concurrent`` — k =
   ``feedback_iters`` iterations before every update, warm-started from the previous Q.

3. Credit. Output displacement δa_{L−1} = −β n e (β per example, as tp/dtp: n e is the per-example
   output error, e = ∂L/∂a of the mean loss); the target displacement of layer j's input is
   Δh_j = Q_j δa_j, carried through the nonlinearity of layer j−1 by ``propagation``:
       chain       δa_{j−1} = Δh_j ⊙ f'(a_{j−1})
       inverse     δa_{j−1} = f⁻¹(clip(h_j + Δh_j)) − a_{j−1}
       linearized  δa_{j−1} = Δh_j / f'(a_{j−1})     (f' floored at 1e-6)
   Pseudo-gradient ∇W_j = −δa_j h_jᵀ / (β n), ∇b_j = −Σ δa_j / (β n). ``chain`` and ``linearized``
   are linear in δa, so β cancels and they are computed on g_j = −δa_j / (β n) directly.

   What ``chain`` is: damped-pseudoinverse *feedback* with bp's structure — with Q_j = W_jᵀ it is
   bp bit for bit. It is not a Newton step: on square hidden layers a strongly damped Q is far from
   W_j⁺ (see the README's rfl section for measured angles). The Newton-like (Hildebrandt–Graves)
   reading — the product of layer pseudoinverses as an approximate right-inverse of the network
   Jacobian, converging when ‖I − J A‖ < 1 — applies to ``inverse`` and ``linearized``.

Diagnostics (probe batch, per epoch): pseudoinverse residual ‖Q_j(W_j W_jᵀ + λI) − W_jᵀ‖_F / ‖W_jᵀ‖_F
per layer (``pinv_residual`` = max); the angle of Q_j to W_j⁺ (Moore–Penrose) and to W_jᵀ; the
contraction ρ = ‖δa − J Δh_1‖ / ‖δa‖ (J = ∂a_{L−1}/∂h_1 by a JVP); angles of the update to bp's
gradient and to the Gauss–Newton direction; feedback iterations per update and the age of Q
(updates since the last feedback phase).
"""

from __future__ import annotations

from typing import Literal

import torch

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput, output_error, set_grad
from harness.hparams import HParams, choice, hp, loguniform, randint, uniform
from harness.metrics import angle_degrees, bp_gradients, contraction, gauss_newton_directions, layers_above
from harness.registry import register_algorithm

POWER_WARMUP = 20  # σ̂ estimation steps before the first feedback phase (counted as feedback work)
SIGMA_EMA = 0.9  # smoothing of the noise-based estimate of σ_max²
DERIV_FLOOR = 1e-6  # floor of f' in propagation=linearized

RECIRCULATION = {"feedback": ("recirculation",)}
NEEDS_SIGMA = [{**RECIRCULATION, "eta_q_mode": ("normalized",)}, {**RECIRCULATION, "damping_mode": ("relative",)}]


def recirculation_step(Qt: torch.Tensor, v: torch.Tensor, u: torch.Tensor, v_hat: torch.Tensor,
                       eta: torch.Tensor | float, lam: torch.Tensor | float) -> torch.Tensor:
    """One recirculation update of Qt = Q_jᵀ (W_j's shape), returned as a new tensor; rows of v, u, v̂
    are samples. Q ← Q + η[(v − v̂)uᵀ/n − λQ], i.e. Qt ← (1 − ηλ) Qt + (η/n) uᵀ(v − v̂): it uses only
    v, u, v̂ and Q. (Out of place: the cost meter counts out-of-place elementwise ops.)"""
    n = v.shape[0]
    grad = u.t() @ (v - v_hat)
    return Qt * (1 - eta * lam) + grad * (eta / n)


def damped_pinv_t(W: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """(W_jᵀ (W_j W_jᵀ + λI)⁻¹)ᵀ = U diag(s / (s² + λ)) Vᵀ for W = U diag(s) Vᵀ (W's shape)."""
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    return (U * (s / (s * s + lam))) @ Vh


def pinv_residual(qt: torch.Tensor, w: torch.Tensor, lam: torch.Tensor | float) -> float:
    """‖Q(WWᵀ + λI) − Wᵀ‖_F / ‖Wᵀ‖_F for Qt = Qᵀ (W's shape), computed transposed: how far Q is from
    solving the damped pseudoinverse's equation (0 at Q* = Wᵀ(WWᵀ + λI)⁻¹). Shared with dinv."""
    m = w @ w.t()
    m.diagonal().add_(lam)
    return ((m @ qt - w).norm() / w.norm()).item()


def pinv_angles(qt: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """(∠(Q, W⁺), ∠(Q, Wᵀ)) in degrees, for Qt = Qᵀ (W's shape); W⁺ is Moore–Penrose. Shared with dinv."""
    return angle_degrees(qt, torch.linalg.pinv(w).t()), angle_degrees(qt, w)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def _copy(state):
    """A deep copy of nested dicts of tensors and plain values (a checkpoint snapshot)."""
    if isinstance(state, dict):
        return {k: _copy(v) for k, v in state.items()}
    return state.clone() if isinstance(state, torch.Tensor) else state


# =========================================================================== feedback learners
class FeedbackLearner:
    """Holds Q_jᵀ (``Qt[j]``, j ≥ 1) and σ̂_max(W_j)² (``sigma_max_sq[j]``); learns them from W.

    ``learned``: Q is learned by the pathway from its own signals (else an oracle computes it from W)."""

    learned = False

    def __init__(self, net, hp_, gen: torch.Generator):
        self.net, self.hp, self.gen = net, hp_, gen
        self.layers = list(range(1, len(net.layers)))
        self.Qt = {j: torch.zeros_like(self.W(j)) for j in self.layers}
        self.sigma_max_sq = {j: torch.zeros((), device=self.W(j).device, dtype=self.W(j).dtype) for j in self.layers}

    def W(self, j: int) -> torch.Tensor:
        return self.net.layers[j].weight.detach()

    def lam(self, j: int):
        return self.hp.damping * self.sigma_max_sq[j] if self.hp.damping_mode == "relative" else self.hp.damping

    @property
    def credit_Qt(self) -> dict[int, torch.Tensor]:
        """The Qt the credit pass uses."""
        return self.Qt

    def prime(self) -> None:
        """Initial state, before the first feedback phase."""

    def run(self, iters: int) -> int:
        """One feedback phase; returns the feedback iterations it counts."""
        for it in range(iters):
            for j in self.layers:
                self.iterate(j, it)
        return iters

    def iterate(self, j: int, it: int) -> None:
        raise NotImplementedError

    @staticmethod
    def weight_reads(hp_) -> list[tuple[str, bool]]:
        """What a learned pathway reads of W in this configuration (weight transport): (what, whether
        that also makes the rule non-local)."""
        return []

    def state(self) -> dict:
        return {"Qt": dict(self.Qt), "sigma_max_sq": dict(self.sigma_max_sq)}

    def load(self, state: dict, device) -> None:
        self.Qt = {j: t.to(device) for j, t in state["Qt"].items()}
        self.sigma_max_sq = {j: t.to(device) for j, t in state["sigma_max_sq"].items()}


class WeightPowerIteration:
    """σ̂² by a warm-started power iteration on W_jᵀ W_j (reads Wᵀ: weight transport)."""

    def _init_power(self):
        self.power_vec = {j: _unit(torch.randn(1, self.W(j).shape[1], generator=self.gen, device=self.W(j).device,
                                               dtype=self.W(j).dtype)) for j in self.layers}

    def power_step(self, j: int) -> None:
        """σ̂² = ‖W r‖², r ← Wᵀ W r / ‖·‖ (r: ``power_vec[j]``)."""
        w = self.W(j)
        q = self.power_vec[j] @ w.t()
        self.sigma_max_sq[j] = (q * q).sum()
        self.power_vec[j] = _unit(q @ w)


class Recirculation(FeedbackLearner, WeightPowerIteration):
    learned = True

    @staticmethod
    def weight_reads(hp_):
        reads = []
        if hp_.init_scale > 0:
            reads.append(("Q initialised from Wᵀ", False))
        if hp_.sigma_source == "power" and (hp_.eta_q_mode == "normalized" or hp_.damping_mode == "relative"):
            reads.append(("σ_max by power iteration on WᵀW", True))
        return reads

    def __init__(self, net, hp_, gen):
        super().__init__(net, hp_, gen)
        self.needs_sigma = hp_.eta_q_mode == "normalized" or hp_.damping_mode == "relative"
        if hp_.sigma_source == "power":
            self._init_power()
        else:  # the power vector lives in the output space of W_j, where the pathway sees u
            self.power_vec = {j: _unit(torch.randn(self.W(j).shape[0], generator=self.gen, device=self.W(j).device,
                                                   dtype=self.W(j).dtype)) for j in self.layers}
        self.sigma_seen = {j: False for j in self.layers}
        self.Qt_avg = None

    @property
    def credit_Qt(self):
        return self.Qt_avg if self.Qt_avg is not None else self.Qt

    def _noise(self, j: int):
        w = self.W(j)
        v = torch.randn(self.hp.noise_batch, w.shape[1], generator=self.gen, device=w.device, dtype=w.dtype)
        return v, v @ w.t()

    def _sigma_from_samples(self, j: int, u: torch.Tensor) -> None:
        """One step of the power iteration on the covariance of u: σ̂² ← EMA of rᵀĈr, r ← Ĉr/‖Ĉr‖."""
        q = u @ self.power_vec[j]
        estimate = (q * q).sum() / u.shape[0]
        self.power_vec[j] = _unit(q @ u)
        self.sigma_max_sq[j] = (torch.lerp(self.sigma_max_sq[j], estimate, 1 - SIGMA_EMA) if self.sigma_seen[j]
                                else estimate)
        self.sigma_seen[j] = True

    def _update_sigma(self, j: int, u: torch.Tensor | None) -> None:
        if self.hp.sigma_source == "power":
            self.power_step(j)
        else:
            self._sigma_from_samples(j, u if u is not None else self._noise(j)[1])

    def prime(self):
        hp_ = self.hp
        if self.needs_sigma:
            for _ in range(POWER_WARMUP):
                for j in self.layers:
                    self._update_sigma(j, None)
        if hp_.init_scale > 0:  # a copy of Wᵀ (declared as weight transport), scaled by σ_max(W)² + λ
            for j in self.layers:
                if not self.needs_sigma:
                    self.sigma_max_sq[j] = torch.linalg.matrix_norm(self.W(j), 2) ** 2
                self.Qt[j] = self.W(j) * (hp_.init_scale / (self.sigma_max_sq[j] + self.lam(j)))
        if hp_.polyak > 0:
            self.Qt_avg = {j: q.clone() for j, q in self.Qt.items()}

    def iterate(self, j, it):
        hp_ = self.hp
        v, u = self._noise(j)
        if self.needs_sigma:
            self._update_sigma(j, u)
        lam = self.lam(j)
        eta = hp_.eta_q / (self.sigma_max_sq[j] + lam) if hp_.eta_q_mode == "normalized" else hp_.eta_q
        if hp_.eta_q_decay > 0:
            eta = eta / (1 + hp_.eta_q_decay * it)
        v_hat = u @ self.Qt[j]
        self.Qt[j] = recirculation_step(self.Qt[j], v, u, v_hat, eta, lam)
        if self.Qt_avg is not None:
            self.Qt_avg[j] = torch.lerp(self.Qt_avg[j], self.Qt[j], 1 - hp_.polyak)

    def state(self):
        st = {**super().state(), "power_vec": dict(self.power_vec), "sigma_seen": dict(self.sigma_seen)}
        if self.Qt_avg is not None:
            st["Qt_avg"] = dict(self.Qt_avg)
        return st

    def load(self, state, device):
        super().load(state, device)
        self.power_vec = {j: t.to(device) for j, t in state["power_vec"].items()}
        self.sigma_seen = dict(state["sigma_seen"])
        if "Qt_avg" in state:
            self.Qt_avg = {j: t.to(device) for j, t in state["Qt_avg"].items()}


class NewtonSchulz(FeedbackLearner, WeightPowerIteration):
    def __init__(self, net, hp_, gen):
        super().__init__(net, hp_, gen)
        self._init_power()
        self.Y: dict[int, torch.Tensor] = {}

    def _eye(self, j):
        w = self.W(j)
        return torch.eye(w.shape[0], device=w.device, dtype=w.dtype)

    def prime(self):
        for _ in range(POWER_WARMUP):
            for j in self.layers:
                self.power_step(j)
        for j in self.layers:
            self.Y[j] = self._eye(j) / (self.sigma_max_sq[j] + self.lam(j))
            self.Qt[j] = self.Y[j].t() @ self.W(j)

    def iterate(self, j, it):
        w = self.W(j)
        if self.hp.damping_mode == "relative":
            self.power_step(j)
        m = w @ w.t() + self.lam(j) * self._eye(j)
        y = self.Y[j]
        self.Y[j] = 2 * y - y @ (m @ y)
        self.Qt[j] = self.Y[j].t() @ w

    def state(self):
        return {**super().state(), "power_vec": dict(self.power_vec), "Y": dict(self.Y)}

    def load(self, state, device):
        super().load(state, device)
        self.power_vec = {j: t.to(device) for j, t in state["power_vec"].items()}
        self.Y = {j: t.to(device) for j, t in state["Y"].items()}


class ExactPinv(FeedbackLearner):
    def run(self, iters):
        """One SVD per layer per phase, whatever the iteration count."""
        for j in self.layers:
            w = self.W(j)
            U, s, Vh = torch.linalg.svd(w, full_matrices=False)
            self.sigma_max_sq[j] = s[0] * s[0]
            lam = self.lam(j)
            self.Qt[j] = (U * (s / (s * s + lam))) @ Vh
        return 1


LEARNERS = {"recirculation": Recirculation, "newton_schulz": NewtonSchulz, "exact": ExactPinv}


# =========================================================================== the algorithm
@register_algorithm
class ReciprocalFeedback(Algorithm):
    name = "rfl"
    version = 2
    description = ("reciprocal feedback: learned damped-pseudoinverse feedback (recirculation) in bp's structure; "
                   "propagation=inverse/linearized for the Newton-like variants")
    reference = ("Hinton & McClelland 1988 (recirculation); Podlaski & Machens 2020, arXiv:2006.06438; "
                 "Hildebrandt & Graves 1927, Trans. AMS 29:127")
    capabilities = Capabilities(layers=frozenset({"linear"}), activations=frozenset({"tanh", "leaky-relu", "linear"}),
                                needs_invertible=True)
    report_labels = {  # what the report shows for diagnostics() (harness.algorithm.Algorithm.report_labels)
        "pinv_residual": {"label": "pseudoinverse residual ‖Q(WWᵀ+λI) − Wᵀ‖/‖Wᵀ‖", "unit": "dimensionless"},
        "contraction": {"label": "contraction ρ = ‖δa_L − J δh_1‖/‖δa_L‖", "unit": "dimensionless"},
        "angle_bp": {"label": "angle of the update to the bp gradient (all layers)", "unit": "degrees"},
        "angle_gn": {"label": "angle of the update to the Gauss–Newton direction (all layers)", "unit": "degrees"},
        "angle_gn_l*": {"label": "angle of layer l's update to the Gauss–Newton direction", "unit": "degrees"},
        "angle_q_pinv_l*": {"label": "angle of Q_l to the pseudoinverse W_l⁺", "unit": "degrees"},
        "angle_q_wt_l*": {"label": "angle of Q_l to W_lᵀ", "unit": "degrees"},
        "feedback_age": {"label": "age of the feedback Q (updates since the last feedback phase)", "unit": "updates"},
        "feedback_iters_per_update": {"label": "feedback iterations per update", "unit": "iterations"},
        "pinv_residual_l*": {"label": "pseudoinverse residual of layer l", "unit": "dimensionless"},
    }

    class Params(HParams):
        feedback: Literal["recirculation", "newton_schulz", "exact"] = hp(
            "recirculation", "how Q_j is learned: local recirculation rule, Newton–Schulz (non-local) or exact SVD")
        schedule: Literal["concurrent", "sleep_wake"] = hp(
            "concurrent", "concurrent: feedback_iters before every update; sleep_wake: feedback_iters before the "
            "first and every sleep_every-th update", search=choice("concurrent", "sleep_wake"))
        feedback_iters: int = hp(1, "feedback iterations per phase (k per update, or K per sleep)", ge=1, le=100000,
                                 search=randint(1, 20), when={"feedback": ("recirculation", "newton_schulz")})
        sleep_every: int = hp(100, "S: forward updates between sleep phases", ge=1, le=10**7,
                              search=choice(10, 30, 100, 300), when={"schedule": ("sleep_wake",)})
        noise_batch: int = hp(64, "n: noise samples per recirculation iteration", ge=1, le=65536,
                              search=choice(16, 32, 64, 128, 256), when=RECIRCULATION)
        eta_q: float = hp(0.5, "recirculation step: η itself (fixed) or η·(σ̂_max² + λ) (normalized; stable below 2)",
                          gt=0, le=100, search=uniform(0.1, 1.5), when=RECIRCULATION)
        eta_q_mode: Literal["normalized", "fixed"] = hp(
            "normalized", "normalized: η = eta_q / (σ̂_max(W_j)² + λ); fixed: η = eta_q", when=RECIRCULATION)
        eta_q_decay: float = hp(0.0, "harmonic step decay within each feedback phase: η_i = η / (1 + eta_q_decay·i)",
                                ge=0, le=1e6, when=RECIRCULATION)
        polyak: float = hp(0.99, "Polyak (exponential) averaging of the Q used for credit: Q̄ ← polyak·Q̄ + "
                           "(1−polyak)·Q after every iteration; 0 = off", ge=0, lt=1, search=choice(0.0, 0.9, 0.99),
                           when=RECIRCULATION)
        sigma_source: Literal["noise", "power"] = hp(
            "noise", "σ̂_max(W_j)² from the covariance of the pathway's own samples u = W v (local) or by power "
            "iteration on WᵀW (weight transport)", when=NEEDS_SIGMA)
        init_scale: float = hp(0.0, "initial Q_j = init_scale · W_jᵀ / (σ̂_max² + λ); 0: Q = 0; > 0 copies Wᵀ "
                               "(weight transport)", ge=0, le=1.9, when=RECIRCULATION)
        damping: float = hp(0.1, "λ: absolute, or relative to σ̂_max(W_j)² (damping_mode)", ge=0, le=1e6,
                            search=loguniform(1e-3, 1.0))
        damping_mode: Literal["relative", "absolute"] = hp("relative", "λ = damping·σ̂_max² (relative) or damping")
        beta: float = hp(0.1, "β per example: output displacement δa = −β n e (acts only through f⁻¹ in "
                         "propagation=inverse; chain and linearized are linear in δa)", gt=0, le=100,
                         search=loguniform(0.01, 1.0), when={"propagation": ("inverse",)})
        propagation: Literal["chain", "inverse", "linearized"] = hp(
            "chain", "how Δh crosses the nonlinearity: ⊙f' (chain), f⁻¹ of the target (inverse) or ÷f'")

    # ------------------------------------------------------------------ plausibility
    def plausibility(self):
        hp_ = self.hp
        phases = "sleep_wake" if hp_.schedule == "sleep_wake" else "two"
        learner = LEARNERS[hp_.feedback]
        if not learner.learned:
            return Plausibility(weight_transport=True, local=False, phases=phases, feedback_learning=False,
                                notes=f"{hp_.feedback} oracle: Q computed from W itself")
        reads = learner.weight_reads(hp_)
        notes = "recirculation of noise through W (local rule)" + (
            ": " + "; ".join(what for what, _ in reads) if reads else "; σ_max from its own samples")
        transport = "none" if not reads else "values" if any(nonlocal_ for _, nonlocal_ in reads) else "init"
        return Plausibility(weight_transport=bool(reads), local=not any(nonlocal_ for _, nonlocal_ in reads),
                            phases=phases, feedback_learning=True, notes=notes, transport=transport)

    # ------------------------------------------------------------------ state
    def setup(self):
        self.learner = LEARNERS[self.hp.feedback](self.net, self.hp, self.gen)
        self.updates = 0  # forward updates made by step()
        self.fb_iters = 0  # feedback iterations run (all layers at once count as one)
        self.feedback_age = 0  # updates since the last feedback phase
        self.primed = False

    @property
    def feedback_for_credit(self) -> dict[int, torch.Tensor]:
        """Q_jᵀ used by the credit pass (the Polyak average if enabled), for every layer j ≥ 1."""
        return self.learner.credit_Qt

    def feedback_phase(self, iters: int) -> None:
        """Run one feedback phase (forward weights untouched): ``iters`` iterations, or one SVD for exact."""
        with self.phase("feedback"), torch.no_grad():
            self.fb_iters += self.learner.run(iters)
            self.feedback_age = 0

    def _prime(self) -> None:
        """σ̂ warm-up, initial Q and (sleep_wake) the sleep before the first update: feedback work, once."""
        if self.primed:
            return
        with self.phase("feedback"), torch.no_grad():
            self.learner.prime()
            if self.hp.schedule == "sleep_wake":
                self.fb_iters += self.learner.run(self.hp.feedback_iters)
        self.primed = True

    def pretrain(self, data, batch_size):
        """Prime the feedback pathway before the first update (the cost meter's pre-training)."""
        self._prime()

    def _sleeps_now(self) -> bool:
        return self.hp.schedule == "sleep_wake" and self.updates > 0 and self.updates % self.hp.sleep_every == 0

    def update_kind(self):
        if not self.primed:
            return "prime"
        if self.hp.schedule == "concurrent":
            return "update"
        return "sleep" if self._sleeps_now() else "wake"

    def update_mix(self):
        if self.hp.schedule == "concurrent":
            return {"update": 1.0}
        S = self.hp.sleep_every
        return {k: w for k, w in (("wake", (S - 1) / S), ("sleep", 1 / S)) if w > 0}

    def step(self, x, y):
        self._prime()  # here when stepped without pretrain() first (the update of kind "prime")
        if self.hp.schedule == "concurrent" or self._sleeps_now():
            self.feedback_phase(self.hp.feedback_iters)
        out = self.compute_update(x, y)
        self.updates += 1
        self.feedback_age += 1
        return out

    # ------------------------------------------------------------------ credit
    def _carry(self, j: int, s: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Normalised target displacement s = Δh / (−βn) at layer j's output → g_j = δa_j / (−βn)."""
        act, prop = self.net.layers[j].act, self.hp.propagation
        if prop == "chain":
            return act.backward(s, a, h)
        if prop == "linearized":
            return s / act.deriv(a, h).clamp_min(DERIV_FLOOR)
        step = self.hp.beta * s.shape[0]  # β n: β is per example
        return (act.inverse(act.clip(h - step * s)) - a) / (-step)

    def _credit(self, fw, e: torch.Tensor, Qt: dict[int, torch.Tensor], *, set_grads: bool) -> torch.Tensor:
        """Pseudo-gradients into ``.grad``; returns s_1 = Δh_1 / (−βn), the displacement of layer 1's input."""
        layers = self.net.layers
        g, s_first = e, None
        for j in range(len(layers) - 1, -1, -1):
            s, gw, gb = layers[j].backward(g, fw.h[j], Qt[j] if j > 0 else None)
            if set_grads:
                set_grad(layers[j].weight, gw)
                set_grad(layers[j].bias, gb)
            if j > 0:
                if j == 1:
                    s_first = s
                g = self._carry(j - 1, s, fw.a[j - 1], fw.h[j])
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
    def pinv_residuals(self) -> dict[int, float]:
        """‖Q_j(W_jW_jᵀ + λI) − W_jᵀ‖_F / ‖W_jᵀ‖_F per layer j ≥ 1 (computed transposed)."""
        return {j: pinv_residual(qt, self.learner.W(j), self.learner.lam(j))
                for j, qt in self.feedback_for_credit.items()}

    def contraction(self, x, y) -> float:
        """ρ = ‖δa − J Δh_1‖ / ‖δa‖, J = ∂a_{L−1}/∂h_1 (``harness.metrics.contraction``), on (x, y)."""
        with torch.no_grad():
            fw = self.net.forward_all(x)
            _, e = output_error(fw.logits, y)
            s1 = self._credit(fw, e, self.feedback_for_credit, set_grads=False)
        step = self.hp.beta * len(y)
        return contraction(layers_above(self.net, 1), fw.h[1], -step * s1, -step * e)

    def gauss_newton_update(self, x, y) -> list[torch.Tensor]:
        """Weight directions with each hidden layer's input target set to the damped minimum-norm
        network-level target, carried by ``propagation`` (``harness.metrics.gauss_newton_directions``)."""
        return gauss_newton_directions(self.net, x, y, damping=self.hp.damping,
                                       relative=self.hp.damping_mode == "relative", carry=self._carry)

    @torch.no_grad()
    def feedback_angles(self) -> dict[str, float]:
        """Per layer j ≥ 1 (named by its 1-based number l = j + 1): the angle of Q_j to the Moore–Penrose
        W_j⁺ and to W_jᵀ, in degrees."""
        out = {}
        for j, qt in self.feedback_for_credit.items():
            out[f"angle_q_pinv_l{j + 1}"], out[f"angle_q_wt_l{j + 1}"] = pinv_angles(qt, self.learner.W(j))
        return out

    def diagnostics(self, x, y):
        res = self.pinv_residuals()
        out = {f"pinv_residual_l{j + 1}": r for j, r in res.items()}
        out["pinv_residual"] = max(res.values())
        out.update(self.feedback_angles())
        out["contraction"] = self.contraction(x, y)
        bp = bp_gradients(self.net, x, y)
        gn = self.gauss_newton_update(x, y)
        self.compute_update(x, y)
        mine = [layer.weight.grad for layer in self.net.layers]
        out["angle_bp"] = angle_degrees(torch.cat([m.flatten() for m in mine]), torch.cat([b.flatten() for b in bp]))
        out["angle_gn"] = angle_degrees(torch.cat([m.flatten() for m in mine]), torch.cat([g.flatten() for g in gn]))
        for j, (m, g) in enumerate(zip(mine, gn)):
            out[f"angle_gn_l{j + 1}"] = angle_degrees(m, g)
        out["feedback_iters_per_update"] = self.fb_iters / max(self.updates, 1)
        out["feedback_age"] = float(self.feedback_age)
        return out

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self):
        return {"learner": _copy(self.learner.state()), "updates": self.updates, "fb_iters": self.fb_iters,
                "feedback_age": self.feedback_age, "primed": self.primed}

    def load_extra_state(self, state):
        self.learner.load(state["learner"], self.device)
        self.updates, self.fb_iters = state["updates"], state["fb_iters"]
        self.feedback_age, self.primed = state["feedback_age"], state["primed"]

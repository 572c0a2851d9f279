"""rfl's per-epoch diagnostics and feedback-learner checkpoints, each against an independent computation.

The diagnostics are recomputed here from the feedback matrices and the network's weights alone, with
numpy for the linear algebra and the layer equations written out (tanh: f' = 1 − h², f⁻¹ = atanh), so a
wrong key, a wrong layer number or a wrong term in ``algorithms/rfl.py`` fails.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from harness.metrics import gauss_newton_directions
from harness.networks import build_network
from harness.registry import get_algorithm

RFL = get_algorithm("rfl")
SHAPE, CLASSES = (5,), 4


def trained(opts: dict, steps: int = 4, spec: str = "mlp-3x6-tanh"):
    """An rfl algorithm on a float64 network after ``steps`` SGD updates, and a probe batch."""
    net = build_network(spec, SHAPE, CLASSES, generator=torch.Generator().manual_seed(0)).double()
    algo = RFL(net, opts, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    g = torch.Generator().manual_seed(7)
    for _ in range(steps):
        x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (16,), generator=g)
        algo.step(x, y)
        opt.step()
    x, y = torch.randn(24, 5, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (24,), generator=g)
    return net, algo, x, y


def angle(u: np.ndarray, v: np.ndarray) -> float:
    """The angle in degrees, by the half-angle formula (arccos loses the digits near 0)."""
    u, v = u.ravel() / np.linalg.norm(u), v.ravel() / np.linalg.norm(v)
    return math.degrees(2 * math.atan2(np.linalg.norm(u - v), np.linalg.norm(u + v)))


def credit_feedback(algo) -> dict[int, np.ndarray]:
    """Q_j (d_in × d_out) that the credit uses: recirculation's Polyak average when it keeps one."""
    qt = algo.learner.Qt_avg if getattr(algo.learner, "Qt_avg", None) is not None else algo.learner.Qt
    return {j: t.numpy().T for j, t in qt.items()}


def damping(algo, j: int) -> float:
    hp_ = algo.hp
    return hp_.damping * float(algo.learner.sigma_max_sq[j]) if hp_.damping_mode == "relative" else hp_.damping


def explicit_pass(net, algo, x, y):
    """The forward pass and rfl's credit written out: returns (h, a, e, Δh_1, weight grads)."""
    Ws = [layer.weight.detach().numpy() for layer in net.layers]
    bs = [layer.bias.detach().numpy() for layer in net.layers]
    h, a = [x.numpy()], []
    for j, (w, b) in enumerate(zip(Ws, bs)):
        a.append(h[-1] @ w.T + b)
        h.append(np.tanh(a[-1]) if j < len(Ws) - 1 else a[-1])
    logits = a[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(y)
    e = (p - np.eye(CLASSES)[y.numpy()]) / n
    beta, prop, Q = algo.hp.beta, algo.hp.propagation, credit_feedback(algo)
    L = len(Ws)
    da = {L - 1: -beta * n * e}
    dh1 = None
    for j in range(L - 1, 0, -1):
        dh = da[j] @ Q[j].T  # Δh_j = Q_j δa_j, rows are examples
        if j == 1:
            dh1 = dh
        fprime = 1 - h[j] ** 2
        if prop == "chain":
            da[j - 1] = dh * fprime
        elif prop == "linearized":
            da[j - 1] = dh / np.maximum(fprime, 1e-6)
        else:
            da[j - 1] = np.arctanh(np.clip(h[j] + dh, -1 + 1e-6, 1 - 1e-6)) - a[j - 1]
    grads = [-da[j].T @ h[j] / (beta * n) for j in range(L)]
    return h, a, e, dh1, grads


CONFIGS = [
    {},  # recirculation, relative damping, Polyak average, σ from its own samples
    {"polyak": 0.0, "damping_mode": "absolute", "damping": 0.05, "feedback_iters": 3},
    {"feedback": "newton_schulz", "feedback_iters": 2},
    {"feedback": "exact", "damping": 0.3},
    {"feedback": "exact", "propagation": "linearized"},
    {"feedback": "exact", "propagation": "inverse", "beta": 0.3},
    {"schedule": "sleep_wake", "sleep_every": 3, "feedback_iters": 5, "sigma_source": "power"},
]


@pytest.mark.parametrize("opts", CONFIGS)
def test_diagnostics_equal_an_independent_computation(opts):
    net, algo, x, y = trained(opts)
    got = algo.diagnostics(x, y)
    Ws = [layer.weight.detach().numpy() for layer in net.layers]
    Q = credit_feedback(algo)
    L = len(Ws)
    want = {}
    for j in range(1, L):
        w, lam = Ws[j], damping(algo, j)
        m = w @ w.T + lam * np.eye(w.shape[0])
        want[f"pinv_residual_l{j + 1}"] = np.linalg.norm(Q[j] @ m - w.T) / np.linalg.norm(w)
        want[f"angle_q_pinv_l{j + 1}"] = angle(Q[j], np.linalg.pinv(w))
        want[f"angle_q_wt_l{j + 1}"] = angle(Q[j], w.T)
    want["pinv_residual"] = max(want[f"pinv_residual_l{j + 1}"] for j in range(1, L))

    h, a, e, dh1, grads = explicit_pass(net, algo, x, y)
    Wt = [layer.weight.detach() for layer in net.layers]
    bt = [layer.bias.detach() for layer in net.layers]

    def above_h1(h1):  # h_1 → a_{L−1}, the layer equations written out
        out = h1
        for j in range(1, L):
            out = out @ Wt[j].t() + bt[j]
            out = torch.tanh(out) if j < L - 1 else out
        return out

    _, jdh = torch.autograd.functional.jvp(above_h1, torch.from_numpy(h[1]), torch.from_numpy(dh1))
    da = -algo.hp.beta * len(y) * e
    want["contraction"] = np.linalg.norm(da - jdh.numpy()) / np.linalg.norm(da)

    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        bp = [g.numpy() for g in torch.autograd.grad(loss, net.weights())]
    flat = np.concatenate([g.ravel() for g in grads])
    want["angle_bp"] = angle(flat, np.concatenate([g.ravel() for g in bp]))

    def carry(j, s, a_, h_):  # the propagation rule on s = Δh / (−βn), written out for tanh
        prop, step = algo.hp.propagation, algo.hp.beta * s.shape[0]
        if prop == "chain":
            return s * (1 - h_ * h_)
        if prop == "linearized":
            return s / (1 - h_ * h_).clamp_min(1e-6)
        return (torch.atanh((h_ - step * s).clamp(-1 + 1e-6, 1 - 1e-6)) - a_) / (-step)

    gn = [g.numpy() for g in gauss_newton_directions(net, x, y, damping=algo.hp.damping,
                                                      relative=algo.hp.damping_mode == "relative", carry=carry)]
    want["angle_gn"] = angle(flat, np.concatenate([g.ravel() for g in gn]))
    for j in range(L):
        want[f"angle_gn_l{j + 1}"] = angle(grads[j], gn[j])

    assert set(got) == set(want) | {"feedback_iters_per_update", "feedback_age"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-7, abs=1e-9), key


@pytest.mark.parametrize("opts, steps, per_update, age", [
    ({"feedback_iters": 3}, 4, 3.0, 1.0),                                   # k before each update
    ({"feedback_iters": 3}, 1, 3.0, 1.0),                                   # after the first update
    ({"schedule": "sleep_wake", "sleep_every": 3, "feedback_iters": 5}, 2, 5 / 2, 2.0),  # the first wake phase
    ({"feedback": "exact"}, 4, 1.0, 1.0),                                    # one SVD per phase
    ({"schedule": "sleep_wake", "sleep_every": 3, "feedback_iters": 5}, 4, 10 / 4, 1.0),  # sleeps before 1st, 4th
    ({"schedule": "sleep_wake", "sleep_every": 3, "feedback_iters": 5}, 6, 10 / 6, 3.0),
    ({"schedule": "sleep_wake", "sleep_every": 3, "feedback_iters": 5}, 7, 15 / 7, 1.0),
    ({"schedule": "sleep_wake", "sleep_every": 1, "feedback_iters": 2}, 3, 6 / 3, 1.0),  # a sleep per update
])
def test_feedback_iterations_per_update_and_age_count_the_schedule(opts, steps, per_update, age):
    _, algo, x, y = trained(opts, steps=steps)
    got = algo.diagnostics(x, y)
    assert got["feedback_iters_per_update"] == pytest.approx(per_update, rel=1e-12)
    assert got["feedback_age"] == age


@pytest.mark.parametrize("opts", [
    {"feedback": "newton_schulz", "feedback_iters": 2},
    {"feedback": "newton_schulz", "damping_mode": "absolute", "damping": 0.2},
    {"feedback": "exact"},
    {"sigma_source": "power", "init_scale": 0.5},
    {"polyak": 0.0, "eta_q_mode": "fixed", "damping_mode": "absolute", "eta_q": 0.1},
    {"schedule": "sleep_wake", "sleep_every": 2, "feedback_iters": 3},
])
def test_checkpoint_of_every_feedback_learner_resumes_bit_for_bit(opts):
    """extra_state through torch.save / torch.load(weights_only=True), into an algorithm built from another
    seed: continuing gives the same parameters and feedback as never stopping."""
    net, algo, _, _ = trained(opts, steps=3)
    buf = io.BytesIO()
    torch.save(algo.extra_state(), buf)
    net2 = copy.deepcopy(net)
    other = RFL(net2, opts, generator=torch.Generator().manual_seed(99))
    buf.seek(0)
    other.load_extra_state(torch.load(buf, weights_only=True))
    other.gen.set_state(algo.gen.get_state())
    g = torch.Generator().manual_seed(11)
    for _ in range(3):
        x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (16,), generator=g)
        for a, n in ((algo, net), (other, net2)):
            n.zero_grad()
            a.step(x, y)
            with torch.no_grad():
                for p in n.parameters():
                    p -= 0.2 * p.grad
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q)
    for j in algo.learner.Qt:
        assert torch.equal(algo.feedback_for_credit[j], other.feedback_for_credit[j])
    assert (algo.updates, algo.fb_iters, algo.feedback_age) == (other.updates, other.fb_iters, other.feedback_age)


# --------------------------------------------------------------------------- the feedback learners, replayed
POWER_WARMUP, SIGMA_EMA = 20, 0.9  # the documented constants (algorithms/rfl.py), restated


def unit(x):
    return x / x.norm()


def replay_recirculation(net, hp_: dict, seed: int, iters: int):
    """The recirculation learner written out from its equations, drawing the same random numbers in the
    same order (generator seeded as the algorithm's): σ̂ estimation, prime, then one phase of ``iters``."""
    g = torch.Generator().manual_seed(seed)
    Ws = {j: layer.weight.detach() for j, layer in enumerate(net.layers) if j >= 1}
    relative, normalized = hp_["damping_mode"] == "relative", hp_["eta_q_mode"] == "normalized"
    needs_sigma, power = normalized or relative, hp_["sigma_source"] == "power"
    if power:
        r = {j: unit(torch.randn(1, w.shape[1], generator=g, dtype=w.dtype)) for j, w in Ws.items()}
    else:
        r = {j: unit(torch.randn(w.shape[0], generator=g, dtype=w.dtype)) for j, w in Ws.items()}
    s2 = {j: torch.zeros((), dtype=w.dtype) for j, w in Ws.items()}
    seen = {j: False for j in Ws}

    def noise(j):
        v = torch.randn(hp_["noise_batch"], Ws[j].shape[1], generator=g, dtype=Ws[j].dtype)
        return v, v @ Ws[j].t()

    def sigma_step(j, u):
        if power:  # σ̂² = ‖W r‖², r ← WᵀW r / ‖·‖
            q = r[j] @ Ws[j].t()
            s2[j] = (q * q).sum()
            r[j] = unit(q @ Ws[j])
            return
        u = noise(j)[1] if u is None else u
        q = u @ r[j]
        est = (q * q).sum() / u.shape[0]
        r[j] = unit(q @ u)
        s2[j] = SIGMA_EMA * s2[j] + (1 - SIGMA_EMA) * est if seen[j] else est
        seen[j] = True

    def lam(j):
        return hp_["damping"] * s2[j] if relative else hp_["damping"]

    if needs_sigma:
        for _ in range(POWER_WARMUP):
            for j in Ws:
                sigma_step(j, None)
    Q = {j: torch.zeros_like(w) for j, w in Ws.items()}  # kept transposed (W's shape)
    if hp_["init_scale"] > 0:
        for j, w in Ws.items():
            if not needs_sigma:
                s2[j] = torch.linalg.svdvals(w)[0] ** 2
            Q[j] = w * hp_["init_scale"] / (s2[j] + lam(j))
    avg = {j: q.clone() for j, q in Q.items()} if hp_["polyak"] > 0 else None
    primed = {j: q.clone() for j, q in Q.items()}
    for it in range(iters):
        for j, w in Ws.items():
            v, u = noise(j)
            if needs_sigma:
                sigma_step(j, u)
            eta = hp_["eta_q"] / (s2[j] + lam(j)) if normalized else hp_["eta_q"]
            eta = eta / (1 + hp_["eta_q_decay"] * it)
            v_hat = u @ Q[j]  # rows: v̂ = Q u
            Q[j] = Q[j] + eta * ((v - v_hat).t() @ u).t() / v.shape[0] - eta * lam(j) * Q[j]
            if avg is not None:
                avg[j] = hp_["polyak"] * avg[j] + (1 - hp_["polyak"]) * Q[j]
    return primed, Q, avg, s2


@pytest.mark.parametrize("opts", [
    {"feedback_iters": 3},
    {"feedback_iters": 4, "eta_q_decay": 0.5, "polyak": 0.9},
    {"feedback_iters": 3, "polyak": 0.0, "eta_q_mode": "fixed", "eta_q": 0.05, "damping_mode": "absolute",
     "damping": 0.05},
    {"feedback_iters": 3, "eta_q_mode": "fixed", "eta_q": 0.05},  # relative damping alone needs σ̂
    {"feedback_iters": 2, "damping_mode": "absolute", "damping": 0.2},  # normalized step alone needs σ̂
    {"feedback_iters": 2, "sigma_source": "power", "init_scale": 0.5},
    {"feedback_iters": 2, "init_scale": 0.7, "eta_q_mode": "fixed", "eta_q": 0.05, "damping_mode": "absolute",
     "damping": 0.1, "polyak": 0.5},  # Q₀ scaled by the exact σ_max²
])
def test_recirculation_prime_and_phase_equal_their_equations_replayed(opts):
    net = build_network("mlp-3x6-tanh", SHAPE, CLASSES, generator=torch.Generator().manual_seed(0)).double()
    algo = RFL(net, opts, generator=torch.Generator().manual_seed(3))
    primed, Q, avg, s2 = replay_recirculation(net, algo.hp.model_dump(), 3, opts["feedback_iters"])
    algo.pretrain(None, 16)
    for j in Q:
        torch.testing.assert_close(algo.learner.Qt[j], primed[j], rtol=1e-12, atol=0)
    algo.feedback_phase(opts["feedback_iters"])
    for j in Q:
        torch.testing.assert_close(algo.learner.Qt[j], Q[j], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(algo.learner.sigma_max_sq[j], s2[j], rtol=1e-12, atol=0)
        if avg is None:
            assert algo.learner.Qt_avg is None and algo.feedback_for_credit[j] is algo.learner.Qt[j]
        else:
            torch.testing.assert_close(algo.feedback_for_credit[j], avg[j], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("opts", [{"feedback_iters": 3}, {"feedback_iters": 2, "damping_mode": "absolute",
                                                          "damping": 0.3}])
def test_newton_schulz_prime_and_phase_equal_their_equations_replayed(opts):
    """Y₀ = I/(σ̂² + λ) from 20 power steps on WᵀW; Y ← 2Y − Y M Y on M = WWᵀ + λI (σ̂ re-estimated
    each iteration under relative damping); Qᵀ = Yᵀ W."""
    net = build_network("mlp-3x6-tanh", SHAPE, CLASSES, generator=torch.Generator().manual_seed(0)).double()
    algo = RFL(net, {"feedback": "newton_schulz", **opts}, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    Ws = {j: layer.weight.detach() for j, layer in enumerate(net.layers) if j >= 1}
    r = {j: unit(torch.randn(1, w.shape[1], generator=g, dtype=w.dtype)) for j, w in Ws.items()}
    s2 = {}
    relative = algo.hp.damping_mode == "relative"

    def power(j):
        q = r[j] @ Ws[j].t()
        s2[j] = (q * q).sum()
        r[j] = unit(q @ Ws[j])

    for _ in range(POWER_WARMUP):
        for j in Ws:
            power(j)
    lam = lambda j: algo.hp.damping * s2[j] if relative else algo.hp.damping  # noqa: E731
    Y = {j: torch.eye(w.shape[0], dtype=w.dtype) / (s2[j] + lam(j)) for j, w in Ws.items()}
    algo.pretrain(None, 16)
    for j, w in Ws.items():
        torch.testing.assert_close(algo.learner.Qt[j], Y[j].t() @ w, rtol=1e-12, atol=0)
    for _ in range(opts["feedback_iters"]):
        for j, w in Ws.items():
            if relative:
                power(j)
            M = w @ w.t() + lam(j) * torch.eye(w.shape[0], dtype=w.dtype)
            Y[j] = 2 * Y[j] - Y[j] @ M @ Y[j]
    algo.feedback_phase(opts["feedback_iters"])
    for j, w in Ws.items():
        torch.testing.assert_close(algo.learner.Qt[j], Y[j].t() @ w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("opts, notes", [
    ({}, "recirculation of noise through W (local rule); σ_max from its own samples"),
    ({"init_scale": 1.0}, "recirculation of noise through W (local rule): Q initialised from Wᵀ"),
    ({"sigma_source": "power"}, "recirculation of noise through W (local rule): σ_max by power iteration on WᵀW"),
    ({"sigma_source": "power", "init_scale": 0.5, "eta_q_mode": "fixed"},
     "recirculation of noise through W (local rule): Q initialised from Wᵀ; σ_max by power iteration on WᵀW"),
    ({"sigma_source": "power", "damping_mode": "absolute"},
     "recirculation of noise through W (local rule): σ_max by power iteration on WᵀW"),
    ({"feedback": "exact"}, "exact oracle: Q computed from W itself"),
    ({"feedback": "newton_schulz"}, "newton_schulz oracle: Q computed from W itself"),
])
def test_plausibility_notes_name_every_read_of_w(opts, notes):
    net = build_network("mlp-2x8-tanh", SHAPE, CLASSES)
    p = RFL(net, opts).plausibility()
    assert p.notes == notes
    reads_w = "init_scale" in opts or "sigma_source" in opts or "feedback" in opts
    assert p.weight_transport is reads_w and p.local is ("sigma_source" not in opts and "feedback" not in opts)


@pytest.mark.parametrize("S, mix", [(1, {"sleep": 1.0}), (4, {"wake": 0.75, "sleep": 0.25}),
                                    (100, {"wake": 0.99, "sleep": 0.01})])
def test_sleep_wake_update_mix_is_one_sleep_per_period(S, mix):
    net = build_network("mlp-2x8-tanh", SHAPE, CLASSES)
    assert RFL(net, {"schedule": "sleep_wake", "sleep_every": S}).update_mix() == mix
    assert RFL(net, {}).update_mix() == {"update": 1.0}


def test_contraction_leaves_the_gradients_alone():
    """A diagnostic: it must not write the update it computes into .grad."""
    net, algo, x, y = trained({"feedback": "exact"}, steps=2)
    net.zero_grad(set_to_none=True)
    algo.contraction(x, y)
    assert all(p.grad is None for p in net.parameters())

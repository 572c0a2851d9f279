"""Tests that pin rfl's math (algorithms/rfl.py) and its plugin contract."""

from __future__ import annotations

import math

import pytest
import torch

from harness.algorithm import output_error
from harness.cost import flop_counter
from harness.errors import ConfigError, UnsupportedError
from harness.metrics import bp_gradients
from harness.networks import Identity, Linear, Network, Tanh, build_network, init_weights
from harness.registry import get_algorithm
from harness.train import Trainer

from algorithms.rfl import damped_pinv_t, recirculation_step

RFL = get_algorithm("rfl")


def two_layer(d_in: int, d_out: int, *, seed: int = 0, act=Tanh, sv: tuple[float, float] | None = None) -> Network:
    """5 → d_in → d_out; with ``sv``, W_2's singular values are spread evenly over [sv[0], sv[1]]."""
    net = Network("test", [Linear(5, d_in, act()), Linear(d_in, d_out, Identity())])
    g = torch.Generator().manual_seed(seed)
    init_weights(net, "glorot", g)
    if sv is not None:
        k = min(d_in, d_out)
        u, _ = torch.linalg.qr(torch.randn(d_out, k, generator=g))
        v, _ = torch.linalg.qr(torch.randn(d_in, k, generator=g))
        s = torch.linspace(sv[0], sv[1], k)
        with torch.no_grad():
            net.layers[1].weight.copy_((u * s) @ v.t())
    return net


def batch(n=32, d=5, k=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def damped_target(w: torch.Tensor, lam: float) -> torch.Tensor:
    """Q* = Wᵀ(WWᵀ + λI)⁻¹ by a plain solve (independent of the SVD used in the code)."""
    m = w @ w.t() + lam * torch.eye(w.shape[0], dtype=w.dtype)
    return torch.linalg.solve(m, w).t()  # (WWᵀ+λ)⁻¹W, transposed; M symmetric


# --------------------------------------------------------------------------- the local rule
def test_recirculation_rule_matches_formula_on_hand_made_tensors():
    g = torch.Generator().manual_seed(3)
    n, d_in, d_out = 5, 4, 3
    Q = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)  # math orientation
    v = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    u = torch.randn(n, d_out, generator=g, dtype=torch.float64)  # not W v: the rule sees only u
    v_hat = torch.randn(n, d_in, generator=g, dtype=torch.float64)  # not Q u: nor how v̂ was made
    eta, lam = 0.3, 0.07
    expected = Q.clone()
    outer = sum(torch.outer(v[i] - v_hat[i], u[i]) for i in range(n))
    expected += eta * (outer / n - lam * Q)
    P = recirculation_step(Q.t().clone(), v, u, v_hat, eta, lam)
    torch.testing.assert_close(P.t(), expected, rtol=1e-12, atol=1e-12)


def test_damped_pinv_oracle_matches_solve():
    w = torch.randn(6, 9, dtype=torch.float64)
    torch.testing.assert_close(damped_pinv_t(w, 0.3).t(), damped_target(w, 0.3))


# --------------------------------------------------------------------------- convergence on fixed W
CASES = {"contracting": (24, 8), "square": (12, 12), "expanding": (8, 24)}
# the rule's own floor-lowering options: many noise samples, step decay within the phase, averaging
CONVERGE = {"noise_batch": 1024, "eta_q": 1.0, "eta_q_decay": 0.05, "polyak": 0.98}


@pytest.mark.parametrize("case", list(CASES))
def test_recirculation_converges_to_damped_pseudoinverse(case):
    d_in, d_out = CASES[case]
    net = two_layer(d_in, d_out, sv=(1.0, 2.0))
    algo = RFL(net, {**CONVERGE, "damping": 0.1, "damping_mode": "absolute", "init_scale": 0.0},
               generator=torch.Generator().manual_seed(0))
    w = net.layers[1].weight.detach()
    algo.feedback_phase(2000)
    assert algo.fb_iters == 2000
    (res,) = algo.pinv_residuals()
    assert res < 1e-2
    q = algo.feedback_for_credit[0].t()
    err = (q - damped_target(w, 0.1)).norm() / damped_target(w, 0.1).norm()
    assert err < 1e-2


def test_expanding_small_damping_gives_moore_penrose_not_another_left_inverse():
    d_in, d_out = 6, 18  # W: 18×6, tall: many left inverses Q with QW = I
    net = two_layer(d_in, d_out, sv=(1.0, 1.5))
    algo = RFL(net, {**CONVERGE, "damping": 1e-4, "damping_mode": "absolute", "init_scale": 0.5},
               generator=torch.Generator().manual_seed(0))
    w = net.layers[1].weight.detach()
    algo.feedback_phase(2000)
    q = algo.feedback_for_credit[0].t()
    mp = torch.linalg.pinv(w)
    assert (q - mp).norm() / mp.norm() < 1e-2
    torch.testing.assert_close(q @ w, torch.eye(d_in), atol=2e-2, rtol=0)
    # a different left inverse (MP + something on null(Wᵀ)) is also QW = I but is not what we get
    null = torch.linalg.svd(w, full_matrices=True)[0][:, d_in:]  # basis of null(Wᵀ)
    other = mp + torch.randn(d_in, d_out - d_in) @ null.t()
    torch.testing.assert_close(other @ w, torch.eye(d_in), atol=1e-4, rtol=0)
    assert (q - other).norm() > 10 * (q - mp).norm()


@pytest.mark.parametrize("case", list(CASES))
def test_newton_schulz_exact_and_recirculation_agree(case):
    d_in, d_out = CASES[case]
    net = two_layer(d_in, d_out, sv=(1.0, 2.0))
    common = {"damping": 0.1, "damping_mode": "relative", "polyak": 0.0}
    ns = RFL(net, {**common, "feedback": "newton_schulz"})
    ex = RFL(net, {**common, "feedback": "exact"})
    rc = RFL(net, {**common, **CONVERGE}, generator=torch.Generator().manual_seed(0))
    ns.feedback_phase(40)
    ex.feedback_phase(1)
    rc.feedback_phase(2000)
    q_ns, q_ex, q_rc = ns.P[0], ex.P[0], rc.feedback_for_credit[0]
    torch.testing.assert_close(q_ns, q_ex, rtol=1e-4, atol=1e-5)
    assert (q_rc - q_ex).norm() / q_ex.norm() < 1e-2
    assert ex.pinv_residuals()[0] < 1e-5 and ns.pinv_residuals()[0] < 1e-4


# --------------------------------------------------------------------------- credit
def test_transpose_feedback_with_chain_is_bp_bit_for_bit():
    net = build_network("mlp-3x16-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"propagation": "chain", "beta": 0.37, "polyak": 0.0})
    algo.P = [layer.weight.detach().clone() for layer in net.layers[1:]]  # Q_l = W_lᵀ (stored W-shaped)
    algo.compute_update(x, y)
    ref = bp_gradients(net, x, y)
    for layer, g in zip(net.layers, ref):
        assert torch.equal(layer.weight.grad, g)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        bias_ref = torch.autograd.grad(loss, [layer.bias for layer in net.layers])
    for layer, g in zip(net.layers, bias_ref):
        assert torch.equal(layer.bias.grad, g)


def test_exact_feedback_one_hidden_layer_gives_damped_gauss_newton_target():
    net = two_layer(7, 3, act=Tanh)
    x, y = batch(k=3)
    beta, lam = 0.2, 0.05
    algo = RFL(net, {"feedback": "exact", "damping": lam, "damping_mode": "absolute", "beta": beta})
    with torch.no_grad():
        fw = net.forward_all(x)
        _, e = output_error(fw.logits, y)
        s1 = algo._credit(fw, e, algo.feedback_for_credit, set_grads=False)
    dh1 = -beta * s1  # Δh_1
    w2 = net.layers[1].weight.detach().double()
    target = (w2.t() @ torch.linalg.solve(w2 @ w2.t() + lam * torch.eye(3, dtype=torch.float64),
                                          (-beta * e).double().t())).t()
    torch.testing.assert_close(dh1.double(), target, rtol=1e-4, atol=1e-7)
    # and the hidden layer's update is −δa_1 h_0ᵀ/β with δa_1 = Δh_1 ⊙ f'(a_1)
    algo.compute_update(x, y)
    da1 = dh1 * (1 - fw.h[1] ** 2)
    torch.testing.assert_close(net.layers[0].weight.grad, -(da1.t() @ x) / beta, rtol=1e-5, atol=1e-7)
    # its Gauss–Newton diagnostic direction coincides with the update here
    gn = algo.gauss_newton_update(x, y)
    torch.testing.assert_close(gn[0], net.layers[0].weight.grad, rtol=1e-4, atol=1e-7)


def test_linear_network_three_propagations_agree():
    net = build_network("mlp-2x12-linear", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    grads = {}
    for prop in ("chain", "inverse", "linearized"):
        algo = RFL(net, {"propagation": prop, "beta": 0.5})
        algo.compute_update(x, y)
        grads[prop] = [layer.weight.grad.clone() for layer in net.layers]
    for prop in ("inverse", "linearized"):
        for a, b in zip(grads[prop], grads["chain"]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # tanh: the modes differ (so the test above is not vacuous)
    net = build_network("mlp-2x12-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    g = {}
    for prop in ("chain", "linearized"):
        algo = RFL(net, {"propagation": prop})
        algo.compute_update(x, y)
        g[prop] = net.layers[0].weight.grad.clone()
    assert not torch.allclose(g["chain"], g["linearized"], rtol=1e-3)


def test_contraction_diagnostic_matches_hand_computed_value():
    net = two_layer(7, 3)
    x, y = batch(k=3)
    algo = RFL(net, {"feedback": "exact", "damping": 0.05, "damping_mode": "absolute"})
    fw = net.forward_all(x)
    _, e = output_error(fw.logits, y)
    w2 = net.layers[1].weight.detach()
    q = algo.P[0].t()
    # one hidden layer: J = W_2, Δh_1 = Q δa_L → ρ = ‖(I − W_2 Q) e‖ / ‖e‖
    rho = ((e - e @ (w2 @ q).t()).norm() / e.norm()).item()
    assert algo.contraction(x, y) == pytest.approx(rho, rel=1e-4)
    assert 0 < rho < 0.2


# --------------------------------------------------------------------------- schedules and cost
def count_phases(algo, n_updates, x, y):
    calls = []
    orig = algo.feedback_phase

    def spy(iters):
        before = algo.fb_iters
        orig(iters)
        calls.append(algo.fb_iters - before)

    algo.feedback_phase = spy
    algo.step(x, y)  # primes (sleep_wake: the initial K) and makes update 0
    n_updates -= 1
    for _ in range(n_updates):
        algo.step(x, y)
    return calls


def test_sleep_wake_runs_exactly_K_before_first_and_every_S_updates():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"schedule": "sleep_wake", "feedback_iters": 7, "sleep_every": 4})
    calls = count_phases(algo, 10, x, y)  # before update 0, then before updates 4 and 8
    assert calls == [7, 7, 7]
    assert algo.fb_iters == 21 and algo.updates == 10
    assert algo.flop_period() == 4
    assert algo.diagnostics(x, y)["feedback_iters_per_update"] == pytest.approx(2.1)


def test_concurrent_runs_exactly_k_per_update():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"schedule": "concurrent", "feedback_iters": 3})
    calls = count_phases(algo, 5, x, y)
    assert calls == [3] * 5 and algo.fb_iters == 15 and algo.flop_period() == 1


def test_exact_feedback_runs_one_svd_per_phase():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"feedback": "exact", "schedule": "sleep_wake", "feedback_iters": 5, "sleep_every": 2})
    assert count_phases(algo, 4, x, y) == [1, 1]


def recirculation_iteration_flops(d_in: int, d_out: int, n: int, polyak: bool = False) -> int:
    """Analytic FLOPs of one recirculation iteration of one layer (normalized η, relative λ)."""
    mm = 2 * n * d_in * d_out
    power = 2 * d_in * d_out + d_out + d_out + 2 * d_in * d_out + d_in + d_in  # W p, ‖q‖², Wᵀq, norm, ÷
    scalars = 1 + 1 + 1 + 1 + 1 + 1  # λ = c·σ̂², σ̂²+λ, η = c/(…), ηλ, 1 − ηλ, η/n
    rule = 3 * mm + n * d_in + 3 * d_in * d_out  # u, v̂, uᵀ(v − v̂); v − v̂; scale G, scale P, add
    return power + scalars + rule + (d_in * d_out if polyak else 0)  # Q̄ ← lerp(Q̄, Q)


@pytest.mark.parametrize("polyak", [0.0, 0.99])
def test_counted_feedback_flops_match_analytic_count(polyak):
    net = build_network("mlp-2x12-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    n = 16
    algo = RFL(net, {"noise_batch": n, "polyak": polyak})

    class Meter:
        def __init__(self):
            self.flops = {}
            self.counter = None
            self.stack = []

        def phase(self, name):
            meter = self

            class Ctx:
                def __enter__(self):
                    meter.mark = meter.counter.get_total_flops()

                def __exit__(self, *a):
                    meter.flops[name] = meter.flops.get(name, 0) + meter.counter.get_total_flops() - meter.mark

            return Ctx()

    meter = Meter()
    algo.meter = meter
    with flop_counter() as counter:
        meter.counter = counter
        algo.feedback_phase(1)
    expected = sum(recirculation_iteration_flops(l.in_features, l.out_features, n, polyak > 0)
                   for l in net.layers[1:])
    assert meter.flops["feedback"] == expected
    # the outer-product rule's matmuls dominate: 3 · 2·n·d_in·d_out per layer
    assert meter.flops["feedback"] > sum(6 * n * l.in_features * l.out_features for l in net.layers[1:])


# --------------------------------------------------------------------------- generic contract
def test_one_step_changes_every_forward_parameter():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    before = [p.detach().clone() for p in net.parameters()]
    algo = RFL(net, {})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    algo.step(x, y)
    opt.step()
    for b, p in zip(before, net.parameters()):
        assert not torch.equal(b, p)


def test_compute_update_changes_no_state():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"polyak": 0.9})
    algo.step(x, y)
    params = [p.detach().clone() for p in net.parameters()]
    state = algo.extra_state()
    gen = algo.gen.get_state()
    algo.compute_update(x, y)
    algo.diagnostics(x, y)
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters()))
    after = algo.extra_state()
    for key, value in state.items():
        if isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(value, after[key])), key
        else:
            assert value == after[key], key
    assert torch.equal(gen, algo.gen.get_state())


@pytest.mark.parametrize("opts", [{}, {"schedule": "sleep_wake", "sleep_every": 3, "feedback_iters": 4},
                                  {"feedback": "newton_schulz"}])
def test_same_seed_identical(opts):
    runs = []
    for _ in range(2):
        net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
        algo = RFL(net, opts, generator=torch.Generator().manual_seed(5))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for s in range(6):
            x, y = batch(k=4, seed=s)
            algo.step(x, y)
            opt.step()
        runs.append([p.detach().clone() for p in net.parameters()] + [p.clone() for p in algo.P])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_checkpoint_round_trip_matches_uninterrupted(tmp_path):
    cfg = {"algo": "rfl", "dataset": "digits", "seed": 0, "network": "mlp-1x32-tanh", "device": "cpu",
           "params": {"schedule": "sleep_wake", "sleep_every": 5, "feedback_iters": 3, "polyak": 0.5},
           "probe_size": 64}
    full = Trainer({**cfg, "train": {"epochs": 4}}).run(tmp_path / "a", log=open("/dev/null", "w"))
    Trainer({**cfg, "train": {"epochs": 2}}).run(tmp_path / "b", log=open("/dev/null", "w"))
    resumed = Trainer({**cfg, "train": {"epochs": 4}}).run(tmp_path / "b", log=open("/dev/null", "w"))
    for key in ("test_acc", "final_test_acc", "best_val_acc", "updates", "pinv_residual", "contraction",
                "feedback_iters_per_update"):
        assert full[key] == resumed[key], key
    assert "pinv_residual" in full and "contraction" in full and math.isfinite(full["contraction"])


# --------------------------------------------------------------------------- capabilities and validation
def test_refuses_unsupported_networks():
    for spec, shape in (("mlp-2x8-relu", (5,)), ("cnn-small-tanh", (1, 8, 8))):
        net = build_network(spec, shape, 4)
        with pytest.raises(UnsupportedError, match="rfl"):
            RFL(net, {})


def test_rejects_bad_hyperparameters():
    net = build_network("mlp-2x8-tanh", (5,), 4)
    with pytest.raises(ConfigError, match="recirculation"):
        RFL(net, {"feedback": "transpose"})
    with pytest.raises(ConfigError):
        RFL(net, {"polyak": 1.0})


def test_trainer_flop_window_covers_one_sleep_wake_period():
    """The trainer counts updates 1..flop_period(): exactly one sleep of K iterations in S updates;
    the sleep before the first update is counted as pre-training (feedback) work."""
    K, S, n = 3, 4, 16
    cfg = {"algo": "rfl", "dataset": "digits", "seed": 0, "network": "mlp-1x16-tanh", "device": "cpu",
           "params": {"schedule": "sleep_wake", "sleep_every": S, "feedback_iters": K, "noise_batch": n,
                      "polyak": 0.0},
           "train": {"epochs": 1}, "probe_size": 32}
    trainer = Trainer(cfg)
    trainer.run(None, log=open("/dev/null", "w"))
    per_iter = sum(recirculation_iteration_flops(l.in_features, l.out_features, n) for l in trainer.net.layers[1:])
    assert trainer.meter.flops_by_phase["feedback"] == pytest.approx(K * per_iter / S)
    assert trainer.pretrain_flops == K * per_iter

"""Tests that pin rfl's math (algorithms/rfl.py) and its plugin contract."""

from __future__ import annotations

import math

import pytest
import torch

from harness.algorithm import output_error
from harness.cost import CostMeter
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
    algo.learner.prime()
    algo.feedback_phase(2000)
    assert algo.fb_iters == 2000
    res = algo.pinv_residuals()[1]
    assert res < 1e-2
    q = algo.feedback_for_credit[1].t()
    err = (q - damped_target(w, 0.1)).norm() / damped_target(w, 0.1).norm()
    assert err < 1e-2


def test_expanding_small_damping_gives_moore_penrose_not_another_left_inverse():
    d_in, d_out = 6, 18  # W: 18×6, tall: many left inverses Q with QW = I
    net = two_layer(d_in, d_out, sv=(1.0, 1.5))
    algo = RFL(net, {**CONVERGE, "damping": 1e-4, "damping_mode": "absolute", "init_scale": 0.5},
               generator=torch.Generator().manual_seed(0))
    w = net.layers[1].weight.detach()
    algo.learner.prime()
    algo.feedback_phase(2000)
    q = algo.feedback_for_credit[1].t()
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
    common = {"damping": 0.1, "damping_mode": "relative"}
    ns = RFL(net, {**common, "feedback": "newton_schulz"})
    ex = RFL(net, {**common, "feedback": "exact"})
    rc = RFL(net, {**common, **CONVERGE, "sigma_source": "power"}, generator=torch.Generator().manual_seed(0))
    for algo in (ns, ex, rc):
        algo.learner.prime()
    ns.feedback_phase(40)
    ex.feedback_phase(1)
    rc.feedback_phase(2000)
    q_ns, q_ex, q_rc = ns.learner.Qt[1], ex.learner.Qt[1], rc.feedback_for_credit[1]
    torch.testing.assert_close(q_ns, q_ex, rtol=1e-4, atol=1e-5)
    assert (q_rc - q_ex).norm() / q_ex.norm() < 1e-2
    assert ex.pinv_residuals()[1] < 1e-5 and ns.pinv_residuals()[1] < 1e-4


# --------------------------------------------------------------------------- credit
def set_feedback(algo, qts: dict) -> None:
    """Put Q_jᵀ into the learner (and its average), as if learned."""
    algo.learner.Qt = {j: q.clone() for j, q in qts.items()}
    if getattr(algo.learner, "Qt_avg", None) is not None:
        algo.learner.Qt_avg = {j: q.clone() for j, q in qts.items()}
    algo.primed = True


def test_transpose_feedback_with_chain_is_bp_bit_for_bit():
    net = build_network("mlp-3x16-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"propagation": "chain", "polyak": 0.0})
    set_feedback(algo, {j: net.layers[j].weight.detach() for j in range(1, 4)})  # Q_j = W_jᵀ (stored W-shaped)
    algo.compute_update(x, y)
    ref = bp_gradients(net, x, y)
    for layer, g in zip(net.layers, ref):
        assert torch.equal(layer.weight.grad, g)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        bias_ref = torch.autograd.grad(loss, [layer.bias for layer in net.layers])
    for layer, g in zip(net.layers, bias_ref):
        assert torch.equal(layer.bias.grad, g)


SLOPE = 0.01  # leaky-ReLU's negative slope (harness.networks.LeakyReLU), restated


def explicit_update(net, qts, x, y, propagation, beta, act="tanh"):
    """The credit rule written out as a per-layer loop (float64; shares no code with the plugin):
    δa_top = −β n e, Δh_j = Q_j δa_j, δa_{j−1} by the propagation, ∇W_j = −δa_j h_jᵀ / (β n).
    Hidden activation ``tanh`` or ``leaky-relu`` (f′ and f⁻¹ read a and h respectively)."""
    tanh = act == "tanh"
    f = torch.tanh if tanh else (lambda a: torch.where(a > 0, a, SLOPE * a))
    fprime = (lambda a, h: 1 - h * h) if tanh else (lambda a, h: torch.where(a > 0, 1.0, torch.full_like(a, SLOPE)))
    finv = ((lambda h: torch.atanh(h.clamp(-1 + 1e-6, 1 - 1e-6))) if tanh
            else (lambda h: torch.where(h > 0, h, h / SLOPE)))
    with torch.no_grad():
        hs, as_ = [x.double()], []
        for layer in net.layers:
            a = hs[-1] @ layer.weight.double().t() + layer.bias.double()
            as_.append(a)
            hs.append(f(a) if layer is not net.layers[-1] else a)
        n = len(y)
        p = torch.softmax(as_[-1], 1)
        e = (p - torch.nn.functional.one_hot(y, p.shape[1]).double()) / n
        da = -beta * n * e
        grads = [None] * len(net.layers)
        for j in range(len(net.layers) - 1, -1, -1):
            grads[j] = -(da.t() @ hs[j]) / (beta * n)
            if j == 0:
                break
            dh = da @ qts[j].double()  # Q_j δa (Qt stored as W's shape)
            h, a = hs[j], as_[j - 1]
            if propagation == "inverse":
                da = finv(h + dh) - a
            elif propagation == "linearized":
                da = dh / fprime(a, h).clamp_min(1e-6)
            else:
                da = dh * fprime(a, h)
        return grads


@pytest.mark.parametrize("propagation", ["chain", "inverse", "linearized"])
@pytest.mark.parametrize("beta", [0.05, 0.3])
def test_carries_on_tanh_match_an_explicit_loop(propagation, beta):
    """Three hidden tanh layers, a random (not Wᵀ) feedback: every layer's update is the written-out rule."""
    net = build_network("mlp-3x10-tanh", (5,), 4, generator=torch.Generator().manual_seed(0)).double()
    x, y = batch(n=24, k=4)
    x = x.double()
    algo = RFL(net, {"propagation": propagation, **({"beta": beta} if propagation == "inverse" else {})})
    g = torch.Generator().manual_seed(9)
    qts = {j: 0.4 * torch.randn(net.layers[j].weight.shape, generator=g, dtype=torch.float64) for j in range(1, 4)}
    set_feedback(algo, qts)
    algo.compute_update(x, y)
    want = explicit_update(net, qts, x, y, propagation, beta if propagation == "inverse" else 1.0)
    for layer, w in zip(net.layers, want):
        torch.testing.assert_close(layer.weight.grad, w, rtol=1e-9, atol=1e-12)
    # the modes really differ on tanh (so the comparison is not vacuous)
    other = explicit_update(net, qts, x, y, "chain" if propagation != "chain" else "linearized", 1.0)
    assert not torch.allclose(other[0], want[0], rtol=1e-2)


@pytest.mark.parametrize("propagation", ["chain", "inverse", "linearized"])
def test_carries_on_leaky_relu_match_an_explicit_loop(propagation):
    """As above on leaky-ReLU, whose f′ reads a (tanh's reads h): a carry handed the wrong one fails."""
    net = build_network("mlp-3x10-leaky-relu", (5,), 4, generator=torch.Generator().manual_seed(0)).double()
    x, y = batch(n=24, k=4)
    x = x.double()
    algo = RFL(net, {"propagation": propagation, **({"beta": 0.3} if propagation == "inverse" else {})})
    g = torch.Generator().manual_seed(9)
    qts = {j: 0.4 * torch.randn(net.layers[j].weight.shape, generator=g, dtype=torch.float64) for j in range(1, 4)}
    set_feedback(algo, qts)
    algo.compute_update(x, y)
    want = explicit_update(net, qts, x, y, propagation, 0.3 if propagation == "inverse" else 1.0, act="leaky-relu")
    for layer, w in zip(net.layers, want):
        torch.testing.assert_close(layer.weight.grad, w, rtol=1e-9, atol=1e-12)
    tanh_rule = explicit_update(net, qts, x, y, propagation, 0.3 if propagation == "inverse" else 1.0)
    assert not torch.allclose(tanh_rule[0], want[0], rtol=1e-2)


def test_beta_is_per_example_so_inverse_updates_do_not_depend_on_batch_size():
    net = build_network("mlp-2x10-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(n=16, k=4)
    algo = RFL(net, {"propagation": "inverse", "beta": 0.4})
    set_feedback(algo, {j: 0.5 * net.layers[j].weight.detach() for j in range(1, 3)})
    algo.compute_update(x, y)
    small = [layer.weight.grad.clone() for layer in net.layers]
    algo.compute_update(torch.cat([x, x, x]), torch.cat([y, y, y]))  # same examples, 3× the batch
    for a, b in zip(small, [layer.weight.grad for layer in net.layers]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_exact_feedback_one_hidden_layer_gives_damped_gauss_newton_target():
    net = two_layer(7, 3, act=Tanh)
    x, y = batch(k=3)
    beta, lam = 0.2, 0.05
    algo = RFL(net, {"feedback": "exact", "damping": lam, "damping_mode": "absolute"})
    algo.feedback_phase(1)
    n = len(y)
    with torch.no_grad():
        fw = net.forward_all(x)
        _, e = output_error(fw.logits, y)
        s1 = algo._credit(fw, e, algo.feedback_for_credit, set_grads=False)
    dh1 = -beta * n * s1  # Δh_1 for δa = −βn e
    w2 = net.layers[1].weight.detach().double()
    target = (w2.t() @ torch.linalg.solve(w2 @ w2.t() + lam * torch.eye(3, dtype=torch.float64),
                                          (-beta * n * e).double().t())).t()
    torch.testing.assert_close(dh1.double(), target, rtol=1e-4, atol=1e-7)
    # the hidden layer's update is −δa_1 h_0ᵀ/(βn) with δa_1 = Δh_1 ⊙ f'(a_1)
    algo.compute_update(x, y)
    da1 = dh1 * (1 - fw.h[1] ** 2)
    torch.testing.assert_close(net.layers[0].weight.grad, -(da1.t() @ x) / (beta * n), rtol=1e-5, atol=1e-7)
    gn = algo.gauss_newton_update(x, y)
    torch.testing.assert_close(gn[0], net.layers[0].weight.grad, rtol=1e-4, atol=1e-7)


def test_contraction_diagnostic_matches_hand_computed_value():
    net = two_layer(7, 3)
    x, y = batch(k=3)
    algo = RFL(net, {"feedback": "exact", "damping": 0.05, "damping_mode": "absolute"})
    algo.feedback_phase(1)
    fw = net.forward_all(x)
    _, e = output_error(fw.logits, y)
    w2 = net.layers[1].weight.detach()
    q = algo.learner.Qt[1].t()
    # one hidden layer: J = W_2, Δh_1 = Q δa → ρ = ‖(I − W_2 Q) e‖ / ‖e‖
    rho = ((e - e @ (w2 @ q).t()).norm() / e.norm()).item()
    assert algo.contraction(x, y) == pytest.approx(rho, rel=1e-4)
    assert 0 < rho < 0.2


def test_contraction_with_two_hidden_layers_depends_on_the_propagation():
    """ρ = ‖δa − J Δh_1‖/‖δa‖ with J through a tanh layer: checked against autograd's Jacobian."""
    net = build_network("mlp-2x9-tanh", (5,), 3, generator=torch.Generator().manual_seed(2))
    x, y = batch(k=3)
    rhos = {}
    for prop in ("chain", "linearized"):
        algo = RFL(net, {"feedback": "exact", "propagation": prop})
        algo.feedback_phase(1)
        with torch.no_grad():
            fw = net.forward_all(x)
            _, e = output_error(fw.logits, y)
            s1 = algo._credit(fw, e, algo.feedback_for_credit, set_grads=False)
        up = lambda h: net.layers[2].pre(torch.tanh(net.layers[1].pre(h)))  # noqa: E731
        jac = torch.autograd.functional.jacobian(lambda h: up(h).sum(0), fw.h[1])  # (k, n, d) per example
        jdh = torch.einsum("knd,nd->nk", jac, s1)
        rho = ((e - jdh).norm() / e.norm()).item()  # β n cancels in the ratio for a linear carry
        assert algo.contraction(x, y) == pytest.approx(rho, rel=1e-4)
        rhos[prop] = rho
    assert abs(rhos["chain"] - rhos["linearized"]) > 1e-3


def test_gauss_newton_diagnostic_survives_a_singular_gram_matrix():
    """A hidden layer narrower than the output makes J_j J_jᵀ singular without damping: the diagnostic
    (off the training path) must give the minimum-norm target, not end the trial."""
    net = build_network("mlp-2x3-tanh", (5,), 6, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=6)
    algo = RFL(net, {"feedback": "exact", "damping": 0.0, "damping_mode": "absolute"})
    algo.feedback_phase(1)
    gn = algo.gauss_newton_update(x, y)
    assert all(torch.isfinite(g).all() for g in gn)
    d = algo.diagnostics(x, y)
    assert 0 <= d["angle_gn"] <= 180


# --------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("schedule", ["concurrent", "sleep_wake"])
@pytest.mark.parametrize("feedback", ["exact", "newton_schulz"])
def test_oracles_are_exact_for_the_w_they_credit(feedback, schedule):
    """After several updates, the Q used for credit is the damped pseudoinverse of the W it credits
    (no Polyak lag): checked right after a feedback phase, against a plain solve."""
    net = build_network("mlp-2x12-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    opts = {"feedback": feedback, "schedule": schedule, "damping": 0.1}
    if feedback == "newton_schulz":
        opts["feedback_iters"] = 30
    if schedule == "sleep_wake":
        opts["sleep_every"] = 3
    algo = RFL(net, opts)
    opt = torch.optim.Adam(net.parameters(), lr=5e-2)
    seen = []
    orig = algo.compute_update

    def spy(x, y):  # record Q and W at the moment of a credit pass that follows a feedback phase
        if algo.feedback_age == 0:
            seen.append({j: (algo.feedback_for_credit[j].clone(), algo.learner.W(j).clone(),
                             algo.learner.lam(j)) for j in (1, 2)})
        return orig(x, y)

    algo.compute_update = spy
    for s in range(7):
        x, y = batch(k=4, seed=s)
        algo.step(x, y)
        opt.step()
    assert len(seen) >= 2
    for record in seen[1:]:
        for qt, w, lam in record.values():
            want = damped_target(w.double(), float(lam)).t()
            assert (qt.double() - want).norm() / want.norm() < 1e-4
    assert algo.plausibility().weight_transport and "polyak" not in algo.hp.active_names()


def test_recirculation_noise_estimate_of_sigma_max():
    """The local σ̂² (power iteration on the covariance of u = W v) tracks σ_max(W)² within a few %."""
    net = two_layer(20, 16, sv=(0.5, 2.0))
    algo = RFL(net, {"noise_batch": 64}, generator=torch.Generator().manual_seed(0))
    algo.learner.prime()
    algo.feedback_phase(200)
    s_max = torch.linalg.matrix_norm(net.layers[1].weight.detach(), 2).item() ** 2
    assert algo.learner.sigma_max_sq[1].item() == pytest.approx(s_max, rel=0.1)
    assert algo.plausibility().weight_transport is False


# --------------------------------------------------------------------------- schedules and cost
def count_phases(algo, n_updates, x, y):
    calls = []
    orig = algo.learner.run

    def spy(iters):
        done = orig(iters)
        calls.append(done)
        return done

    algo.learner.run = spy
    for _ in range(n_updates):
        algo.step(x, y)
    return calls


def test_sleep_wake_runs_exactly_K_before_first_and_every_S_updates():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"schedule": "sleep_wake", "feedback_iters": 7, "sleep_every": 4})
    assert algo.update_kind() == "prime"
    calls = count_phases(algo, 10, x, y)  # before update 0, then before updates 4 and 8
    assert calls == [7, 7, 7]
    assert algo.fb_iters == 21 and algo.updates == 10
    assert algo.update_mix() == {"wake": 0.75, "sleep": 0.25}
    assert algo.diagnostics(x, y)["feedback_iters_per_update"] == pytest.approx(2.1)
    assert algo.diagnostics(x, y)["feedback_age"] == 2  # updates 8, 9 since the sleep before update 8
    kinds = []
    for _ in range(4):
        kinds.append(algo.update_kind())
        algo.step(x, y)
    assert kinds == ["wake", "wake", "sleep", "wake"]  # updates 10, 11, 12 (sleep), 13


def test_concurrent_runs_exactly_k_per_update():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"schedule": "concurrent", "feedback_iters": 3})
    calls = count_phases(algo, 5, x, y)
    assert calls == [3] * 5 and algo.fb_iters == 15 and algo.update_mix() == {"update": 1.0}


def test_exact_feedback_runs_one_svd_per_phase():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, {"feedback": "exact", "schedule": "sleep_wake", "sleep_every": 2})
    assert count_phases(algo, 4, x, y) == [1, 1]


def sigma_step_flops(d_out: int, n: int) -> int:
    """Noise-based σ̂² step on u (n×d_out): u r, (u r)², sum, ÷n, uᵀ(u r), norm, ÷norm, EMA."""
    return 2 * n * d_out + n + n + 1 + 2 * n * d_out + d_out + d_out + 1


def recirculation_iteration_flops(d_in: int, d_out: int, n: int, polyak: bool = False, sigma: bool = True) -> int:
    """Analytic FLOPs of one recirculation iteration of one layer (normalized η, relative λ)."""
    mm = 2 * n * d_in * d_out
    scalars = 1 + 1 + 1 + 1 + 1 + 1  # λ = c·σ̂², σ̂²+λ, η = c/(…), ηλ, 1 − ηλ, η/n
    rule = 3 * mm + n * d_in + 3 * d_in * d_out  # u, v̂, uᵀ(v − v̂); v − v̂; scale G, scale Qt, add
    return (sigma_step_flops(d_out, n) if sigma else 0) + scalars + rule + (d_in * d_out if polyak else 0)


@pytest.mark.parametrize("polyak", [0.0, 0.99])
def test_counted_feedback_flops_match_analytic_count(polyak):
    net = build_network("mlp-2x12-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    n = 16
    algo = RFL(net, {"noise_batch": n, "polyak": polyak})
    algo.learner.prime()
    meter = CostMeter()
    algo.meter = meter
    with meter.update("feedback-only"):
        algo.feedback_phase(1)
    expected = sum(recirculation_iteration_flops(l.in_features, l.out_features, n, polyak > 0)
                   for l in net.layers[1:])
    assert meter.kind_flops["feedback-only"]["feedback"] == expected
    # the outer-product rule's matmuls dominate: 3 · 2·n·d_in·d_out per layer
    assert expected > sum(6 * n * l.in_features * l.out_features for l in net.layers[1:])


@pytest.mark.parametrize("S", [10, 100])
def test_sleep_wake_longer_than_an_epoch_is_amortised_over_its_period(S, digits):
    """S above the updates of an epoch (8 on digits): feedback FLOPs per update are one sleep of K
    iterations per S updates (within 5% of the analytic count, here exactly), once a sleep has run;
    before that they are not reported. The sleep before the first update, with the σ̂ warm-up, is
    pre-training work."""
    from algorithms.rfl import POWER_WARMUP

    K, n = 3, 16
    cfg = {"algo": "rfl", "dataset": "digits", "seed": 0, "network": "mlp-1x16-tanh", "device": "cpu",
           "params": {"schedule": "sleep_wake", "sleep_every": S, "feedback_iters": K, "noise_batch": n,
                      "polyak": 0.0},
           "train": {"epochs": 2 if S == 100 else 3, "batch_size": 128}, "probe_size": 32}
    trainer = Trainer(cfg, data=digits)
    summary = trainer.run(None, log=open("/dev/null", "w"))
    layer = trainer.net.layers[1]
    per_iter = recirculation_iteration_flops(layer.in_features, layer.out_features, n)
    # σ̂ warm-up: POWER_WARMUP noise passes u = W v and estimator steps (the first one has no EMA to blend)
    warm = POWER_WARMUP * (2 * n * layer.in_features * layer.out_features + sigma_step_flops(layer.out_features, n)) - 1
    assert trainer.pretrain_flops == K * per_iter + warm
    updates = summary["updates"]
    sleeps = len([u for u in range(1, updates) if u % S == 0])  # before updates S, 2S, ...
    if S > updates:
        assert summary["flops_per_update"] == {} and math.isnan(summary["seconds_per_update"])
    else:
        assert summary["flops_per_update"]["feedback"] == pytest.approx(K * per_iter / S, rel=1e-12)
        assert abs(summary["flops_per_update"]["feedback"] - K * per_iter / S) <= 0.05 * K * per_iter / S
    last = trainer.history[-1]
    assert last["flops_feedback"] == trainer.pretrain_flops + sleeps * K * per_iter


def test_trial_records_amortised_mean_time_with_sleeps(digits):
    cfg = {"algo": "rfl", "dataset": "digits", "seed": 0, "network": "mlp-1x16-tanh", "device": "cpu",
           "params": {"schedule": "sleep_wake", "sleep_every": 4, "feedback_iters": 20},
           "train": {"epochs": 3}, "probe_size": 32}
    trainer = Trainer(cfg, data=digits)
    s = trainer.run(None, log=open("/dev/null", "w"))
    ns = trainer.meter.step_ns
    want = (0.75 * sum(ns["wake"]) / len(ns["wake"]) + 0.25 * sum(ns["sleep"]) / len(ns["sleep"])) / 1e9
    assert s["seconds_per_update"] == pytest.approx(want)
    assert s["seconds_per_update"] > s["seconds_per_update_median"]  # sleeps are rare and long
    assert trainer.history[-1]["seconds_per_update"] == s["seconds_per_update"]


# --------------------------------------------------------------------------- plausibility and knobs
@pytest.mark.parametrize("params,transport,kind,local,phases,learning", [
    ({}, False, "none", True, "two", True),
    ({"schedule": "sleep_wake"}, False, "none", True, "sleep_wake", True),
    ({"init_scale": 1.0}, True, "init", True, "two", True),
    ({"sigma_source": "power"}, True, "values", False, "two", True),
    ({"init_scale": 1.0, "sigma_source": "power"}, True, "values", False, "two", True),
    ({"feedback": "exact"}, True, "values", False, "two", False),
    ({"feedback": "newton_schulz", "schedule": "sleep_wake"}, True, "values", False, "sleep_wake", False),
])
def test_plausibility_of_each_configuration(params, transport, kind, local, phases, learning):
    net = build_network("mlp-2x8-tanh", (5,), 4)
    p = RFL(net, params).plausibility()
    assert (p.weight_transport, p.transport, p.local, p.phases, p.feedback_learning) == \
        (transport, kind, local, phases, learning)
    assert p.notes


def test_default_feedback_starts_without_w():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    algo = RFL(net, {})
    algo.learner.prime()
    assert all(torch.equal(q, torch.zeros_like(q)) for q in algo.feedback_for_credit.values())


@pytest.mark.parametrize("params,knob", [({"beta": 0.5}, "beta"), ({"sleep_every": 10}, "sleep_every"),
                                         ({"feedback": "exact", "polyak": 0.5}, "polyak"),
                                         ({"feedback": "exact", "feedback_iters": 3}, "feedback_iters")])
def test_knobs_that_do_not_act_are_refused_and_not_recorded(params, knob, digits):
    cfg = {"algo": "rfl", "dataset": "digits", "network": "mlp-1x16-tanh", "device": "cpu", "params": params,
           "train": {"epochs": 1}}
    with pytest.raises(ConfigError, match=f"'{knob}' does not act"):
        Trainer(cfg, data=digits)
    assert knob not in RFL.Params.build({k: v for k, v in params.items() if k != knob}).active_dump()


# --------------------------------------------------------------------------- generic contract
def test_one_step_changes_every_forward_parameter():
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    before = [p.detach().clone() for p in net.parameters()]
    algo = RFL(net, {"polyak": 0.0})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    algo.step(x, y)
    opt.step()
    for b, p in zip(before, net.parameters()):
        assert not torch.equal(b, p)


def flat_state(state, prefix=""):
    if isinstance(state, dict):
        return {k2: v2 for k, v in state.items() for k2, v2 in flat_state(v, f"{prefix}{k}.").items()}
    return {prefix: state}


@pytest.mark.parametrize("opts", [{"polyak": 0.9}, {"feedback": "newton_schulz"}, {"feedback": "exact"}])
def test_compute_update_and_diagnostics_change_no_state(opts):
    net = build_network("mlp-2x8-tanh", (5,), 4, generator=torch.Generator().manual_seed(0))
    x, y = batch(k=4)
    algo = RFL(net, opts)
    algo.step(x, y)
    params = [p.detach().clone() for p in net.parameters()]
    state = flat_state(algo.extra_state())
    gen = algo.gen.get_state()
    algo.compute_update(x, y)
    algo.diagnostics(x, y)
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters()))
    after = flat_state(algo.extra_state())
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(value, after[key]) if isinstance(value, torch.Tensor) else value == after[key], key
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
        runs.append([p.detach().clone() for p in net.parameters()] + list(algo.learner.Qt.values()))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_checkpoint_round_trip_matches_uninterrupted(tmp_path):
    cfg = {"algo": "rfl", "dataset": "digits", "seed": 0, "network": "mlp-2x32-tanh", "device": "cpu",
           "params": {"schedule": "sleep_wake", "sleep_every": 5, "feedback_iters": 3, "polyak": 0.5},
           "probe_size": 64}
    full = Trainer({**cfg, "train": {"epochs": 4}}).run(tmp_path / "a", log=open("/dev/null", "w"))
    Trainer({**cfg, "train": {"epochs": 2}}).run(tmp_path / "b", log=open("/dev/null", "w"))
    resumed = Trainer({**cfg, "train": {"epochs": 4}}).run(tmp_path / "b", log=open("/dev/null", "w"))
    for key in ("test_acc", "final_test_acc", "best_val_acc", "updates", "pinv_residual", "contraction",
                "feedback_iters_per_update", "flops_per_update", "pretrain_flops"):
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

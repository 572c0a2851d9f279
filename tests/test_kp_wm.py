"""kp (Kolen–Pollack) and wm (weight mirrors): their feedback rules against the rules written out here.

Oracles are computed from scratch (own forward pass, softmax error, δ loop, explicit convolution by loops
over output positions) in float64 with ~1e-10 relative tolerances, so a 1% change in any term fails;
the equivalences with bp are bit for bit. The statistical fixed-point test of wm states its tolerance
from the noise (derivation in its docstring).
"""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch

from harness.cost import CostMeter
from harness.metrics import angle_degrees
from harness.networks import build_network
from harness.registry import get_algorithm
from tests.conftest import oracle_close

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny networks, one thread


def make(name, params=None, spec="mlp-3x12-tanh", seed=0, dtype=torch.float32, input_shape=(1, 8, 8), meter=None):
    net = build_network(spec, input_shape, 10, generator=torch.Generator().manual_seed(seed)).to(dtype)
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases, so that a bias wrongly used shows
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=g, dtype=dtype))
    algo = get_algorithm(name)(net, params or {}, generator=torch.Generator().manual_seed(seed + 1), meter=meter)
    return net, algo


def batch(seed=0, n=32, dtype=torch.float32, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


close = partial(oracle_close, rtol=1e-10, atol=1e-13)  # tests/conftest.py


# ------------------------------------------------------------------ an MLP written out (tanh hidden layers)
def forward(W, b, x):
    """h[0] = x (flattened), a[l] = h[l-1] W_lᵀ + b_l, h[l] = tanh(a[l]) (logits h[L] = a[L])."""
    h, a = [x.flatten(1)], [None]
    for l in range(1, len(W) + 1):
        a.append(h[-1] @ W[l - 1].T + b[l - 1])
        h.append(a[-1] if l == len(W) else torch.tanh(a[-1]))
    return h, a


def softmax_error(logits, y):
    z = logits - logits.max(1, keepdim=True).values
    p = z.exp() / z.exp().sum(1, keepdim=True)
    onehot = torch.zeros_like(logits)
    onehot[torch.arange(len(y)), y] = 1.0
    return (p - onehot) / len(y)


def feedback_chain(W, b, B, x, y):
    """G_l = δ_l h_{l-1}ᵀ and Σδ_l with δ_{l-1} = (δ_l B_l) ⊙ (1 − h²) (B_l with W_l's shape, B[0] unused)."""
    h, _ = forward(W, b, x)
    L = len(W)
    delta = softmax_error(h[L], y)
    G, gb = [None] * L, [None] * L
    for l in range(L, 0, -1):
        G[l - 1], gb[l - 1] = delta.T @ h[l - 1], delta.sum(0)
        if l > 1:
            delta = (delta @ B[l - 1]) * (1 - h[l - 1] * h[l - 1])
    return G, gb


def weights(net):
    return [layer.weight.detach().clone() for layer in net.layers], [layer.bias.detach().clone() for layer in net.layers]


# ================================================================== kp
@pytest.mark.parametrize("spec", ["mlp-3x12-tanh", "cnn-small-tanh"])
def test_kp_from_b0_equal_w0_without_decay_trains_as_bp_bit_for_bit(spec):
    """λ = 0, sgd at lr = feedback_lr, B_0 = W_0: W and B get the same update, so B_l = W_l after every
    update and every update is bp's (autograd's) exactly."""
    net, kp = make("kp", {"decay": 0.0, "feedback_lr": 0.1}, spec=spec)
    twin = copy.deepcopy(net)
    bp = get_algorithm("bp")(twin)
    kp.B = [layer.weight.detach().clone() for layer in net.layers[1:]]
    opt, opt_bp = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    for t in range(4):
        x, y = batch(seed=t)
        kp.step(x, y)
        bp.compute_update(x, y)
        for p, q in zip(net.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad), f"update {t}"
        opt.step()
        opt_bp.step()
        for l, layer in enumerate(net.layers[1:], 1):
            assert torch.equal(kp.B[l - 1], layer.weight), f"update {t}: B_{l + 1} ≠ W_{l + 1}"
    assert not torch.equal(net.layers[1].weight, make("kp", spec=spec)[0].layers[1].weight)  # W did move


def test_kp_step_equals_the_rule_written_out():
    """One step: .grad = G_l + λW_l (bias: Σδ_l), B_l ← B_l − η_B(G_l + λB_l), G from a δ loop through the
    B_l before the step."""
    eta, lam = 0.2, 0.03
    net, kp = make("kp", {"feedback_lr": eta, "decay": lam}, dtype=DT)
    x, y = batch(dtype=DT)
    W, b = weights(net)
    B = [None] + [bb.clone() for bb in kp.B]
    G, gb = feedback_chain(W, b, B, x, y)
    kp.step(x, y)
    for l in range(1, len(W) + 1):
        close(net.layers[l - 1].weight.grad, G[l - 1] + lam * W[l - 1], f"grad W_{l}")
        close(net.layers[l - 1].bias.grad, gb[l - 1], f"grad b_{l}")
        if l > 1:
            close(kp.B[l - 2], B[l - 1] - eta * (G[l - 1] + lam * B[l - 1]), f"B_{l}")
    kp.compute_update(x, y)  # the credit pass now uses the updated B
    G2, _ = feedback_chain(W, b, [None] + kp.B, x, y)
    close(net.layers[0].weight.grad, G2[0] + lam * W[0], "grad W_1 through the updated B")


def test_kp_w_minus_b_contracts_by_one_minus_eta_lambda_under_sgd():
    """sgd at lr = feedback_lr: W_l − B_l ← (1 − ηλ)(W_l − B_l) every update, from a random B_0."""
    eta, lam, updates = 0.1, 0.05, 5
    net, kp = make("kp", {"feedback_lr": eta, "decay": lam}, dtype=DT)
    opt = torch.optim.SGD(net.parameters(), lr=eta)
    diff0 = [layer.weight.detach() - bb for layer, bb in zip(net.layers[1:], kp.B, strict=True)]
    for t in range(updates):
        kp.step(*batch(seed=t, dtype=DT))
        opt.step()
    for l, (layer, bb, d0) in enumerate(zip(net.layers[1:], kp.B, diff0, strict=True), 2):
        close(layer.weight.detach() - bb, (1 - eta * lam) ** updates * d0, f"W_{l} − B_{l}")


def test_kp_feedback_aligns_with_w_and_no_decay_keeps_it_apart():
    """600 sgd updates (lr = feedback_lr = 0.1, λ = 0.05: (1 − ηλ)^600 ≈ 0.05) bring angle(B_l, W_l) from
    ~90° (independent draws) below 10° (measured: 7.2° and 5.2°); without decay B_l − W_l stays B_0 − W_0
    and the angle falls only as far as W grows: above 20° (measured: 36° and 29°)."""
    X, Y = batch(seed=7, n=256)
    angles = {}
    for lam in (0.05, 0.0):
        net, kp = make("kp", {"feedback_lr": 0.1, "decay": lam}, spec="mlp-2x16-tanh", seed=3)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        start = [angle_degrees(bb, layer.weight) for bb, layer in zip(kp.B, net.layers[1:], strict=True)]
        assert all(a > 75 for a in start), start
        for t in range(600):
            i = (t % 8) * 32
            kp.step(X[i:i + 32], Y[i:i + 32])
            opt.step()
        angles[lam] = [angle_degrees(bb, layer.weight) for bb, layer in zip(kp.B, net.layers[1:], strict=True)]
    assert all(a < 10 for a in angles[0.05]), angles
    assert all(a > 20 for a in angles[0.0]), angles


# ================================================================== wm
def mirror_replay(W, B, gen_state, shapes, *, eta, lam, sigma, n, steps, conv=None):
    """The mirror rule written out, with the noise replayed from the plugin's generator (unit normal draws in
    its order: step by step, layer l = 2..L; ξ = σz): B_l ← B_l − ηλB_l + η yξᵀ/(nP)."""
    g = torch.Generator().set_state(gen_state)
    B = [bb.clone() for bb in B]
    for _ in range(steps):
        for l in range(1, len(W)):
            xi = sigma * torch.randn((n, *shapes[l]), generator=g, dtype=DT)
            if conv is not None and l in conv:
                y, C, P = explicit_conv(xi, W[l], *conv[l])
            else:
                y, P = xi @ W[l].T, 1
                C = y.T @ xi
            B[l - 1] = B[l - 1] - eta * lam * B[l - 1] + eta * C / (n * P)
    return B


def explicit_conv(xi, W, stride, pad):
    """y = W ∗ ξ (no bias) and C = Σ_{n, positions} y ⊗ window, by loops over output positions."""
    n, c_in, hgt, wid = xi.shape
    c_out, _, k, _ = W.shape
    padded = torch.zeros(n, c_in, hgt + 2 * pad, wid + 2 * pad, dtype=DT)
    padded[:, :, pad:pad + hgt, pad:pad + wid] = xi
    oh, ow = (hgt + 2 * pad - k) // stride + 1, (wid + 2 * pad - k) // stride + 1
    y = torch.zeros(n, c_out, oh, ow, dtype=DT)
    C = torch.zeros_like(W)
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * stride:i * stride + k, j * stride:j * stride + k]  # n, c_in, k, k
            y[:, :, i, j] = window.flatten(1) @ W.flatten(1).T
            C += (y[:, :, i, j].T @ window.flatten(1)).view_as(W)
    return y, C, oh * ow


WM = {"mirror_lr": 0.3, "mirror_decay": 0.7, "mirror_noise": 0.6, "mirror_batch": 16, "mirror_steps": 2}


def test_wm_step_mirrors_then_credits_through_the_mirrored_b():
    net, wm = make("wm", WM, dtype=DT)
    x, y = batch(dtype=DT)
    W, b = weights(net)
    state = wm.gen.get_state()
    shapes = [(64,), (12,), (12,), (12,)]
    expected = mirror_replay(W, wm.B, state, shapes, eta=0.3, lam=0.7, sigma=0.6, n=16, steps=2)
    wm.step(x, y)
    for l, (mine, theirs) in enumerate(zip(wm.B, expected, strict=True), 2):
        close(mine, theirs, f"B_{l}")
    G, gb = feedback_chain(W, b, [None] + expected, x, y)  # mirror first, then the credit pass
    for l, layer in enumerate(net.layers, 1):
        close(layer.weight.grad, G[l - 1], f"grad W_{l}")
        close(layer.bias.grad, gb[l - 1], f"grad b_{l}")
    assert not torch.equal(wm.gen.get_state(), state)


def test_wm_conv_mirror_step_equals_the_convolution_written_out():
    """cnn-small-tanh on 1×8×8: conv 1→16 (8×8 → 4×4), conv 16→32 (4×4 → 2×2, P = 4), linear 128 → 10;
    B exists for the second conv and the linear layer."""
    net, wm = make("wm", WM, spec="cnn-small-tanh", dtype=DT)
    W, _ = weights(net)
    state = wm.gen.get_state()
    expected = mirror_replay(W, wm.B, state, [(1, 8, 8), (16, 4, 4), (128,)], eta=0.3, lam=0.7, sigma=0.6,
                             n=16, steps=2, conv={1: (2, 1)})
    wm.step(*batch(dtype=DT))
    for l, (mine, theirs) in enumerate(zip(wm.B, expected, strict=True), 2):
        close(mine, theirs, f"B_{l}")


def test_wm_mirror_alone_converges_to_sigma2_w_over_lambda():
    """On fixed W, the mirror rule's mean fixed point is B* = σ²W/λ. With a = ηλ, summing the rule over the
    K steps after a burn-in gives the time average B̄ = (σ²/λ) C̄ + (B_start − B_end)/(aK), C̄ the mean of
    the K sample correlations W z zᵀ/n (z ~ N(0, I)). Projected on W, ρ = ⟨B̄, W⟩/‖W‖² estimates σ²/λ with
    relative standard deviation s = √(2 Σs_i⁴ / (Σs_i²)²) / √(nK) (var zᵀWᵀWz = 2 tr (WᵀW)², s_i the
    singular values of W); the tolerance is 5s (here ≈ 0.3%: a 1% change of σ² or λ fails), plus
    the boundary term's bound. The angle of B̄ to W is below 1° and of the last B below 5°
    (measured: 0.2° and 2.5°); at the start, B (fa's draw) is ~90° from W."""
    eta, lam, sigma, n, burn, K = 0.5, 0.5, 0.8, 1000, 40, 1000
    params = {"mirror_lr": eta, "mirror_decay": lam, "mirror_noise": sigma, "mirror_batch": n, "mirror_steps": 1}
    net, wm = make("wm", params, spec="mlp-2x12-tanh", dtype=DT, input_shape=(20,))
    shapes = [(20,), (12,), (12,)]
    assert all(angle_degrees(bb, layer.weight) > 60 for bb, layer in zip(wm.B, net.layers[1:], strict=True))
    for _ in range(burn):
        wm.mirror(shapes)
    start = [bb.clone() for bb in wm.B]
    total = [torch.zeros_like(bb) for bb in wm.B]
    for _ in range(K):
        wm.mirror(shapes)
        total = [t + bb for t, bb in zip(total, wm.B, strict=True)]
    for l, (layer, t, b0, b1) in enumerate(zip(net.layers[1:], total, start, wm.B, strict=True), 2):
        w = layer.weight.detach()
        mean = t / K
        ratio = (mean * w).sum() / (w * w).sum()
        s2 = torch.linalg.svdvals(w) ** 2
        s = math.sqrt(2 * (s2 * s2).sum() / s2.sum() ** 2) / math.sqrt(n * K)
        boundary = (b0 - b1).norm() / (eta * lam * K) / w.norm() / (sigma ** 2 / lam)  # relative to σ²/λ
        assert abs(ratio / (sigma ** 2 / lam) - 1) < 5 * s + boundary, (l, ratio.item(), s, boundary.item())
        assert angle_degrees(mean, w) < 1.0, l
        assert angle_degrees(b1, w) < 5.0, l


# ================================================================== cost, plausibility, hyperparameters, state
def phase_flops(name, params, spec, n=32):
    meter = CostMeter()
    _, algo = make(name, params, spec=spec, meter=meter)
    with meter.update():
        algo.step(*batch(n=n))
    return meter.kind_flops["update"], algo


OUTPUT_POSITIONS = {"mlp-3x12-tanh": [1, 1, 1, 1], "cnn-small-tanh": [16, 4, 1]}  # per layer, on 1×8×8 inputs


@pytest.mark.parametrize("spec", ["mlp-3x12-tanh", "cnn-small-tanh"])
def test_feedback_flops_equal_the_analytic_count_and_credit_flops_fa(spec):
    fa, _ = phase_flops("fa", {}, spec)
    for decay in (0.0, 0.01):
        kp, algo = phase_flops("kp", {"decay": decay}, spec)
        sizes = [layer.weight.numel() for layer in algo.net.layers]
        assert kp["feedback"] == sum(2 * s for s in sizes[1:])  # B·(1 − ηλ), + (−η)·G
        assert kp["forward"] == fa["forward"]
        assert kp["credit"] == fa["credit"] + (sum(sizes) if decay else 0)  # G + λW: one add per entry
    n, steps = 16, 3
    wm, algo = phase_flops("wm", {"mirror_batch": n, "mirror_steps": steps}, spec)
    expected = 0
    for layer, P in zip(algo.net.layers[1:], OUTPUT_POSITIONS[spec][1:], strict=True):
        size = layer.weight.numel()
        expected += steps * (2 * 2 * n * P * size + 2 * size)  # W z, Σ y zᵀ, and the decayed step
    assert wm["feedback"] == expected
    assert wm["forward"] == fa["forward"] and wm["credit"] == fa["credit"]


def test_plausibility_records():
    assert make("kp")[1].plausibility().to_dict() == {
        "weight_transport": False, "local": True, "phases": "single", "feedback_learning": True,
        "transport": "none",
        "notes": "B_l learns from the local δ_l h_{l-1}ᵀ that W_l learns from; both decay, so B_l − W_l → 0 "
                 "without reading W"}
    assert make("wm")[1].plausibility().to_dict() == {
        "weight_transport": False, "local": True, "phases": "two", "feedback_learning": True, "transport": "none",
        "notes": "mirror phase: each layer driven by its own noise ξ, B_l learns y ξᵀ with decay (→ σ²W_l/λ) "
                 "without reading W"}


def test_declared_hyperparameters_and_search_ranges():
    kp, wm = get_algorithm("kp"), get_algorithm("wm")
    assert kp.version == 1 and wm.version == 1
    assert kp.Params().model_dump() == {"feedback_scale": 1.0, "feedback_lr": 0.1, "decay": 1e-3}
    assert kp.Params.search_space() == {
        "feedback_scale": {"kind": "loguniform", "low": 0.1, "high": 10.0},
        "feedback_lr": {"kind": "loguniform", "low": 1e-3, "high": 1.0},
        "decay": {"kind": "loguniform", "low": 1e-5, "high": 1e-2}}
    assert wm.Params().model_dump() == {"feedback_scale": 1.0, "mirror_lr": 0.05, "mirror_decay": 1.0,
                                        "mirror_noise": 1.0, "mirror_steps": 1, "mirror_batch": 128}
    assert wm.Params.search_space() == {
        "feedback_scale": {"kind": "loguniform", "low": 0.1, "high": 10.0},
        "mirror_lr": {"kind": "loguniform", "low": 1e-3, "high": 0.1},
        "mirror_decay": {"kind": "loguniform", "low": 0.1, "high": 10.0},
        "mirror_steps": {"kind": "randint", "low": 1, "high": 4},
        "mirror_batch": {"kind": "choice", "values": [32, 64, 128, 256]}}
    assert {"linear", "conv"} <= set(kp.capabilities.layers) and {"linear", "conv"} <= set(wm.capabilities.layers)


@pytest.mark.parametrize("name,spec", [("kp", "mlp-3x12-tanh"), ("wm", "mlp-3x12-tanh"), ("wm", "cnn-small-tanh")])
def test_checkpoint_round_trip_resumes_bit_for_bit(name, spec):
    """3 updates straight equal 2 updates, a checkpoint (net, optimizer, extra_state, generator) loaded into
    an algorithm built from another seed, and 1 more update."""
    params = {"mirror_batch": 8} if name == "wm" else {"decay": 0.01}

    def run(net, algo, opt, seeds):
        for t in seeds:
            algo.step(*batch(seed=t))
            opt.step()

    net, algo = make(name, params, spec=spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    run(net, algo, opt, range(3))
    net1, first = make(name, params, spec=spec)
    opt1 = torch.optim.Adam(net1.parameters(), lr=1e-2)
    run(net1, first, opt1, range(2))
    ck = copy.deepcopy({"net": net1.state_dict(), "opt": opt1.state_dict(), "algo": first.extra_state(),
                        "gen": first.gen.get_state()})
    net2, resumed = make(name, params, spec=spec, seed=5)
    net2.load_state_dict(ck["net"])
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-2)
    opt2.load_state_dict(ck["opt"])
    resumed.load_extra_state(ck["algo"])
    resumed.gen.set_state(ck["gen"])
    run(net2, resumed, opt2, [2])
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), net2.parameters(), strict=True))
    assert all(torch.equal(p, q) for p, q in zip(algo.B, resumed.B, strict=True))

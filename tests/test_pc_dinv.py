"""pc, pc-fa, pc-kp (predictive coding) and dinv (dynamic inversion) against their equations written out here.

Oracles are computed from scratch (own forward pass, softmax, inference and settling loops) in float64 with
1e-10 relative tolerances, so a 1% change in any term fails; the equivalences (pc-fa with B = W is pc) are
bit for bit. The limits (pc → bp as the nudge β → 0; the loop → the damped least-squares solution) state
their tolerances with the measured values.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from harness.cost import CostMeter
from harness.errors import UnsupportedError
from harness.metrics import angle_degrees, bp_gradients
from harness.networks import build_network
from harness.registry import get_algorithm
from tests.conftest import oracle_close

DT = torch.float64
SPEC, INPUT, CLASSES, N = "mlp-3x12-tanh", (1, 8, 8), 10, 16

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny networks, one thread

close = partial(oracle_close, rtol=1e-10, atol=1e-13)  # tests/conftest.py


def make(name, params=None, spec=SPEC, seed=0, meter=None):
    net = build_network(spec, INPUT, CLASSES, generator=torch.Generator().manual_seed(seed)).to(DT)
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases, so that a bias wrongly used shows
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=g, dtype=DT))
    return get_algorithm(name)(net, params or {}, generator=torch.Generator().manual_seed(seed + 1), meter=meter)


def data(seed=0, n=N):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(n, *INPUT, generator=g, dtype=DT), torch.randint(0, CLASSES, (n,), generator=g)


def params_of(algo):
    layers = algo.net.layers
    return [l.weight.detach().clone() for l in layers], [l.bias.detach().clone() for l in layers]


def grads(algo):
    return [l.weight.grad.clone() for l in algo.net.layers], [l.bias.grad.clone() for l in algo.net.layers]


# ------------------------------------------------------------------ an MLP written out (tanh hidden layers)
def forward(W, b, x, leaky=False):
    """h[0] = x (flattened), a[l] = h[l] W_lᵀ + b_l (0-based l), h[l+1] = tanh(a[l]) (or leaky ReLU, slope 0.01);
    logits a[L−1]."""
    h, a = [x.flatten(1)], []
    for l in range(len(W)):
        a.append(h[-1] @ W[l].T + b[l])
        f = torch.where(a[-1] > 0, a[-1], 0.01 * a[-1]) if leaky else torch.tanh(a[-1])
        h.append(a[-1] if l == len(W) - 1 else f)
    return h, a


def onehot(y, k=CLASSES):
    t = torch.zeros(len(y), k, dtype=DT)
    t[torch.arange(len(y)), y] = 1.0
    return t


def softmax(a):
    z = (a - a.max(1, keepdim=True).values).exp()
    return z / z.sum(1, keepdim=True)


def pc_oracle(W, b, x, y, T, gamma, beta, energy="ce", B=None, leaky=False):
    """Predictive coding written out: value nodes v_1..v_{L−1} from the forward pass, T steps of
    v_l += γ(−(v_l − tanh(W_{l−1} v_{l−1} + b)) + B_lᵀ((v_{l+1} − tanh(a_l)) ⊙ (1 − tanh(a_l)²))), the top
    error −β ∂ℓ/∂a (ℓ summed over the batch), then ∇W_l = −δ_l v_lᵀ/(βn). B defaults to W."""
    B = W if B is None else B
    L, n = len(W), len(y)
    h, _ = forward(W, b, x, leaky)
    v = [t.clone() for t in h[:L]]
    f = (lambda t: torch.where(t > 0, t, 0.01 * t)) if leaky else torch.tanh
    df = (lambda t: torch.where(t > 0, torch.ones_like(t), torch.full_like(t, 0.01))) if leaky else \
        (lambda t: 1 - torch.tanh(t) ** 2)

    def errs(v):
        a = [v[l] @ W[l].T + b[l] for l in range(L)]
        e = [v[l + 1] - f(a[l]) for l in range(L - 1)]
        top = softmax(a[L - 1]) - onehot(y) if energy == "ce" else a[L - 1] - onehot(y)
        e.append(-beta * top)
        d = [e[l] * df(a[l]) for l in range(L - 1)] + [e[L - 1]]
        return e, d

    for _ in range(T):
        e, d = errs(v)
        v = [v[0]] + [v[l] + gamma * (-e[l - 1] + d[l] @ B[l]) for l in range(1, L)]
    e, d = errs(v)
    return [-(d[l].T @ v[l]) / (beta * n) for l in range(L)], [-d[l].sum(0) / (beta * n) for l in range(L)], v


def pc_energy(W, b, v, y, beta, energy="ce"):
    """E = Σ_l ½‖v_{l+1} − tanh(W_l v_l + b_l)‖² + β Σ_n ℓ (CE, or ½‖a − onehot‖²), from the value nodes alone."""
    L = len(W)
    a = [v[l] @ W[l].T + b[l] for l in range(L)]
    E = sum(0.5 * (v[l + 1] - torch.tanh(a[l])).square().sum() for l in range(L - 1))
    if energy == "mse":
        return E + beta * 0.5 * (a[L - 1] - onehot(y)).square().sum()
    logp = a[L - 1] - a[L - 1].exp().sum(1, keepdim=True).log()
    return E - beta * logp[torch.arange(len(y)), y].sum()


# ------------------------------------------------------------------ pc: the oracle, the limits
@pytest.mark.parametrize("params,spec", [
    ({"inference_steps": 3, "inference_rate": 0.2}, SPEC),
    ({"inference_steps": 4, "inference_rate": 0.15, "output_energy": "mse", "target": "nudge", "nudge": 0.3}, SPEC),
    ({"inference_steps": 3, "inference_rate": 0.3, "target": "nudge", "nudge": 0.05}, SPEC),
    ({"inference_steps": 3, "inference_rate": 0.2}, "mlp-3x12-leaky-relu"),
])
def test_pc_update_equals_the_inference_loop_written_out(params, spec):
    algo = make("pc", params, spec=spec)
    x, y = data()
    W, b = params_of(algo)
    beta = params.get("nudge", 1.0)
    gw, gb, _ = pc_oracle(W, b, x, y, params["inference_steps"], params["inference_rate"], beta,
                          params.get("output_energy", "ce"), leaky=spec != SPEC)
    algo.compute_update(x, y)
    mine_w, mine_b = grads(algo)
    for l in range(len(W)):
        close(mine_w[l], gw[l], f"W_{l + 1}")
        close(mine_b[l], gb[l], f"b_{l + 1}")


def test_pc_with_no_inference_learns_only_the_top_layer_by_the_delta_rule():
    """T = 0: every hidden error is 0 (the value nodes are the forward pass), so hidden layers get a zero update
    and the top layer the delta rule (softmax − onehot) h_{L−1}ᵀ / n (ce), (a − onehot) h_{L−1}ᵀ / n (mse; β
    cancels)."""
    x, y = data()
    for params, err in (({"inference_steps": 0}, lambda a: softmax(a) - onehot(y)),
                        ({"inference_steps": 0, "output_energy": "mse", "target": "nudge", "nudge": 0.37},
                         lambda a: a - onehot(y))):
        algo = make("pc", params)
        W, b = params_of(algo)
        h, a = forward(W, b, x)
        algo.compute_update(x, y)
        gw, gb = grads(algo)
        close(gw[-1], err(a[-1]).T @ h[-2] / N, "top W")
        close(gb[-1], err(a[-1]).sum(0) / N, "top b")
        assert all(g.abs().max() == 0 for g in gw[:-1] + gb[:-1])


def test_pc_updates_approach_bp_as_the_nudge_shrinks():
    """With converged inference (γ = 0.3, 1000 steps; 400 steps at γ = 0.1 are not converged here: 0.39° at
    β = 0.001) and output energy β·CE, the equilibrium errors are β times bp's up to O(β²), so the update tends
    to bp's gradient linearly in β. Measured (all layers together): 6.33°, 0.668°, 0.0671° and relative errors
    0.121, 0.0128, 0.00128 at β = 0.1, 0.01, 0.001."""
    x, y = data()
    angles, errors = [], []
    for beta in (1e-1, 1e-2, 1e-3):
        algo = make("pc", {"target": "nudge", "nudge": beta, "inference_steps": 1000, "inference_rate": 0.3})
        bp = torch.cat([g.flatten() for g in bp_gradients(algo.net, x, y)])
        algo.compute_update(x, y)
        mine = torch.cat([g.flatten() for g in grads(algo)[0]])
        angles.append(angle_degrees(mine, bp))
        errors.append(((mine - bp).norm() / bp.norm()).item())
    assert angles[0] > 3 * angles[1] > 9 * angles[2] and angles[2] < 0.1, angles
    assert errors[0] > 3 * errors[1] > 9 * errors[2] and errors[2] < 2e-3, errors


def test_pc_inference_descends_the_energy_monotonically():
    """Inference is gradient descent on E: for small γ the energy (computed here from the value nodes alone)
    falls at every step; at γ = 0.05 it falls by a factor of ≈ 0.8 over 40 steps (measured)."""
    algo = make("pc", {"inference_rate": 0.05})
    x, y = data()
    W, b = params_of(algo)
    fw = algo.net.forward_all(x)
    flat = lambda v: [v[0].flatten(1)] + v[1:]
    energies = [pc_energy(W, b, flat(algo.relax(fw, y, t).v), y, 1.0).item() for t in range(40)]
    assert all(e1 < e0 for e0, e1 in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.9 * energies[0]
    assert energies[0] == pytest.approx(algo.energy(algo.relax(fw, y, 0), y).item(), rel=1e-12)
    assert energies[-1] == pytest.approx(algo.energy(algo.relax(fw, y, 39), y).item(), rel=1e-12)


@pytest.mark.parametrize("params,beta", [({"output_energy": "mse", "target": "nudge", "nudge": 0.3}, 0.3),
                                         ({"inference_steps": 6}, 1.0)])
def test_pc_energy_and_its_ratio_after_inference(params, beta):
    """``energy`` is E of the value nodes (either output energy, β-weighted); the diagnostic ``energy_ratio`` is
    E after the T inference steps over E at the forward pass."""
    algo = make("pc", params)
    x, y = data()
    W, b = params_of(algo)
    fw = algo.net.forward_all(x)
    flat = lambda v: [v[0].flatten(1)] + v[1:]
    energy = params.get("output_energy", "ce")
    T = algo.hp.inference_steps
    e0, eT = (pc_energy(W, b, flat(algo.relax(fw, y, t).v), y, beta, energy) for t in (0, T))
    assert algo.energy(algo.relax(fw, y, T), y).item() == pytest.approx(eT.item(), rel=1e-12)
    assert algo.diagnostics(x, y)["energy_ratio"] == pytest.approx((eT / e0).item(), rel=1e-12)
    assert (eT / e0).item() < 0.95


# ------------------------------------------------------------------ pc-fa, pc-kp
def test_pc_fa_equals_the_loop_with_its_feedback_and_pc_when_the_feedback_is_w():
    fa, pc = make("pc-fa", {"inference_steps": 3}), make("pc", {"inference_steps": 3})
    x, y = data()
    W, b = params_of(fa)
    gw, _, _ = pc_oracle(W, b, x, y, 3, 0.1, 1.0, B=[None] + [B.clone() for B in fa.B])
    fa.compute_update(x, y)
    for l in range(len(W)):
        close(grads(fa)[0][l], gw[l], f"W_{l + 1}")
    for algo_name in ("pc-fa", "pc-kp"):
        other = make(algo_name, {"inference_steps": 3, **({"decay": 0.0} if algo_name == "pc-kp" else {})})
        other.B = [layer.weight.detach().clone() for layer in other.net.layers[1:]]
        other.compute_update(x, y)
        pc.compute_update(x, y)
        for (p, q) in zip(grads(other), grads(pc)):
            assert all(torch.equal(u, v) for u, v in zip(p, q))  # bit for bit


@pytest.mark.parametrize("name", ["pc-fa", "pc-kp"])
def test_feedback_starts_as_scaled_glorot_uniform(name):
    """B_l ~ U(±s·√(6/(fan_in + fan_out))), s = feedback_scale, drawn with W_l's shape from the algorithm's generator."""
    for scale in (1.0, 2.5):
        algo = make(name, {"feedback_scale": scale}, spec="mlp-3x200-tanh")
        for B, layer in zip(algo.B, algo.net.layers[1:]):
            bound = scale * math.sqrt(6.0 / (layer.fan_in + layer.fan_out))
            assert B.shape == layer.weight.shape and B.abs().max() <= bound and B.abs().max() > 0.99 * bound


@pytest.mark.parametrize("name", ["pc-fa", "pc-kp"])
def test_feedback_angles_to_w_per_layer(name):
    """The diagnostic ``angle_b_w_l<l>``: the angle of layer l's feedback B_l to W_l, for l = 2 .. L."""
    algo = make(name)
    out = algo.diagnostics(*data())
    keys = sorted(k for k in out if k.startswith("angle_b_w_l"))
    assert keys == ["angle_b_w_l2", "angle_b_w_l3", "angle_b_w_l4"]
    for j in (1, 2, 3):
        B, W = algo.B[j - 1], algo.net.layers[j].weight.detach()
        cos = (B * W).sum() / (B.norm() * W.norm())
        assert out[f"angle_b_w_l{j + 1}"] == pytest.approx(math.degrees(math.acos(cos.item())), rel=1e-9)


def test_pc_kp_feedback_gets_w_s_update_and_converges_to_w_under_decay():
    """Under sgd at lr = feedback_lr = η, W − B ← (1 − ηλ)(W − B) exactly at every update (B's update is W's,
    both decay); so B → W. W decays at the same rate, so B's angle to W falls only where W is made of recent
    updates: a learnable task (labels from a fixed linear map). Measured: ∠(B_l, W_l), l = 2, 3, 4, from
    87/94/93° to 2.26/0.0056/0.0007° after 300 updates at η = 0.5, λ = 0.1."""
    eta, lam = 0.5, 0.1
    R = torch.randn(64, CLASSES, generator=torch.Generator().manual_seed(9), dtype=DT)
    algo = make("pc-kp", {"feedback_lr": eta, "decay": lam, "inference_steps": 5})
    opt = torch.optim.SGD(algo.net.parameters(), lr=eta)
    layers = algo.net.layers
    start = [angle_degrees(algo.B[j - 1], layers[j].weight) for j in range(1, len(layers))]
    for t in range(300):
        x, _ = data(seed=t)
        y = (x.flatten(1) @ R).argmax(1)
        diff = [layers[j].weight.detach() - algo.B[j - 1] for j in range(1, len(layers))]
        algo.step(x, y)
        opt.step()
        if t == 0:
            for j in range(1, len(layers)):
                close(layers[j].weight.detach() - algo.B[j - 1], (1 - eta * lam) * diff[j - 1], f"W−B {j + 1}")
    end = [angle_degrees(algo.B[j - 1], layers[j].weight) for j in range(1, len(layers))]
    assert min(start) > 80 and max(end) < 5, (start, end)


@pytest.mark.parametrize("lam", [0.03, 1.0, 0.0])
def test_pc_kp_pseudo_gradient_adds_the_decay_of_w(lam):
    algo = make("pc-kp", {"decay": lam, "inference_steps": 3})
    x, y = data()
    W, b = params_of(algo)
    gw, gb, _ = pc_oracle(W, b, x, y, 3, 0.1, 1.0, B=[None] + [B.clone() for B in algo.B])
    algo.compute_update(x, y)
    for l in range(len(W)):
        close(grads(algo)[0][l], gw[l] + lam * W[l], f"W_{l + 1}")
        close(grads(algo)[1][l], gb[l], f"b_{l + 1}")


# ------------------------------------------------------------------ dinv
def damped_lstsq(W, g, lam):
    """argmin_u ‖g − W u‖² + λ‖u‖² for each row of g, by least squares on [W; √λ I] u = [g; 0]."""
    A = torch.cat([W, math.sqrt(lam) * torch.eye(W.shape[1], dtype=DT)])
    rhs = torch.cat([g.T, torch.zeros(W.shape[1], g.shape[0], dtype=DT)])
    return torch.linalg.lstsq(A, rhs, driver="gelsd").solution.T


@pytest.mark.parametrize("spec,j", [("mlp-3x12-tanh", 3), ("mlp-3x12-tanh", 1), ("mlp-2x16-tanh", 1)],
                         ids=["rectangular-10x12", "square-12x12", "square-16x16"])
def test_dinv_loop_settles_to_the_damped_least_squares_solution(spec, j):
    """2000 steps at η = 0.3, λ = 0.5: the error contracts by at least 1 − ηλ = 0.85 per step, so the settled
    state equals the damped least-squares solution to rounding (measured ≤ 1e-14 relative; asserted 1e-10)."""
    algo = make("dinv", {"settle_rate_mode": "fixed", "settle_steps": 2000, "settle_rate": 0.3, "damping": 0.5}, spec=spec)
    W = algo.net.layers[j].weight.detach()
    g = torch.randn(N, W.shape[0], generator=torch.Generator().manual_seed(3), dtype=DT)
    close(algo.settle(j, g), damped_lstsq(W, g, 0.5), "settled u")
    assert algo.diagnostics(*data())["pinv_residual"] < 1e-10


def test_dinv_loop_without_leak_settles_to_the_moore_penrose_solution_on_a_wide_layer():
    """λ = 0 on the 10×12 top layer: u stays in W's row space from u = 0, so it settles to W⁺ g (the
    minimum-norm solution); the diagnostics' angle to W⁺ is then 0. σ(W) = 1.80 … 0.090: at η = 0.5 the slowest
    direction contracts by 1 − ησ_min² = 0.996 a step, e^{−80} in 20000 steps."""
    algo = make("dinv", {"settle_rate_mode": "fixed", "settle_steps": 20000, "settle_rate": 0.5, "damping": 0.0})
    W = algo.net.layers[3].weight.detach()
    g = torch.randn(N, CLASSES, generator=torch.Generator().manual_seed(4), dtype=DT)
    close(algo.settle(3, g), g @ torch.linalg.pinv(W).T, "settled u")
    assert algo.diagnostics(*data())["angle_q_pinv_l4"] < 1e-5


@pytest.mark.parametrize("spec", [SPEC, "mlp-3x12-leaky-relu"])
def test_dinv_update_equals_the_settling_loop_written_out(spec):
    K, eta, lam = 3, 0.25, 0.4
    algo = make("dinv", {"settle_rate_mode": "fixed", "settle_steps": K, "settle_rate": eta, "damping": lam}, spec=spec)
    x, y = data()
    W, b = params_of(algo)
    leaky = spec != SPEC
    h, a = forward(W, b, x, leaky)
    L = len(W)
    g = (softmax(a[L - 1]) - onehot(y)) / N
    want_w, want_b = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        want_w[l], want_b[l] = g.T @ h[l], g.sum(0)
        if l > 0:
            u = torch.zeros(N, W[l].shape[1], dtype=DT)
            for _ in range(K):
                u = u + eta * ((g - u @ W[l].T) @ W[l] - lam * u)
            g = u * (torch.where(a[l - 1] > 0, torch.ones_like(u), torch.full_like(u, 0.01)) if leaky else 1 - h[l] ** 2)
    algo.compute_update(x, y)
    for l in range(L):
        close(grads(algo)[0][l], want_w[l], f"W_{l + 1}")
        close(grads(algo)[1][l], want_b[l], f"b_{l + 1}")


def test_dinv_diagnostics_are_rfl_s_of_the_settled_map():
    """The settled map Q_K (the loop on the identity) after K steps, written out as the matrix polynomial
    Q_Kᵀ = η Σ_{i<K} W (I − η(WᵀW + λI))^i, gives the residual ‖Q_K(WWᵀ + λI) − Wᵀ‖/‖Wᵀ‖."""
    K, eta, lam = 4, 0.3, 0.5
    algo = make("dinv", {"settle_rate_mode": "fixed", "settle_steps": K, "settle_rate": eta, "damping": lam})
    out = algo.diagnostics(*data())
    for j in range(1, 4):
        W = algo.net.layers[j].weight.detach()
        M = torch.eye(W.shape[1], dtype=DT) - eta * (W.T @ W + lam * torch.eye(W.shape[1], dtype=DT))
        Qt = eta * sum(W @ torch.linalg.matrix_power(M, i) for i in range(K))
        close(algo.settled_map(j), Qt, f"Q_K {j + 1}")
        res = ((W @ W.T + lam * torch.eye(W.shape[0], dtype=DT)) @ Qt - W).norm() / W.norm()
        assert out[f"pinv_residual_l{j + 1}"] == pytest.approx(res.item(), rel=1e-10)
        assert out[f"angle_q_wt_l{j + 1}"] == pytest.approx(angle_degrees(Qt, W), rel=1e-8)
        assert out[f"angle_q_pinv_l{j + 1}"] == pytest.approx(angle_degrees(Qt, torch.linalg.pinv(W).T), rel=1e-8)
    assert out["pinv_residual"] == max(out[f"pinv_residual_l{j}"] for j in (2, 3, 4)) > 0.05
    assert sorted(out) == sorted(["pinv_residual"] + [f"{k}_l{j}" for j in (2, 3, 4)
                                                      for k in ("pinv_residual", "angle_q_pinv", "angle_q_wt")])


# ------------------------------------------------------------------ every FLOP counted
def matmul_flops(algo_name, params):
    meter = CostMeter(elementwise=False)
    algo = make(algo_name, params, meter=meter)
    x, y = data()
    with meter.update():
        algo.step(x, y)
    return meter.flops_by_phase


@pytest.mark.parametrize("T", [0, 1, 5])
def test_pc_flops_equal_the_analytic_count_by_phase(T):
    """mlp-3x12-tanh: 64 → 12 → 12 → 12 → 10. Per inference step, every layer above the first sends δ down
    (F_jᵀ δ_j) and predicts again from its moved input; then the L weight gradients."""
    dims = [64, 12, 12, 12, CLASSES]
    mm = lambda a, b: 2 * N * a * b
    layers = list(zip(dims[:-1], dims[1:]))
    forward = sum(mm(a, b) for a, b in layers)
    credit = T * sum(2 * mm(a, b) for a, b in layers[1:]) + sum(mm(a, b) for a, b in layers)
    for name in ("pc", "pc-fa", "pc-kp"):
        assert matmul_flops(name, {"inference_steps": T}) == {"forward": forward, "credit": credit, "feedback": 0}


@pytest.mark.parametrize("K", [1, 7])
def test_dinv_flops_equal_the_analytic_count_by_phase(K):
    """Per layer above the first, K settling steps of two matmuls (W u and Wᵀ r); the L weight gradients."""
    dims = [64, 12, 12, 12, CLASSES]
    mm = lambda a, b: 2 * N * a * b
    layers = list(zip(dims[:-1], dims[1:]))
    forward = sum(mm(a, b) for a, b in layers)
    credit = K * sum(2 * mm(a, b) for a, b in layers[1:]) + sum(mm(a, b) for a, b in layers)
    assert matmul_flops("dinv", {"settle_steps": K, "settle_rate_mode": "fixed"}) == {
        "forward": forward, "credit": credit, "feedback": 0}
    # normalized: one power-iteration step per layer above the first (W v, then Wᵀ(W v)), after the priming
    meter = CostMeter(elementwise=False)
    algo = make("dinv", {"settle_steps": K}, meter=meter)
    algo.pretrain(None, N)
    assert algo.update_kind() == "update"
    with meter.update():
        algo.step(*data())
    power = sum(2 * 2 * a * b for a, b in layers[1:])
    assert meter.flops_by_phase == {"forward": forward, "credit": credit + power, "feedback": 0}
    fresh = CostMeter(elementwise=False)  # stepped without pretrain: the first update primes, as kind "prime"
    algo = make("dinv", {"settle_steps": K}, meter=fresh)
    assert algo.update_kind() == "prime"
    with fresh.update(algo.update_kind()):
        algo.step(*data())
    from algorithms.dinv import POWER_PRIME

    assert fresh.kind_flops["prime"]["credit"] == credit + (POWER_PRIME + 1) * power


def test_dinv_normalized_step_follows_the_layers_gain():
    """η_j = settle_rate/(σ̂_j² + λ), σ̂_j² from the power iteration (within 1% of σ_max(W_j)² after the priming and
    one update's step); the update is the settling loop written out with that η."""
    K, rate, lam = 4, 1.2, 0.3
    algo = make("dinv", {"settle_steps": K, "settle_rate": rate, "damping": lam})
    x, y = data()
    W, b = params_of(algo)
    h, a = forward(W, b, x)
    L = len(W)
    algo.pretrain(None, N)
    algo.step(x, y)
    g = (softmax(a[L - 1]) - onehot(y)) / N
    want = [None] * L
    for l in range(L - 1, -1, -1):
        want[l] = g.T @ h[l]
        if l > 0:
            s2 = algo.sigma2[l].item()
            assert s2 == pytest.approx(torch.linalg.matrix_norm(W[l], 2).item() ** 2, rel=1e-2)
            eta = rate / (s2 + lam)
            u = torch.zeros(N, W[l].shape[1], dtype=DT)
            for _ in range(K):
                u = u + eta * ((g - u @ W[l].T) @ W[l] - lam * u)
            g = u * (1 - h[l] ** 2)
    for l in range(L):
        close(grads(algo)[0][l], want[l], f"W_{l + 1}")


# ------------------------------------------------------------------ declarations
@pytest.mark.parametrize("name,record", [
    ("pc", (True, "values", True, "single", False)),
    ("pc-fa", (False, "none", True, "single", False)),
    ("pc-kp", (False, "none", True, "single", True)),
    ("dinv", (True, "values", True, "single", False)),
])
def test_plausibility_declares_what_the_credit_pathway_reads(name, record):
    p = make(name).plausibility()
    assert (p.weight_transport, p.transport, p.local, p.phases, p.feedback_learning) == record


@pytest.mark.parametrize("name", ["pc", "pc-fa", "pc-kp", "dinv"])
def test_convolutional_networks_are_refused(name):
    net = build_network("cnn-small-tanh", INPUT, CLASSES, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UnsupportedError, match="does not support conv"):
        get_algorithm(name)(net)


@pytest.mark.parametrize("name", ["pc", "pc-fa", "pc-kp"])
def test_the_nudge_acts_only_when_nudging(name):
    from harness.errors import CreditbenchError

    params = get_algorithm(name).Params
    with pytest.raises(CreditbenchError, match="'nudge' does not act"):
        params.build({"nudge": 0.1}, owner=name, refuse_inactive=True)
    assert "nudge" not in get_algorithm(name).Params().active_dump()
    assert make(name, {"target": "nudge", "nudge": 0.1}).beta == 0.1


def test_pc_fa_and_kp_checkpoint_their_feedback():
    algo = make("pc-kp")
    algo.step(*data())
    other = make("pc-kp", seed=3)
    other.load_extra_state(algo.extra_state())
    assert all(torch.equal(p, q) for p, q in zip(algo.B, other.B))


def test_dinv_power_vectors_start_unit_length_from_the_algorithms_generator():
    """v_j: a unit vector per layer above the first from the algorithm's generator (the global RNG does not
    matter); before any update the loop's step reads the gain of v_j as it stands, without moving it."""
    torch.manual_seed(1)
    a = make("dinv")
    torch.manual_seed(2)
    b = make("dinv")
    assert sorted(a.v) == [1, 2, 3] and not a.sigma2 and a.update_kind() == "prime"
    for j in a.v:
        assert a.v[j].norm().item() == pytest.approx(1.0, rel=1e-12) and torch.equal(a.v[j], b.v[j])
        W = a.net.layers[j].weight.detach()
        gain = (W.T @ (W @ a.v[j])).norm()
        with torch.no_grad():
            step = float(a.step_size(j))
        assert step == pytest.approx((a.hp.settle_rate / (gain + a.hp.damping)).item(), rel=1e-12)
        assert torch.equal(a.v[j], b.v[j])  # reading the step moved nothing
    assert not torch.equal(make("dinv", seed=3).v[1], a.v[1])

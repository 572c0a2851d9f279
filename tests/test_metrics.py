"""harness/metrics.py: the angle, the bp reference gradients and the per-layer alignment angles."""

from __future__ import annotations

import math

import pytest
import torch

from harness.metrics import alignment_angles, angle_degrees, bp_gradients
from harness.networks import build_network
from harness.registry import get_algorithm

from tests.test_oracles import Net, chain_rule


def test_angle_equals_the_arccos_definition():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        u, v = torch.randn(3, 4, generator=g), torch.randn(12, generator=g)
        cos = (u.flatten().double() @ v.double()) / (u.double().norm() * v.double().norm())
        assert angle_degrees(u, v) == pytest.approx(math.degrees(math.acos(cos)), rel=1e-12)
        assert angle_degrees(4 * u, 0.5 * v) == pytest.approx(angle_degrees(u, v), rel=1e-12)  # scale-free (exact scalings)
    assert angle_degrees(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(45.0, rel=1e-14)
    assert angle_degrees(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])) == pytest.approx(135.0, rel=1e-14)


def test_angle_is_accurate_near_0_and_180_degrees_in_double_precision():
    u = torch.tensor([1.0, 0.0, 0.0])
    for eps in (1e-5, 1e-9):
        v = torch.tensor([1.0, eps, 0.0], dtype=torch.float64)
        want = math.degrees(math.atan(eps))  # acos(cos) would round this to 0 below ~1e-8
        assert angle_degrees(u, v) == pytest.approx(want, rel=1e-9)
        assert angle_degrees(u, -v) == pytest.approx(180 - want, rel=1e-15)
    # float32 inputs are compared in double: 1e-4 apart in a single component is not 0°
    a = torch.tensor([1.0, 2.0, 3.0])
    b = a.clone()
    b[0] += 1e-4
    exact = angle_degrees(a.double(), b.double())
    assert exact > 0 and angle_degrees(a, b) == pytest.approx(exact, rel=1e-3)


def test_angle_with_a_zero_vector_is_nan():
    assert math.isnan(angle_degrees(torch.zeros(3), torch.ones(3)))
    assert math.isnan(angle_degrees(torch.ones(3), torch.zeros(3)))


def network():
    net = build_network("mlp-3x12-tanh", (1, 8, 8), 10, generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 1, 8, 8, generator=g, dtype=torch.float64)
    return net, x, torch.randint(0, 10, (24,), generator=g)


def test_bp_gradients_are_the_chain_rule_even_under_no_grad():
    net, x, y = network()
    with torch.no_grad():  # the harness calls it from no_grad code
        grads = bp_gradients(net, x, y)
    oracle = Net(net, "tanh")
    want = chain_rule(oracle, x, y, oracle.W)[2]
    assert len(grads) == 4
    for g, (gw, _) in zip(grads, want, strict=True):
        torch.testing.assert_close(g, gw, rtol=1e-10, atol=1e-14)
    assert all(p.grad is None for p in net.parameters())  # a diagnostic: nothing written to .grad


def test_alignment_angles_compare_each_layer_update_with_bp():
    net, x, y = network()
    fa = get_algorithm("fa")(net, generator=torch.Generator().manual_seed(3))
    angles = alignment_angles(fa, x, y)
    reference = bp_gradients(net, x, y)
    fa.compute_update(x, y)
    want = [angle_degrees(w.grad, g) for w, g in zip(net.weights(), reference, strict=True)]
    assert angles == want and len(angles) == 4
    assert angles[-1] < 1e-5 and all(a > 20 for a in angles[:-1])  # top layer exact, the rest random


# ------------------------------------------------------------------ Newton-like diagnostics
def test_contraction_of_a_linear_map_is_the_relative_residual():
    from harness.metrics import contraction

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, generator=g, dtype=torch.float64)
    h, dh = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    da = torch.randn(4, 3, generator=g, dtype=torch.float64)
    upper = lambda v: v @ a.t()  # noqa: E731
    assert contraction(upper, h, dh, da) == pytest.approx(((da - dh @ a.t()).norm() / da.norm()).item(), rel=1e-12)
    exact = da @ torch.linalg.pinv(a).t()  # a right-inverse: J Δh = δa
    assert contraction(upper, h, exact, da) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("relative", [False, True])
def test_gauss_newton_directions_equal_a_per_example_oracle(relative):
    """Per example, J_j = ∂logits/∂h_j by autograd on the equations written out (no harness code), the
    damped minimum-norm target, carried by ⊙ f'; the direction of W_{j−1} sums g hᵀ over examples."""
    from harness.metrics import gauss_newton_directions

    net = build_network("mlp-2x6-tanh", (4,), 3, generator=torch.Generator().manual_seed(1)).double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g)
    damping = 0.1
    chain = lambda j, s, a, h: s * (1 - h * h)  # noqa: E731  (tanh: f'(a) = 1 − h²)
    got = gauss_newton_directions(net, x, y, damping=damping, relative=relative, carry=chain)
    (w0, b0), (w1, b1), (w2, b2) = [(layer.weight.detach(), layer.bias.detach()) for layer in net.layers]
    h1 = torch.tanh(x @ w0.t() + b0)
    h2 = torch.tanh(h1 @ w1.t() + b1)
    logits = h2 @ w2.t() + b2
    e = (torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, 3)) / len(y)
    above = {1: lambda h: w2 @ torch.tanh(w1 @ h + b1) + b2, 2: lambda h: w2 @ h + b2}
    inputs = {0: x, 1: h1, 2: h2}
    want = [None, None, e.t() @ h2]
    for j in (2, 1):
        rows = []
        for i in range(len(y)):
            jac = torch.autograd.functional.jacobian(above[j], inputs[j][i])  # (3, d)
            gram = jac @ jac.t()
            lam = damping * torch.linalg.eigvalsh(gram)[-1] if relative else damping
            s = jac.t() @ torch.linalg.pinv(gram + lam * torch.eye(3, dtype=torch.float64)) @ e[i]
            rows.append(s * (1 - inputs[j][i] ** 2))
        want[j - 1] = torch.stack(rows).t() @ inputs[j - 1]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_gauss_newton_directions_on_leaky_relu_equal_a_per_example_oracle():
    """Three leaky-ReLU hidden layers of one width, so that f′ read from the wrong layer's a (same shape)
    or from h (leaky-ReLU's f′ needs a) gives other numbers; J_j by autograd on the equations written out."""
    from harness.metrics import gauss_newton_directions

    slope = 0.01  # harness.networks.LeakyReLU.slope, restated
    net = build_network("mlp-3x6-leaky-relu", (4,), 3, generator=torch.Generator().manual_seed(4)).double()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
    f = lambda a: torch.where(a > 0, a, slope * a)  # noqa: E731
    fprime = lambda a: torch.where(a > 0, 1.0, torch.full_like(a, slope))  # noqa: E731
    chain = lambda j, s, a, h: s * torch.where(a > 0, 1.0, torch.full_like(a, slope))  # noqa: E731
    got = gauss_newton_directions(net, x, y, damping=0.05, relative=False, carry=chain)
    W = [layer.weight.detach() for layer in net.layers]
    b = [layer.bias.detach() for layer in net.layers]
    hs, as_ = [x], []
    for j in range(4):
        as_.append(hs[-1] @ W[j].t() + b[j])
        hs.append(f(as_[-1]) if j < 3 else as_[-1])
    e = (torch.softmax(as_[-1], 1) - torch.nn.functional.one_hot(y, 3)) / len(y)

    def above(j):  # h_j → logits through layers j .. 3
        def fn(h):
            for i in range(j, 4):
                h = W[i] @ h + b[i]
                h = f(h) if i < 3 else h
            return h
        return fn

    want = [None, None, None, e.t() @ hs[3]]
    for j in (3, 2, 1):
        rows = []
        for i in range(len(y)):
            jac = torch.autograd.functional.jacobian(above(j), hs[j][i])
            s = jac.t() @ torch.linalg.pinv(jac @ jac.t() + 0.05 * torch.eye(3, dtype=torch.float64)) @ e[i]
            rows.append(s * fprime(as_[j - 1][i]))
        want[j - 1] = torch.stack(rows).t() @ hs[j - 1]
    for a, w in zip(got, want, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-9, atol=1e-12)

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

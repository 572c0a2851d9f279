"""Conformance of bp and fa: fa with B = W is bp, bit for bit; fa at init is not aligned."""

import pytest
import torch

from harness.metrics import alignment_angles, angle_degrees, bp_gradients
from harness.networks import build_network
from harness.registry import get_algorithm


def grads(algo, x, y):
    algo.compute_update(x, y)
    return [p.grad.clone() for p in algo.net.parameters()]


@pytest.mark.parametrize("spec", ["mlp-3x32-tanh", "mlp-2x32-leaky-relu", "mlp-2x32-relu", "cnn-small-tanh"])
def test_fa_with_transposed_feedback_equals_bp_exactly(spec):
    net = build_network(spec, (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    g_bp = grads(get_algorithm("bp")(net), x, y)
    fa = get_algorithm("fa")(net)
    fa.B = [layer.weight.detach().clone() for layer in net.layers[1:]]  # B_l = W_l (stored W-shaped)
    g_fa = grads(fa, x, y)
    for a, b in zip(g_bp, g_fa, strict=True):
        assert torch.equal(a, b)


def test_bp_matches_autograd_and_angle_is_zero():
    net = build_network("mlp-2x32-tanh", (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    bp = get_algorithm("bp")(net)
    assert alignment_angles(bp, x, y) == [0.0, 0.0, 0.0]
    ref = bp_gradients(net, x, y)
    assert all(torch.equal(w.grad, g) for w, g in zip(net.weights(), ref, strict=True))


@pytest.mark.parametrize("spec", ["mlp-2x32-tanh", "cnn-small-tanh"])
def test_fa_is_not_aligned_at_init_and_last_layer_is_exact(spec):
    net = build_network(spec, (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    angles = alignment_angles(get_algorithm("fa")(net, generator=torch.Generator().manual_seed(5)), x, y)
    assert angles[-1] == 0.0  # the output layer's update needs no feedback
    assert all(a > 20 for a in angles[:-1])  # random feedback: far from bp at init


def test_fa_feedback_is_seeded_and_fixed():
    net = build_network("mlp-2x32-tanh", (1, 8, 8), 10)
    a = get_algorithm("fa")(net, generator=torch.Generator().manual_seed(1))
    b = get_algorithm("fa")(net, generator=torch.Generator().manual_seed(1))
    c = get_algorithm("fa")(net, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(p, q) for p, q in zip(a.B, b.B, strict=True))
    assert not torch.equal(a.B[0], c.B[0])
    before = [bb.clone() for bb in a.B]
    a.step(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    assert all(torch.equal(p, q) for p, q in zip(before, a.B, strict=True))


def test_angle_degrees():
    u = torch.tensor([1.0, 0.0])
    assert angle_degrees(u, u) == 0.0
    assert angle_degrees(u, torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert angle_degrees(u, -u) == pytest.approx(180.0)


def test_fa_feedback_scale_scales_the_feedback_matrices():
    net = build_network("mlp-2x32-tanh", (1, 8, 8), 10)
    one = get_algorithm("fa")(net, generator=torch.Generator().manual_seed(1))
    three = get_algorithm("fa")(net, {"feedback_scale": 3.0}, generator=torch.Generator().manual_seed(1))
    for a, b in zip(one.B, three.B, strict=True):
        torch.testing.assert_close(b, 3 * a)


@pytest.mark.parametrize("name", ["fa", "usf", "kp"])
def test_feedback_angle_diagnostic_is_the_angle_between_b_and_w(name):
    """angle_b_w_l = arccos(⟨B_l, W_l⟩ / (‖B_l‖ ‖W_l‖)) in degrees, per layer l ≥ 2; 0 when B_l = W_l."""
    net = build_network("mlp-3x32-tanh", (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    algo = get_algorithm(name)(net, generator=torch.Generator().manual_seed(4))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    got = algo.diagnostics(x, y)
    assert sorted(got) == ["angle_b_w_l2", "angle_b_w_l3", "angle_b_w_l4"]
    for l in range(1, 4):
        b, w = algo.feedback(l).double().flatten(), net.layers[l].weight.detach().double().flatten()
        want = torch.rad2deg(torch.arccos(b @ w / (b.norm() * w.norm()))).item()
        assert got[f"angle_b_w_l{l + 1}"] == pytest.approx(want, rel=1e-9)
        assert (10 < want < 80) if name == "usf" else (80 < want < 100)  # sign concordant: < 90°; random: ≈ 90°
    if name == "fa":
        algo.B = [layer.weight.detach().clone() for layer in net.layers[1:]]
        assert all(v == 0.0 for v in algo.diagnostics(x, y).values())

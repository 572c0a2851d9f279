"""Layers, activations and the output error (harness/networks.py, harness.algorithm.output_error) against
autograd and against the definitions written out here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.algorithm import output_error
from harness.errors import ConfigError, UnknownNameError
from harness.networks import (
    ACTIVATIONS, Activation, Conv, Identity, LeakyReLU, Linear, Network, ReLU, Tanh, activation, build_network,
    init_weights,
)

DT = torch.float64

REFERENCE = {  # f written out, and whether f⁻¹ exists
    "tanh": (torch.tanh, True),
    "leaky-relu": (lambda a: torch.where(a > 0, a, 0.01 * a), True),
    "relu": (lambda a: torch.where(a > 0, a, torch.zeros_like(a)), False),
    "linear": (lambda a: a, True),
}


def pre_activations(dtype=DT, n=200):
    g = torch.Generator().manual_seed(0)
    a = 3 * torch.randn(n, generator=g, dtype=dtype)
    a[:2] = torch.tensor([0.0, -0.0], dtype=dtype)
    return a


def autograd_derivative(f, a):
    a = a.clone().requires_grad_()
    return torch.autograd.grad(f(a).sum(), a)[0]


def test_registry_of_activations():
    assert sorted(ACTIVATIONS) == sorted(REFERENCE)
    for name in REFERENCE:
        act = activation(name)
        assert isinstance(act, ACTIVATIONS[name]) and act.name == name and act.invertible == REFERENCE[name][1]
    assert activation("tanh") is not activation("tanh")  # a fresh instance each time
    with pytest.raises(UnknownNameError, match="sigmoid"):
        activation("sigmoid")


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_activation_value_derivative_and_backward(name, dtype):
    act, (f, _) = activation(name), REFERENCE[name]
    a = pre_activations(dtype)
    h = act(a)
    torch.testing.assert_close(h, f(a), rtol=0, atol=0)
    d = act.deriv(a, h)
    assert d.dtype == dtype and d.shape == a.shape
    eps = torch.finfo(dtype).eps  # 1 − h² loses digits to cancellation where tanh saturates: absolute error
    torch.testing.assert_close(d, autograd_derivative(f, a), rtol=0, atol=4 * eps)
    grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    back = act.backward(grad, a, h)
    torch.testing.assert_close(back, grad * d, rtol=0, atol=4 * eps * grad.abs().max().item())
    # bit for bit what autograd computes through torch's own op, so that rules equal to bp are equal bit for bit
    a_ = a.clone().requires_grad_()
    torch_op = {"tanh": torch.tanh, "leaky-relu": lambda t: F.leaky_relu(t, 0.01), "relu": torch.relu,
                "linear": lambda t: t}[name]
    assert torch.equal(back, torch.autograd.grad(torch_op(a_), a_, grad)[0])


@pytest.mark.parametrize("name", ["tanh", "leaky-relu", "linear"])
def test_inverse_undoes_the_activation(name):
    act = activation(name)
    a = pre_activations(n=50) / 2  # tanh: away from saturation, where atanh is well conditioned
    torch.testing.assert_close(act.inverse(act(a)), a, rtol=1e-12, atol=1e-14)


def test_tanh_clips_into_its_open_range_before_inverting():
    t = Tanh()
    h = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0], dtype=DT)
    want = torch.tensor([-1 + 1e-6, -1 + 1e-6, -0.5, 0.0, 0.999, 1 - 1e-6, 1 - 1e-6], dtype=DT)
    assert torch.equal(t.clip(h), want)
    assert torch.equal(t.inverse(h), torch.atanh(want))
    for other in (LeakyReLU(), ReLU(), Identity()):
        assert torch.equal(other.clip(h), h)  # no range to clip into


def test_relu_and_the_base_class_refuse_what_they_cannot_do():
    with pytest.raises(ConfigError, match="'relu' is not invertible"):
        ReLU().inverse(torch.ones(2))
    base = Activation()
    for call in (lambda: base(torch.ones(1)), lambda: base.deriv(torch.ones(1), torch.ones(1))):
        with pytest.raises(NotImplementedError):
            call()
    with pytest.raises(ConfigError, match=r"'\?' is not invertible"):
        base.inverse(torch.ones(1))


def test_leaky_relu_slope_and_inverse_on_both_sides():
    act = LeakyReLU()
    a = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=DT)
    assert torch.equal(act(a), torch.tensor([-0.02, -0.005, 0.0, 0.5, 2.0], dtype=DT))
    assert torch.equal(act.deriv(a, act(a)), torch.tensor([0.01, 0.01, 0.01, 1.0, 1.0], dtype=DT))
    torch.testing.assert_close(act.inverse(torch.tensor([-0.02, 0.5], dtype=DT)), torch.tensor([-2.0, 0.5], dtype=DT),
                               rtol=1e-15, atol=0)


# ------------------------------------------------------------------ layers
def autograd_layer(pre_fn, weight, bias, h, delta):
    """(∂/∂h, ∂/∂W, ∂/∂b) of Σ δ ⊙ a(h; W, b), by autograd."""
    h, w, b = (t.detach().clone().requires_grad_() for t in (h, weight, bias))
    return torch.autograd.grad((pre_fn(h, w, b) * delta).sum(), [h, w, b])


def test_linear_layer_pre_and_backward():
    g = torch.Generator().manual_seed(0)
    layer = Linear(64, 12, Tanh()).to(DT)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(12, 64, generator=g, dtype=DT))
        layer.bias.copy_(torch.randn(12, generator=g, dtype=DT))
    h = torch.randn(5, 1, 8, 8, generator=g, dtype=DT)  # image-shaped input: flattened, signal shaped back
    a = layer.pre(h)
    torch.testing.assert_close(a, h.reshape(5, 64) @ layer.weight.T + layer.bias, rtol=1e-14, atol=1e-14)
    delta = torch.randn(5, 12, generator=g, dtype=DT)
    ref = autograd_layer(lambda h_, w, b: F.linear(h_.flatten(1), w, b), layer.weight, layer.bias, h, delta)
    grad_in, gw, gb = layer.backward(delta, h, layer.weight.detach())
    assert grad_in.shape == h.shape
    for got, want in zip((grad_in, gw, gb), ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    B = torch.randn(12, 64, generator=g, dtype=DT)
    grad_in, gw2, gb2 = layer.backward(delta, h, B)
    torch.testing.assert_close(grad_in, (delta @ B).reshape(h.shape), rtol=1e-14, atol=1e-14)
    assert torch.equal(gw2, gw) and torch.equal(gb2, gb)
    none, gw3, _ = layer.backward(delta, h, None)
    assert none is None and torch.equal(gw3, gw)
    assert (layer.in_features, layer.out_features, layer.fan_in, layer.fan_out) == (64, 12, 64, 12)


def test_conv_layer_pre_and_backward():
    g = torch.Generator().manual_seed(0)
    layer = Conv(3, 5, 3, 2, 1, Tanh()).to(DT)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, 3, 3, 3, generator=g, dtype=DT))
        layer.bias.copy_(torch.randn(5, generator=g, dtype=DT))
    h = torch.randn(4, 3, 9, 9, generator=g, dtype=DT)  # odd size: stride and padding both show

    def conv(h_, w, b):
        return F.conv2d(h_, w, b, stride=2, padding=1)

    a = layer.pre(h)
    assert a.shape == (4, 5, 5, 5)
    torch.testing.assert_close(a, conv(h, layer.weight, layer.bias), rtol=0, atol=0)
    delta = torch.randn(a.shape, generator=g, dtype=DT)
    ref = autograd_layer(conv, layer.weight, layer.bias, h, delta)
    got = layer.backward(delta, h, layer.weight.detach())
    for x, want in zip(got, ref, strict=True):
        torch.testing.assert_close(x, want, rtol=1e-13, atol=1e-13)
    B = torch.randn(5, 3, 3, 3, generator=g, dtype=DT)
    grad_in, gw, gb = layer.backward(delta, h, B)
    torch.testing.assert_close(grad_in, autograd_layer(conv, B, layer.bias, h, delta)[0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(gw, ref[1], rtol=1e-13, atol=1e-13)
    none, gw2, gb2 = layer.backward(delta, h, None)
    assert none is None
    torch.testing.assert_close(gw2, ref[1], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(gb2, ref[2], rtol=1e-13, atol=1e-13)
    assert (layer.fan_in, layer.fan_out) == (27, 45)


def test_network_forward_and_forward_all():
    net = build_network("mlp-2x7-tanh", (1, 8, 8), 10, generator=torch.Generator().manual_seed(0)).to(DT)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=DT))
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=DT)
    W = [layer.weight.detach() for layer in net.layers]
    b = [layer.bias.detach() for layer in net.layers]
    a1 = x.flatten(1) @ W[0].T + b[0]
    a2 = torch.tanh(a1) @ W[1].T + b[1]
    a3 = torch.tanh(a2) @ W[2].T + b[2]
    fw = net.forward_all(x)
    assert len(fw.h) == len(fw.a) == 3 and fw.h[0] is x
    for got, want in zip([*fw.h[1:], *fw.a, fw.logits], [torch.tanh(a1), torch.tanh(a2), a1, a2, a3, a3]):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    assert torch.equal(net(x), fw.logits)
    assert net.activations == {"tanh"} and net.layer_kinds == {"linear"}
    assert all(w is layer.weight for w, layer in zip(net.weights(), net.layers, strict=True))
    cnn = build_network("cnn-small-relu", (1, 8, 8), 10)
    assert cnn.layer_kinds == {"conv", "linear"} and cnn.activations == {"relu"}


def test_layer_base_class_has_no_affine_map():
    layer = Network("x", [Linear(2, 2, Identity())]).layers[0]
    init_weights(Network("x", [layer]), "glorot", torch.Generator().manual_seed(0))
    base = type(layer).__mro__[1](Tanh())
    with pytest.raises(NotImplementedError):
        base.pre(torch.ones(1, 2))
    with pytest.raises(NotImplementedError):
        base.backward(torch.ones(1, 2), torch.ones(1, 2), None)
    assert isinstance(base.act, Tanh)


# ------------------------------------------------------------------ output error
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_error_is_cross_entropy_and_its_gradient(dtype):
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(16, 10, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (16,), generator=g)
    loss, e = output_error(logits, y)
    z = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(z, y)
    (ref_e,) = torch.autograd.grad(ref, z)
    assert torch.equal(loss, ref.detach()) and torch.equal(e, ref_e)  # the same kernels: bit for bit
    # and the definition: mean of −log softmax at the label; e = (softmax − onehot) / n
    p = torch.softmax(logits.double(), 1)
    onehot = F.one_hot(y, 10).double()
    torch.testing.assert_close(loss.double(), -(p[torch.arange(16), y].log()).mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(e.double(), (p - onehot) / 16, rtol=1e-5, atol=1e-7)
    assert e.dtype == dtype and loss.shape == ()


def test_output_error_counts_every_class_label_with_a_hundred_classes_or_more():
    """No valid label is ignored (the kernels' ignore_index is −100, outside every label range)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 128, generator=g, dtype=DT)
    y = torch.tensor([100, 0, 127, 100, 5, 99])
    loss, e = output_error(logits, y)
    z = logits.clone().requires_grad_()
    ref = F.cross_entropy(z, y)
    (ref_e,) = torch.autograd.grad(ref, z)
    assert torch.equal(loss, ref.detach()) and torch.equal(e, ref_e)
    assert e[0, 100] < 0 and e[3, 100] < 0  # the label's own column carries softmax − 1


def test_base_backward_multiplies_by_the_derivative_given_the_output():
    """Activation.backward = grad ⊙ f′(a, h), for an activation whose derivative is written in its output h."""
    class Sigmoid(Activation):
        name = "sigmoid-test"

        def __call__(self, a):
            return torch.sigmoid(a)

        def deriv(self, a, h):
            return h * (1 - h)

    a = pre_activations()
    grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    act = Sigmoid()
    torch.testing.assert_close(act.backward(grad, a, act(a)), grad * autograd_derivative(torch.sigmoid, a),
                               rtol=1e-12, atol=0)

"""Max-pooling networks: the LeNet-5 and VGG-style presets, ``Layer.carry`` through a max-pool, and the
credit rules that support pooled networks, each against an independent computation.

The presets are checked against the same network written with ``torch.nn`` modules (BioTorch's LeNet
layout, conv1 padded by 2 for 28×28 inputs); ``carry`` against an explicit loop over pooling windows;
the rules' updates against per-layer autograd VJPs (``torch.nn.functional``'s conv and max-pool, with the
rule's feedback in place of W, or dfa/drtp's projection at a_l), none of which runs harness code.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.algorithm import Capabilities, output_error
from harness.errors import ConfigError, UnsupportedError
from harness.networks import Conv, Identity, Linear, Network, Tanh, build_network, init_weights
from harness.registry import get_algorithm
from tests.conftest import oracle_close

DT = torch.float64
K = 10
LENET_SHAPE = (1, 28, 28)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def torch_lenet():
    """BioTorch 0.0.16's LeNetMNIST (biotorch/models/le_net.py), conv1 padded by 2 for 28×28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, K))


def torch_vgg():
    blocks = []
    c = 3
    for out in (32, 64, 128):
        blocks += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c = out
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, K))


def copy_into(ours, reference):
    """Our weights into the reference's affine modules, in order."""
    affine = [m for m in reference if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(affine) == len(ours.layers)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer, m in zip(ours.layers, affine, strict=True):
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g, dtype=layer.bias.dtype))
            assert m.weight.shape == layer.weight.shape
            m.weight.copy_(layer.weight)
            m.bias.copy_(layer.bias)


def lenet(seed=0):
    return build_network("lenet5-relu", LENET_SHAPE, K, generator=torch.Generator().manual_seed(seed)).to(DT)


@pytest.mark.parametrize("name,shape,reference,params", [
    ("lenet5-relu", LENET_SHAPE, torch_lenet, 61_706),  # LeNet-5's classic parameter count
    ("vgg-small-relu", (3, 32, 32), torch_vgg, 814_122),
])
def test_presets_are_the_torch_networks(name, shape, reference, params):
    net = build_network(name, shape, K, generator=torch.Generator().manual_seed(0)).to(DT)
    ref = reference().to(DT)
    copy_into(net, ref)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters()) == params
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    want = ref(x)
    torch.testing.assert_close(net(x), want, rtol=1e-12, atol=1e-12)
    fw = net.forward_all(x)
    torch.testing.assert_close(fw.logits, want, rtol=1e-12, atol=1e-12)
    # the shape of every layer's input, known without computing (flat for linear layers)
    flat = [tuple(t.shape[1:]) if net.layers[i].kind == "conv" else (t[0].numel(),) for i, t in enumerate(fw.h)]
    assert net.input_shapes(shape) == flat
    assert net.layer_kinds == {"conv", "linear", "maxpool"} and net.activations == {"relu"}
    for z, a in zip(fw.z, fw.a[:-1], strict=True):
        torch.testing.assert_close(z, torch.relu(a), rtol=0, atol=0)


def test_lenet_layer_shapes():
    """conv1 (padded by 2) keeps 28×28, pool → 14; conv2 → 10, pool → 5; conv3 → 1×1; then 120 → 84 → 10."""
    net = lenet()
    fw = net.forward_all(torch.randn(2, *LENET_SHAPE, dtype=DT))
    assert [tuple(a.shape[1:]) for a in fw.a] == [(6, 28, 28), (16, 10, 10), (120, 1, 1), (84,), (K,)]
    assert [tuple(h.shape[1:]) for h in fw.h] == [(1, 28, 28), (6, 14, 14), (16, 5, 5), (120, 1, 1), (84,)]
    assert [layer.pool for layer in net.layers] == [2, 2, 1, 1, 1]
    assert fw.z[0] is not fw.h[1] and fw.z[2] is fw.h[3]  # unpooled layers store one tensor


def test_unpooled_networks_keep_their_records():
    net = build_network("cnn-small-tanh", (1, 8, 8), K)
    fw = net.forward_all(torch.randn(2, 1, 8, 8))
    assert all(z is h for z, h in zip(fw.z, fw.h[1:], strict=True)) and len(fw.z) == len(net.layers) - 1
    assert net.layer_kinds == {"conv", "linear"}


def test_networks_too_small_for_their_input_are_refused():
    with pytest.raises(ConfigError, match="convolution 2 of this network leaves nothing of inputs of shape "
                                          r"\(1, 8, 8\); it needs larger images"):
        build_network("lenet5-relu", (1, 8, 8), K)


# ------------------------------------------------------------------ carry through a max-pool, by loop
def pooled_carry_loop(signal, a, k):
    """∂/∂a of Σ signal ⊙ maxpool_k(tanh(a)), window by window: each window's signal goes to the
    position of its (first) largest tanh(a) and is multiplied by tanh' there; cells outside every
    window (the floor's leftover rows and columns) get nothing."""
    z = torch.tanh(a)
    out = torch.zeros_like(a)
    n, c, hgt, wid = a.shape
    for i in range(n):
        for ch in range(c):
            for r in range(hgt // k):
                for q in range(wid // k):
                    win = z[i, ch, r * k:(r + 1) * k, q * k:(q + 1) * k].reshape(-1)
                    j = int(torch.argmax(win))
                    rr, qq = r * k + j // k, q * k + j % k
                    out[i, ch, rr, qq] += signal[i, ch, r, q] * (1 - z[i, ch, rr, qq] ** 2)
    return out


@pytest.mark.parametrize("k,size", [(2, 6), (2, 5), (3, 7)])
def test_carry_through_max_pool_equals_the_window_loop(k, size):
    layer = Conv(1, 3, 3, 1, 1, Tanh(), pool=k)
    g = torch.Generator().manual_seed(k * 10 + size)
    a = torch.randn(2, 3, size, size, generator=g, dtype=DT)
    z = torch.tanh(a)
    h = layer.pooled(z)
    assert h.shape == (2, 3, size // k, size // k)
    torch.testing.assert_close(h, F.max_pool2d(z, k), rtol=0, atol=0)
    signal = torch.randn(h.shape, generator=g, dtype=DT)
    got = layer.carry(signal, a, z)
    want = pooled_carry_loop(signal, a, k)
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)


def test_carry_without_pool_is_the_activation_derivative():
    layer = Conv(1, 3, 3, 1, 1, Tanh())
    a = torch.randn(2, 3, 4, 4, dtype=DT)
    s = torch.randn(2, 3, 4, 4, dtype=DT)
    torch.testing.assert_close(layer.carry(s, a, torch.tanh(a)), s * (1 - torch.tanh(a) ** 2), rtol=1e-14, atol=0)


# ------------------------------------------------------------------ the rules on LeNet, by autograd VJPs
def torch_layer(net, l, h, weight=None):
    """Layer l's affine map with torch.nn.functional (``weight`` in place of W if given)."""
    layer = net.layers[l]
    w = layer.weight.detach() if weight is None else weight
    if layer.kind == "conv":
        return F.conv2d(h, w, layer.bias.detach(), layer.stride, layer.padding)
    return F.linear(h.flatten(1), w, layer.bias.detach())


TORCH_ACT = {"relu": (torch.relu, lambda a: (a > 0).to(a.dtype)),
             "tanh": (torch.tanh, lambda a: 1 - torch.tanh(a) ** 2)}  # f and f' by torch, per activation name


def torch_post(net, l, a):
    z = TORCH_ACT[net.layers[l].act.name][0](a)
    return F.max_pool2d(z, net.layers[l].pool) if net.layers[l].pool > 1 else z


def reference_forward(net, x):
    hs, as_ = [x], []
    for l in range(len(net.layers)):
        a = torch_layer(net, l, hs[-1])
        as_.append(a)
        hs.append(torch_post(net, l, a) if l < len(net.layers) - 1 else a)
    return hs, as_


def local_grads(net, l, h, delta):
    """∇W_l, ∇b_l of Σ δ_l ⊙ a_l(h): the weight gradients of a given δ_l at layer l."""
    layer = net.layers[l]
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    a = (F.conv2d(h, w, b, layer.stride, layer.padding) if layer.kind == "conv" else F.linear(h.flatten(1), w, b))
    return torch.autograd.grad((a * delta).sum(), (w, b))


def softmax_error(logits, y):
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(y, K).to(DT)
    return (p - onehot) / len(y), onehot


def feedback_rule(net, x, y, B):
    """δ_L = e; δ_{l-1} = VJP of [a_{l-1} ↦ pool(f(a_{l-1})) ↦ conv/linear with B_l] at δ_l."""
    hs, as_ = reference_forward(net, x)
    e, _ = softmax_error(as_[-1], y)
    L = len(net.layers)
    deltas = [None] * L
    deltas[-1] = e
    for l in range(L - 1, 0, -1):
        a = as_[l - 1].detach().clone().requires_grad_(True)
        out = torch_layer(net, l, torch_post(net, l - 1, a), weight=B[l])
        deltas[l - 1] = torch.autograd.grad(out, a, deltas[l])[0]
    return [local_grads(net, l, hs[l], deltas[l]) for l in range(L)]


close = partial(oracle_close, rtol=1e-10, atol=1e-12)  # tests/conftest.py


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *LENET_SHAPE, generator=g, dtype=DT), torch.randint(0, K, (n,), generator=g)


def with_biases(net):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g, dtype=DT))
    return net


FEEDBACK_RULES = ["fa", "usf", "frsf", "brsf", "kp", "wm"]


@pytest.mark.parametrize("name", FEEDBACK_RULES)
def test_feedback_rules_on_lenet_equal_the_vjp_loop(name):
    """The rule's own B_l (``feedback(l)``, read after the update) in the reference loop gives its update."""
    net = with_biases(lenet())
    algo = get_algorithm(name)(net, generator=torch.Generator().manual_seed(1))
    x, y = batch()
    algo.compute_update(x, y)
    B = [None] + [algo.feedback(l).clone() for l in range(1, len(net.layers))]
    for l in range(1, len(net.layers)):
        assert not torch.allclose(B[l], net.layers[l].weight, rtol=0.1)  # not bp: the test sees the feedback
    want = feedback_rule(net, x, y, B)
    for l, (layer, (gw, gb)) in enumerate(zip(net.layers, want, strict=True)):
        close(layer.weight.grad - (algo.hp.decay * layer.weight if name == "kp" else 0), gw, f"{name} ∇W_{l}")
        close(layer.bias.grad, gb, f"{name} ∇b_{l}")


def test_fa_with_transposed_feedback_on_lenet_equals_bp_exactly():
    net = with_biases(build_network("lenet5-relu", LENET_SHAPE, K, generator=torch.Generator().manual_seed(0)))
    x, y = batch()
    x = x.float()
    get_algorithm("bp")(net).compute_update(x, y)
    bp = [p.grad.clone() for p in net.parameters()]
    fa = get_algorithm("fa")(net)
    fa.B = [layer.weight.detach().clone() for layer in net.layers[1:]]
    fa.compute_update(x, y)
    for p, want in zip(net.parameters(), bp, strict=True):
        assert torch.equal(p.grad, want)


def check_direct_rule(name, net, x, y):
    """δ_l = (s B_l) ⊙ f'(a_l) at a_l before the max-pool (s = e, or y*/n for drtp); the plugin's B_l."""
    algo = get_algorithm(name)(net, {"feedback_scale": 1.5}, generator=torch.Generator().manual_seed(1))
    algo.compute_update(x, y)
    hs, as_ = reference_forward(net, x)
    e, onehot = softmax_error(as_[-1], y)
    s = onehot / len(y) if name == "drtp" else e
    deltas = [(s @ b).view_as(a) * TORCH_ACT[layer.act.name][1](a)
              for b, a, layer in zip(algo.B, as_[:-1], net.layers, strict=False)] + [e]
    for l, layer in enumerate(net.layers):
        gw, gb = local_grads(net, l, hs[l], deltas[l])
        close(layer.weight.grad, gw, f"{name} ∇W_{l}")
        close(layer.bias.grad, gb, f"{name} ∇b_{l}")
    return algo


@pytest.mark.parametrize("name", ["dfa", "drtp"])
def test_direct_rules_on_lenet_project_to_the_pre_pool_activations(name):
    """On LeNet (ReLU) B_l is K × C·H·W of a_l before the pool."""
    net = with_biases(lenet())
    algo = check_direct_rule(name, net, *batch())
    assert [tuple(b.shape) for b in algo.B] == [(K, 6 * 28 * 28), (K, 16 * 10 * 10), (K, 120), (K, 84)]


# ------------------------------------------------------------------ odd, non-square, tanh
ODD_SHAPE = (2, 29, 17)


def odd_net(dtype=DT):
    """tanh; conv 3×3/s2/p1 → 15×9, max-pool 3 → 5×3; conv 3×3/s1/p1 → 5×3, max-pool 2 → 2×1 (floor,
    both ways); fc 10 → 7; fc 7 → K. Every size odd, nothing square."""
    net = Network("odd", [Conv(2, 4, 3, 2, 1, Tanh(), pool=3), Conv(4, 5, 3, 1, 1, Tanh(), pool=2),
                          Linear(10, 7, Tanh()), Linear(7, K, Identity())]).to(dtype)
    init_weights(net, "glorot", torch.Generator().manual_seed(2))
    return with_biases(net) if dtype == DT else net


def odd_batch(n=5, dtype=DT):
    g = torch.Generator().manual_seed(11)
    return torch.randn(n, *ODD_SHAPE, generator=g, dtype=dtype), torch.randint(0, K, (n,), generator=g)


def test_odd_non_square_pooled_network_shapes():
    net = odd_net()
    x, _ = odd_batch()
    hs, as_ = reference_forward(net, x)
    assert [tuple(a.shape[1:]) for a in as_] == [(4, 15, 9), (5, 5, 3), (7,), (K,)]
    assert net.input_shapes(ODD_SHAPE) == [ODD_SHAPE, (4, 5, 3), (10,), (7,)]
    fw = net.forward_all(x)
    for got, want in zip(fw.h[1:] + [fw.logits], hs[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="needs larger images"):
        build_network("lenet5-relu", (1, 28, 8), K)  # narrow, not short: still refused


def test_fa_with_transposed_feedback_on_the_odd_network_equals_bp_exactly():
    net = odd_net(torch.float32)
    x, y = odd_batch(dtype=torch.float32)
    get_algorithm("bp")(net).compute_update(x, y)
    bp = [p.grad.clone() for p in net.parameters()]
    fa = get_algorithm("fa")(net)
    fa.B = [layer.weight.detach().clone() for layer in net.layers[1:]]
    fa.compute_update(x, y)
    assert all(torch.equal(p.grad, want) for p, want in zip(net.parameters(), bp, strict=True))


@pytest.mark.parametrize("name", ["fa", "usf", "kp"])
def test_feedback_rules_on_the_odd_tanh_network_equal_the_vjp_loop(name):
    net = odd_net()
    algo = get_algorithm(name)(net, generator=torch.Generator().manual_seed(1))
    x, y = odd_batch()
    algo.compute_update(x, y)
    B = [None] + [algo.feedback(l).clone() for l in range(1, len(net.layers))]
    for l, (layer, (gw, gb)) in enumerate(zip(net.layers, feedback_rule(net, x, y, B), strict=True)):
        close(layer.weight.grad - (algo.hp.decay * layer.weight if name == "kp" else 0), gw, f"{name} ∇W_{l}")
        close(layer.bias.grad, gb, f"{name} ∇b_{l}")


@pytest.mark.parametrize("name", ["dfa", "drtp"])
def test_direct_rules_on_the_odd_tanh_network(name):
    """tanh's f'(a) comes from z = f(a) before the pool, not from the pooled h."""
    check_direct_rule(name, odd_net(), *odd_batch())


def test_wm_mirrors_each_layer_with_noise_of_its_input_shape(monkeypatch):
    import algorithms.wm as wm_module

    net = odd_net()
    wm = get_algorithm("wm")(net, {"mirror_batch": 3}, generator=torch.Generator().manual_seed(1))
    seen, affine = [], wm_module.affine
    monkeypatch.setattr(wm_module, "affine", lambda layer, z: seen.append(tuple(z.shape[1:])) or affine(layer, z))
    wm.step(*odd_batch())
    assert seen == [(4, 5, 3), (10,), (7,)]  # layers 2..L: the inputs of the forward pass, not ODD_SHAPE's order


def test_a_pool_in_any_layer_makes_the_network_pooled():
    first = Network("a", [Conv(1, 2, 3, 1, 1, Tanh(), pool=2), Conv(2, 2, 3, 1, 1, Tanh()), Linear(8, K, Identity())])
    last = Network("b", [Conv(1, 2, 3, 1, 1, Tanh()), Conv(2, 2, 3, 1, 1, Tanh(), pool=2), Linear(8, K, Identity())])
    plain = Network("c", [Conv(1, 2, 3, 1, 1, Tanh()), Linear(8, K, Identity())])
    assert first.layer_kinds == last.layer_kinds == {"conv", "linear", "maxpool"}
    assert plain.layer_kinds == {"conv", "linear"}


def test_rules_without_pooling_support_are_refused():
    net = lenet()
    for name in ("tp", "dtp", "rfl"):
        with pytest.raises(UnsupportedError, match=f"algorithm '{name}' does not support conv/maxpool layers"):
            get_algorithm(name)(net)
    with pytest.raises(UnsupportedError, match="does not support maxpool layers .network 'lenet5-relu'.; "
                                               "supported layers: conv, linear"):
        Capabilities(layers=frozenset({"linear", "conv"})).check("plugin", net)


def test_output_error_on_lenet_is_the_softmax_error():
    net = lenet()
    x, y = batch()
    _, e = output_error(net(x), y)
    close(e, softmax_error(reference_forward(net, x)[1][-1], y)[0], "e")

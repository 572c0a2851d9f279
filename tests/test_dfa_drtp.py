"""Independent oracles for dfa and drtp.

The update of each rule on small float64 networks with random biases (MLPs, and a strided CNN whose
convolutions are written here with ``F.unfold``) is computed from scratch by code that shares nothing
with the plugins or with ``harness.networks``: its own forward pass, softmax error, the fixed random
B_l redrawn from a copy of the plugin's generator, the projections s B_l and the per-layer δ_l and
weight gradients. bp's gradient, where a rule must equal it, is autograd's. Tolerances are ~1e-10
relative: a 1% change in any term fails.
"""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from harness.algorithm import Plausibility, output_error
from harness.cost import CostMeter
from harness.networks import build_network
from harness.registry import get_algorithm
from tests.conftest import oracle_close

DT = torch.float64
N, K = 16, 10
SHAPE = (1, 8, 8)
SLOPE = 0.01  # leaky-relu's


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny networks, one thread


def make(name, spec, params=None, seed=0):
    net = build_network(spec, SHAPE, K, generator=torch.Generator().manual_seed(seed)).to(DT)
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases, so that every use of b shows
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=g, dtype=DT))
    return get_algorithm(name)(net, params or {}, generator=torch.Generator().manual_seed(seed + 1))


def batch(seed=0, n=N):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(n, *SHAPE, generator=g, dtype=DT), torch.randint(0, K, (n,), generator=g)


close = partial(oracle_close, rtol=1e-10, atol=1e-12)  # tests/conftest.py


# ------------------------------------------------------------------ the network, independently
class Net:
    """Weights, biases and kind of every layer read off a built network; tanh or leaky-relu hidden
    layers, linear output; convolutions (3×3, stride 2, padding 1 in the presets) through unfold."""

    def __init__(self, net, act):
        self.layers = [(layer.kind, layer.weight.detach().clone(), layer.bias.detach().clone(),
                        getattr(layer, "stride", None), getattr(layer, "padding", None)) for layer in net.layers]
        self.L, self.act = len(self.layers), act

    def f(self, a):
        return torch.tanh(a) if self.act == "tanh" else torch.where(a > 0, a, SLOPE * a)

    def df(self, a, h):
        return 1 - h * h if self.act == "tanh" else torch.where(a > 0, torch.ones_like(a), torch.full_like(a, SLOPE))

    def forward(self, x):
        """h[l] = input of layer l (0-based, h[0] = x), a[l] its pre-activation, h[L] = a[L-1] = logits."""
        h, a = [x], []
        for l, (kind, W, b, stride, pad) in enumerate(self.layers):
            if kind == "conv":
                n, _, hi, wi = h[-1].shape
                k = W.shape[-1]
                cols = F.unfold(h[-1], k, padding=pad, stride=stride)
                ho, wo = (hi + 2 * pad - k) // stride + 1, (wi + 2 * pad - k) // stride + 1
                a.append((W.reshape(len(W), -1) @ cols + b[:, None]).reshape(n, len(W), ho, wo))
            else:
                a.append(h[-1].flatten(1) @ W.T + b)
            h.append(self.f(a[-1]) if l < self.L - 1 else a[-1])
        return h, a

    def grads(self, l, delta, h_in):
        """∇W_l, ∇b_l = δ_l h_{l-1}ᵀ, Σ δ_l (for a conv layer: over the unfolded input patches)."""
        kind, W, _, stride, pad = self.layers[l]
        if kind == "conv":
            cols = F.unfold(h_in, W.shape[-1], padding=pad, stride=stride)
            gw = torch.einsum("nol,nil->oi", delta.flatten(2), cols).reshape(W.shape)
            return gw, delta.sum((0, 2, 3))
        return delta.T @ h_in.flatten(1), delta.sum(0)


def softmax_error(logits, y):
    """Mean cross-entropy and e = ∂L/∂a_L = (softmax − onehot) / n."""
    z = logits - logits.max(1, keepdim=True).values
    logp = z - z.exp().sum(1, keepdim=True).log()
    onehot = torch.zeros_like(logits)
    onehot[torch.arange(len(y)), y] = 1.0
    return -(logp * onehot).sum() / len(y), (logp.exp() - onehot) / len(y), onehot


def feedback_draw(seed, sizes, scale=1.0):
    """B_l (K × d_l): one seed drawn from the plugin's generator (``make``: seed + 1), then per layer, in
    order, scale · U(−√(6/(K + d_l)), +√(6/(K + d_l))) from a generator seeded with it."""
    s = torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(seed + 1)).item()
    g = torch.Generator().manual_seed(s)
    return [(torch.rand(K, d, generator=g, dtype=DT) * 2 - 1) * scale * math.sqrt(6.0 / (K + d)) for d in sizes]


def direct_rule(net: Net, x, y, *, target: bool, scale=1.0, seed=0):
    """δ_L = e; δ_l = (s B_l) ⊙ f'(a_l) with s = e (dfa) or y*/n (drtp); the gradients of every layer."""
    h, a = net.forward(x)
    loss, e, onehot = softmax_error(h[net.L], y)
    B = feedback_draw(seed, [a[l][0].numel() for l in range(net.L - 1)], scale)
    s = onehot / len(y) if target else e
    deltas = [(s @ B[l]).reshape(a[l].shape) * net.df(a[l], h[l + 1]) for l in range(net.L - 1)] + [e]
    grads = [net.grads(l, deltas[l], h[l]) for l in range(net.L)]
    return loss, h[net.L], B, deltas, grads


def bp_grads(algo, x, y):
    params = list(algo.net.parameters())
    with torch.enable_grad():
        loss = F.cross_entropy(algo.net(x), y)
        return list(torch.autograd.grad(loss, params))


def plugin_deltas(algo, x, y):
    fw = algo.net.forward_all(x)
    return algo.deltas(fw, output_error(fw.logits, y)[1], y)


def check(algo, x, y, out, oracle, what):
    loss, logits, B, deltas, grads = oracle
    close(out.loss, loss, f"{what} loss")
    close(out.logits, logits, f"{what} logits")
    assert len(algo.B) == len(B)
    for l, (mine, theirs) in enumerate(zip(B, algo.B, strict=True), 1):
        close(theirs, mine, f"{what} B_{l}")
    for l, (mine, theirs) in enumerate(zip(deltas, plugin_deltas(algo, x, y), strict=True), 1):
        close(theirs, mine, f"{what} δ_{l}")
    for l, (layer, (gw, gb)) in enumerate(zip(algo.net.layers, grads, strict=True), 1):
        close(layer.weight.grad, gw, f"{what} grad W_{l}")
        close(layer.bias.grad, gb, f"{what} grad b_{l}")


# ------------------------------------------------------------------ dfa
@pytest.mark.parametrize("spec", ["mlp-1x12-tanh", "mlp-1x12-leaky-relu"])
def test_dfa_with_one_hidden_layer_and_B1_equal_to_W2_is_bp(spec):
    algo = make("dfa", spec)
    x, y = batch()
    algo.compute_update(x, y)  # draws B_1
    W2 = algo.net.layers[1].weight.detach()
    assert algo.B[0].shape == W2.shape
    assert not torch.allclose(algo.net.layers[0].weight.grad, bp_grads(algo, x, y)[0], rtol=0.1)  # drawn B: not bp
    algo.B[0] = W2.clone()
    out = algo.compute_update(x, y)
    close(out.loss, F.cross_entropy(algo.net(x), y), "loss")
    for p, g in zip(algo.net.parameters(), bp_grads(algo, x, y), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("spec,scale", [("mlp-3x12-tanh", 1.0), ("mlp-3x12-tanh", 2.5), ("mlp-2x12-leaky-relu", 0.5)])
def test_dfa_equals_the_direct_projection_of_the_error_written_out(spec, scale):
    algo = make("dfa", spec, {"feedback_scale": scale})
    net, (x, y) = Net(algo.net, "tanh" if spec.endswith("tanh") else "leaky"), batch()
    out = algo.compute_update(x, y)
    check(algo, x, y, out, direct_rule(net, x, y, target=False, scale=scale), "dfa")
    assert not torch.allclose(algo.net.layers[0].weight.grad, bp_grads(algo, x, y)[0], rtol=0.1)


@pytest.mark.parametrize("name", ["dfa", "drtp"])
def test_a_batch_of_one_example(name):
    """B_l's size is read from one example of a_l, so a batch of a single example works as any other."""
    algo = make(name, "mlp-3x12-tanh")
    net, (x, y) = Net(algo.net, "tanh"), batch(n=1)
    out = algo.compute_update(x, y)
    assert [b.shape for b in algo.B] == [(K, 12)] * 3
    check(algo, x, y, out, direct_rule(net, x, y, target=name == "drtp"), name)


# ------------------------------------------------------------------ drtp
@pytest.mark.parametrize("spec,scale", [("mlp-3x12-tanh", 1.0), ("mlp-2x12-leaky-relu", 3.0)])
def test_drtp_equals_the_direct_projection_of_the_target_written_out(spec, scale):
    algo = make("drtp", spec, {"feedback_scale": scale})
    net, (x, y) = Net(algo.net, "tanh" if spec.endswith("tanh") else "leaky"), batch()
    out = algo.compute_update(x, y)
    check(algo, x, y, out, direct_rule(net, x, y, target=True, scale=scale), "drtp")
    bp = bp_grads(algo, x, y)
    close(algo.net.layers[-1].weight.grad, bp[-2], "output layer grad W = bp's")
    close(algo.net.layers[-1].bias.grad, bp[-1], "output layer grad b = bp's")


@pytest.mark.parametrize("name,blind", [("drtp", True), ("dfa", False)])
def test_only_drtp_hidden_updates_are_blind_to_the_output(name, blind):
    """New output weights and biases change the logits (and the output update) of both rules; drtp's
    hidden updates stay bit for bit the same, dfa's (which project e) do not."""
    algo = make(name, "mlp-2x12-tanh")
    x, y = batch()
    out1 = algo.compute_update(x, y)
    grads1 = [p.grad.clone() for p in algo.net.parameters()]
    top = algo.net.layers[-1]
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        top.weight.mul_(-3).add_(torch.randn(top.weight.shape, generator=g, dtype=DT))
        top.bias.add_(torch.randn(top.bias.shape, generator=g, dtype=DT))
    out2 = algo.compute_update(x, y)
    grads2 = [p.grad.clone() for p in algo.net.parameters()]
    assert not torch.allclose(out1.logits, out2.logits, rtol=0.1)
    assert not torch.allclose(grads1[-2], grads2[-2], rtol=0.1)
    hidden_same = [torch.equal(a, b) for a, b in zip(grads1[:-2], grads2[:-2], strict=True)]
    assert hidden_same == [blind] * 4


# ------------------------------------------------------------------ conv
@pytest.mark.parametrize("name", ["dfa", "drtp"])
def test_conv_layers_receive_the_projection_over_their_whole_output(name):
    """cnn-small-tanh on 8×8: conv 1→16 (4×4), conv 16→32 (2×2), linear; B_l is K × C·H·W."""
    algo = make(name, "cnn-small-tanh", {"feedback_scale": 1.5})
    net, (x, y) = Net(algo.net, "tanh"), batch(n=6)
    assert [layer.kind for layer in algo.net.layers] == ["conv", "conv", "linear"]
    out = algo.compute_update(x, y)
    assert [b.shape for b in algo.B] == [(K, 16 * 4 * 4), (K, 32 * 2 * 2)]
    check(algo, x, y, out, direct_rule(net, x, y, target=name == "drtp", scale=1.5), name)


# ------------------------------------------------------------------ what they declare, their state, their cost
@pytest.mark.parametrize("name,notes", [
    ("dfa", "fixed random B_l send the output error directly to every hidden layer"),
    ("drtp", "hidden layers never see the output error: fixed random B_l project the one-hot target"),
])
def test_plausibility_record(name, notes):
    p = make(name, "mlp-2x12-tanh").plausibility()
    assert isinstance(p, Plausibility)
    assert p.to_dict() == dict(weight_transport=False, transport="none", local=True, phases="single",
                               feedback_learning=False, notes=notes)
    cls = get_algorithm(name)
    assert cls.version == 1 and cls.capabilities.layers == frozenset({"linear", "conv", "maxpool"})
    assert cls.Params.search_space()["feedback_scale"] == {"kind": "loguniform", "low": 0.1, "high": 10.0}


@pytest.mark.parametrize("name", ["dfa", "drtp"])
def test_feedback_is_seeded_by_the_trial_generator_and_drawn_once(name):
    a, same, other = make(name, "mlp-2x12-tanh"), make(name, "mlp-2x12-tanh"), make(name, "mlp-2x12-tanh", seed=3)
    gen = a.gen.get_state()
    a.compute_update(*batch(n=4))
    assert torch.equal(gen, a.gen.get_state())  # drawing B takes nothing from the trial's generator
    first = [b.clone() for b in a.B]
    a.compute_update(*batch(seed=1))
    assert all(b is c or torch.equal(b, c) for b, c in zip(first, a.B, strict=True))  # drawn once
    same.compute_update(*batch(seed=2, n=9))  # another batch: the same B
    other.compute_update(*batch(n=4))
    assert all(torch.equal(b, c) for b, c in zip(first, same.B, strict=True))
    assert all(not torch.allclose(b, c, rtol=0.5) for b, c in zip(first, other.B, strict=True))


@pytest.mark.parametrize("name", ["dfa", "drtp"])
def test_checkpoint_round_trip(name):
    algo = make(name, "mlp-2x12-tanh")
    fresh = copy.deepcopy(algo.extra_state())  # before the first forward pass: the seed, no B yet
    x, y = batch()
    algo.compute_update(x, y)
    state = copy.deepcopy(algo.extra_state())
    algo.extra_state()["B"][0].add_(1.0)  # a copy: changing it leaves the feedback alone
    assert torch.equal(algo.B[0], state["B"][0])
    for saved in (state, fresh):
        other = make(name, "mlp-2x12-tanh", seed=5)
        other.net.load_state_dict(algo.net.state_dict())
        other.load_extra_state(copy.deepcopy(saved))
        other.compute_update(x, y)
        assert other.seed == algo.seed and all(torch.equal(b, c) for b, c in zip(algo.B, other.B, strict=True))
        for p, q in zip(algo.net.parameters(), other.net.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
    saved = copy.deepcopy(state)  # a saved B is restored as saved, not redrawn from the seed
    saved["B"] = [2 * b for b in saved["B"]]
    other.load_extra_state(copy.deepcopy(saved))
    other.compute_update(x, y)
    assert all(torch.equal(b, c) for b, c in zip(saved["B"], other.B, strict=True))


@pytest.mark.parametrize("name", ["dfa", "drtp"])
def test_flops_forward_pass_under_forward_everything_else_under_credit(name):
    """Matmul FLOPs (2·m·n·k): the forward pass; credit: the projections s B_l and the weight gradients.
    Drawing B (first update) is nobody's work: the elementwise count is the same on the next update."""
    algo = make(name, "mlp-2x12-tanh")
    sizes = [(64, 12), (12, 12), (12, K)]
    x, y = batch()
    meter = algo.meter = CostMeter(elementwise=False)
    with meter.update():
        algo.compute_update(x, y)
    want_fwd = sum(2 * N * i * o for i, o in sizes)
    want_credit = sum(2 * N * K * o for _, o in sizes[:-1]) + want_fwd
    assert meter.kind_flops["update"] == {"forward": want_fwd, "credit": want_credit, "feedback": 0}
    fresh = make(name, "mlp-2x12-tanh")
    counts = []
    for _ in range(2):
        fresh.meter = CostMeter(elementwise=True)
        with fresh.meter.update():
            fresh.compute_update(x, y)
        counts.append(fresh.meter.kind_flops["update"])
    assert counts[0] == counts[1] and counts[0]["credit"] > want_credit

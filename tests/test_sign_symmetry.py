"""Independent oracles for the sign-symmetry rules usf, frsf and brsf (algorithms/usf.py, frsf.py, brsf.py).

Each update is recomputed here from scratch, with code that shares nothing with the plugins or with
``harness.networks``: its own forward pass (convolutions through ``unfold``), softmax error, and a
per-layer loop δ_{l-1} = (B_lᵀ δ_l) ⊙ f'(a_{l-1}) with B_l = M_l ⊙ sign(W_l) written out:

    usf   M_l = √(2/(fan_in + fan_out))                      (BioTorch's scaling_factor, xavier init)
    frsf  M_l = |R_l|, R_l ~ U(±√(6/(fan_in + fan_out))) drawn once
    brsf  the same |R_l|, redrawn at every training step

Every δ_l the plugin passes to a layer (recorded on the way) and every gradient is compared at ~1e-10
relative, in float64 with random biases: a 1% change of any term fails.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from harness.cost import CostMeter
from harness.errors import CreditbenchError
from harness.networks import Conv, Identity, Linear, Network, Tanh
from harness.registry import get_algorithm
from tests.conftest import oracle_close

DT = torch.float64
N, CLASSES = 16, 10
SPEC = "mlp-3x12-tanh"
RULES = ("usf", "frsf", "brsf")


# ------------------------------------------------------------------ networks
def random_biases(net, seed):
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases, so that every use of b shows
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=g, dtype=DT))
    return net


def mlp(seed=0):
    from harness.networks import build_network

    net = build_network(SPEC, (1, 8, 8), CLASSES, generator=torch.Generator().manual_seed(seed)).to(DT)
    return random_biases(net, seed)


def tiny_cnn(seed=0):
    """2 → 3 → 4 channels, strided 3×3 convolutions on 8×8 inputs, then a linear read-out (16 → 10)."""
    net = Network("tiny-cnn", [Conv(2, 3, 3, 2, 1, Tanh()), Conv(3, 4, 3, 2, 1, Tanh()),
                               Linear(4 * 2 * 2, CLASSES, Identity())]).to(DT)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net.layers:
            w = layer.weight
            bound = math.sqrt(6.0 / (w.shape[1] + w.shape[0]) / (w[0, 0].numel() if w.dim() > 2 else 1))
            w.copy_((torch.rand(w.shape, generator=g, dtype=DT) * 2 - 1) * bound)
    return random_biases(net, seed)


def make(name, net_fn=mlp, seed=0):
    return get_algorithm(name)(net_fn(seed), generator=torch.Generator().manual_seed(seed + 1))


def batch(seed=0, channels=1):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(N, channels, 8, 8, generator=g, dtype=DT), torch.randint(0, CLASSES, (N,), generator=g)


# ------------------------------------------------------------------ the oracle, written out
def fans(W):
    receptive = W[0, 0].numel() if W.dim() > 2 else 1
    return W.shape[1] * receptive, W.shape[0] * receptive


def sign(W):
    return (W > 0).to(W.dtype) - (W < 0).to(W.dtype)


def usf_scale(W):
    fan_in, fan_out = fans(W)
    return math.sqrt(2.0 / (fan_in + fan_out))


def glorot_magnitudes(g, Ws):
    """|R_l| for l = 2..L, R_l ~ U(−r, r), r = √(6/(fan_in + fan_out)), drawn from g in layer order."""
    out = []
    for W in Ws[1:]:
        fan_in, fan_out = fans(W)
        r = math.sqrt(6.0 / (fan_in + fan_out))
        out.append(((torch.rand(W.shape, generator=g, dtype=DT) * 2 - 1) * r).abs())
    return out


class Oracle:
    """The network's W_l, b_l, layer kinds (with stride and padding) and a forward/backward of its own."""

    def __init__(self, net):
        self.W = [layer.weight.detach().clone() for layer in net.layers]
        self.b = [layer.bias.detach().clone() for layer in net.layers]
        self.conv = [(layer.stride, layer.padding) if isinstance(layer, Conv) else None for layer in net.layers]
        self.L = len(self.W)

    def forward(self, x):
        """h[l] = input of layer l (0-based), a[l] its pre-activation, cols[l] its unfolded input (convs)."""
        h, a, cols = [x], [], []
        for l in range(self.L):
            W, b = self.W[l], self.b[l]
            if self.conv[l]:
                s, p = self.conv[l]
                k, hw = W.shape[-1], h[l].shape[-1]
                c = F.unfold(h[l], k, padding=p, stride=s)
                out = (hw + 2 * p - k) // s + 1
                a.append((W.reshape(W.shape[0], -1) @ c).reshape(len(x), W.shape[0], out, out) + b.view(1, -1, 1, 1))
            else:
                c = h[l].reshape(len(x), -1)
                a.append(c @ W.T + b)
            cols.append(c)
            h.append(torch.tanh(a[l]) if l < self.L - 1 else a[l])
        return h, a, cols

    def chain(self, x, y, feedback):
        """δ of every layer and (∇W, ∇b), with feedback[l] (W_l's shape) carrying δ_l down; feedback[0] unused."""
        h, a, cols = self.forward(x)
        logits = h[self.L]
        z = logits - logits.max(1, keepdim=True).values
        logp = z - z.exp().sum(1, keepdim=True).log()
        onehot = torch.zeros_like(logits)
        onehot[torch.arange(len(y)), y] = 1.0
        loss, delta = -(logp * onehot).sum() / len(y), (logp.exp() - onehot) / len(y)
        deltas, grads = [None] * self.L, [None] * self.L
        for l in range(self.L - 1, -1, -1):
            deltas[l] = delta
            W = self.W[l]
            if self.conv[l]:
                s, p = self.conv[l]
                d = delta.reshape(len(x), W.shape[0], -1)
                grads[l] = (torch.einsum("nol,nil->oi", d, cols[l]).reshape(W.shape), d.sum((0, 2)))
                if l > 0:
                    back = feedback[l].reshape(W.shape[0], -1).T @ d
                    signal = F.fold(back, h[l].shape[-2:], W.shape[-1], padding=p, stride=s)
            else:
                grads[l] = (delta.T @ cols[l], delta.sum(0))
                if l > 0:
                    signal = (delta @ feedback[l]).reshape(h[l].shape)
            if l > 0:
                delta = signal * (1 - h[l] * h[l])  # tanh' at a_{l-1}, from h_l = tanh(a_{l-1})
        return loss, logits, deltas, grads


def record_deltas(algo):
    """Wrap every layer's backward to record the δ the plugin sends into it."""
    seen = {}
    for l, layer in enumerate(algo.net.layers):
        def backward(delta, h, feedback, _l=l, _inner=layer.backward):
            seen[_l] = delta.clone()
            return _inner(delta, h, feedback)
        layer.backward = backward  # an instance attribute shadows the method
    return seen


close = partial(oracle_close, rtol=1e-10, atol=1e-13)  # tests/conftest.py


def check(algo, seen, expected, out=None, what=""):
    loss, logits, deltas, grads = expected
    if out is not None:
        close(out.loss, loss, f"{what} loss")
        close(out.logits, logits, f"{what} logits")
    assert sorted(seen) == list(range(len(deltas))), f"{what}: not every layer got a δ"
    for l, layer in enumerate(algo.net.layers):
        close(seen[l], deltas[l], f"{what} δ_{l + 1}")
        close(layer.weight.grad, grads[l][0], f"{what} grad W_{l + 1}")
        close(layer.bias.grad, grads[l][1], f"{what} grad b_{l + 1}")


def sign_feedback(net, magnitudes):
    """B_l = M_l ⊙ sign(W_l) of the current weights (index 0 unused)."""
    Ws = [layer.weight.detach() for layer in net.layers]
    return [None] + [m * sign(W) for m, W in zip(magnitudes, Ws[1:], strict=True)]


def usf_magnitudes(net):
    return [usf_scale(layer.weight.detach()) for layer in net.layers[1:]]


def train(algo, steps, lr=2.0, seed=10):
    """A few SGD steps large enough to flip the sign of some weights of every layer."""
    before = [sign(layer.weight.detach()) for layer in algo.net.layers]
    opt = torch.optim.SGD(algo.net.parameters(), lr=lr)
    for t in range(steps):
        algo.step(*batch(seed + t))
        opt.step()
    flipped = [(sign(layer.weight.detach()) != s).sum().item() for layer, s in zip(algo.net.layers, before)]
    assert all(f > 0 for f in flipped[1:]), f"no sign flipped in some layer: {flipped}"


def not_bp(oracle, x, y, grads):
    bp = oracle.chain(x, y, [None] + oracle.W[1:])[3]
    assert not torch.allclose(grads[0][0], bp[0][0], rtol=0.1)  # the oracle itself is not bp


# ------------------------------------------------------------------ usf
def test_usf_equals_the_chain_rule_through_scaled_signs_before_and_after_training():
    algo = make("usf")
    x, y = batch()
    for when in ("at init", "after training"):
        seen = record_deltas(algo)
        oracle = Oracle(algo.net)
        expected = oracle.chain(x, y, sign_feedback(algo.net, usf_magnitudes(algo.net)))
        out = algo.compute_update(x, y)
        check(algo, seen, expected, out, f"usf {when}")
        not_bp(oracle, x, y, expected[3])
        if when == "at init":
            for layer in algo.net.layers:
                del layer.backward  # unwrap before training
            train(algo, 3)  # sign(W) must be read from the current W


@pytest.mark.parametrize("net_fn", [mlp, tiny_cnn], ids=["mlp", "cnn"])
def test_usf_equals_bp_exactly_when_every_weight_has_the_feedback_magnitude(net_fn):
    """W_l = s_l · sign(W_l), s_l usf's scale: then B_l = W_l and usf is bp (autograd), bit for bit."""
    algo = make("usf", net_fn)
    net = algo.net
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.copy_(usf_scale(layer.weight) * sign(layer.weight))
    x, y = batch(channels=2 if net_fn is tiny_cnn else 1)
    algo.compute_update(x, y)
    ours = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = None
    F.cross_entropy(net(x), y).backward()
    for (pname, p), g in zip(net.named_parameters(), ours, strict=True):
        assert torch.equal(g, p.grad), pname


# ------------------------------------------------------------------ frsf
def test_frsf_draws_its_magnitudes_once_and_follows_the_sign_of_the_current_weights():
    algo = make("frsf")
    oracle_R = glorot_magnitudes(torch.Generator().manual_seed(1), [l.weight.detach() for l in algo.net.layers])
    assert len(algo.R) == len(oracle_R)
    for l, (mine, theirs) in enumerate(zip(oracle_R, algo.R, strict=True), 2):
        close(theirs, mine, f"|R_{l}|")
    R0 = [r.clone() for r in algo.R]
    x, y = batch()
    for when in ("at init", "after training"):
        seen = record_deltas(algo)
        oracle = Oracle(algo.net)
        expected = oracle.chain(x, y, sign_feedback(algo.net, oracle_R))
        out = algo.compute_update(x, y)
        check(algo, seen, expected, out, f"frsf {when}")
        not_bp(oracle, x, y, expected[3])
        if when == "at init":
            for layer in algo.net.layers:
                del layer.backward
            train(algo, 3)
            assert all(torch.equal(a, b) for a, b in zip(R0, algo.R, strict=True))  # |R| fixed across training


# ------------------------------------------------------------------ brsf
def test_brsf_redraws_its_magnitudes_at_every_step_and_uses_them_in_that_step():
    algo = make("brsf")
    g = torch.Generator().manual_seed(1)  # the plugin's generator (make: seed + 1), drawn in layer order
    Ws = lambda: [layer.weight.detach() for layer in algo.net.layers]  # noqa: E731
    R = glorot_magnitudes(g, Ws())  # drawn at setup
    for l, (mine, theirs) in enumerate(zip(R, algo.R, strict=True), 2):
        close(theirs, mine, f"setup |R_{l}|")
    opt = torch.optim.SGD(algo.net.parameters(), lr=2.0)
    for t in range(4):
        x, y = batch(t)
        previous = [r.clone() for r in algo.R]
        oracle = Oracle(algo.net)
        R = glorot_magnitudes(g, Ws())  # this step's draw
        seen = record_deltas(algo)
        out = algo.step(x, y)
        for l, (mine, theirs, old) in enumerate(zip(R, algo.R, previous, strict=True), 2):
            close(theirs, mine, f"step {t} |R_{l}|")
            assert not torch.allclose(theirs, old, rtol=0.01), f"step {t}: |R_{l}| not redrawn"
        check(algo, seen, oracle.chain(x, y, sign_feedback(algo.net, R)), out, f"brsf step {t}")
        for layer in algo.net.layers:
            del layer.backward
        # a probe update draws nothing: same |R|, same generator, same update
        kept, gen = [r.clone() for r in algo.R], algo.gen.get_state()
        seen = record_deltas(algo)
        algo.compute_update(*batch(50 + t))
        assert torch.equal(gen, algo.gen.get_state())
        assert all(torch.equal(a, b) for a, b in zip(kept, algo.R, strict=True))
        check(algo, seen, oracle.chain(*batch(50 + t), sign_feedback(algo.net, R)), None, f"brsf probe {t}")
        for layer in algo.net.layers:
            del layer.backward
        opt.step()


def test_brsf_sequence_of_magnitudes_is_seeded():
    runs = []
    for seed in (0, 0, 3):
        algo = make("brsf", seed=seed)
        seq = []
        for t in range(3):
            algo.step(*batch(t))
            seq.append([r.clone() for r in algo.R])
        runs.append(seq)
    same = lambda a, b: all(torch.equal(p, q) for sa, sb in zip(a, b) for p, q in zip(sa, sb))  # noqa: E731
    assert same(runs[0], runs[1]) and not same(runs[0], runs[2])


# ------------------------------------------------------------------ convolutions
@pytest.mark.parametrize("name", RULES)
def test_conv_update_equals_the_unfolded_chain_rule(name):
    algo = make(name, tiny_cnn)
    x, y = batch(channels=2)
    if name == "brsf":
        algo.step(*batch(1, channels=2))  # a training step's magnitudes, then a probe update
    seen = record_deltas(algo)
    oracle = Oracle(algo.net)
    magnitudes = usf_magnitudes(algo.net) if name == "usf" else [r.clone() for r in algo.R]
    if name == "frsf":
        mine = glorot_magnitudes(torch.Generator().manual_seed(1), oracle.W)
        for l, (m, r) in enumerate(zip(mine, magnitudes, strict=True), 2):
            close(r, m, f"conv |R_{l}|")
    expected = oracle.chain(x, y, sign_feedback(algo.net, magnitudes))
    out = algo.compute_update(x, y)
    check(algo, seen, expected, out, f"{name} conv")
    not_bp(oracle, x, y, expected[3])


# ------------------------------------------------------------------ declarations and cost
@pytest.mark.parametrize("name", RULES)
def test_plausibility_capabilities_and_no_knobs(name):
    algo = make(name)
    rec = algo.plausibility().to_dict()
    notes = rec.pop("notes")
    assert rec == {"weight_transport": True, "transport": "sign", "local": True, "phases": "single",
                   "feedback_learning": False}
    assert "sign(W_l)" in notes and "not its magnitude" in notes
    assert ("redrawn every training batch" in notes) == (name == "brsf")
    assert ("drawn once" in notes) == (name == "frsf")
    cls = get_algorithm(name)
    assert cls.version == 1 and cls.capabilities.layers == frozenset({"linear", "conv", "maxpool"})
    assert cls.Params.model_fields == {} and algo.hp.active_dump() == {}
    with pytest.raises(CreditbenchError):  # fa's feedback_scale is not inherited as a phantom knob
        cls.Params.build({"feedback_scale": 1.0}, owner=name)
    assert set(algo.extra_state()) == (set() if name == "usf" else {"R"})
    if name == "usf":  # nothing to restore: a non-empty state is refused, naming the algorithm
        algo.load_extra_state({})
        with pytest.raises(CreditbenchError, match=r"^algorithm 'usf' has no extra state to restore$"):
            algo.load_extra_state({"R": []})


def test_sign_and_magnitude_product_are_credit_work():
    """Per update, usf and frsf count fa's credit work plus sign(W_l) and M_l ⊙ sign(W_l) (2 FLOPs per
    entry of every W_l, l ≥ 2); brsf also counts its redraw as credit; no rule has feedback work."""
    x, y = batch()
    flops = {}
    for name in ("fa",) + RULES:
        meter = CostMeter()
        algo = get_algorithm(name)(mlp(), generator=torch.Generator().manual_seed(1), meter=meter)
        with meter.update():
            algo.step(x, y)
        flops[name] = meter.kind_flops["update"]
    entries = sum(layer.weight.numel() for layer in mlp().layers[1:])
    for name in RULES:
        assert flops[name]["forward"] == flops["fa"]["forward"] and flops[name]["feedback"] == 0
    assert flops["usf"]["credit"] == flops["fa"]["credit"] + 2 * entries
    assert flops["frsf"]["credit"] == flops["fa"]["credit"] + 2 * entries
    assert flops["brsf"]["credit"] > flops["frsf"]["credit"] + entries  # the redraw: |R| at least

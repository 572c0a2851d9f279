"""Independent oracles for bp, fa, tp and dtp.

Each test computes an algorithm's update on a small network (64 → 12 → 12 → 12 → 10, float64, random
biases) from scratch, with code written here that shares nothing with the plugins or with
``harness.networks``: its own forward pass, softmax error, per-layer loops for δ (bp, fa) and for the
targets (tp, dtp), its own pseudoinverse, the inverses' training gradient by autograd of the defining
noisy-reconstruction loss (its noise drawn from a copy of the generator the plugin uses, in the
plugin's order), and Adam written out. Tolerances are ~1e-9 relative: a 1% change in any term fails.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from harness.algorithm import Plausibility
from harness.errors import CreditbenchError
from harness.networks import build_network
from harness.registry import get_algorithm
from tests.conftest import oracle_close

DT = torch.float64
N, CLASSES = 32, 10
SPEC = "mlp-3x12-tanh"
LEAKY = "mlp-3x12-leaky-relu"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny networks, one thread


# ------------------------------------------------------------------ the network, independently
ACT = {  # f, f', f⁻¹ written out here
    "tanh": (torch.tanh, lambda a, h: 1 - h * h,
             lambda h: 0.5 * torch.log((1 + h.clamp(-1 + 1e-6, 1 - 1e-6)) / (1 - h.clamp(-1 + 1e-6, 1 - 1e-6)))),
    "leaky-relu": (lambda a: torch.where(a > 0, a, 0.01 * a),
                   lambda a, h: torch.where(a > 0, torch.ones_like(a), torch.full_like(a, 0.01)),
                   lambda h: torch.where(h > 0, h, 100 * h)),
    "linear": (lambda a: a, lambda a, h: torch.ones_like(a), lambda h: h),
}


class Net:
    """W_l, b_l (l = 1..L, stored 0-based) and the activation of every layer, read off a built network."""

    def __init__(self, net, act: str):
        self.W = [layer.weight.detach().clone() for layer in net.layers]
        self.b = [layer.bias.detach().clone() for layer in net.layers]
        self.L = len(self.W)
        self.acts = [act] * (self.L - 1) + ["linear"]

    def f(self, l, a):  # activation of layer l (1-based)
        return ACT[self.acts[l - 1]][0](a)

    def df(self, l, a, h):
        return ACT[self.acts[l - 1]][1](a, h)

    def finv(self, l, h):
        return ACT[self.acts[l - 1]][2](h)

    def forward(self, x):
        """h[0] = x (flattened), h[l] = f_l(a[l]) (h[L] = a[L] = logits); a[0] unused."""
        h, a = [x.flatten(1)], [None]
        for l in range(1, self.L + 1):
            a.append(h[-1] @ self.W[l - 1].T + self.b[l - 1])
            h.append(self.f(l, a[-1]))
        return h, a


def softmax_error(logits, y):
    """Mean cross-entropy and e = ∂L/∂a_L = (softmax − onehot) / n."""
    z = logits - logits.max(1, keepdim=True).values
    logp = z - z.exp().sum(1, keepdim=True).log()
    onehot = torch.zeros_like(logits)
    onehot[torch.arange(len(y)), y] = 1.0
    return -(logp * onehot).sum() / len(y), (logp.exp() - onehot) / len(y)


def pinv_rows(W):
    """Wᵀ (W Wᵀ)⁻¹: the pseudoinverse of a full-row-rank W (every W_l, l ≥ 2, of these networks)."""
    return torch.linalg.solve(W @ W.T, W).T


def make(name, params=None, spec=SPEC, seed=0):
    net = build_network(spec, (1, 8, 8), CLASSES, generator=torch.Generator().manual_seed(seed)).to(DT)
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases, so that every use of b shows
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape, generator=g, dtype=DT))
    algo = get_algorithm(name)(net, params or {}, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        for c in getattr(algo, "c", {}).values():  # non-zero inverse biases too
            c.copy_(0.2 * torch.randn(c.shape, generator=g, dtype=DT))
    return algo


def batch(seed=0, n=N):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=DT), torch.randint(0, CLASSES, (n,), generator=g)


close = partial(oracle_close, rtol=1e-9, atol=1e-12)  # tests/conftest.py


def check_grads(algo, grads, what):
    for l, (layer, (gw, gb)) in enumerate(zip(algo.net.layers, grads, strict=True), 1):
        close(layer.weight.grad, gw, f"{what} grad W_{l}")
        close(layer.bias.grad, gb, f"{what} grad b_{l}")


def act_of(spec):
    return spec.rsplit("-", 1)[1] if not spec.endswith("leaky-relu") else "leaky-relu"


# ------------------------------------------------------------------ bp and fa
def chain_rule(net: Net, x, y, feedback):
    """δ_L = e, δ_{l-1} = (feedback_l δ_l) ⊙ f'(a_{l-1}) (feedback_l stored with W_l's shape), ∇W_l = δ_l h_{l-1}ᵀ."""
    h, a = net.forward(x)
    loss, delta = softmax_error(h[net.L], y)
    grads = [None] * net.L
    for l in range(net.L, 0, -1):
        grads[l - 1] = (delta.T @ h[l - 1], delta.sum(0))
        if l > 1:
            delta = (delta @ feedback[l - 1]) * net.df(l - 1, a[l - 1], h[l - 1])
    return loss, h[net.L], grads


@pytest.mark.parametrize("spec", [SPEC, LEAKY])
def test_bp_equals_the_chain_rule_written_out(spec):
    algo = make("bp", spec=spec)
    net, (x, y) = Net(algo.net, act_of(spec)), batch()
    loss, logits, grads = chain_rule(net, x, y, net.W)
    out = algo.compute_update(x, y)
    close(out.loss, loss, "loss")
    close(out.logits, logits, "logits")
    check_grads(algo, grads, "bp")


@pytest.mark.parametrize("spec,scale", [(SPEC, 1.0), (SPEC, 2.5), (LEAKY, 0.5)])
def test_fa_equals_the_chain_rule_through_its_seeded_random_feedback(spec, scale):
    algo = make("fa", {"feedback_scale": scale}, spec=spec)
    net, (x, y) = Net(algo.net, act_of(spec)), batch()
    g = torch.Generator().manual_seed(1)  # the plugin's generator (make: seed + 1), drawn in layer order
    B = [None]
    for l in range(2, net.L + 1):
        out_, in_ = net.W[l - 1].shape
        bound = scale * math.sqrt(6.0 / (in_ + out_))
        B.append((torch.rand(out_, in_, generator=g, dtype=DT) * 2 - 1) * bound)
    for mine, theirs in zip(B[1:], algo.B, strict=True):
        close(theirs, mine, "B")
    loss, logits, grads = chain_rule(net, x, y, B)
    out = algo.compute_update(x, y)
    close(out.loss, loss, "loss")
    close(out.logits, logits, "logits")
    check_grads(algo, grads, "fa")
    grads_bp = chain_rule(net, x, y, net.W)[2]
    assert not torch.allclose(grads[0][0], grads_bp[0][0], rtol=0.1)  # the oracle itself is not bp


# ------------------------------------------------------------------ tp and dtp: targets
class Inverses:
    """The target rule's inverses g_l (l = 2..L), learned (f_{l-1}(V_l h + c_l)) or exact (W_l⁺ (f_l⁻¹(h) − b_l))."""

    def __init__(self, net: Net, V=None, c=None):
        self.net, self.V, self.c = net, V, c

    def __call__(self, l, h):
        net = self.net
        if self.V is None:
            return (net.finv(l, h) - net.b[l - 1]) @ pinv_rows(net.W[l - 1]).T
        return net.f(l - 1, h @ self.V[l].T + self.c[l])


def learned(algo):
    """The plugin's learned inverses, keyed by 1-based layer l (the plugin keys them 0-based)."""
    return ({i + 1: v.detach().clone() for i, v in algo.V.items()},
            {i + 1: c.detach().clone() for i, c in algo.c.items()})


def target_prop(net: Net, g: Inverses, x, y, *, beta, difference, penultimate):
    """Targets h_l* (l = L .. 1) and the pseudo-gradients of the local losses ‖h_l − h_l*‖² / (2βn)."""
    h, a = net.forward(x)
    L, n = net.L, len(y)
    loss, e = softmax_error(h[L], y)
    t = {L: h[L] - beta * n * e}  # h_L* = h_L − β ∂ℓ/∂h_L, ∂ℓ/∂h_L = n e per example

    def below(l):  # target of h_{l-1} from the target of h_l
        return h[l - 1] + g(l, t[l]) - g(l, h[l]) if difference else g(l, t[l])

    if penultimate == "gradient":
        t[L - 1] = h[L - 1] - beta * n * (e @ net.W[L - 1])
    else:
        t[L - 1] = below(L)
    for l in range(L - 1, 1, -1):
        t[l - 1] = below(l)
    grads = []
    for l in range(1, L + 1):
        delta = e if l == L else (h[l] - t[l]) / (beta * n) * net.df(l, a[l], h[l])
        grads.append((delta.T @ h[l - 1], delta.sum(0)))
    return loss, h[L], t, grads


TARGET_CASES = [
    ("tp", {}, SPEC),
    ("tp", {"inverse": "exact"}, SPEC),
    ("tp", {"beta": 0.3}, LEAKY),
    ("dtp", {}, SPEC),
    ("dtp", {"inverse": "exact"}, SPEC),
    ("dtp", {"penultimate": "inverse"}, SPEC),
    ("dtp", {"penultimate": "inverse", "inverse": "exact", "beta": 2.0}, SPEC),
    ("dtp", {"penultimate": "inverse", "inverse": "exact"}, LEAKY),
]


def rule(name, algo):
    return dict(beta=algo.hp.beta, difference=name == "dtp",
                penultimate=getattr(algo.hp, "penultimate", "inverse"))


@pytest.mark.parametrize("name,params,spec", TARGET_CASES)
def test_targets_and_update_equal_the_target_rule_written_out(name, params, spec):
    algo = make(name, params, spec=spec)
    net, (x, y) = Net(algo.net, act_of(spec)), batch()
    g = Inverses(net) if algo.hp.inverse == "exact" else Inverses(net, *learned(algo))
    loss, logits, t, grads = target_prop(net, g, x, y, **rule(name, algo))
    fw = algo.net.forward_all(x)
    targets = algo.compute_targets(fw, y).target
    for l in range(1, net.L + 1):
        close(targets[l - 1], t[l], f"target h_{l}*")
    out = algo.compute_update(x, y)
    close(out.loss, loss, "loss")
    close(out.logits, logits, "logits")
    check_grads(algo, grads, name)


def test_exact_inverse_targets_through_saturated_units_are_clipped():
    """tp's large default β pushes targets out of tanh's range: f⁻¹ clips them at 1 − 1e-6 (finite targets)."""
    algo = make("tp", {"inverse": "exact", "beta": 200.0})
    net, (x, y) = Net(algo.net, "tanh"), batch()
    _, _, t, grads = target_prop(net, Inverses(net), x, y, **rule("tp", algo))
    g3 = Inverses(net)(4, t[4])
    assert g3.abs().max() > 1  # the target of h_3 leaves (−1, 1) ...
    fw = algo.net.forward_all(x)
    close(algo.compute_targets(fw, y).target[1], t[2], "target h_2*")  # ... and is clipped before atanh
    assert torch.isfinite(t[1]).all()


# ------------------------------------------------------------------ tp and dtp: inverse training and schedules
class Adam:
    """torch.optim.Adam's default update (β = 0.9, 0.999, ε = 1e-8), written out."""

    def __init__(self, lr):
        self.lr, self.m, self.v, self.t = lr, {}, {}, 0

    def step(self, params: dict, grads: dict):
        self.t += 1
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m.get(k, 0) + 0.1 * g
            self.v[k] = 0.999 * self.v.get(k, 0) + 0.001 * g * g
            m_hat, v_hat = self.m[k] / (1 - 0.9 ** self.t), self.v[k] / (1 - 0.999 ** self.t)
            params[k] = params[k] - self.lr * m_hat / (v_hat.sqrt() + 1e-8)


class InverseTraining:
    """Gradient of L_inv,l = ‖g_l(f_l(W_l h̃ + b_l)) − h̃‖² / (2n), h̃ = h_{l-1} + σε, by autograd; Adam steps."""

    def __init__(self, net: Net, algo, gen: torch.Generator):
        self.net, self.sigma, self.steps = net, algo.hp.sigma, algo.hp.feedback_steps
        self.V, self.c = learned(algo)
        self.layers = sorted(self.V)  # the plugin draws the noise of its inverses in layer order
        self.gen, self.opt = gen, Adam(algo.hp.feedback_lr)
        self.last_grads = None

    def train(self, x):
        net = self.net
        h, _ = net.forward(x)
        for _ in range(self.steps):
            grads = {}
            for l in self.layers:
                noisy = h[l - 1] + self.sigma * torch.randn(h[l - 1].shape, generator=self.gen, dtype=DT)
                V = self.V[l].clone().requires_grad_()
                c = self.c[l].clone().requires_grad_()
                z = net.f(l, noisy @ net.W[l - 1].T + net.b[l - 1])
                r = net.f(l - 1, z @ V.T + c)
                loss = ((r - noisy) ** 2).sum() / (2 * len(x))
                grads[("V", l)], grads[("c", l)] = torch.autograd.grad(loss, [V, c])
            params = {("V", l): self.V[l] for l in self.layers} | {("c", l): self.c[l] for l in self.layers}
            self.opt.step(params, grads)
            self.V = {l: params[("V", l)] for l in self.layers}
            self.c = {l: params[("c", l)] for l in self.layers}
            self.last_grads = grads

    def check(self, algo, what):
        for l in self.layers:
            close(algo.V[l - 1].grad, self.last_grads[("V", l)], f"{what}: grad V_{l}")
            close(algo.c[l - 1].grad, self.last_grads[("c", l)], f"{what}: grad c_{l}")
            close(algo.V[l - 1], self.V[l], f"{what}: V_{l}")
            close(algo.c[l - 1], self.c[l], f"{what}: c_{l}")
        assert torch.equal(algo.gen.get_state(), self.gen.get_state()), f"{what}: noise drawn differently"


SCHEDULE_CASES = [
    ("tp", {}, SPEC),
    ("tp", {"schedule": "parallel", "sigma": 0.5, "feedback_lr": 0.01}, SPEC),
    ("tp", {"feedback_steps": 3}, LEAKY),
    ("dtp", {}, SPEC),
    ("dtp", {"penultimate": "inverse", "sigma": 0.3}, SPEC),
    ("dtp", {"penultimate": "inverse", "schedule": "parallel", "feedback_steps": 2}, SPEC),
]


@pytest.mark.parametrize("name,params,spec", SCHEDULE_CASES)
def test_step_trains_inverses_on_noisy_reconstruction_and_follows_its_schedule(name, params, spec):
    """Two steps: inverses trained by Adam on the autograd gradient of the noisy reconstruction loss;
    alternating: the forward update uses the inverses just updated; parallel: the ones before."""
    algo = make(name, params, spec=spec)
    net = Net(algo.net, act_of(spec))
    gen = torch.Generator()
    gen.set_state(algo.gen.get_state())
    oracle = InverseTraining(net, algo, gen)
    if name == "dtp" and algo.hp.penultimate == "gradient":
        assert oracle.layers == [2, 3]  # no inverse of the top layer
    for k in range(2):
        x, y = batch(seed=k)
        before = Inverses(net, oracle.V, oracle.c)
        oracle.train(x)
        after = Inverses(net, oracle.V, oracle.c)
        out = algo.step(x, y)
        oracle.check(algo, f"step {k + 1}")
        used = after if algo.hp.schedule == "alternating" else before
        loss, _, _, grads = target_prop(net, used, x, y, **rule(name, algo))
        close(out.loss, loss, "loss")
        check_grads(algo, grads, f"step {k + 1}")


def test_without_noise_the_inverse_gradient_differs():
    """σ matters: the same step with σ = 0 gives another inverse gradient (guards the oracle itself)."""
    noisy, clean = make("tp"), make("tp", {"sigma": 0.0})
    x, y = batch()
    noisy.step(x, y)
    clean.step(x, y)
    assert not torch.allclose(noisy.V[1].grad, clean.V[1].grad, rtol=1e-3)


def test_exact_inverses_learn_nothing_in_step():
    algo = make("dtp", {"inverse": "exact", "penultimate": "inverse"})
    gen = algo.gen.get_state()
    x, y = batch()
    net = Net(algo.net, "tanh")
    out = algo.step(x, y)
    assert algo.inv_opt is None and not algo.V and torch.equal(gen, algo.gen.get_state())
    check_grads(algo, target_prop(net, Inverses(net), x, y, **rule("dtp", algo))[3], "exact")
    assert out.loss.item() > 0


class Data:
    """The two things pretrain reads from a dataset."""

    def __init__(self, n):
        g = torch.Generator().manual_seed(7)
        self.x_train = torch.randn(n, 1, 8, 8, generator=g, dtype=DT)
        self.y_train = torch.randint(0, CLASSES, (n,), generator=g)

    def train_batch(self, idx, generator):
        return self.x_train[idx], self.y_train[idx]


@pytest.mark.parametrize("name,params,batch_size", [("tp", {"pretrain_epochs": 2}, 16),
                                                    ("dtp", {"pretrain_epochs": 1, "penultimate": "inverse"}, 80)])
def test_pretrain_trains_the_inverses_on_seeded_full_batches(name, params, batch_size):
    """pretrain: per epoch one seeded permutation, ⌊n / batch⌋ full batches (batch ≤ n), one inverse
    training each; the forward weights are untouched."""
    data = Data(50)
    algo = make(name, params)
    net = Net(algo.net, "tanh")
    gen = torch.Generator()
    gen.set_state(algo.gen.get_state())
    oracle = InverseTraining(net, algo, gen)
    weights = [p.detach().clone() for p in algo.net.parameters()]
    bs = min(batch_size, 50)
    for _ in range(algo.hp.pretrain_epochs):
        perm = torch.randperm(50, generator=gen)
        for b in range(50 // bs):
            oracle.train(data.x_train[perm[b * bs:(b + 1) * bs]])
    algo.pretrain(data, batch_size)
    oracle.check(algo, "pretrain")
    assert all(torch.equal(p, w) for p, w in zip(algo.net.parameters(), weights, strict=True))


@pytest.mark.parametrize("name,params", [("tp", {}), ("dtp", {"inverse": "exact", "pretrain_epochs": 3})])
def test_pretrain_without_epochs_or_learned_inverses_does_nothing(name, params):
    algo = make(name, params)
    state = [t.clone() for t in (*algo.V.values(), *algo.c.values())]
    gen = algo.gen.get_state()
    algo.pretrain(Data(50), 16)
    assert torch.equal(gen, algo.gen.get_state())
    assert all(torch.equal(a, b) for a, b in zip(state, (*algo.V.values(), *algo.c.values()), strict=True))


@pytest.mark.parametrize("name,params,keys", [("tp", {}, [2, 3, 4]), ("dtp", {}, [2, 3]),
                                             ("dtp", {"penultimate": "inverse", "inverse": "exact"}, [2, 3, 4])])
def test_diagnostics_are_the_inverses_relative_reconstruction_errors(name, params, keys):
    algo = make(name, params)
    net, (x, y) = Net(algo.net, "tanh"), batch()
    g = Inverses(net) if algo.hp.inverse == "exact" else Inverses(net, *learned(algo))
    h, _ = net.forward(x)
    diag = algo.diagnostics(x, y)
    assert sorted(diag) == [f"inv_recon_l{l}" for l in keys]
    for l in keys:
        want = ((g(l, h[l]) - h[l - 1]).norm() / h[l - 1].norm()).item()
        assert diag[f"inv_recon_l{l}"] == pytest.approx(want, rel=1e-9, abs=1e-12)
        # learned at init: far from inverses; exact: perfect on square layers, not on the top (10 × 12) one
        assert want > 0.1 if algo.hp.inverse == "learned" or l == 4 else want < 1e-12


# ------------------------------------------------------------------ what each configuration declares
PLAUSIBILITY = [
    ("bp", {}, dict(weight_transport=True, transport="values", local=False, phases="single", feedback_learning=False)),
    ("fa", {}, dict(weight_transport=False, transport="none", local=True, phases="single", feedback_learning=False)),
    ("tp", {}, dict(weight_transport=False, transport="none", local=True, phases="two", feedback_learning=True)),
    ("tp", {"inverse": "exact"}, dict(weight_transport=True, transport="values", local=True, phases="single", feedback_learning=False)),
    ("dtp", {}, dict(weight_transport=True, transport="values", local=True, phases="two", feedback_learning=True)),
    ("dtp", {"penultimate": "inverse"}, dict(weight_transport=False, transport="none", local=True, phases="two",
                                             feedback_learning=True)),
    ("dtp", {"inverse": "exact", "penultimate": "inverse"},
     dict(weight_transport=True, transport="values", local=True, phases="single", feedback_learning=False)),
    ("dtp", {"inverse": "exact"}, dict(weight_transport=True, transport="values", local=True, phases="single", feedback_learning=False)),
]
NOTES = {
    "bp": "the backward pass reads every W_lᵀ (autograd)",
    "fa": "fixed random feedback B_l, drawn independently of W",
    "learned": "learned inverses trained on noisy reconstruction in their own pass every update",
    "exact": "exact inverses: targets through f⁻¹ and the pseudoinverse of W_l (oracle)",
}


@pytest.mark.parametrize("name,params,want", PLAUSIBILITY)
def test_plausibility_record_of_each_configuration(name, params, want):
    p = make(name, params).plausibility()
    assert isinstance(p, Plausibility)
    assert {k: getattr(p, k) for k in want} == want
    notes = NOTES.get(name) or NOTES[params.get("inverse", "learned")]
    if name == "dtp" and params.get("penultimate", "gradient") == "gradient":
        notes += "; penultimate target through W_Lᵀ"
    assert p.notes == notes


def test_plausibility_transport_kind_is_checked_against_weight_transport():
    base = dict(local=True, phases="single", feedback_learning=False, notes="x")
    assert Plausibility(weight_transport=True, **base).transport == "values"  # the default for True
    assert Plausibility(weight_transport=False, **base).transport == "none"
    assert Plausibility(weight_transport=True, transport="sign", **base).to_dict()["transport"] == "sign"
    with pytest.raises(CreditbenchError, match=r"^plausibility transport 'sign' contradicts weight_transport=False$"):
        Plausibility(weight_transport=False, transport="sign", **base)
    with pytest.raises(CreditbenchError, match=r"^plausibility transport 'none' contradicts weight_transport=True$"):
        Plausibility(weight_transport=True, transport="none", **base)
    with pytest.raises(CreditbenchError, match=r"^plausibility transport 'copy': valid: none, values, sign, init$"):
        Plausibility(weight_transport=True, transport="copy", **base)

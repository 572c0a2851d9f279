"""Independent oracles for ddtp-linear, ddtp-rhl, drl and l-drl (issue 15).

Everything here is written out from the papers' equations with code that shares nothing with the plugins
or with ``harness.networks``: its own forward pass and softmax error, the feedback losses (Meulemans et
al. 2020's difference reconstruction loss for layer-wise and direct feedback; Ernoult et al. 2022's local
one) differentiated by autograd, with the noise drawn from a copy of the plugin's generator in the
plugin's documented order, and Gauss–Newton targets from the network's Jacobian (autograd) and its
pseudoinverse. Float64, tolerances ~1e-10 relative: a 1% change in any term fails.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from harness.errors import UnsupportedError
from harness.networks import build_network
from harness.registry import get_algorithm
from tests.conftest import oracle_close

DT = torch.float64
N, CLASSES, INPUT = 24, 10, (1, 8, 8)
SPEC = "mlp-3x12-tanh"
close = partial(oracle_close, rtol=1e-10, atol=1e-12)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny networks, one thread


def make(algo, params=None, spec=SPEC, seed=0):
    net = build_network(spec, INPUT, CLASSES, generator=torch.Generator().manual_seed(seed)).to(DT)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases, so that a dropped bias term shows
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g, dtype=DT))
    return get_algorithm(algo)(net, params or {}, generator=torch.Generator().manual_seed(seed + 1))


def data(n=N, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, generator=g, dtype=DT), torch.randint(0, CLASSES, (n,), generator=g)


HIDDEN = {"tanh": torch.tanh, "leaky-relu": lambda a: torch.where(a > 0, a, 0.01 * a), "linear": lambda a: a}


class Net:
    """W_l, b_l read off a built MLP; its forward pass written out (hidden f: tanh or leaky ReLU, logits linear)."""

    def __init__(self, net):
        self.W = [layer.weight.detach().clone() for layer in net.layers]
        self.b = [layer.bias.detach().clone() for layer in net.layers]
        self.L = len(self.W)
        self.f = HIDDEN[net.layers[0].act.name]

    def layer(self, i, h):  # 0-based layer i: f, the last one linear
        a = h @ self.W[i].t() + self.b[i]
        return a if i == self.L - 1 else self.f(a)

    def outputs(self, x):  # out[i] = output of layer i (out[L-1] = logits)
        out, h = [], x
        for i in range(self.L):
            h = self.layer(i, h)
            out.append(h)
        return out

    def from_layer(self, i, h):  # the logits reached from h, the output of layer i
        for k in range(i + 1, self.L):
            h = self.layer(k, h)
        return h


def error(logits, y):
    """e = ∂L/∂a_L of the mean cross-entropy: (softmax − onehot)/n."""
    p = torch.softmax(logits, 1)
    return (p - torch.nn.functional.one_hot(y, CLASSES).to(DT)) / len(y)


def noise_source(algo):
    """A copy of the plugin's generator: the noise it will draw, in its order."""
    g = torch.Generator().manual_seed(0)
    g.set_state(algo.gen.get_state())
    return lambda shape: algo.hp.sigma * torch.randn(shape, generator=g, dtype=DT)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def angle(a, b):
    a, b = a.flatten(), b.flatten()
    return math.degrees(math.acos(max(-1.0, min(1.0, (a @ b / (a.norm() * b.norm())).item()))))


# ------------------------------------------------------------------ the feedback losses
@pytest.mark.parametrize("spec", [SPEC, "mlp-3x12-leaky-relu"])
def test_drl_feedback_gradient_is_autograd_of_the_difference_reconstruction_loss(spec):
    algo = make("drl", {"sigma": 0.3}, spec=spec)
    x, _ = data()
    net, draw = Net(algo.net), noise_source(algo)
    out = net.outputs(x)
    h = [x] + out[:-1]  # h[i]: the input of layer i
    V = {i: algo.V[i].clone() for i in algo.V}
    c = {i: algo.c[i].clone() for i in algo.V}
    g = lambda k, t, v=None, b=None: net.f(t @ (V[k] if v is None else v).t() + (c[k] if b is None else b))
    expected = {}
    for i in sorted(V):  # noise drawn layer by layer, l = 2 .. L
        noisy = h[i] + draw(h[i].shape)
        r = noisy
        for k in range(i, net.L):
            r = net.layer(k, r)
        for k in range(net.L - 1, i, -1):  # down the difference path, upper feedback fixed
            r = h[k] + g(k, r) - g(k, out[k])
        v, b = leaf(V[i]), leaf(c[i])
        rec = h[i] + g(i, r, v, b) - g(i, out[i], v, b)
        loss = ((rec - noisy) ** 2).mean() / algo.hp.sigma ** 2
        expected[i] = torch.autograd.grad(loss, (v, b))
    algo.feedback_gradients(algo.net.forward_all(x))
    for i in V:
        close(algo.V[i].grad, expected[i][0], f"V_{i + 1}")
        close(algo.c[i].grad, expected[i][1], f"c_{i + 1}")


def ldrl_loss(net, i, x, y, v, b, dx, dy):
    """Ernoult et al. 2022: −2 Σ_b dx·(g(F(x+dx)) − g(y)) / n + Σ_b ‖g(y+dy) − g(y)‖² / n, g(t) = f(v t + b)."""
    g = lambda t: net.f(t @ v.t() + b)
    r = g(y)
    dr = g(net.layer(i, x + dx)) - r
    dr_y = g(y + dy) - r
    return -2 * (dx * dr).sum(1).mean() + (dr_y ** 2).sum(1).mean()


@pytest.mark.parametrize("spec", [SPEC, "mlp-3x12-leaky-relu"])
def test_ldrl_feedback_gradient_is_autograd_of_the_local_difference_reconstruction_loss(spec):
    algo = make("l-drl", {"sigma": 0.3}, spec=spec)
    x, _ = data()
    net, draw = Net(algo.net), noise_source(algo)
    out = net.outputs(x)
    h = [x] + out[:-1]
    expected = {}
    for i in sorted(algo.V):  # per layer: ε (input noise), then η (output noise)
        dx, dy = draw(h[i].shape), draw(out[i].shape)
        v, b = leaf(algo.V[i]), leaf(algo.c[i])
        expected[i] = torch.autograd.grad(ldrl_loss(net, i, h[i], out[i], v, b, dx, dy), (v, b))
    algo.feedback_gradients(algo.net.forward_all(x))
    for i in algo.V:
        close(algo.V[i].grad, expected[i][0], f"V_{i + 1}")
        close(algo.c[i].grad, expected[i][1], f"c_{i + 1}")


def test_ldrl_trains_layer_after_layer_with_its_own_steps():
    """feedback_steps Adam steps on layer 2's feedback, then on layer 3's, ...: Adam written out here."""
    lr, steps = 1e-2, 3
    algo = make("l-drl", {"sigma": 0.2, "feedback_lr": lr, "feedback_steps": steps})
    x, _ = data()
    net, draw = Net(algo.net), noise_source(algo)
    out = net.outputs(x)
    h = [x] + out[:-1]
    expected = {}
    for i in sorted(algo.V):
        params = [algo.V[i].clone(), algo.c[i].clone()]
        m = [torch.zeros_like(p) for p in params]
        s = [torch.zeros_like(p) for p in params]
        for t in range(1, steps + 1):
            dx, dy = draw(h[i].shape), draw(out[i].shape)
            v, b = leaf(params[0]), leaf(params[1])
            grads = torch.autograd.grad(ldrl_loss(net, i, h[i], out[i], v, b, dx, dy), (v, b))
            for k, gk in enumerate(grads):
                m[k] = 0.9 * m[k] + 0.1 * gk
                s[k] = 0.999 * s[k] + 0.001 * gk * gk
                step = lr * (m[k] / (1 - 0.9 ** t)) / ((s[k] / (1 - 0.999 ** t)).sqrt() + 1e-8)
                params[k] = params[k] - step
        expected[i] = params
    algo.train_inverses(algo.net.forward_all(x))
    for i in algo.V:
        close(algo.V[i], expected[i][0], f"V_{i + 1}")
        close(algo.c[i], expected[i][1], f"c_{i + 1}")


def test_ddtp_linear_feedback_gradient_is_autograd_of_the_direct_drl():
    algo = make("ddtp-linear", {"sigma": 0.3})
    x, _ = data()
    net, draw = Net(algo.net), noise_source(algo)
    out = net.outputs(x)
    expected = {}
    for i in range(net.L - 1):  # every hidden layer, in order
        noisy = out[i] + draw(out[i].shape)
        q = leaf(algo.V[i])
        rec = out[i] + (net.from_layer(i, noisy) - out[-1]) @ q.t()
        expected[i] = torch.autograd.grad(((rec - noisy) ** 2).mean() / algo.hp.sigma ** 2, q)[0]
    assert sorted(algo.V) == list(range(net.L - 1)) and not algo.c  # no feedback bias: it would cancel
    algo.feedback_gradients(algo.net.forward_all(x))
    for i in expected:
        close(algo.V[i].grad, expected[i], f"Q_{i + 1}")


def rhl_feedback(algo, i, o, q, b):
    """g_i(s(o)) with s(o) = tanh(R o + r) for all but the last hidden layer, which reads o itself."""
    s = torch.tanh(o @ algo.R.t() + algo.r) if i < len(algo.net.layers) - 2 else o
    return torch.tanh(s @ q.t() + b)


def test_ddtp_rhl_feedback_gradient_is_autograd_of_the_direct_drl():
    algo = make("ddtp-rhl", {"sigma": 0.3, "hidden_width": 40})
    with torch.no_grad():
        for i in algo.c:
            algo.c[i].copy_(0.1 * torch.randn(algo.c[i].shape, dtype=DT))
    x, _ = data()
    net, draw = Net(algo.net), noise_source(algo)
    out = net.outputs(x)
    expected = {}
    for i in range(net.L - 1):
        noisy = out[i] + draw(out[i].shape)
        q, b = leaf(algo.V[i]), leaf(algo.c[i])
        rec = out[i] + rhl_feedback(algo, i, net.from_layer(i, noisy), q, b) - rhl_feedback(algo, i, out[-1], q, b)
        expected[i] = torch.autograd.grad(((rec - noisy) ** 2).mean() / algo.hp.sigma ** 2, (q, b))
    assert algo.V[0].shape == (12, 40) and algo.V[net.L - 2].shape == (12, CLASSES)
    algo.feedback_gradients(algo.net.forward_all(x))
    for i in expected:
        close(algo.V[i].grad, expected[i][0], f"Q_{i + 1}")
        close(algo.c[i].grad, expected[i][1], f"c_{i + 1}")


# ------------------------------------------------------------------ the forward updates
def local_update(net, x, i, target, beta, n):
    """∇W_i, ∇b_i of the local loss Σ‖h_i − h_i*‖² / (2βn), layer i's input held fixed (autograd)."""
    h_in = x if i == 0 else net.outputs(x)[i - 1]
    w, b = leaf(net.W[i]), leaf(net.b[i])
    a = h_in @ w.t() + b
    h = a if i == net.L - 1 else torch.tanh(a)
    return torch.autograd.grad(((h - target) ** 2).sum() / (2 * beta * n), (w, b))


def test_ddtp_linear_update_is_dfa_with_its_learned_feedback():
    """δa_i = (Q_i e) ⊙ f′(a_i), the top layer e: no β anywhere (β has no knob here)."""
    algo = make("ddtp-linear")
    x, y = data()
    net = Net(algo.net)
    out = net.outputs(x)
    e = error(out[-1], y)
    algo.compute_update(x, y)
    for i, layer in enumerate(algo.net.layers):
        h_in = x if i == 0 else out[i - 1]
        delta = e if i == net.L - 1 else (e @ algo.V[i].t()) * (1 - out[i] ** 2)
        close(layer.weight.grad, delta.t() @ h_in, f"W_{i + 1}")
        close(layer.bias.grad, delta.sum(0), f"b_{i + 1}")
    assert "beta" not in algo.Params.model_fields


def test_ddtp_rhl_update_descends_the_local_losses_of_its_targets():
    algo = make("ddtp-rhl", {"beta": 0.3, "hidden_width": 40})
    x, y = data()
    net, n, beta = Net(algo.net), N, 0.3
    out = net.outputs(x)
    t_top = out[-1] - beta * n * error(out[-1], y)
    algo.compute_update(x, y)
    for i, layer in enumerate(algo.net.layers):
        target = t_top if i == net.L - 1 else \
            out[i] + rhl_feedback(algo, i, t_top, algo.V[i], algo.c[i]) - rhl_feedback(algo, i, out[-1], algo.V[i], algo.c[i])
        gw, gb = local_update(net, x, i, target, beta, n)
        close(layer.weight.grad, gw, f"W_{i + 1}")
        close(layer.bias.grad, gb, f"b_{i + 1}")


@pytest.mark.parametrize("algo_name", ["drl", "l-drl"])
def test_drl_targets_are_difference_targets_through_the_top_inverse(algo_name):
    """drl and l-drl share dtp's targets with penultimate=inverse: h_{l-1}* = h_{l-1} + g_l(h_l*) − g_l(h_l)."""
    algo = make(algo_name, {"beta": 0.2})
    x, y = data()
    net, n, beta = Net(algo.net), N, 0.2
    out = net.outputs(x)
    target = [None] * net.L
    target[-1] = out[-1] - beta * n * error(out[-1], y)
    for k in range(net.L - 1, 0, -1):
        g = lambda t: torch.tanh(t @ algo.V[k].t() + algo.c[k])
        target[k - 1] = out[k - 1] + g(target[k]) - g(out[k])
    algo.compute_update(x, y)
    for i, layer in enumerate(algo.net.layers):
        gw, gb = local_update(net, x, i, target[i], beta, n)
        close(layer.weight.grad, gw, f"W_{i + 1}")
        close(layer.bias.grad, gb, f"b_{i + 1}")


# ------------------------------------------------------------------ Gauss–Newton targets (Meulemans et al.'s theorem)
def jacobian_to_output(net, out, i):
    """J_i = ∂h_L/∂h_i of one example (autograd), K × d_i."""
    return torch.autograd.functional.jacobian(lambda h: net.from_layer(i, h[None])[0], out[i][0])


def test_ddtp_linear_with_exact_feedback_gives_gauss_newton_updates():
    """With Q_i = J_i⁺ (the difference reconstruction loss's minimiser for one example), each hidden layer's
    update is the one its Gauss–Newton target h_i − J_i⁺ β∂ℓ/∂h_L gives, at any β (linear feedback)."""
    algo = make("ddtp-linear")
    x, y = data(n=1)
    net = Net(algo.net)
    out = net.outputs(x)
    for i in range(net.L - 1):
        algo.V[i].copy_(torch.linalg.pinv(jacobian_to_output(net, out, i)))
    algo.compute_update(x, y)
    ell = error(out[-1], y) * 1  # ∂ℓ/∂h_L of the one example
    for beta in (1.0, 1e-3):
        for i in range(net.L - 1):
            gn_target = out[i] - beta * ell @ torch.linalg.pinv(jacobian_to_output(net, out, i)).t()
            gw, gb = local_update(net, x, i, gn_target, beta, 1)
            close(algo.net.layers[i].weight.grad, gw, f"W_{i + 1}, β={beta}")
            assert angle(algo.net.layers[i].weight.grad, gw) < 1e-5


def test_ddtp_rhl_targets_tend_to_gauss_newton_targets_as_beta_shrinks():
    """Feedback whose Jacobian at h_L is J_i⁺ (c_i = −Q_i s(h_L) puts tanh' = 1 there; Q_i = J_i⁺ (S R)⁺):
    the angle between the DDTP target displacement and the GN one falls with β (at least like β)."""
    algo = make("ddtp-rhl", {"hidden_width": 40})
    x, y = data(n=1)
    net = Net(algo.net)
    out = net.outputs(x)
    s0 = torch.tanh(out[-1] @ algo.R.t() + algo.r)
    for i in range(net.L - 1):
        jp = torch.linalg.pinv(jacobian_to_output(net, out, i))
        if i < net.L - 2:  # reads s(o): chain through the random layer's Jacobian S R
            q, read = jp @ torch.linalg.pinv((1 - s0[0] ** 2)[:, None] * algo.R), s0
        else:
            q, read = jp, out[-1]
        algo.V[i].copy_(q)
        algo.c[i].copy_(-(read @ q.t())[0])
    fw = algo.net.forward_all(x)
    ell = error(out[-1], y)
    angles = {}
    for beta in (1e-1, 1e-2, 1e-3):
        algo.hp = algo.Params.build({"beta": beta, "hidden_width": 40})
        t = algo.compute_targets(fw, y)
        angles[beta] = [angle(t.target[i] - out[i], -beta * ell @ torch.linalg.pinv(jacobian_to_output(net, out, i)).t())
                        for i in range(net.L - 1)]
    for i in range(net.L - 1):
        a1, a2, a3 = (angles[b][i] for b in (1e-1, 1e-2, 1e-3))
        assert a3 < a2 < a1 and a3 < 0.05, (i, a1, a2, a3)
        assert a2 / a1 < 0.2 and a3 / a2 < 0.2, (i, a1, a2, a3)  # at least first order in β


def test_direct_drl_training_converges_to_the_pseudoinverse_on_a_linear_network():
    """On a linear network J_i is the same for every example and the DRL's unique minimiser is Q_i = J_i⁺:
    training the feedback alone (fresh inputs and noise every step) reaches it."""
    algo = make("ddtp-linear", {"feedback_lr": 3e-2, "sigma": 0.5}, spec="mlp-2x12-linear")
    net = Net(algo.net)
    g = torch.Generator().manual_seed(5)
    for _ in range(1500):
        algo.train_inverses(algo.net.forward_all(torch.randn(64, 64, generator=g, dtype=DT)))
    for i in range(net.L - 1):
        jac = net.W[-1] if i == net.L - 2 else net.W[2] @ net.W[1]
        assert angle(algo.V[i], torch.linalg.pinv(jac)) < 3.0, i  # 1.8° and 2.1° measured; random Q₀: ~90°


# ------------------------------------------------------------------ declarations
@pytest.mark.parametrize("algo_name", ["ddtp-linear", "ddtp-rhl", "drl", "l-drl"])
def test_plausibility_declares_learned_feedback_and_no_transport(algo_name):
    p = make(algo_name).plausibility()
    assert (p.weight_transport, p.transport, p.local, p.phases, p.feedback_learning) == (False, "none", True, "two", True)


@pytest.mark.parametrize("algo_name", ["ddtp-linear", "ddtp-rhl", "drl", "l-drl"])
def test_unsupported_networks_are_refused(algo_name):
    net = build_network("cnn-small-tanh", INPUT, CLASSES, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UnsupportedError, match="does not support conv"):
        get_algorithm(algo_name)(net)
    net = build_network("mlp-2x8-relu", INPUT, CLASSES, generator=torch.Generator().manual_seed(0))
    with pytest.raises(UnsupportedError, match="activation relu"):
        get_algorithm(algo_name)(net)


@pytest.mark.parametrize("algo_name,knob", [("ddtp-linear", "beta"), ("drl", "inverse"), ("drl", "penultimate"),
                                            ("l-drl", "inverse"), ("ddtp-rhl", "inverse")])
def test_no_phantom_knobs(algo_name, knob):
    assert knob not in get_algorithm(algo_name).Params.model_fields


# ------------------------------------------------------------------ initial feedback, fixed random layer
def test_direct_feedback_starts_xavier_normal_from_the_algorithms_generator():
    """Q_i ~ N(0, 2/(d_i + K)) (Meulemans et al.'s initialisation), drawn from the algorithm's own generator:
    the same seed gives the same Q whatever the global RNG did, another seed another Q."""
    torch.manual_seed(1)
    a = make("ddtp-linear", spec="mlp-2x300-tanh")
    torch.manual_seed(2)
    b = make("ddtp-linear", spec="mlp-2x300-tanh")
    for i in a.V:
        assert a.V[i].shape == (300, CLASSES)
        assert abs(a.V[i].std().item() / math.sqrt(2 / (300 + CLASSES)) - 1) < 0.05, i  # 3000 draws: ±1.3%
        assert abs(a.V[i].mean().item()) < 0.1 * a.V[i].std().item()
        assert torch.equal(a.V[i], b.V[i])
    assert not torch.equal(make("ddtp-linear", spec="mlp-2x300-tanh", seed=4).V[0], a.V[0])


def test_random_hidden_layer_is_uniform_in_one_over_sqrt_k_from_the_algorithms_generator():
    torch.manual_seed(1)
    a = make("ddtp-rhl", {"hidden_width": 2000})
    torch.manual_seed(2)
    b = make("ddtp-rhl", {"hidden_width": 2000})
    bound = 1 / math.sqrt(CLASSES)
    for t, shape in ((a.R, (2000, CLASSES)), (a.r, (2000,))):
        assert t.shape == shape
        assert t.abs().max() <= bound and t.min() < -0.99 * bound and t.max() > 0.99 * bound
        assert abs(t.mean().item()) < 0.05 * bound
        assert abs(t.std().item() / (bound / math.sqrt(3)) - 1) < 0.05  # uniform on ±bound: std bound/√3
    assert torch.equal(a.R, b.R) and torch.equal(a.r, b.r)
    assert a.V[0].shape == (12, 2000) and a.V[2].shape == (12, CLASSES) and a.c[0].abs().sum() == 0


# ------------------------------------------------------------------ every FLOP counted
def matmul_flops(algo_name, params):
    from harness.cost import CostMeter

    net = build_network(SPEC, INPUT, CLASSES, generator=torch.Generator().manual_seed(0)).to(DT)
    meter = CostMeter(elementwise=False)
    algo = get_algorithm(algo_name)(net, params, generator=torch.Generator().manual_seed(1), meter=meter)
    x, y = data()
    with meter.update():
        algo.step(x, y)
    return meter.flops_by_phase


@pytest.mark.parametrize("algo_name", ["ddtp-linear", "ddtp-rhl"])
def test_direct_feedback_flops_equal_the_analytic_count_by_phase(algo_name):
    """Matrix products of one update written out from the equations (mlp-3x12-tanh: 64 → 12 → 12 → 12 → 10)."""
    n, D, K, dims = N, 40, CLASSES, [64, 12, 12, 12, CLASSES]
    mm = lambda a, b: 2 * n * a * b
    layers = list(zip(dims[:-1], dims[1:]))
    hidden = range(len(layers) - 1)
    rhl = algo_name == "ddtp-rhl"
    width = lambda i: D if rhl and i < len(layers) - 2 else K  # what layer i's feedback reads
    forward = sum(mm(a, b) for a, b in layers)
    weight_grads = sum(mm(a, b) for a, b in layers)
    if rhl:  # s(h_L*), s(h_L); g_i of both
        credit = weight_grads + 2 * mm(K, D) + sum(2 * mm(width(i), dims[i + 1]) for i in hidden)
    else:  # Q_i e
        credit = weight_grads + sum(mm(K, dims[i + 1]) for i in hidden)
    feedback = mm(K, D) if rhl else 0  # s(h_L) once
    for i in hidden:
        feedback += sum(mm(a, b) for a, b in layers[i + 1:])  # the noisy h_i up to the logits
        feedback += mm(K, D) if width(i) == D else 0  # s(ã_L)
        feedback += (4 if rhl else 2) * mm(width(i), dims[i + 1])  # g_i of both (rhl), then ∂/∂Q_i
    params = {"hidden_width": D} if rhl else {}
    assert matmul_flops(algo_name, params) == {"forward": forward, "credit": credit, "feedback": feedback}


# ------------------------------------------------------------------ feedback-only epochs
class Batches:
    def __init__(self, n=96, seed=11):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y_train = torch.randn(n, 64, generator=g, dtype=DT), torch.zeros(n, dtype=torch.long)

    def train_batch(self, idx, gen):
        return self.x[idx], self.y_train[idx]


def test_feedback_epochs_between_forward_epochs_train_only_the_feedback():
    """``between_epochs`` runs ``feedback_epochs`` feedback-only passes: the same as pre-training for that many
    epochs (batches from the algorithm's generator), forward weights untouched; 0 epochs leave Q as it was."""
    a, b = make("ddtp-linear", {"feedback_epochs": 2}), make("ddtp-linear", {"pretrain_epochs": 2})
    w = [layer.weight.clone() for layer in a.net.layers]
    q0 = {i: v.clone() for i, v in a.V.items()}
    a.between_epochs(Batches(), 32)
    b.pretrain(Batches(), 32)
    for i in a.V:
        close(a.V[i], b.V[i], f"Q_{i + 1}")
        assert (a.V[i] - q0[i]).norm() > 1e-3 * q0[i].norm()
    assert all(torch.equal(layer.weight, w0) for layer, w0 in zip(a.net.layers, w))
    c = make("ddtp-linear")
    c.between_epochs(Batches(), 32)
    assert all(torch.equal(c.V[i], q0[i]) for i in q0)
    one = make("ddtp-linear", {"pretrain_epochs": 1})
    one.pretrain(Batches(), 32)
    assert not torch.equal(one.V[0], a.V[0])  # the count of epochs is honoured

"""Conformance tests of tp and dtp (algorithms/tp.py, algorithms/dtp.py): the math they must satisfy,
and the plugin contract (every parameter updated, no state change in compute_update, determinism,
checkpoint round trip)."""

import math

import pytest
import torch

from harness.algorithm import output_error
from harness.datasets import load_dataset
from harness.errors import UnsupportedError
from harness.metrics import angle_degrees
from harness.networks import build_network
from harness.registry import get_algorithm
from harness.train import Trainer



pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny networks, one thread

VARIANTS = [
    ("tp", {}),
    ("tp", {"schedule": "parallel"}),
    ("dtp", {}),
    ("dtp", {"penultimate": "inverse"}),
    ("dtp", {"penultimate": "inverse", "schedule": "parallel", "feedback_steps": 2}),
]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def make(algo, spec, digits, params=None, *, dtype=torch.float64, seed=0):
    net = build_network(spec, digits.input_shape, digits.num_classes,
                        generator=torch.Generator().manual_seed(seed)).to(dtype)
    return get_algorithm(algo)(net, params or {}, generator=torch.Generator().manual_seed(seed + 1))


def batch(digits, n=64, dtype=torch.float64):
    return digits.x_train[:n].to(dtype), digits.y_train[:n]


def per_example_error(algo, x, y):
    fw = algo.net.forward_all(x)
    _, e = output_error(fw.logits, y)
    return fw, e * len(y)  # ∂ℓ/∂h_L of each example's own loss


# ------------------------------------------------------------------ the math
def gauss_newton_h1(net, fw, eps, beta):
    """GN target displacement at h_1 of a 2-hidden-layer MLP: J⁺(−β ε) per example, J = ∂a_3/∂h_1."""
    w2, w3 = net.layers[1].weight, net.layers[2].weight
    d2 = 1 - fw.h[2] ** 2  # tanh'(a_2)
    jac = w3 @ (d2[:, :, None] * w2)  # (n, 10, d1)
    return (torch.linalg.pinv(jac) @ (-beta * eps)[:, :, None]).squeeze(-1)


def test_dtp_exact_inverse_targets_are_gauss_newton_two_hidden_layers(digits):
    """64-10-10-10 (square layers), simplified DTP with exact inverses: the last hidden layer's target
    displacement is W_3⁻¹(−β ε) at every β, and the one below, reached through the nonlinear inverse of
    layer 2, is the network's Gauss–Newton displacement J⁻¹(−β ε) (J = ∂a_3/∂h_1) up to O(β)."""
    x, y = batch(digits)
    errors = []
    for beta in (1e-3, 1e-4, 1e-5):
        algo = make("dtp", "mlp-2x10-tanh", digits, {"inverse": "exact", "penultimate": "inverse", "beta": beta})
        fw, eps = per_example_error(algo, x, y)
        t = algo.compute_targets(fw, y)
        w3 = algo.net.layers[2].weight
        top = (-beta * eps) @ torch.linalg.inv(w3).t()
        torch.testing.assert_close(t.target[1] - fw.h[2], top, rtol=1e-8, atol=1e-12)
        gn = gauss_newton_h1(algo.net, fw, eps, beta)
        assert gn.abs().max() > 10 * beta * 1e-3  # not trivially zero
        errors.append(((t.target[0] - fw.h[1] - gn).norm() / gn.norm()).item())
    assert errors[-1] < 1e-3, errors
    assert 5 < errors[0] / errors[1] < 20 and 5 < errors[1] / errors[2] < 20, errors  # first order in β


def test_dtp_direction_converges_to_gauss_newton_as_beta_shrinks(digits):
    """Square layers (64-10-10-10), exact inverses: the last hidden layer's target is GN at every β, the
    layer below's update direction tends to GN's (angle → 0, roughly ∝ β)."""
    x, y = batch(digits)
    angles = []
    for beta in (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        algo = make("dtp", "mlp-2x10-tanh", digits, {"inverse": "exact", "penultimate": "inverse", "beta": beta})
        net = algo.net
        fw, eps = per_example_error(algo, x, y)
        t = algo.compute_targets(fw, y)
        w3 = net.layers[2].weight
        torch.testing.assert_close(t.target[1] - fw.h[2], (-beta * eps) @ torch.linalg.inv(w3).t(),
                                   rtol=1e-8, atol=1e-12)
        algo.compute_update(x, y)
        gn = gauss_newton_h1(net, fw, eps, beta)
        delta = -(gn / (beta * len(y))) * (1 - fw.h[1] ** 2)  # (h − h*)/(βn) ⊙ f'(a_1) with h* − h = GN
        gn_update = delta.t() @ x.flatten(1)
        angles.append(angle_degrees(net.layers[0].weight.grad, gn_update))
    assert angles[0] > 1.0, angles  # the nonlinearity matters at large β ...
    assert all(a > b for a, b in zip(angles[1:], angles[2:])), angles  # ... and its effect shrinks with β
    assert angles[-1] < 0.01, angles
    assert 5 < angles[-2] / angles[-1] < 20, angles  # first order in β


def test_tp_without_difference_misses_gauss_newton_with_imperfect_inverses(digits):
    """64-16-10: W_2 (10×16) has no exact inverse, so its pseudoinverse reconstructs h_1 imperfectly. dtp's
    difference term cancels that error (GN target at every β); tp's target keeps it, so its displacement
    does not shrink with β and its direction tends away from GN's."""
    x, y = batch(digits)
    for beta in (1e-1, 1e-3):
        params = {"inverse": "exact", "beta": beta}
        tp = make("tp", "mlp-1x16-tanh", digits, params)
        dtp = make("dtp", "mlp-1x16-tanh", digits, {**params, "penultimate": "inverse"})
        fw, eps = per_example_error(tp, x, y)
        gn = (-beta * eps) @ torch.linalg.pinv(tp.net.layers[1].weight).t()
        shift_tp = tp.compute_targets(fw, y).target[0] - fw.h[1]
        shift_dtp = dtp.compute_targets(fw, y).target[0] - fw.h[1]
        assert angle_degrees(shift_dtp, gn) < 1e-4
        assert angle_degrees(shift_tp, gn) > 45.0
        assert (shift_tp - gn).norm() > 0.5 * shift_tp.norm()
        if beta == 1e-1:
            first = shift_tp.norm()
    assert shift_tp.norm() > 0.5 * first  # 100× smaller β, tp's displacement barely shrinks

    # the same with learned (imperfect) inverses: dtp's displacement is O(β), tp's is not
    shifts = {}
    for name, extra in (("tp", {}), ("dtp", {"penultimate": "inverse"})):
        for beta in (1e-1, 1e-3):
            algo = make(name, "mlp-1x16-tanh", digits, {"beta": beta, **extra})
            fw = algo.net.forward_all(x)
            shifts[name, beta] = (algo.compute_targets(fw, y).target[0] - fw.h[1]).norm().item()
    assert shifts["dtp", 1e-3] / shifts["dtp", 1e-1] < 0.02
    assert shifts["tp", 1e-3] / shifts["tp", 1e-1] > 0.5


@pytest.mark.parametrize("act,factor", [("linear", {"inv_recon_l2": 10, "inv_recon_l3": 10}),
                                       ("tanh", {"inv_recon_l2": 3, "inv_recon_l3": 10})])
def test_inverse_training_reduces_reconstruction_error(act, factor, digits):
    """Pre-training the inverses on a fixed 64-8-8-10 network (every layer injective, so exact inverses
    exist) cuts the reconstruction error ≥ 10× wherever the exact inverse lies in the learned family
    g(h) = f_{l-1}(V h + c): every layer of a linear network, and the top layer (logits → tanh units) of a
    tanh network. For a tanh → tanh layer the exact inverse W⁺(atanh(h) − b) is outside that family, and
    the error floors near 25% of ‖h‖ (measured), so only a ≥ 3× drop is required there."""
    algo = make("tp", f"mlp-2x8-{act}", digits, {"feedback_lr": 0.05, "sigma": 0.01, "pretrain_epochs": 80},
                dtype=torch.float32)
    x, y = digits.x_train[:256], digits.y_train[:256]
    weights = [p.clone() for p in algo.net.parameters()]
    before = algo.diagnostics(x, y)
    algo.pretrain(digits, 128)
    after = algo.diagnostics(x, y)
    assert set(before) == set(factor)
    for key, k in factor.items():
        assert after[key] < before[key] / k, (key, before[key], after[key])
    assert all(torch.equal(p, w) for p, w in zip(algo.net.parameters(), weights))  # forward weights untouched


def test_dtp_gradient_penultimate_matches_bp_in_top_two_layers(digits):
    """Lee et al.'s penultimate target is a gradient step: the top two layers' updates are bp's, bit for bit."""
    algo = make("dtp", "mlp-2x16-tanh", digits, dtype=torch.float32)
    x, y = batch(digits, dtype=torch.float32)
    algo.compute_update(x, y)
    mine = [(p.grad.clone()) for p in algo.net.parameters()]
    for p in algo.net.parameters():
        p.grad = None
    loss = torch.nn.functional.cross_entropy(algo.net(x), y)
    loss.backward()
    bp = [p.grad for p in algo.net.parameters()]
    for m, g in list(zip(mine, bp))[2:]:  # layers 2 and 3: weight and bias
        assert torch.equal(m, g)
    assert not torch.allclose(mine[0], bp[0])  # layer 1 is trained through the learned inverse


# ------------------------------------------------------------------ the plugin contract
@pytest.mark.parametrize("algo,params", VARIANTS)
def test_step_updates_every_parameter_and_leaves_compute_update_pure(algo, params, digits):
    a = make(algo, "mlp-2x16-tanh", digits, params, dtype=torch.float32)
    x, y = batch(digits, dtype=torch.float32)
    inv_before = {i: (v.clone(), a.c[i].clone()) for i, v in a.V.items()}
    gen_before = a.gen.get_state()

    out1 = a.compute_update(x, y)
    grads1 = [p.grad.clone() for p in a.net.parameters()]
    out2 = a.compute_update(x, y)
    grads2 = [p.grad.clone() for p in a.net.parameters()]
    assert torch.equal(out1.loss, out2.loss)
    assert all(torch.equal(g1, g2) for g1, g2 in zip(grads1, grads2))
    assert all(torch.equal(v, inv_before[i][0]) and torch.equal(a.c[i], inv_before[i][1]) for i, v in a.V.items())
    assert torch.equal(a.gen.get_state(), gen_before)
    assert a.inv_opt is None or not a.inv_opt.state

    opt = torch.optim.SGD(a.net.parameters(), lr=0.1)
    before = [p.clone() for p in a.net.parameters()]
    out = a.step(x, y)
    opt.step()
    assert math.isfinite(out.loss.item())
    for (name, p), b in zip(a.net.named_parameters(), before):
        assert torch.isfinite(p).all(), name
        assert not torch.equal(p, b), f"{algo} {params}: {name} unchanged"
    assert a.V and any(not torch.equal(v, inv_before[i][0]) for i, v in a.V.items())  # inverses learned


@pytest.mark.parametrize("algo", ["tp", "dtp"])
def test_refuses_relu_and_conv_networks(algo, digits):
    for spec, word in (("mlp-2x16-relu", "relu"), ("cnn-small-tanh", "conv")):
        net = build_network(spec, digits.input_shape, digits.num_classes)
        with pytest.raises(UnsupportedError, match=word) as err:
            get_algorithm(algo)(net, {})
        assert "tanh" in str(err.value) or "linear" in str(err.value)
        assert f"network '{spec}'" in str(err.value)


@pytest.mark.parametrize("params", [{}, {"inverse": "exact"}])
def test_leaky_relu_network_trains(params, digits):
    """dtp on a leaky-ReLU network (inverse f⁻¹(h) = h / 0.01 below 0) lowers the training loss of a fixed batch
    by a third in 60 Adam steps (the exact update on such networks is pinned by tests/test_oracles.py)."""
    a = make("dtp", "mlp-2x16-leaky-relu", digits, params, dtype=torch.float32)
    x, y = digits.x_train[:128], digits.y_train[:128]
    opt = torch.optim.Adam(a.net.parameters(), lr=0.003)
    losses = []
    for _ in range(60):
        losses.append(a.step(x, y).loss.item())
        opt.step()
    assert losses[-1] < 0.67 * losses[0], losses[::10]
    assert all(math.isfinite(v) for v in losses)


def trial(algo, epochs, params=None, **extra):
    return {"algo": algo, "dataset": "digits", "network": "mlp-2x16-tanh", "seed": 3, "probe_size": 64,
            "train": {"epochs": epochs, "batch_size": 64}, "params": params or {}, **extra}


VOLATILE = {"wall_time_s", "seconds_per_update", "peak_memory_bytes"}


def stable(history):
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in history]


@pytest.mark.parametrize("algo,params", [("tp", {"pretrain_epochs": 1}), ("dtp", {"penultimate": "inverse"})])
def test_same_seed_same_results_and_resume_is_exact(algo, params, digits, tmp_path, capsys):
    straight = Trainer(trial(algo, 4, params), data=digits)
    straight.run(None)
    again = Trainer(trial(algo, 4, params), data=digits)
    again.run(None)
    assert stable(straight.history) == stable(again.history)

    first = Trainer(trial(algo, 2, params), data=digits)
    first.run(tmp_path)
    resumed = Trainer(trial(algo, 4, params), data=digits)
    summary = resumed.run(tmp_path)
    assert len(resumed.history) == 4
    assert stable(resumed.history) == stable(straight.history)
    row = straight.history[-1]
    assert all(math.isfinite(row[k]) for k in row if k.startswith(("inv_recon_l", "angle_l", "flops_")))
    assert row["flops_feedback"] > 0 and row["flops_credit"] > 0
    assert summary["pretrain_flops"] > 0 if params.get("pretrain_epochs") else summary["pretrain_flops"] == 0


def test_exact_inverse_counts_its_pseudoinverses_as_credit_work(digits):
    """inverse=exact learns nothing (no feedback work) but its pseudoinverses are counted: the credit
    phase of one update is the same update with learned-free targets plus one pinv per g call."""
    from harness.cost import svd_flops

    t = Trainer(trial("dtp", 1, {"inverse": "exact", "penultimate": "inverse"}), data=digits)
    s = t.run(None)
    assert s["flops_per_update"]["feedback"] == 0 and t.algo.inv_opt is None
    # dtp calls g twice per inverse layer (g(h*) and g(h)); each pinv of W_i (out×in) is an SVD,
    # the scaling of k columns and a product
    pinv = sum(svd_flops(*layer.weight.shape) + layer.weight.shape[1] * min(layer.weight.shape)
               + 2 * layer.weight.numel() * min(layer.weight.shape) for layer in t.net.layers[1:])
    no_pinv = Trainer(trial("dtp", 1, {"inverse": "exact", "penultimate": "inverse"}), data=digits)
    from unittest import mock

    with mock.patch("harness.cost.DECOMPOSITION_MAPPING", {}):
        from harness import cost
        with mock.patch.object(cost, "flop_counter", lambda elementwise=True: cost.FlopCounterMode(
                display=False, custom_mapping=cost.ELEMENTWISE_MAPPING if elementwise else None)):
            s0 = no_pinv.run(None)
    assert s["flops_per_update"]["credit"] - s0["flops_per_update"]["credit"] == 2 * pinv
    assert s["plausibility"]["weight_transport"] is True


# ------------------------------------------------------------------ counted cost, initialisation, state
def mm(n, a, b):
    return 2 * n * a * b


@pytest.mark.parametrize("algo,params", [
    ("tp", {}), ("tp", {"schedule": "parallel", "feedback_steps": 2}),
    ("dtp", {}), ("dtp", {"penultimate": "inverse"}),
])
def test_matmul_flops_of_one_step_equal_the_analytic_count_by_phase(algo, params, digits):
    """Network 64 → 24 → 16 → 10, n = 32. Forward: one product per layer. Credit: the weight gradients, and
    the inverses the target chain calls (tp: g_l once per inverse layer; dtp: twice, g(h*) and g(h); dtp's
    gradient penultimate target: one product with W_L). Feedback: per inverse layer and feedback step the
    reconstruction's forward pass, the inverse and its gradient (three products)."""
    from harness.cost import CostMeter

    n, pairs = 32, [(64, 24), (24, 16), (16, 10)]
    meter = CostMeter(elementwise=False)
    net = build_network("mlp-2x24-tanh", digits.input_shape, 10, generator=torch.Generator().manual_seed(0))
    from harness.networks import Identity, Linear, Tanh, init_weights

    net.layers[1], net.layers[2] = Linear(24, 16, Tanh()), Linear(16, 10, Identity())
    init_weights(net, "glorot", torch.Generator().manual_seed(0))
    a = get_algorithm(algo)(net, params, generator=torch.Generator().manual_seed(1), meter=meter)
    x, y = digits.x_train[:n], digits.y_train[:n]
    with meter.update():
        a.step(x, y)
    inverse = a.inverse_layers()
    calls = 2 if algo == "dtp" else 1
    credit = sum(mm(n, *p) for p in pairs) + sum(calls * mm(n, *pairs[i]) for i in inverse)
    if algo == "dtp" and params.get("penultimate", "gradient") == "gradient":
        assert inverse == [1]
        credit += mm(n, *pairs[2])
    steps = params.get("feedback_steps", 1)
    assert meter.flops_by_phase == {"forward": sum(mm(n, *p) for p in pairs), "credit": credit,
                                    "feedback": steps * sum(3 * mm(n, *pairs[i]) for i in inverse)}


def test_learned_inverses_start_glorot_uniform_from_the_algorithms_generator(digits):
    """V_l ~ U(−b, b), b = √(6 / (fan_in + fan_out)) of W_l, c_l = 0, drawn from the algorithm's own
    generator (the global RNG plays no part); on unequal layer widths so that the fans matter."""
    def build(global_seed):
        torch.manual_seed(global_seed)
        net = build_network("mlp-3x40-tanh", digits.input_shape, 10, generator=torch.Generator().manual_seed(0))
        from harness.networks import Linear, Tanh, init_weights

        net.layers[2] = Linear(40, 90, Tanh())
        net.layers[3] = type(net.layers[3])(90, 10, net.layers[3].act)
        init_weights(net, "glorot", torch.Generator().manual_seed(0))
        return get_algorithm("tp")(net, {}, generator=torch.Generator().manual_seed(5))

    a, b = build(0), build(1)
    assert sorted(a.V) == [1, 2, 3]
    for i, v in a.V.items():
        out_i, in_i = a.net.layers[i].weight.shape
        bound = math.sqrt(6.0 / (out_i + in_i))
        assert v.shape == (in_i, out_i)
        assert v.abs().max() <= bound and v.abs().max() > 0.97 * bound, (i, v.abs().max() / bound)
        assert abs(v.mean()) < 0.1 * bound and abs((v > 0).float().mean() - 0.5) < 0.1
        assert torch.equal(a.c[i], torch.zeros(in_i))
        assert torch.equal(v, b.V[i])


def test_exact_inverses_have_no_optimizer_state_and_round_trip(digits):
    a = make("tp", "mlp-2x16-tanh", digits, {"inverse": "exact"})
    state = a.extra_state()
    assert state == {"V": {}, "c": {}, "opt": None}
    a.load_extra_state(state)
    assert a.inv_opt is None and not a.V


def test_pretrain_draws_batches_and_augmentation_from_the_algorithms_generator(digits):
    class Spy:
        """Digits with train_batch recording the generator it is given."""

        y_train = digits.y_train

        def __init__(self):
            self.generators = []

        def train_batch(self, idx, generator):
            self.generators.append(generator)
            return digits.x_train[idx].double(), digits.y_train[idx]

    a = make("tp", "mlp-2x16-tanh", digits, {"pretrain_epochs": 1})
    spy = Spy()
    a.pretrain(spy, 512)
    assert len(spy.generators) == len(digits.y_train) // 512 and all(g is a.gen for g in spy.generators)


def test_feedback_epochs_train_only_the_inverses_after_every_epoch_and_are_counted_as_feedback(digits):
    """``feedback_epochs=2``: after each forward epoch, two passes over the training batches update the inverses
    (the forward weights are untouched by them), the same work each time; the trial's cumulative feedback
    FLOPs are the updates' own plus calls × the counted interlude, which is n_batches · 2 · (one forward pass
    + one inverse update)."""
    from harness.cost import CostMeter

    cfg = {"algo": "dtp", "dataset": "digits", "network": "mlp-2x16-tanh", "seed": 0,
           "train": {"epochs": 2, "batch_size": 256}, "params": {"feedback_epochs": 2, "penultimate": "inverse"}}
    trainer = Trainer(cfg)
    forward = [p.clone() for p in trainer.net.parameters()]
    calls = []
    inner = type(trainer.algo).feedback_epochs

    def spy(self, data, batch_size, epochs):
        before = [p.clone() for p in self.net.parameters()]
        V = {i: v.clone() for i, v in self.V.items()}
        inner(self, data, batch_size, epochs)
        calls.append((epochs, all(torch.equal(a, b) for a, b in zip(before, self.net.parameters())),
                      all(not torch.equal(V[i], self.V[i]) for i in V)))
    type(trainer.algo).feedback_epochs = spy
    try:
        s = trainer.run()
    finally:
        type(trainer.algo).feedback_epochs = inner
    assert calls == [(0, True, False), (2, True, True), (2, True, True)]  # pretrain (0 epochs), then per epoch
    assert not all(torch.equal(a, b) for a, b in zip(forward, trainer.net.parameters()))
    meter = trainer.meter
    n_batches = len(trainer.data.y_train) // 256
    probe = CostMeter(elementwise=meter.elementwise)
    x, y = trainer.data.x_train[:256], trainer.data.y_train[:256]
    with probe.update():
        with probe.phase("forward"):
            fw = trainer.algo.net.forward_all(x)
        with probe.phase("feedback"):
            trainer.algo.train_inverses(fw)
    one = probe.kind_flops["update"]
    assert meter.interlude_flops["feedback"] == 2 * n_batches * (one["forward"] + one["feedback"])
    assert s["between_epochs"]["calls"] == 2 and len(meter.interlude_ns) == 2
    updates = s["updates"]
    assert s["flops_per_update"]["feedback"] == pytest.approx(
        meter.kind_flops["update"]["feedback"] + 2 * meter.interlude_flops["feedback"] / updates, rel=1e-12)
    assert trainer.history[-1]["flops_feedback"] == pytest.approx(
        updates * meter.kind_flops["update"]["feedback"] + 2 * meter.interlude_flops["feedback"], rel=1e-12)

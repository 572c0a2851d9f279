"""The plugin contract, checked for every registered algorithm (parametrised over the registry)."""

import copy
import math

import pytest
import torch

from harness.algorithm import PHASE_KINDS, Plausibility
from harness.cost import CostMeter
from harness.metrics import angle_degrees, bp_gradients
from harness.networks import build_network
from harness.registry import algorithm_names, get_algorithm
from harness.train import Trainer
from tests.conftest import tiny_trial

ALGOS = algorithm_names()
TIMING = {"wall_time_s", "seconds_per_update", "peak_memory_bytes"}
DEEP = "mlp-3x12-tanh"  # three hidden layers: the first one is two layers away from any exact shortcut


def make(algo_name, seed=0, spec="mlp-2x16-tanh"):
    net = build_network(spec, (1, 8, 8), 10, generator=torch.Generator().manual_seed(seed))
    algo = get_algorithm(algo_name)(net, generator=torch.Generator().manual_seed(seed + 1), meter=CostMeter())
    return net, algo


def batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", ALGOS)
def test_spec_is_complete(name):
    spec = get_algorithm(name).spec()
    assert spec["name"] == name and spec["version"] >= 1 and spec["reference"] and spec["description"]
    for row in spec["hyperparameters"]:
        assert row["doc"], f"{name}.{row['name']} has no docstring"


@pytest.mark.parametrize("name", ALGOS)
def test_one_update_changes_every_trainable_parameter(name):
    net, algo = make(name)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    out = algo.step(*batch())
    opt.step()
    assert math.isfinite(out.loss.item()) and torch.isfinite(out.logits).all()
    for (pname, p), b in zip(net.named_parameters(), before, strict=True):
        assert torch.isfinite(p.grad).all(), pname
        assert not torch.equal(p.detach(), b), f"{name} did not change {pname}"


def assert_same_state(a, b, where="state"):
    """Equal structure, and every tensor bit for bit (torch.equal), recursively through dicts, lists, tuples."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{where} changed"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same_state(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same_state(u, v, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} vs {b!r}"  # NaN == NaN here


def test_assert_same_state_sees_a_relative_change_of_1e_7():
    state = {"V": {1: torch.tensor([0.3, 0.7, 1.1], dtype=torch.float64)},
             "opt": {"state": {0: {"step": torch.tensor(2.0)}}}}
    changed = copy.deepcopy(state)
    changed["V"][1][0] *= 1 + 1e-7
    assert repr(state) == repr(changed)  # what a repr comparison would miss ...
    with pytest.raises(AssertionError, match=r"\[1\] changed"):
        assert_same_state(state, changed)  # ... this sees
    changed = copy.deepcopy(state)
    changed["opt"]["state"][0]["step"] += 1
    with pytest.raises(AssertionError, match="step"):
        assert_same_state(state, changed)


def snapshot(algo):
    return [p.detach().clone() for p in algo.net.parameters()], copy.deepcopy(algo.extra_state()), algo.gen.get_state()


@pytest.mark.parametrize("name", ALGOS)
@pytest.mark.parametrize("trained", [False, True], ids=["fresh", "after-2-steps"])
def test_compute_update_changes_no_state(name, trained):
    """compute_update (the harness calls it on probe batches) leaves the forward weights, every tensor of
    extra_state() (optimizer states included) and the generator exactly as they were, and gives the same
    update when called again."""
    net, algo = make(name, spec=DEEP)
    x, y = batch()
    if trained:  # feedback state and its optimizer state are populated
        for k in range(2):
            algo.step(*batch(seed=k + 1))
    params, extra, gen = snapshot(algo)
    out1 = algo.compute_update(x, y)
    g1 = [p.grad.clone() for p in net.parameters()]
    params_after, extra_after, gen_after = snapshot(algo)
    assert all(torch.equal(a, p) for a, p in zip(params, params_after, strict=True))
    assert_same_state(extra, extra_after, "extra_state()")
    assert torch.equal(gen, gen_after), "compute_update drew from the generator"
    out2 = algo.compute_update(x, y)
    assert torch.equal(out1.loss, out2.loss) and torch.equal(out1.logits, out2.logits)
    assert all(torch.equal(a, p.grad) for a, p in zip(g1, net.parameters(), strict=True))


@pytest.mark.parametrize("name", ALGOS)
def test_update_is_finite_and_nonzero_in_every_layer(name):
    """Every parameter of every layer (the first hidden layer of a 3-hidden-layer network included) gets a
    finite, non-zero update: no layer is silently left out of credit assignment."""
    net, algo = make(name, spec=DEEP)
    algo.compute_update(*batch())
    for pname, p in net.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().max() > 0, f"{name}: zero update for {pname}"


@pytest.mark.parametrize("name", [a for a in ALGOS if a != "bp"])
def test_update_differs_from_bp_unless_weights_are_transported(name):
    """At initialisation, an algorithm that does not transport weights cannot produce bp's gradient: if it
    did, it would be reading W (or be backprop in disguise)."""
    net, algo = make(name, spec=DEEP)
    if algo.plausibility().weight_transport:
        pytest.skip(f"{name}'s default configuration transports weights")
    x, y = batch()
    reference = bp_gradients(net, x, y)
    algo.compute_update(x, y)
    angles = [angle_degrees(w.grad, g) for w, g in zip(net.weights(), reference, strict=True)]
    assert max(angles) > 5.0, f"{name} matches bp at init: {angles}"


@pytest.mark.parametrize("name", ALGOS)
def test_plausibility_of_the_default_configuration(name):
    _, algo = make(name)
    p = algo.plausibility()
    assert isinstance(p, Plausibility)
    assert isinstance(p.weight_transport, bool) and isinstance(p.local, bool)
    assert isinstance(p.feedback_learning, bool) and p.phases in PHASE_KINDS
    assert p == algo.plausibility()  # a record of the configuration, not of the state


@pytest.mark.parametrize("name", ALGOS)
def test_extra_state_round_trip_continues_identically(name):
    """A fresh instance loaded with extra_state() of a trained one (and its generator state) continues
    exactly as the original: same updates, same state after further steps."""
    net, algo = make(name, spec=DEEP)
    for k in range(2):
        algo.step(*batch(seed=k + 1))
    twin_net = copy.deepcopy(net)
    twin = get_algorithm(name)(twin_net, generator=torch.Generator().manual_seed(99))
    twin.load_extra_state(copy.deepcopy(algo.extra_state()))
    twin.gen.set_state(algo.gen.get_state())
    assert_same_state(algo.extra_state(), twin.extra_state())
    for k in range(2):
        x, y = batch(seed=k + 5)
        out, out_twin = algo.step(x, y), twin.step(x, y)
        assert torch.equal(out.loss, out_twin.loss)
        for p, q in zip(net.parameters(), twin_net.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
    assert_same_state(algo.extra_state(), twin.extra_state())
    assert torch.equal(algo.gen.get_state(), twin.gen.get_state())


@pytest.mark.parametrize("name", ALGOS)
def test_trial_reports_finite_metrics_and_cost(name, digits):
    summary = Trainer(tiny_trial(name), data=digits).run(None, log=open("/dev/null", "w"))
    assert summary["status"] == "ok" and summary["epochs"] == 2
    flops = summary["flops_per_update"]
    assert flops["forward"] > 0 and flops["credit"] > 0
    assert flops["total"] == pytest.approx(flops["forward"] + flops["credit"] + flops["feedback"])
    assert summary["seconds_per_update"] > 0 and summary["peak_memory_bytes"] > 0
    assert 0 <= summary["test_acc"] <= 1 and summary["config"]["params"] == get_algorithm(name).Params().model_dump()
    assert all(0 <= a <= 180 for a in summary["angles"].values()) and len(summary["angles"]) == 3
    assert summary["env"]["versions"]["torch"] and summary["dataset_fingerprint"] == digits.fingerprint


@pytest.mark.parametrize("name", ALGOS)
def test_same_seed_same_metrics(name, digits):
    a = Trainer(tiny_trial(name), data=digits)
    a.run(None, log=open("/dev/null", "w"))
    b = Trainer(tiny_trial(name), data=digits)
    b.run(None, log=open("/dev/null", "w"))
    fa, fb = a.epochs_frame().drop(columns=list(TIMING)), b.epochs_frame().drop(columns=list(TIMING))
    assert fa.equals(fb)
    c = Trainer(tiny_trial(name, seed=1), data=digits)
    c.run(None, log=open("/dev/null", "w"))
    assert not fa.equals(c.epochs_frame().drop(columns=list(TIMING)))


@pytest.mark.parametrize("name", ALGOS)
def test_resume_from_checkpoint_gives_same_metrics(name, digits, tmp_path):
    straight = Trainer(tiny_trial(name, train={"epochs": 3}), data=digits)
    straight.run(None, log=open("/dev/null", "w"))
    first = Trainer(tiny_trial(name, train={"epochs": 2}), data=digits)
    first.run(tmp_path, log=open("/dev/null", "w"))
    resumed = Trainer(tiny_trial(name, train={"epochs": 3}), data=digits)
    resumed.run(tmp_path, log=open("/dev/null", "w"))
    cols = [c for c in straight.epochs_frame().columns if c not in TIMING]
    assert resumed.epochs_frame()[cols].equals(straight.epochs_frame()[cols])

"""The plugin contract, checked for every registered algorithm (parametrised over the registry)."""

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

from harness.algorithm import Plausibility
from harness.cost import CostMeter
from harness.networks import build_network
from harness.registry import algorithm_names, get_algorithm
from harness.train import Trainer
from tests.conftest import tiny_trial

ALGOS = algorithm_names()
TIMING = {"wall_time_s", "seconds_per_update", "peak_memory_bytes"}


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


def flat_state(state, prefix=""):
    """Every leaf of a nested state (dicts, lists, tuples), keyed by its path."""
    if isinstance(state, dict):
        return {k2: v2 for k, v in state.items() for k2, v2 in flat_state(v, f"{prefix}{k}.").items()}
    if isinstance(state, (list, tuple)):
        return {k2: v2 for i, v in enumerate(state) for k2, v2 in flat_state(v, f"{prefix}{i}.").items()}
    return {prefix: state}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key  # bit for bit, not a printed approximation
        else:
            assert value == b[key], key


@pytest.mark.parametrize("name", ALGOS)
def test_compute_update_changes_no_state(name):
    net, algo = make(name)
    x, y = batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    algo.step(x, y)  # feedback state as in training (primed, learned once)
    opt.step()
    params = [p.detach().clone() for p in net.parameters()]
    extra = copy.deepcopy(flat_state(algo.extra_state()))
    gen = algo.gen.get_state()
    algo.compute_update(x, y)
    g1 = [p.grad.clone() for p in net.parameters()]
    algo.compute_update(x, y)
    g2 = [p.grad.clone() for p in net.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))  # no hidden state change
    assert all(torch.equal(a, p) for a, p in zip(params, net.parameters(), strict=True))
    assert torch.equal(gen, algo.gen.get_state())
    assert_same_state(extra, flat_state(algo.extra_state()))


@pytest.mark.parametrize("name", ALGOS)
def test_extra_state_round_trip_restores_the_feedback_pathway(name):
    """A checkpoint's extra_state, loaded into an algorithm built from another seed, restores it bit for bit."""
    net, algo = make(name)
    x, y = batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):
        algo.step(x, y)
        opt.step()
    saved = copy.deepcopy(algo.extra_state())
    net2, other = make(name, seed=5)
    net2.load_state_dict(net.state_dict())
    other.load_extra_state(copy.deepcopy(saved))
    assert_same_state(flat_state(saved), flat_state(other.extra_state()))
    other.gen.set_state(algo.gen.get_state())
    algo.compute_update(x, y)
    other.compute_update(x, y)
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_state_comparison_sees_a_relative_change_of_1e_7():
    state = {"B": [torch.ones(3, 3)], "opt": {"state": {0: {"exp_avg": torch.ones(2)}}}}
    changed = copy.deepcopy(state)
    changed["opt"]["state"][0]["exp_avg"][1] += 1e-7 * 16  # a few ulps of 1.0
    with pytest.raises(AssertionError):
        assert_same_state(flat_state(state), flat_state(changed))


@pytest.mark.parametrize("name", ALGOS)
def test_update_reaches_every_layer_and_differs_from_bp_unless_weights_are_transported(name):
    from harness.metrics import bp_gradients

    net, algo = make(name, spec="mlp-3x16-tanh")
    x, y = batch()
    algo.step(x, y)  # prime and learn feedback once; the forward weights are unchanged
    algo.compute_update(x, y)
    grads = [layer.weight.grad.clone() for layer in net.layers]
    for i, g in enumerate(grads):  # a known failure mode: hidden-layer updates silently zero
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"{name}: layer {i + 1} gets no update"
    reference = bp_gradients(net, x, y)
    same = all(torch.allclose(g, r, rtol=1e-3, atol=1e-7) for g, r in zip(grads, reference, strict=True))
    if not algo.plausibility().weight_transport:
        assert not same, f"{name} reproduces bp's gradient but declares no weight transport"
    assert isinstance(algo.plausibility(), Plausibility)


@pytest.mark.parametrize("name", ALGOS)
def test_trial_reports_finite_metrics_and_cost(name, digits):
    summary = Trainer(tiny_trial(name), data=digits).run(None, log=open("/dev/null", "w"))
    assert summary["status"] == "ok" and summary["epochs"] == 2
    flops = summary["flops_per_update"]
    assert flops["forward"] > 0 and flops["credit"] > 0
    assert flops["total"] == pytest.approx(flops["forward"] + flops["credit"] + flops["feedback"])
    assert summary["seconds_per_update"] > 0 and summary["peak_memory_bytes"] >= 0
    assert 0 <= summary["test_acc"] <= 1 and summary["config"]["params"] == get_algorithm(name).Params().active_dump()
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


@pytest.mark.parametrize("name", ALGOS)
def test_report_labels_name_exactly_the_diagnostics_reported(name):
    """Every diagnostic key has a label (``*`` = the layer index) and every label names a reported key: a
    renamed diagnostic would otherwise reach the report unlabelled, or a label would describe nothing."""
    from fnmatch import fnmatchcase

    net, algo = make(name, spec="mlp-3x16-tanh")
    algo.step(*batch())
    keys = set(algo.diagnostics(*batch(seed=1)))
    labels = get_algorithm(name).report_labels
    assert {k for k in keys if not any(fnmatchcase(k, pat) for pat in labels)} == set()
    assert {pat for pat in labels if not any(fnmatchcase(k, pat) for k in keys)} == set()
    for pat, meta in labels.items():
        assert set(meta) == {"label", "unit"} and meta["label"] and meta["unit"], pat


@pytest.mark.parametrize("name", ALGOS)
def test_every_update_kind_is_in_the_update_mix(name, digits):
    """The cost meter amortises each kind of update by its share in ``update_mix()``: an update whose
    kind is not in the mix would have its cost left out of the per-update figures."""
    net, algo = make(name)
    algo.pretrain(digits, 32)
    mix = algo.update_mix()
    assert mix and all(w >= 0 for w in mix.values()) and sum(mix.values()) > 0
    for _ in range(3):
        assert algo.update_kind() in mix
        algo.step(*batch())


def test_algorithm_reference_is_what_the_code_declares():
    """docs/algorithms.md (``make docs``) is every built-in algorithm's declared hyperparameters (defaults, ranges,
    search spaces, where each acts) and the plausibility record of its defaults, regenerated here."""
    from pathlib import Path

    from harness.algorithm_reference import reference

    doc = Path(__file__).resolve().parent.parent / "docs" / "algorithms.md"
    assert doc.read_text() == reference(), "docs/algorithms.md is out of date: run `make docs`"


@pytest.mark.parametrize("name", ALGOS)
def test_an_update_never_reads_a_tensor_back_to_the_host(name, monkeypatch):
    """No ``.item()``, ``bool(t)``, ``float(t)``, ``int(t)`` or ``.tolist()`` in an update: on a GPU each one
    would stall the device (a host sync per update). Setup and diagnostics may read values back."""
    net, algo = make(name)
    x, y = batch()
    algo.step(x, y)  # a first update may prime state (e.g. rfl's σ̂ before the first sleep)

    torch_dir = str(Path(torch.__file__).parent)

    def guarded(attr):
        original = getattr(torch.Tensor, attr)

        def read_back(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(torch_dir):  # torch's own (e.g. Adam's step count, a CPU tensor even on a GPU)
                return original(self, *a, **k)
            raise AssertionError(f"tensor.{attr} in {caller} during an update")
        return read_back

    for attr in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, attr, guarded(attr))
    for _ in range(2):
        algo.step(x, y)

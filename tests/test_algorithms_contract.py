"""The plugin contract, checked for every registered algorithm (parametrised over the registry)."""

import math

import pytest
import torch

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


@pytest.mark.parametrize("name", ALGOS)
def test_compute_update_changes_no_state(name):
    net, algo = make(name)
    x, y = batch()
    params = [p.detach().clone() for p in net.parameters()]
    extra = {k: v for k, v in algo.extra_state().items()}
    gen = algo.gen.get_state()
    algo.compute_update(x, y)
    g1 = [p.grad.clone() for p in net.parameters()]
    algo.compute_update(x, y)
    g2 = [p.grad.clone() for p in net.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
    assert all(torch.equal(a, p) for a, p in zip(params, net.parameters(), strict=True))
    assert torch.equal(gen, algo.gen.get_state())
    assert repr(extra) == repr(algo.extra_state())


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

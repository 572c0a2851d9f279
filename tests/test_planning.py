"""The structure of a sweep: planning without Ray, the results schema without torch, summaries
rebuilt from a checkpoint without data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_sweep_is_planned_with_ray_unimportable():
    code = (
        "import sys, json\n"
        "sys.modules['ray'] = None  # any `import ray` now raises ImportError\n"
        "from harness.planning import SweepOptions, resolve, stage_trials, planned_ids, select_best\n"
        "spec, plan = resolve(SweepOptions(algo='bp,fa', trials=3, seeds=2, epochs=4))\n"
        "rows = [{'algo': c['config_id'].split('-')[0], 'config_id': c['config_id'], 'best_val_acc': 0.5}\n"
        "        for a in plan['algorithms'] for c in plan['configs'][a]]\n"
        "plan['selected'] = select_best(rows, plan['algorithms'])\n"
        "final = stage_trials(spec, plan, 'final', '/tmp/x')\n"
        "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules if sys.modules[m] is not None)\n"
        "print(json.dumps({'plan': plan, 'ids': planned_ids(spec, plan), 'final': [t['trial_id'] for t in final]}))\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["plan"]["algorithms"] == ["bp", "fa"] and [len(out["plan"]["configs"][a]) for a in ("bp", "fa")] == [3, 3]
    assert out["final"] == ["final-bp-c00-s0", "final-bp-c00-s1", "final-fa-c00-s0", "final-fa-c00-s1"]
    assert out["ids"][:3] == ["search-bp-c00-s0", "search-bp-c01-s0", "search-bp-c02-s0"] and len(out["ids"]) == 10


def test_planning_draws_the_same_configurations_with_and_without_ray():
    from harness.planning import SweepOptions, resolve

    code = ("import sys, json\nsys.modules['ray'] = None\nfrom harness.planning import SweepOptions, resolve\n"
            "print(json.dumps(resolve(SweepOptions(trials=4))[1]['configs']))\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    here = json.loads(json.dumps(resolve(SweepOptions(trials=4))[1]["configs"]))
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here


def test_dist_sample_draws_exactly_as_ray_tune():
    pytest.importorskip("ray")
    import numpy as np

    from harness.spec import Dist, _plain

    space = {"lr": Dist(kind="loguniform", low=1e-4, high=1e-2), "eta": Dist(kind="uniform", low=0.1, high=1.5),
             "k": Dist(kind="randint", low=1, high=20), "n": Dist(kind="choice", values=[16, 32, "x", 0.9])}
    from ray import tune

    domains = {"lr": tune.loguniform(1e-4, 1e-2), "eta": tune.uniform(0.1, 1.5), "k": tune.randint(1, 21),
               "n": tune.choice([16, 32, "x", 0.9])}
    for seed in range(3):
        ours, theirs = np.random.default_rng([seed, 7]), np.random.default_rng([seed, 7])
        a = [{k: _plain(d.sample(ours)) for k, d in space.items()} for _ in range(50)]
        b = [{k: _plain(domains[k].sample(random_state=theirs)) for k in domains} for _ in range(50)]
        assert a == b
        assert all(type(x[k]) is type(y[k]) for x, y in zip(a, b) for k in x)


def test_the_results_schema_imports_without_torch_pandas_or_ray():
    code = ("import sys\nfor m in ('torch', 'pandas', 'ray'):\n    sys.modules[m] = None\n"
            "import harness.schema as s\nprint(len(s.EPOCH_METRICS), s.COST_PHASES, s.SWEEP_STAGES)\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "('forward', 'credit', 'feedback') ('search', 'final')" in proc.stdout


def test_trial_fields_are_defined_once():
    from harness.schema import SHARED_TRIAL_FIELDS, TRIAL_FIELDS, TrialConfig
    from harness.spec import SweepSpec
    from harness.train import TrialConfig as TrainerConfig

    assert TrainerConfig is TrialConfig
    assert set(TRIAL_FIELDS) | {"threads"} == set(TrialConfig.model_fields)
    assert set(SHARED_TRIAL_FIELDS) <= set(SweepSpec.model_fields)
    for name in SHARED_TRIAL_FIELDS:  # a sweep's trial gets the spec's default when the spec says nothing
        assert SweepSpec.model_fields[name].default == TrialConfig.model_fields[name].default, name


def test_cost_phases_and_epoch_columns_have_one_owner(digits):
    from harness import cost, report_figures, schema
    from harness.train import Trainer
    from tests.conftest import tiny_trial

    assert cost.PHASES is schema.COST_PHASES
    trainer = Trainer(tiny_trial("bp", train={"epochs": 1}), data=digits)
    trainer.run(None, log=open(os.devnull, "w"))
    row = trainer.history[0]
    assert [k for k in row if k in schema.EPOCH_METRICS] == list(schema.EPOCH_METRICS)
    assert set(schema.EPOCH_METRICS) <= report_figures.BASE_EPOCH_COLUMNS


def test_a_summary_is_rebuilt_from_the_checkpoint_without_data(digits, tmp_path, monkeypatch):
    import harness.datasets
    import harness.train
    from harness.train import Trainer, summary_from_checkpoint, trial_history
    from tests.conftest import tiny_trial

    quiet = open(os.devnull, "w")
    summary = Trainer(tiny_trial("rfl", train={"epochs": 2}), data=digits).run(tmp_path, log=quiet)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == summary["status"]

    def refuse(*a, **k):
        raise AssertionError("rebuilding a summary loaded data or built a network")

    monkeypatch.setattr(harness.datasets, "load_dataset", refuse)
    monkeypatch.setattr(harness.train, "load_dataset", refuse)
    monkeypatch.setattr(harness.train, "build_network", refuse)
    rebuilt = summary_from_checkpoint(tmp_path / "checkpoint.pt", status="stopped", stop_reason="tune scheduler")
    assert {k: v for k, v in rebuilt.items() if k != "env"} == {k: v for k, v in summary.items() if k != "env"}
    assert rebuilt["report_labels"]["pinv_residual"]["unit"] == "dimensionless"
    assert len(trial_history(tmp_path / "checkpoint.pt")) == summary["epochs"]


def test_a_running_trial_is_summarised_with_the_status_it_is_given(digits, tmp_path):
    from harness.train import Trainer, summary_from_checkpoint

    from tests.conftest import tiny_trial

    seen = []

    def stop_after_first(row, tr):
        seen.append(tr.status)
        if len(seen) == 1:
            raise KeyboardInterrupt  # as Tune ending the trial after its first report

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_trial("bp", train={"epochs": 3}), data=digits).run(tmp_path, on_epoch=stop_after_first,
                                                                         log=open(os.devnull, "w"))
    assert seen == ["running"] and not (tmp_path / "summary.json").exists()
    s = summary_from_checkpoint(tmp_path / "checkpoint.pt", status="stopped", stop_reason="tune scheduler")
    assert (s["status"], s["stop_reason"], s["epochs"]) == ("stopped", "tune scheduler", 1)


def test_the_trainer_writes_summary_json_before_the_last_epoch_is_reported(digits, tmp_path):
    from harness.train import Trainer
    from tests.conftest import tiny_trial

    seen = []
    Trainer(tiny_trial("bp", train={"epochs": 2}), data=digits).run(
        tmp_path, on_epoch=lambda row, tr: seen.append((tr.status, (tmp_path / "summary.json").exists())),
        log=open(os.devnull, "w"))
    assert seen == [("running", False), ("ok", True)]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_spec_plans(path):
    """Every spec in sweeps/ validates and plans (on digits, which is always there offline): its
    algorithms are registered, its network suits them, its knobs exist."""
    from harness.planning import SweepOptions, resolve

    spec, plan = resolve(SweepOptions(spec=str(path), dataset="digits"))
    assert plan["algorithms"] and all(len(plan["configs"][a]) == spec.budgets.search_trials for a in plan["algorithms"])


def test_trials_one_at_a_time_get_every_cpu_and_two_at_once_half(monkeypatch):
    """Threads per trial = CPUs / trials at once (local Ray, unless the spec sets cpus_per_trial), recorded in
    each trial's config."""
    from harness.planning import SweepOptions, resolve, stage_trials, trial_config

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def threads(**opts):
        spec, plan = resolve(SweepOptions(algo="bp", trials=1, seeds=1, epochs=1, **opts))
        return spec.resources.cpus_per_trial, trial_config(stage_trials(spec, plan, "search", "/tmp/x")[0])["threads"]

    assert threads(num_cpus=2, max_concurrent=1) == (2.0, 2)
    assert threads(num_cpus=2, max_concurrent=2) == (1.0, 1)
    assert threads(num_cpus=8, max_concurrent=3) == (2.0, 2)
    assert threads(num_cpus=2) == (1.0, 1)  # no limit on trials at once: the spec's one CPU each
    assert threads(num_cpus=2, max_concurrent=1, address="127.0.0.1:6379") == (1.0, 1)  # a cluster: as the spec says


def test_trials_csv_records_each_trials_threads():
    from harness.schema import trial_row

    row = trial_row({"config": {"threads": 2, "train": {}, "params": {}}}, trial_id="t", phase="search", config_id="c")
    assert row["threads"] == 2

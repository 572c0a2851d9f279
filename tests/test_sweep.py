"""Sweeps: real Ray Tune runs on digits (tiny network), resume, determinism, spec validation."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness import cli
from harness.hparams import TrainConfig
from harness.registry import get_algorithm
from harness.schema import EPOCH_KEYS, SUMMARY_METRICS, TRIAL_KEYS
from harness.spec import parse_spec
from harness.sweep import SweepOptions, new_sweep, resume_sweep, train_trial

ALGOS = ["bp", "fa"]
TIMING = {"seconds_per_update", "seconds_per_update_p10", "seconds_per_update_p90", "seconds_per_update_median",
          "wall_time_s", "peak_memory_bytes"}


def write_spec(tmp_path: Path, **overrides) -> Path:
    spec = {
        "name": "tiny", "dataset": "digits", "network": "mlp-1x16-tanh", "algorithms": ALGOS,
        "optimizer": {"optimizer": "adam", "batch_size": 64}, "seeds": 2, "probe_size": 64,
        "budgets": {"search_trials": 2, "search_epochs": 2, "final_epochs": 2},
        "stopping": {"patience": 5}, "resources": {"max_failures": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def expected_trial_columns(algos) -> set[str]:
    hps = {f"hp.{k}" for k in TrainConfig().active_dump()}  # adam: momentum does not act and is absent
    for a in algos:
        hps |= {f"hp.{k}" for k in get_algorithm(a).Params().active_dump()}
    flops = {"flops_per_update"} | {f"flops_per_update_{p}" for p in ("forward", "credit", "feedback")}
    plaus = {f"plausibility.{k}" for k in ("weight_transport", "transport", "local", "phases", "feedback_learning",
                                             "notes")}
    diagnostics = {"angle_b_w_l2"} if "fa" in algos else set()  # fa's ∠(B_2, W_2)
    return (set(TRIAL_KEYS) | set(SUMMARY_METRICS) | flops | hps | plaus | {"angle_l1", "angle_l2", "error", "threads"}
            | diagnostics)


def metric_frame(out: Path) -> pd.DataFrame:
    t = pd.read_csv(out / "trials.csv")
    return t[[c for c in t.columns if c not in TIMING]]


@pytest.fixture(scope="module")
def two_sweeps(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweeps")
    spec = write_spec(tmp)
    outs = []
    for _ in range(2):
        out, code = new_sweep(SweepOptions(spec=str(spec), results_root=tmp / "results"))
        assert code == 0
        outs.append(out)
    return outs


def test_sweep_tables_have_exact_rows_and_columns(two_sweeps):
    out = two_sweeps[0]
    trials = pd.read_csv(out / "trials.csv")
    epochs = pd.read_csv(out / "epochs.csv")
    search = {f"search-{a}-c{k:02d}-s0" for a in ALGOS for k in range(2)}
    chosen = {a: trials[(trials.phase == "final") & (trials.algo == a)].config_id.unique() for a in ALGOS}
    assert all(len(c) == 1 for c in chosen.values())
    final = {f"final-{chosen[a][0]}-s{s}" for a in ALGOS for s in range(2)}
    assert len(trials) == 8 and set(trials.trial_id[:4]) == search and set(trials.trial_id[4:]) == final
    assert set(trials.columns) == expected_trial_columns(ALGOS)
    assert (trials.status == "ok").all() and (trials.epochs == 2).all()
    assert (trials.stop_reason == "max_epochs").all()
    # one epochs.csv row per trial-epoch
    assert len(epochs) == 16
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[1, 2]] * 8
    base = {"epoch", "updates", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
            "flops_forward", "flops_credit", "flops_feedback", "flops_total", "wall_time_s", "seconds_per_update",
            "peak_memory_bytes", "angle_l1", "angle_l2", "angle_b_w_l2"}  # the last: fa's diagnostic ∠(B_2, W_2)
    assert set(epochs.columns) == set(EPOCH_KEYS) | base
    assert {"spec.yaml", "env.json", "plan.json", "trials.csv", "epochs.csv", "raw"} <= {p.name for p in out.iterdir()}
    resolved = parse_spec(yaml.safe_load((out / "spec.yaml").read_text()))
    assert resolved.algorithms == ALGOS and resolved.seeds == [0, 1]


def test_sweeps_record_the_dataset_fingerprint_and_refuse_to_combine_different_data(two_sweeps, digits, tmp_path,
                                                                                     capsys):
    import json
    import shutil

    out = two_sweeps[0]
    env = json.loads((out / "env.json").read_text())
    assert env["dataset"]["fingerprints"] == {"digits": digits.fingerprint}
    assert set(pd.read_csv(out / "trials.csv", dtype={"dataset_fingerprint": str}).dataset_fingerprint) == {
        digits.fingerprint}
    other = tmp_path / "other-seeds"  # the same sweep with other seeds: combinable with the first
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("raw"))
    for table in ("trials.csv", "epochs.csv"):
        frame = pd.read_csv(other / table, dtype={"dataset_fingerprint": str})
        frame["seed"] += 100
        frame.to_csv(other / table, index=False)
    (other / "plan.json").unlink()  # its plan named the original seeds
    assert cli.main(["report", str(out), str(other), "--out", str(tmp_path / "ok"), "--no-figures"]) == 0
    env["dataset"]["fingerprints"] = {"digits": "0" * 16}  # ... as if it had run on other data
    (other / "env.json").write_text(json.dumps(env))
    capsys.readouterr()
    assert cli.main(["report", str(out), str(other), "--out", str(tmp_path / "bad"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fingerprint" in err and "\n" not in err and not (tmp_path / "bad" / "report.md").exists()


def test_final_seeds_share_the_best_search_configuration(two_sweeps):
    trials = pd.read_csv(two_sweeps[0] / "trials.csv")
    hp = [c for c in trials.columns if c.startswith("hp.") and c not in ("hp.epochs", "hp.patience")]
    for algo in ALGOS:
        search = trials[(trials.phase == "search") & (trials.algo == algo)]
        final = trials[(trials.phase == "final") & (trials.algo == algo)]
        assert sorted(final.seed) == [0, 1]
        best = search.loc[search.best_val_acc.idxmax()]
        assert (final.config_id == best.config_id).all()
        for c in hp:
            values = final[c].tolist()
            assert values == [best[c]] * 2 or all(pd.isna(v) for v in values + [best[c]]), c
        assert search["hp.lr"].nunique() == 2  # two distinct sampled configurations


def test_two_sweeps_give_identical_metrics(two_sweeps):
    a, b = (metric_frame(o) for o in two_sweeps)
    pd.testing.assert_frame_equal(a, b)


class InterruptAfter:
    """A Tune callback that sends SIGINT (as Ctrl+C would) once ``n`` trials have completed."""

    def __new__(cls, n: int, flag: Path):
        from ray.tune import Callback

        class _Interrupt(Callback):
            def __init__(self):
                self.done = 0

            def on_trial_complete(self, iteration, trials, trial, **info):
                self.done += 1
                if self.done >= n and not flag.exists():  # only in the first run, not after restore
                    flag.write_text("interrupted")
                    os.kill(os.getpid(), signal.SIGINT)

        return _Interrupt()


def test_resume_runs_every_planned_trial_exactly_once(ray_session, tmp_path):
    spec = write_spec(tmp_path, budgets={"search_trials": 3, "search_epochs": 3},
                      resources={"max_concurrent": 1, "max_failures": 0})
    cb = InterruptAfter(2, tmp_path / "flag")
    out, code = new_sweep(SweepOptions(spec=str(spec), results_root=tmp_path / "results", search_only=True),
                          callbacks=[cb])
    assert code == 130
    first = pd.read_csv(out / "trials.csv")
    assert 2 <= len(first) < 6
    out2, code = resume_sweep(out)
    assert code == 0 and out2 == out
    trials = pd.read_csv(out / "trials.csv")
    planned = {f"search-{a}-c{k:02d}-s0" for a in ALGOS for k in range(3)}
    assert sorted(trials.trial_id) == sorted(planned)
    epochs = pd.read_csv(out / "epochs.csv")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[1, 2, 3]] * 6
    # trials finished before the interruption were not run again
    for tid in first.trial_id:
        assert "resuming" not in (out / "raw" / "trials" / tid / "train.log").read_text()
    kept = trials.set_index("trial_id").loc[first.trial_id, ["best_val_acc", "test_acc", "updates"]]
    pd.testing.assert_frame_equal(kept, first.set_index("trial_id")[["best_val_acc", "test_acc", "updates"]])


def test_trainable_resumes_from_a_checkpoint_without_ray(tmp_path):
    t = {"trial_id": "final-fa-x-s0", "phase": "final", "config_id": "fa-x", "algo": "fa", "seed": 0,
         "train": {"epochs": 3, "batch_size": 64, "patience": 5}, "params": {}, "dataset": "digits",
         "network": "mlp-1x16-tanh", "data_dir": None, "split_seed": 0, "val_size": None, "device": "cpu",
         "probe_size": 64, "target_acc": None, "trials_root": str(tmp_path / "a"), "cpus": 1}
    reports = []
    whole = train_trial(t, checkpoint_dir=None, report=lambda m, d: reports.append(m))
    assert [r["epoch"] for r in reports] == [1, 2, 3] and reports[-1]["trial_status"] == "ok"

    saved = tmp_path / "ck"

    class Stop(Exception):
        pass

    def stop_after_two(metrics, trial_dir):
        if metrics["epoch"] == 2:
            import shutil

            shutil.copytree(trial_dir, saved)
            raise Stop

    t2 = {**t, "trials_root": str(tmp_path / "b")}
    with pytest.raises(Stop):
        train_trial(t2, checkpoint_dir=None, report=stop_after_two)
    later = []
    resumed = train_trial(t2, checkpoint_dir=saved, report=lambda m, d: later.append(m))
    assert [r["epoch"] for r in later] == [3]
    assert resumed["test_acc"] == whole["test_acc"] and resumed["updates"] == whole["updates"]
    assert resumed["best_val_acc"] == whole["best_val_acc"]


BAD_SPECS = [
    ({"budget": {"search_trials": 1}}, "unknown key 'budget' at budget"),
    ({"budgets": {"serch_trials": 1}}, "unknown key 'serch_trials' at budgets.serch_trials"),
    ({"seeds": "three"}, "seeds"),
    ({"budgets": {"search_trials": "many"}}, "budgets.search_trials"),
    ({"algorithms": ["bp", "nope"]}, "unknown algorithm at"),
    ({"search_spaces": {"fa": {"beta": {"kind": "uniform", "low": 0.1, "high": 1.0}}}},
     "unknown hyperparameter at search_spaces.fa"),
    ({"params": {"bp": {"feedback_scale": 1.0}}}, "unknown hyperparameter at params.bp"),
    ({"search_spaces": {"nope": {}}}, "unknown algorithm at search_spaces.nope"),
    ({"search_spaces": {"fa": {"feedback_scale": {"kind": "loguniform", "low": 1.0, "high": 0.5}}}},
     "search_spaces.fa.feedback_scale"),
    ({"search_spaces": {"all": {"lr": {"kind": "loguniform", "low": 1e-4, "high": 1.0e7}}}}, "lr"),
    ({"optimizer": {"epochs": 3}}, "optimizer.epochs: 'epochs' is set by budgets"),
    ({"network": "mlp-2x16-sigmoid"}, "unknown activation 'sigmoid'"),
]


@pytest.mark.parametrize("override,message", BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_specs_are_rejected_before_anything_is_written(tmp_path, capsys, override, message):
    spec = write_spec(tmp_path, **override)
    results = tmp_path / "results"
    code = cli.main(["sweep", "--spec", str(spec), "--results", str(results)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not results.exists()


def test_bad_command_line_is_rejected(tmp_path, capsys):
    spec = write_spec(tmp_path)
    for argv, message in [(["--algo", "bp,nope"], "unknown algorithm at --algo 'nope'"),
                          (["--dataset", "nope"], "unknown dataset 'nope'"),
                          (["--set", "bogus=1"], "unknown hyperparameter"),
                          (["--trials", "0", "--search-only"], "--search-only needs")]:
        code = cli.main(["sweep", "--spec", str(spec), "--results", str(tmp_path / "r"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (argv, err)
    assert not (tmp_path / "r").exists()


def test_sampler_is_seeded_per_algorithm_and_within_bounds():
    from harness.spec import Dist, sample_configs

    space = {"lr": Dist(kind="loguniform", low=1e-4, high=1e-2), "k": Dist(kind="randint", low=1, high=3),
             "c": Dist(kind="choice", values=["a", "b"])}
    a = sample_configs(space, 20, seed=0, algo="x")
    assert a == sample_configs(space, 20, seed=0, algo="x")
    assert a != sample_configs(space, 20, seed=1, algo="x") and a != sample_configs(space, 20, seed=0, algo="y")
    assert all(1e-4 <= c["lr"] <= 1e-2 and c["k"] in (1, 2, 3) and c["c"] in ("a", "b") for c in a)
    assert {c["k"] for c in a} == {1, 2, 3}  # randint includes high


def test_best_configuration_ignores_diverged_trials_and_breaks_ties_by_order():
    from harness.sweep import select_best

    nan = float("nan")
    rows = [{"algo": "a", "config_id": "a-c00", "best_val_acc": 0.5},
            {"algo": "a", "config_id": "a-c01", "best_val_acc": nan},
            {"algo": "a", "config_id": "a-c02", "best_val_acc": 0.7},
            {"algo": "a", "config_id": "a-c03", "best_val_acc": 0.7},
            {"algo": "b", "config_id": "b-c00", "best_val_acc": nan}]
    assert select_best(rows, ["a", "b"]) == {"a": "a-c02", "b": "b-c00"}


def test_convergence_stopper_stops_when_the_trainer_does(digits):
    from harness.sweep import _make_stopper, epoch_metrics
    from harness.train import Trainer
    from tests.conftest import tiny_trial

    stop = _make_stopper()
    for train in ({"epochs": 200, "patience": 2, "min_delta": 0.01, "lr": 0.05}, {"epochs": 3},
                  {"lr": 1e4, "epochs": 5}):
        decisions = []
        t = Trainer(tiny_trial("bp", train=train), data=digits)
        t.run(None, on_epoch=lambda row, tr: decisions.append(stop("t", epoch_metrics(row, tr))),
              log=open("/dev/null", "w"))
        assert decisions == [False] * (t.epoch - 1) + [True], (train, t.stop_reason)
    assert not stop("u", {"epoch": 1, "val_acc": 0.1})  # a result without the trainer's status


def test_a_sweep_whose_every_trial_failed_is_an_error():
    from harness.sweep import every_trial_failed

    failed = {"status": "failed", "error": "DataError: no such file: train-images-idx3-ubyte\nTraceback ..."}
    assert every_trial_failed([failed, {"status": "failed"}]) == (
        "every trial failed (2; the first: DataError: no such file: train-images-idx3-ubyte); see trials.csv")
    assert every_trial_failed([failed, {"status": "diverged"}]) is None  # a diverged trial measured something
    assert every_trial_failed([failed, {"status": "ok"}]) is None and every_trial_failed([]) is None

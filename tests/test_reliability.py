"""Issue 19: Ctrl+C, resume and damaged files never lose or falsify results.

Real sweep subprocesses get real SIGINTs (tiny digits specs, bounded in time); damaged files are
written by the tests; a second ``train`` process runs against a locked directory.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness import cli

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
TRAIN = ["train", "--algo", "bp", "--dataset", "digits", "--network", "mlp-1x16-tanh", "--seed", "0",
         "--set", "batch_size=64", "--device", "cpu"]


def tiny_spec(tmp_path: Path, **overrides) -> Path:
    spec = {
        "name": "tiny", "dataset": "digits", "network": "mlp-1x16-tanh", "algorithms": ["bp", "fa"],
        "optimizer": {"optimizer": "adam", "batch_size": 64}, "seeds": 2, "probe_size": 64,
        "budgets": {"search_trials": 2, "search_epochs": 2, "final_epochs": 2},
        "stopping": {"patience": 5}, "resources": {"max_failures": 0},
    }
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """``creditbench ARGS`` in its own process group, with SIGINT at its default (as in a terminal)."""
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(pattern: str, proc: subprocess.Popen, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = glob.glob(pattern)
        if found:
            return found
        time.sleep(0.02)
    return []


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"no exit {timeout} s after SIGINT; stderr: {err[-2000:]}")


# ---------------------------------------------------------------------------- 1. Ctrl+C
def test_collect_accepts_a_trial_that_never_reported(tmp_path):
    """Ctrl+C before a trial's first report leaves a Tune result whose ``config`` is None."""
    from ray.tune import Result

    from harness.sweep import collect

    planned = [{"trial_id": "search-bp-c00-s0", "algo": "bp"}]
    never = Result(metrics={}, checkpoint=None, error=None, path=str(tmp_path / "search-bp-c00-s0"))
    assert never.config is None
    rows, epochs, unfinished = collect([never], planned)
    assert rows == [] and epochs == [] and unfinished == {"search-bp-c00-s0"}


@pytest.mark.slow
def test_ctrl_c_in_a_real_sweep_stops_cleanly(tmp_path):
    """SIGINT to the sweep's process group while the first trial trains: exit 130, the resume hint,
    the tables of what finished, no traceback."""
    spec = tiny_spec(tmp_path, algorithms=["bp"], network="mlp-2x128-tanh", optimizer={"batch_size": 1},
                     budgets={"search_trials": 2, "search_epochs": 3},
                     resources={"max_concurrent": 1, "num_cpus": 1})
    proc = start_cli(["sweep", "--spec", str(spec), "--results", "results"], tmp_path)
    assert wait_for(str(tmp_path / "results" / "*" / "raw" / "trials" / "*" / "train.log"), proc, 240), \
        proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    out_dir = Path(out.strip().splitlines()[-1])
    assert f"continue with: creditbench sweep --resume {out_dir}" in err
    assert "interrupted: 0 of 2 search trials finished" in err
    assert (out_dir / "trials.csv").is_file() and (out_dir / "env.json").is_file()


# ---------------------------------------------------------------------------- 2. resume never loses rows
def snapshot(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.mark.slow
def test_resume_with_a_damaged_checkpoint_keeps_every_final_row(ray_session, tmp_path):
    """Interrupted in the final phase, one finished final trial's Tune checkpoint damaged: the resume
    keeps the rows on disk (tables are only replaced by supersets), finishes the others, and a second
    resume of the finished sweep says so and changes nothing."""
    from harness.sweep import SweepOptions, new_sweep, resume_sweep
    from tests.test_sweep import InterruptAfter

    spec = tiny_spec(tmp_path, resources={"max_concurrent": 1})
    cb = InterruptAfter(6, tmp_path / "flag")  # 4 search trials, then 2 of the 4 final ones
    out, code = new_sweep(SweepOptions(spec=str(spec), results_root=tmp_path / "results"), callbacks=[cb])
    assert code == 130
    first = pd.read_csv(out / "trials.csv")
    done_final = first[first.phase == "final"].trial_id.tolist()
    assert len(done_final) >= 1 and len(first) < 8
    victim = done_final[0]
    for ck in (out / "raw" / "tune" / "final").glob(f"*{victim}*/checkpoint_*/checkpoint.pt"):
        ck.write_bytes(b"garbage" * 10)
    log = tmp_path / "log"
    with open(log, "w") as f:
        out2, code = resume_sweep(out, num_cpus=2, log=f)
    assert code == 0, log.read_text()
    import json

    assert json.loads((out / "env.json").read_text())["resumed_with"] == {"num_cpus": 2}
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 8 and trials.trial_id.is_unique
    kept = trials.set_index("trial_id").loc[first.trial_id]
    pd.testing.assert_frame_equal(kept.reset_index()[first.columns], first, check_dtype=False)
    assert (trials.status == "ok").all()
    epochs = pd.read_csv(out / "epochs.csv")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[1, 2]] * 8
    assert f"{victim}: damaged checkpoint" in log.read_text()

    before = snapshot(out)
    with open(log, "w") as f:
        _, code = resume_sweep(out, log=f)
    assert code == 0 and "the sweep is finished (all 8 planned trials" in log.read_text()
    assert snapshot(out) == before
    # the report's cross-checks (plan.json, epochs per trial, column types) accept a real finished sweep
    assert cli.main(["report", str(out), "--no-figures"]) == 0


def test_tables_are_only_replaced_by_supersets(tmp_path):
    from harness.sweep import write_tables

    rows = [{"trial_id": "a", "phase": "final", "status": "ok", "test_acc": 0.5}]
    write_tables(tmp_path, rows, [{"trial_id": "a", "epoch": 1, "val_acc": 0.4}])
    before = (tmp_path / "trials.csv").read_text()
    # a later collection that lost "a" (or saw it fail) and found "b"
    write_tables(tmp_path, [{"trial_id": "a", "phase": "final", "status": "failed", "test_acc": None},
                            {"trial_id": "b", "phase": "final", "status": "ok", "test_acc": 0.7}],
                 [{"trial_id": "b", "epoch": 1, "val_acc": 0.6}])
    after = (tmp_path / "trials.csv").read_text()
    assert after.startswith(before) and after.count("\n") == 3
    t = pd.read_csv(tmp_path / "trials.csv")
    assert t.set_index("trial_id").status.to_dict() == {"a": "ok", "b": "ok"}
    assert pd.read_csv(tmp_path / "epochs.csv").trial_id.tolist() == ["a", "b"]


# ---------------------------------------------------------------------------- 3. one run per directory
def test_a_second_train_into_a_locked_run_directory_is_refused(tmp_path):
    from harness.store import locked

    out = tmp_path / "run"
    with locked(out):  # as a running `creditbench train --out run` holds it
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *TRAIN, "--epochs", "1", "--out", str(out)],
                              capture_output=True, text=True, timeout=300, cwd=REPO, env=ENV)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.startswith("error: ") and "\n" not in err and "in use by another creditbench process" in err, err
    assert f"(pid {os.getpid()})" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


def test_a_stale_lock_of_a_dead_process_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("999999\n")  # left by a process that died; nobody holds the flock
    assert cli.main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "summary.json").is_file()
    capsys.readouterr()


# ---------------------------------------------------------------------------- 6. interrupted is not finished
@pytest.fixture(scope="module")
def one_epoch_checkpoint(tmp_path_factory):
    """A trial planned for 3 epochs, its Tune checkpoint taken after epoch 1 (Trainer still running)."""
    import shutil

    from harness.sweep import train_trial

    tmp = tmp_path_factory.mktemp("interrupted")
    t = {"trial_id": "search-bp-c00-s0", "phase": "search", "config_id": "bp-c00", "algo": "bp", "seed": 0,
         "train": {"epochs": 3, "batch_size": 64, "patience": 5}, "params": {}, "dataset": "digits",
         "network": "mlp-1x16-tanh", "data_dir": None, "split_seed": 0, "val_size": None, "device": "cpu",
         "probe_size": 64, "target_acc": None, "trials_root": str(tmp / "trials"), "cpus": 1}

    class Stop(Exception):
        pass

    def report(metrics, trial_dir):
        shutil.copytree(trial_dir, tmp / "ck")
        raise Stop

    with pytest.raises(Stop):
        train_trial(t, checkpoint_dir=None, report=report)
    return t, tmp / "ck"


@pytest.mark.parametrize("interrupted,scheduler,finished", [(True, False, False), (False, False, False),
                                                            (True, True, False), (False, True, True)])
def test_a_trial_ended_by_an_interruption_is_not_finished(one_epoch_checkpoint, interrupted, scheduler, finished):
    from ray.tune import Checkpoint, Result

    from harness.sweep import collect

    t, ck = one_epoch_checkpoint
    result = Result(metrics={"done": True, "trial_status": "running", "epoch": 1, "config": {"trial": t}},
                    checkpoint=Checkpoint.from_directory(str(ck)), error=None, path=str(ck.parent / t["trial_id"]))
    rows, epochs, unfinished = collect([result], [t], interrupted=interrupted, scheduler=scheduler)
    if finished:  # ASHA stopped it in an uninterrupted phase
        assert [r["status"] for r in rows] == ["stopped"] and unfinished == set()
    else:
        assert rows == [] and epochs == [] and unfinished == {t["trial_id"]}


# ---------------------------------------------------------------------------- 7. report options
def minimal_results(path: Path) -> Path:
    path.mkdir(parents=True)
    pd.DataFrame([{"trial_id": f"final-{a}-given-s{s}", "phase": "final", "config_id": f"{a}-given", "algo": a,
                   "dataset": "digits", "network": "mlp-1x16-tanh", "seed": s, "status": "ok", "epochs": 1,
                   "test_acc": 0.9, "best_val_acc": 0.9} for a in ("bp", "fa") for s in (0, 1)]
                 ).to_csv(path / "trials.csv", index=False)
    (path / "report.md").write_text("a good report\n")
    return path


@pytest.mark.parametrize("argv,needle", [
    (["--baseline", "bpp"], "unknown baseline algorithm (--baseline) 'bpp' (did you mean 'bp'?); valid: bp, fa"),
    (["--reference", "bpp"], "unknown baseline algorithm (--baseline) 'bpp' (did you mean 'bp'?); valid: bp, fa"),
    (["--target", "150%"], "--target '150%' is not valid; use a percentage in (0, 100]%"),
    (["--target", "0%"], "--target '0%' is not valid"),
])
def test_bad_report_options_are_refused_before_anything_is_written(tmp_path, capsys, argv, needle):
    run = minimal_results(tmp_path / "run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert cli.main(["report", str(run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (run / "report.md").read_text() == "a good report\n"


# ---------------------------------------------------------------------------- 8. unwritable outputs, bad device
def unwritable(tmp_path: Path, kind: str) -> Path:
    if kind == "file-in-the-way":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "out"
    target = Path("/sys/creditbench-test/out")  # sysfs refuses new files, also to root
    try:
        target.parent.mkdir()
    except OSError:
        return target
    target.parent.rmdir()
    pytest.skip("/sys is writable here")


@pytest.mark.parametrize("kind", ["read-only", "file-in-the-way"])
@pytest.mark.parametrize("command", ["train", "sweep", "report"])
def test_unwritable_output_locations_are_one_line_errors(tmp_path, capsys, monkeypatch, kind, command):
    import harness.datasets

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the output location was checked")

    monkeypatch.setattr(harness.datasets, "load_dataset", no_data)
    monkeypatch.setattr(harness.datasets, "check_available", no_data)
    monkeypatch.setattr("harness.train.load_dataset", no_data)
    bad = unwritable(tmp_path, kind)
    argv = {"train": [*TRAIN, "--epochs", "1", "--out", str(bad)],
            "sweep": ["sweep", "--spec", str(tiny_spec(tmp_path)), "--results", str(bad)],
            "report": ["report", str(minimal_results(tmp_path / "run")), "--out", str(bad)]}[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "cannot write there" in err and str(bad) in err, err


def test_unknown_device_is_a_one_line_error(tmp_path, capsys):
    assert cli.main([*TRAIN[:-2], "--device", "foo", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    # the command line refuses it through its choices; a spec's device through the trial config
    assert err.startswith("error: ") and "\n" not in err and "'foo'" in err and "cuda:N" in err, err
    assert not (tmp_path / "run").exists()
    spec = tiny_spec(tmp_path, device="gpu0")
    assert cli.main(["sweep", "--spec", str(spec), "--results", str(tmp_path / "r")]) == 2
    assert "unknown device 'gpu0'" in capsys.readouterr().err and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- 5. damaged checkpoints in the collector
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_tune_checkpoint_fails_only_its_trial(one_epoch_checkpoint, tmp_path, damage):
    import shutil

    from ray.tune import Checkpoint, Result

    from harness.sweep import collect, train_trial

    t, ck = one_epoch_checkpoint
    good_t = {**t, "trial_id": "search-bp-c01-s0", "config_id": "bp-c01", "trials_root": str(tmp_path / "trials")}
    train_trial(good_t, checkpoint_dir=None, report=lambda m, d: None)  # finished: summary.json present
    bad = Path(shutil.copytree(tmp_path / "trials" / good_t["trial_id"], tmp_path / "bad"))
    data = (bad / "checkpoint.pt").read_bytes()
    (bad / "checkpoint.pt").write_bytes({"garbage": b"\x80junk" * 50, "truncated": data[: len(data) // 2],
                                         "empty": b""}[damage])
    results = [Result(metrics={"config": {"trial": x}}, checkpoint=Checkpoint.from_directory(str(d)), error=None,
                      path=str(tmp_path / x["trial_id"])) for x, d in ((t, bad), (good_t, tmp_path / "trials" / good_t["trial_id"]))]
    rows, epochs, unfinished = collect(results, [t, good_t], log=open(os.devnull, "w"))
    by_id = {r["trial_id"]: r for r in rows}
    assert by_id[good_t["trial_id"]]["status"] == "ok" and len(epochs) == 3
    assert by_id[t["trial_id"]]["status"] == "failed" and "damaged checkpoint" in by_id[t["trial_id"]]["error"]
    assert "checkpoint.pt: refused to load" in by_id[t["trial_id"]]["error"] and unfinished == set()


# ---------------------------------------------------------------------------- 4. damaged tables
def planned_results(path: Path) -> Path:
    """A consistent final-only sweep directory: plan.json, spec.yaml, trials.csv, epochs.csv."""
    import json

    minimal_results(path)
    (path / "plan.json").write_text(json.dumps({
        "mode": "final", "algorithms": ["bp", "fa"], "selected": {}, "address": None, "spaces": {},
        "configs": {a: [{"config_id": f"{a}-given", "train": {}, "params": {}}] for a in ("bp", "fa")}}))
    (path / "spec.yaml").write_text(yaml.safe_dump({"name": "x", "seeds": [0, 1]}))
    trials = pd.read_csv(path / "trials.csv").assign(epochs=2)
    trials.to_csv(path / "trials.csv", index=False)
    pd.DataFrame([{"trial_id": t, "epoch": e, "updates": 10 * e, "val_acc": 0.8 + e / 100, "test_acc": 0.85}
                  for t in trials.trial_id for e in (1, 2)]).to_csv(path / "epochs.csv", index=False)
    return path


def _cut_last_row(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind(",") - 2])  # mid-row, no end of line


def _drop_last_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _bad_cell(path: Path, col: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[1, col] = "0.9x"
    frame.to_csv(path, index=False)


DAMAGE = {
    "trials-cut-mid-row": (lambda d: _cut_last_row(d / "trials.csv"), "trials.csv: row 4 (line 5)"),
    "trials-lost-last-row": (lambda d: _drop_last_line(d / "trials.csv"),
                             "trials.csv: 1 of 4 planned trials are missing (first: final-fa-given-s1)"),
    "epochs-lost-last-row": (lambda d: _drop_last_line(d / "epochs.csv"),
                             "epochs.csv: trial final-fa-given-s1 (trials.csv row 4) has 1 epoch rows, "
                             "trials.csv says 2 epochs"),
    "trials-non-numeric": (lambda d: _bad_cell(d / "trials.csv", "test_acc"),
                           "trials.csv: row 2 (line 3), column test_acc: '0.9x' is not a number"),
    "epochs-non-numeric": (lambda d: _bad_cell(d / "epochs.csv", "val_acc"),
                           "epochs.csv: row 2 (line 3), column val_acc: '0.9x' is not a number"),
}


def test_consistent_planned_results_are_reported(tmp_path, capsys):
    run = planned_results(tmp_path / "run")
    assert cli.main(["report", str(run), "--no-figures"]) == 0
    assert "incomplete or damaged" not in (run / "report.md").read_text()
    capsys.readouterr()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_tables_are_refused_or_reported_as_damaged(tmp_path, capsys, damage):
    run = planned_results(tmp_path / "run")
    hurt, needle = DAMAGE[damage]
    hurt(run)
    assert cli.main(["report", str(run), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err and "--allow-incomplete" in err, err
    assert (run / "report.md").read_text() == "a good report\n" and not (run / "tables").exists()

    assert cli.main(["report", str(run), "--no-figures", "--allow-incomplete"]) == 0
    text = (run / "report.md").read_text()
    assert "Warning: these results are incomplete or damaged" in text.split("## Summary")[0]
    assert needle in text and f"warning: incomplete or damaged results: {run}" in capsys.readouterr().err
    if damage == "trials-non-numeric":  # the damaged cell is missing, not a number the report made up
        summary = pd.read_csv(run / "tables" / "summary.csv").set_index("algo")
        assert summary.loc["bp", "trials"] == 2 and summary.loc["bp", "n"] == 1


# ---------------------------------------------------------------------------- 9. --resume and other options
@pytest.mark.parametrize("argv,flags", [(["--epochs", "50", "--algo", "rfl"], "--algo, --epochs"),
                                        (["--set", "lr=0.1"], "--set"), (["--results", "elsewhere"], "--results"),
                                        (["--search-only"], "--search-only")])
def test_resume_refuses_options_it_cannot_honour(tmp_path, capsys, argv, flags):
    run = planned_results(tmp_path / "run")
    before = snapshot(run)
    assert cli.main(["sweep", "--resume", str(run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and f"; {flags} cannot change it" in err, err
    assert "only --address and --num-cpus apply" in err and snapshot(run) == before


# ---------------------------------------------------------------------------- 10. threads are part of the trial
def test_threads_are_set_recorded_and_checked_on_resume(digits, tmp_path):
    import json

    import torch

    from harness.errors import CreditbenchError
    from harness.train import Trainer
    from tests.conftest import tiny_trial

    outside = torch.get_num_threads()
    seen = []
    t = Trainer(tiny_trial("bp", train={"epochs": 1}), data=digits)
    t.run(tmp_path, on_epoch=lambda row, tr: seen.append(torch.get_num_threads()), log=open(os.devnull, "w"))
    assert seen == [1] and torch.get_num_threads() == outside  # default 1 while training, restored after
    assert json.loads((tmp_path / "config.json").read_text())["threads"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["threads"] == 1
    with pytest.raises(CreditbenchError, match=r"different trial \(differs in: threads\)"):
        Trainer(tiny_trial("bp", train={"epochs": 2}, threads=2), data=digits).run(tmp_path, log=open(os.devnull, "w"))


def test_sweep_trials_use_one_thread_per_cpu():
    from harness.sweep import trial_config

    t = {k: None for k in ("algo", "dataset", "network", "seed", "train", "params", "data_dir", "split_seed",
                           "val_size", "device", "probe_size", "target_acc")}
    assert trial_config({**t, "cpus": 1})["threads"] == 1 and trial_config({**t, "cpus": 2.0})["threads"] == 2


# ---------------------------------------------------------------------------- 11. smaller gaps
def test_extending_a_finished_trial_removes_its_stale_summary_and_orphans(digits, tmp_path):
    from harness.train import Trainer
    from tests.conftest import tiny_trial

    quiet = open(os.devnull, "w")
    Trainer(tiny_trial("bp", train={"epochs": 1}), data=digits).run(tmp_path, log=quiet)
    orphan = tmp_path / ".epochs.csv.k3j2h1.tmp"  # an atomic write a killed run never renamed
    orphan.write_text("half")
    seen = []

    def on_epoch(row, tr):
        seen.append(((tmp_path / "summary.json").exists(), orphan.exists()))

    s = Trainer(tiny_trial("bp", train={"epochs": 3}), data=digits).run(tmp_path, on_epoch=on_epoch, log=quiet)
    # the stale summary is gone while training continues; the trainer writes the new one with the last epoch
    assert seen == [(False, False), (True, False)] and s["epochs"] == 3
    assert (tmp_path / "summary.json").is_file()


def test_result_files_respect_the_umask(tmp_path):
    from harness import store

    old = os.umask(0o022)
    try:
        store.write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        store.write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness import report_figures

    path = tmp_path / "fig.png"
    path.write_bytes(b"good figure")
    fig = plt.figure()

    def broken(*args, **kwargs):
        kwargs_file = args[0]
        kwargs_file.write(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        report_figures._save(fig, path)
    assert path.read_bytes() == b"good figure" and sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_missing_offline_dataset_leaves_no_folders(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets.mnist as mnist

    from harness.datasets import check_available
    from harness.errors import DataError

    monkeypatch.setattr(mnist, "download_and_extract_archive",
                        lambda *a, **k: (_ for _ in ()).throw(URLError("offline")))
    root = tmp_path / "data"
    with pytest.raises(DataError, match="offline, put the files"):
        check_available("mnist", root)
    assert not root.exists()


def test_damaged_idx_files_are_called_damaged(tmp_path):
    from harness.datasets import load_dataset
    from harness.errors import DataError
    from tests.datafiles import write_idx

    raw = write_idx(tmp_path, "MNIST")
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path, val_size=50)
    msg = str(err.value)
    assert "damaged or truncated" in msg and str(raw) in msg and "offline" not in msg and "\n" not in msg


def test_progress_line_of_a_trial_without_a_valid_epoch(capsys):
    from types import SimpleNamespace

    from harness.sweep import _progress_callback

    cb = _progress_callback("search")
    cb.setup()
    trial = SimpleNamespace(last_result={"trial_status": "diverged", "epoch": 1, "best_val_acc": -1.0,
                                         "best_test_acc": float("nan")},
                            config={"trial": {"trial_id": "search-bp-c00-s0"}})
    cb.on_trial_complete(0, [], trial)
    line = capsys.readouterr().err
    assert "diverged" in line and "best val -  test -" in line and "-1.0000" not in line


def test_two_sweeps_of_one_name_in_one_second_get_two_folders(tmp_path, monkeypatch):
    import harness.provenance
    import harness.sweep as sweep

    monkeypatch.setattr(harness.provenance, "utc_stamp", lambda: "20260101T000000Z")
    monkeypatch.setattr(sweep, "execute", lambda out_dir, *a, **k: 0)
    real_exists = Path.exists
    # the other sweep creates the folder between this one's check and its mkdir
    monkeypatch.setattr(Path, "exists", lambda self: False if self.name.startswith("tiny-2026") else real_exists(self))
    (tmp_path / "results" / "tiny-20260101T000000Z").mkdir(parents=True)
    out, code = sweep.new_sweep(sweep.SweepOptions(spec=str(tiny_spec(tmp_path)), results_root=tmp_path / "results"))
    assert code == 0 and out.name == "tiny-20260101T000000Z-1"


@pytest.mark.slow
def test_a_trial_tune_ended_before_it_finished_continues_from_its_checkpoint(ray_session, tmp_path, monkeypatch):
    """Tune ends a running trial (as when it stops trials for an interruption): that trial is not
    finished, and since Tune will not run it again, it continues from its checkpoint."""
    import harness.sweep as sweep
    from ray.tune.stopper import Stopper

    flag = tmp_path / "stopped-once"

    class StopOnceEarly(Stopper):
        def __call__(self, trial_id, result):
            if result.get("trial_status", "running") != "running":
                return True
            if result.get("epoch") == 1 and not flag.exists():
                flag.write_text("x")
                return True  # ends the trial while its Trainer is still running
            return False

        def stop_all(self):
            return False

    monkeypatch.setattr(sweep, "_make_stopper", StopOnceEarly)
    spec = tiny_spec(tmp_path, algorithms=["bp"], budgets={"search_trials": 2, "search_epochs": 3},
                     resources={"max_concurrent": 1})
    log = tmp_path / "log"
    with open(log, "w") as f:
        out, code = sweep.new_sweep(sweep.SweepOptions(spec=str(spec), results_root=tmp_path / "results",
                                                       search_only=True), log=f)
    assert code == 0, log.read_text()
    assert flag.exists() and "ended before they finished: continuing them" in log.read_text()
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials.trial_id) == ["search-bp-c00-s0", "search-bp-c01-s0"]
    assert (trials.status == "ok").all() and (trials.epochs == 3).all()
    epochs = pd.read_csv(out / "epochs.csv")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[1, 2, 3]] * 2
    logs = [(out / "raw" / "trials" / t / "train.log").read_text() for t in trials.trial_id]
    assert sum("resuming bp from epoch 1" in text for text in logs) == 1

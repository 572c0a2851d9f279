"""The command line as a user meets it: JSON summary last, one-line errors, non-zero exits."""

import json
import re
import subprocess
import sys

import pytest

from harness.cli import main
from harness.registry import algorithm_names, get_algorithm

REQUIRED = ("algo", "dataset", "network", "seed", "status", "epochs", "best_val_acc", "test_acc", "updates",
            "flops_per_update", "seconds_per_update", "peak_memory_bytes", "config")


def test_train_prints_summary_json_last(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "train", "--algo", "fa", "--dataset", "digits", "--network",
         "mlp-1x32-tanh", "--epochs", "2", "--seed", "1", "--set", "lr=0.003", "--set", "feedback_scale=0.5",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(k in summary for k in REQUIRED)
    assert summary["config"]["train"]["lr"] == 0.003 and summary["config"]["params"]["feedback_scale"] == 0.5
    assert set(summary["flops_per_update"]) == {"total", "forward", "credit", "feedback"}
    progress = [ln for ln in proc.stderr.splitlines() if "] epoch " in ln]  # a progress line per epoch on stderr
    assert [re.search(r"epoch (\d+/\d+) ", ln)[1] for ln in progress] == ["1/2", "2/2"]
    assert all(re.search(r"elapsed \d+:\d\d  ETA ≤ \d+:\d\d$", ln) for ln in progress), progress
    assert progress[-1].endswith("ETA ≤ 0:00")
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["--algo", "bpp"], "unknown algorithm 'bpp' (did you mean 'bp'?); valid: "),
    (["--algo", "bp", "--dataset", "cifar"], "unknown dataset 'cifar' (did you mean 'cifar10'?); valid: cifar10, digits"),
    (["--algo", "bp", "--network", "mlp-two"], "unknown network"),
    (["--algo", "bp", "--network", "mlp-2x8-sigmoid"], "unknown activation 'sigmoid'"),
    (["--algo", "bp", "--set", "beta=1"], "unknown hyperparameter (training or bp) 'beta'"),
    (["--algo", "fa", "--set", "feedback_scale=-1"], "feedback_scale=-1"),
    (["--algo", "bp", "--set", "lr=0"], "lr=0"),
    (["--algo", "bp", "--device", "cuda:7"], "device"),
])
def test_bad_input_is_one_line_and_non_zero(args, needle, capsys, tmp_path):
    import torch

    if "--device" in args and torch.cuda.is_available():
        pytest.skip("CUDA present")
    code = main(["train", *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_list_shows_algorithms_datasets_networks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for needle in ("bp (v1)", "fa (v1)", "digits", "fashion-mnist", "mlp-5x256-tanh", "cnn-small-tanh"):
        assert needle in out
    assert re.search(r"reference: +Lillicrap", out)
    assert re.search(r"^ +feedback_scale +1 +float > 0, ≤ 100 +loguniform\(0\.1, 10\)$", out, re.M)


def test_list_is_readable(capsys):
    """Aligned columns, search spaces as calls, conditions in words; no raw Python dicts."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "{'" not in out and "search=" not in out
    assert re.search(r"^ +lr +0\.001 +float > 0, ≤ 1e6 +loguniform\(1e-4, 0\.01\)$", out, re.M)
    rfl = out[out.index("\n  rfl (v2)"):out.index("\n  tp (v2)")].splitlines()
    beta = next(i for i, ln in enumerate(rfl) if ln.split()[:1] == ["beta"])
    assert rfl[beta + 1].endswith("; only when propagation = inverse")  # its doc line, then the condition
    assert any(ln.endswith("only when schedule = sleep_wake") for ln in rfl)
    header = next(ln for ln in rfl if ln.split()[:1] == ["hyperparameter"])
    rows = [ln for ln in rfl if re.match(r" {6}[a-z_]+ ", ln)][1:]  # table rows (doc lines are indented deeper)
    assert len(rows) == len(get_algorithm("rfl").Params.model_fields)
    for column in ("default", "values", "search"):
        at = header.index(column)
        assert all(r[at - 1] == " " and r[at] != " " for r in rows), (column, rows)


def test_list_filters_by_pattern(capsys):
    from harness.registry import get_algorithm

    v = {name: f"{name} (v{get_algorithm(name).version})" for name in ("rfl", "fa", "tp", "dtp")}
    assert main(["list", "rfl"]) == 0
    out = capsys.readouterr().out
    assert v["rfl"] in out and v["fa"] not in out and "datasets:" not in out and "training" not in out
    assert main(["list", "*tp", "digits"]) == 0
    out = capsys.readouterr().out
    assert v["dtp"] in out and v["tp"] in out and "rfl" not in out and "digits" in out and "mnist" not in out
    assert main(["list", "training"]) == 0
    assert "training hyperparameters" in capsys.readouterr().out
    assert main(["list", "rlf"]) == 2
    assert "did you mean 'rfl'?" in capsys.readouterr().err


def test_list_json(capsys):
    assert main(["list", "--json", "fa", "mlp-*"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in data["algorithms"]] == ["fa"]
    assert data["algorithms"][0]["hyperparameters"][0]["search"] == {"kind": "loguniform", "low": 0.1, "high": 10.0}
    assert {n["name"] for n in data["networks"]} >= {"mlp-5x256-tanh", "mlp-2x128-tanh"} and data["datasets"] == []
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {a["name"] for a in data["algorithms"]} >= {"bp", "fa", "tp", "dtp", "rfl"}
    assert {d["name"] for d in data["datasets"]} == {"digits", "mnist", "fashion-mnist", "cifar10"}
    assert "lr" in {r["name"] for r in data["training"]}


HEAVY = ("ray", "pandas", "matplotlib", "torchvision", "scipy", "sklearn", "seaborn", "harness.sweep", "harness.report")


def test_list_imports_nothing_heavy():
    """`creditbench list` needs torch (the plugins import it) and nothing of the sweep or report stack."""
    code = ("import sys, io, contextlib\nfrom harness.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['list']) == 0\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def _options(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {opt}", a, sub) for opt, a, _ in _options(sub))
        elif action.option_strings and action.dest != "help":
            yield action.option_strings[-1], action, parser


def test_help_shows_defaults_and_choices_of_every_option(capsys):
    import argparse

    from harness.cli import build_parser

    parser = build_parser()
    options = list(_options(parser))
    commands = {name.split()[0] for name, _, _ in options}
    assert {"list", "train", "sweep", "report", "new-algorithm"} <= commands
    for name, action, sub in options:
        text = sub._get_formatter()._expand_help(action) if action.help else ""
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or action.required:
            continue
        assert "default" in text, f"{name}: {text!r}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "{cifar10,digits,fashion-mnist,mnist}" in out and "{auto,cpu,cuda,cuda:N}" in out
    assert "(default: digits)" in out and "(default: auto)" in out and "{" + ",".join(algorithm_names()) + "}" in out
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "{cifar10,digits,fashion-mnist,mnist}" in capsys.readouterr().out


def test_argparse_errors_are_one_line(capsys):
    assert main(["train", "--algo", "bp", "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: creditbench train: argument --device: invalid choice: 'gpu'") and "\n" not in err
    assert main(["train"]) == 2
    assert "required: --algo" in capsys.readouterr().err


def test_sweep_progress_shows_done_running_total_and_eta(capsys, monkeypatch):
    import harness.sweep as sweep

    class Trial:
        def __init__(self, i, status):
            self.status, self.last_result = status, {"epoch": 3, "best_val_acc": 0.9, "trial_status": "ok"}
            self.config = {"trial": {"trial_id": f"t{i}"}}

    now = [100.0]
    monkeypatch.setattr(sweep.time, "monotonic", lambda: now[0])
    progress = sweep._progress_callback("search")
    progress.setup()
    trials = [Trial(0, "TERMINATED"), Trial(1, "RUNNING"), Trial(2, "RUNNING"), Trial(3, "PENDING")]
    now[0] = 160.0
    progress.on_trial_complete(0, trials, trials[0])  # 1 done in 60 s, 3 to go
    line = capsys.readouterr().err
    assert "t0" in line and "1/4 done, 2 running, 1 pending, elapsed 1:00, ETA 3:00" in line
    trials[1].status, now[0] = "ERROR", 220.0
    progress.on_step_end(0, trials)  # a summary line (more than 30 s since the last)
    assert "[search] 2/4 done (1 failed), 1 running, 1 pending, elapsed 2:00, ETA" in capsys.readouterr().err

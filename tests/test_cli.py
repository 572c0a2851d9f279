"""The command line as a user meets it: JSON summary last, one-line errors, non-zero exits."""

import json
import subprocess
import sys

import pytest

from harness.cli import main

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
    assert "epoch   2" in proc.stderr  # a progress line per epoch on stderr
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
    for needle in ("bp (v1)", "fa (v1)", "feedback_scale = 1.0", "digits", "fashion-mnist", "mlp-5x256-tanh",
                   "cnn-small-tanh", "reference: Lillicrap"):
        assert needle in out

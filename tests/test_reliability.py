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

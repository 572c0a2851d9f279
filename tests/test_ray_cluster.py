"""Issue 18: a sweep on a running Ray cluster (``ray start --head`` on 127.0.0.1, ``sweep --address``) gives
the same trial table as the same sweep on a private local Ray.

The head runs in its own temporary directory and process group, and is stopped by signalling that group's
processes and their descendants (the workers) by pid: ``ray stop`` would stop every Ray of the machine (it
matches processes by name), other tests' and other users' included.
Both sweeps run as ``creditbench sweep`` subprocesses, so neither joins a Ray of the test process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.datafiles import write_idx

REPO = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
TIMING = {"seconds_per_update", "seconds_per_update_p10", "seconds_per_update_p90", "seconds_per_update_median",
          "wall_time_s", "peak_memory_bytes"}  # depend on the machine and its load (README: Reproducibility)

needs_ray = pytest.mark.skipif(not RAY.is_file(), reason=f"no `ray` executable beside {sys.executable}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, process group) of every live (not zombie) process, from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            out[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return out


def head_processes(pgid: int) -> set[int]:
    """The head's live processes: its process group (GCS, raylet, agents) and their descendants (the raylet
    starts each worker in a process group of its own)."""
    procs = _processes()
    found = {pid for pid, (_, group) in procs.items() if group == pgid}
    while True:
        more = {pid for pid, (parent, _) in procs.items() if parent in found} - found
        if not more:
            return found
        found |= more


def stop_head(pgid: int, grace: float = 3.0) -> set[int]:
    """SIGTERM to the head's processes, SIGKILL to those left after ``grace`` seconds; return any still alive."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pid in head_processes(pgid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while head_processes(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    return head_processes(pgid)


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs, its own temp dir (short: Unix socket paths) and ports; yields
    (address, env of its processes, temp dir). Its workers get an empty $CREDITBENCH_DATA_DIR of their own."""
    if sys.platform != "linux":
        pytest.skip("the head is stopped through its process group, read from /proc (Linux)")
    temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    (temp / "no-data").mkdir()
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0",
           "CREDITBENCH_DATA_DIR": str(temp / "no-data")}  # not where the driver's dataset is
    env.pop("RAY_ADDRESS", None)
    cmd = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
           "--include-dashboard=false", "--temp-dir", str(temp), "--disable-usage-stats",
           "--object-store-memory", str(128 * 2**20), "--dashboard-port", str(free_port()),
           "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
           "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
    # its own session: `ray start` and the GCS, raylet and agents it starts share one process group (see stop_head)
    head = subprocess.Popen(cmd, env=env, cwd=temp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        try:
            out, _ = head.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
            out, _ = head.communicate()
            pytest.fail(f"`ray start --head` did not return within 120 s: {out[-3000:]}")
        assert head.returncode == 0, out[-3000:]
        yield f"127.0.0.1:{port}", env, temp
    finally:
        left = stop_head(head.pid)
        subprocess.run(["rm", "-rf", str(temp)], check=False)
        assert not left, f"processes of the Ray head still alive: {left}"


def start_sweep(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 300) -> Path:
    """The results directory a sweep printed last."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sweep did not finish within {timeout} s: {err[-4000:]}")
    assert proc.returncode == 0, err[-4000:]
    return Path(out.strip().splitlines()[-1])


def test_workers_get_the_checkout_and_the_drivers_data_dir(monkeypatch, tmp_path):
    """Workers of a `ray start` cluster inherit that command's environment: the sweep hands them the checkout
    and the driver's $CREDITBENCH_DATA_DIR (absolute: a worker's working directory is not the driver's)."""
    from harness.sweep import worker_runtime_env

    monkeypatch.delenv("CREDITBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = worker_runtime_env()["env_vars"]
    assert env == {"PYTHONPATH": os.pathsep.join([str(REPO), "/elsewhere"])}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREDITBENCH_DATA_DIR", "data")
    assert worker_runtime_env()["env_vars"]["CREDITBENCH_DATA_DIR"] == str(tmp_path.resolve() / "data")


@pytest.mark.slow
@needs_ray
def test_sweep_on_a_running_cluster_matches_a_private_local_ray(ray_head, tmp_path):
    address, _, head_temp = ray_head
    data = tmp_path / "data"  # the driver's data folder, given by $CREDITBENCH_DATA_DIR on the driver only
    write_idx(data, "MNIST", n_train=200, n_test=60)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tiny", "dataset": "mnist", "network": "mlp-1x16-tanh", "val_size": 40, "algorithms": ["bp", "fa"],
        "optimizer": {"optimizer": "adam", "batch_size": 32}, "seeds": 1, "probe_size": 32,
        "budgets": {"search_trials": 2, "search_epochs": 2, "final_epochs": 2},
        "stopping": {"patience": 5}, "resources": {"max_failures": 0, "max_concurrent": 1, "cpus_per_trial": 1},
    }))
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "CREDITBENCH_DATA_DIR": str(data)}
    env.pop("RAY_ADDRESS", None)
    common = ["--spec", str(spec), "--results", str(tmp_path / "results")]
    # at the same time (each trial runs single-threaded, so the metrics do not depend on the load)
    procs = [start_sweep([*common, "--name", "cluster", "--address", address], tmp_path, env),
             start_sweep([*common, "--name", "local", "--num-cpus", "2"], tmp_path, env)]
    try:
        on_cluster, local = (finish(p) for p in procs)
    finally:  # one failed: the other is not left running (a private Ray ends with its driver)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()

    a, b = (pd.read_csv(o / "trials.csv", dtype={"dataset_fingerprint": str}) for o in (on_cluster, local))
    # the head's workers found the dataset where the driver did (the driver's $CREDITBENCH_DATA_DIR)
    assert len(a) == 6 and (a.status == "ok").all() and (a.epochs == 2).all(), \
        a[["trial_id", "status", "error"]].to_string()
    # the first sweep's trials ran on the head's workers (their logs are in its temp dir)
    assert list(head_temp.glob("session_*/logs/worker-*")), "no worker of the head ran"
    cluster_env, local_env = (json.loads((o / "env.json").read_text())["ray"] for o in (on_cluster, local))
    assert cluster_env["address"] == address and local_env["address"] == "local"
    assert [n["resources"]["CPU"] for n in cluster_env["nodes"]] == [2.0]
    assert a.dataset_fingerprint.nunique() == 1 and a.dataset_fingerprint.notna().all()
    # what the README promises for one config, seed and thread count on one CPU model: every metric (accuracies,
    # updates, FLOPs per update by phase, angles, diagnostics) and every hyperparameter; not timings or memory
    same = [c for c in a.columns if c not in TIMING]
    assert same == [c for c in b.columns if c not in TIMING]
    assert {"test_acc", "best_val_acc", "final_test_acc", "updates", "flops_per_update"} <= set(same)
    pd.testing.assert_frame_equal(a[same], b[same])
    # and every epoch: losses and accuracies on every split, FLOPs, angles
    a, b = (pd.read_csv(o / "epochs.csv") for o in (on_cluster, local))
    assert len(a) == 12 and {"train_loss", "val_loss", "test_loss", "flops_total"} <= set(a.columns)
    pd.testing.assert_frame_equal(a.drop(columns=[c for c in TIMING if c in a]),
                                  b.drop(columns=[c for c in TIMING if c in b]))

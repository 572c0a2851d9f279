"""A results directory is data, never code: checkpoints load weights-only, names stay inside their folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["train", "--algo", "fa", "--dataset", "digits", "--network", "mlp-1x16-tanh", "--seed", "0",
         "--set", "batch_size=64", "--device", "cpu"]


class Payload:
    """Unpickling this object would run code: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real one-epoch checkpoint of a tiny digits trial."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    return out


def copy_run(run_dir: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, dst))


def test_crafted_checkpoint_is_refused_and_runs_nothing(run_dir, tmp_path):
    out = copy_run(run_dir, tmp_path / "run")
    marker = tmp_path / "marker"
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    ck["extra"] = Payload(marker)
    torch.save(ck, out / "checkpoint.pt")
    epochs = (out / "epochs.csv").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *TRAIN, "--epochs", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert not marker.exists()
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("error: ") and str(out / "checkpoint.pt") in err, err
    assert "refers to code" in err and "exec" in err
    assert (out / "epochs.csv").read_bytes() == epochs and proc.stdout == ""


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not-a-mapping", "missing-keys"])
def test_damaged_checkpoint_is_a_one_line_error(run_dir, tmp_path, capsys, damage):
    out = copy_run(run_dir, tmp_path / "run")
    path = out / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint " * 20)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not-a-mapping":
        torch.save([torch.zeros(3)], path)
    else:
        ck = torch.load(path, weights_only=True)
        del ck["torch_rng"]
        torch.save(ck, path)
    epochs = (out / "epochs.csv").read_bytes()
    assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(path) in err, err
    assert (out / "epochs.csv").read_bytes() == epochs


def test_real_checkpoint_holds_plain_data_only(run_dir):
    from harness.store import load_torch

    ck = load_torch(run_dir / "checkpoint.pt")
    assert {"net", "optimizer", "algo", "torch_rng", "data_gen", "algo_gen", "history"} <= set(ck)
    assert isinstance(ck["torch_rng"], torch.Tensor) and isinstance(ck["history"][0]["val_acc"], float)


# ---------------------------------------------------------------------------- names that become paths
def write_spec(path: Path, **overrides) -> Path:
    import yaml

    spec = {"name": "tiny", "dataset": "digits", "network": "mlp-1x16-tanh", "algorithms": ["bp"], "seeds": 1,
            "budgets": {"search_trials": 1, "search_epochs": 1, "final_epochs": 1}, **overrides}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("argv,spec,needle", [
    (["--name", "../../x"], {}, "--name '../../x' is not a valid name; allowed: letters, digits"),
    ([], {"name": "a/b"}, "name 'a/b' is not a valid name; allowed: letters, digits"),
    (["--name", ".hidden"], {}, "--name '.hidden'"),
    (["--name", ""], {}, "--name ''"),
], ids=["dotdot", "spec-slash", "hidden", "empty"])
def test_names_that_would_leave_the_results_folder_are_refused(tmp_path, capsys, monkeypatch, argv, spec, needle):
    work = tmp_path / "work"
    (work / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(work / "deep" / "er")
    spec_file = write_spec(tmp_path / "spec.yaml", **spec)
    before = sorted(p for p in tmp_path.rglob("*"))
    code = main(["sweep", "--spec", str(spec_file), "--results", "results", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and needle in err and "\n" not in err, err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, inside or outside


def test_registry_ids_must_be_safe_names():
    from harness.errors import ConfigError
    from harness.registry import Registry

    with pytest.raises(ConfigError, match="algorithm id '../evil' is not a valid name"):
        Registry("algorithm").register("../evil", object())


def test_trial_directory_never_leaves_the_trials_root(tmp_path):
    from harness.errors import ConfigError
    from harness.sweep import train_trial

    victim = tmp_path / "victim"
    victim.mkdir()
    t = {"trial_id": "../victim", "trials_root": str(tmp_path / "trials")}
    with pytest.raises(ConfigError, match="trial id '../victim'"):
        train_trial(t, checkpoint_dir=None, report=lambda m, d: None)
    assert victim.is_dir()

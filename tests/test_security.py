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


# ---------------------------------------------------------------------------- sweep --resume
def _set(data: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        data = data[key] if not isinstance(data, list) else data[int(key)]
    data[last] = value


RESUME_DAMAGE = [
    ("missing-plan", lambda d: (d / "plan.json").unlink(), "not a sweep results directory (no plan.json)"),
    ("plan-not-json", lambda d: (d / "plan.json").write_text("{nope"), "plan.json: not valid JSON"),
    ("spec-not-yaml", lambda d: (d / "spec.yaml").write_text("a: [b"), "spec.yaml: not valid YAML"),
    ("spec-bad-key", {"spec": ("budgets.serch_trials", 1)}, "unknown key 'serch_trials'"),
    ("mode", {"plan": ("mode", "everything")}, "mode 'everything' is not valid; valid: both, search, final"),
    ("algorithms", {"plan": ("algorithms", ["bp", "fa"])}, "differ from spec.yaml's ['bp']"),
    ("unknown-algo", {"plan": ("algorithms", ["nope"]), "spec": ("algorithms", ["nope"])},
     "unknown algorithm in"),
    ("config-id-path", {"plan": ("configs.bp.0.config_id", "../../x")}, "config id '../../x' is not a valid name"),
    ("config-other-algo", {"plan": ("configs.bp.0.config_id", "fa-c00")}, "does not belong to algorithm bp"),
    ("bad-value", {"plan": ("configs.bp.0.train.lr", -1)}, "lr"),
    ("unknown-key", {"plan": ("configs.bp.0.params.beta", 1)}, "unknown hyperparameter"),
    ("selected", {"plan": ("selected", {"bp": "bp-c07"})}, "'bp-c07' is not one of its planned configurations"),
    ("no-env", lambda d: (d / "trials.csv").write_text("trial_id\n"), "not a sweep results directory (no env.json)"),
    ("env-not-json", lambda d: [(d / "trials.csv").write_text("trial_id\n"), (d / "env.json").write_text("[")],
     "env.json: not valid JSON"),
]


@pytest.fixture
def resumable(tmp_path):
    """spec.yaml and plan.json exactly as a sweep writes them before Ray starts (no Ray here)."""
    from harness.planning import SweepOptions, resolve, write_plan as _write_plan

    spec, plan = resolve(SweepOptions(spec=str(write_spec(tmp_path / "spec.yaml", seeds=2,
                                                          budgets={"search_trials": 2, "search_epochs": 1,
                                                                   "final_epochs": 1}))))
    out = tmp_path / "results" / "tiny-20260101T000000Z"
    out.mkdir(parents=True)
    _write_plan(out, spec, plan)
    return out


@pytest.fixture
def no_ray(monkeypatch):
    """Record what would be handed to Ray instead of running it."""
    import harness.sweep as sweep

    handed = []
    monkeypatch.setattr(sweep, "execute", lambda out_dir, spec, plan, **kw: handed.append((spec, plan)) or 0)
    return handed


def test_resume_hands_a_consistent_directory_to_ray(resumable, no_ray):
    import io

    from harness.sweep import resume_sweep

    log = io.StringIO()
    assert resume_sweep(resumable, log=log) == (resumable, 0)
    assert len(no_ray) == 1 and no_ray[0][1]["algorithms"] == ["bp"]
    assert "resume only directories you created" in log.getvalue()


@pytest.mark.parametrize("damage,needle", [d[1:] for d in RESUME_DAMAGE], ids=[d[0] for d in RESUME_DAMAGE])
def test_resume_refuses_an_inconsistent_directory_before_ray(resumable, no_ray, capsys, damage, needle):
    import json

    import yaml

    if callable(damage):
        damage(resumable)
    else:
        for name, (key, value) in damage.items():
            path = resumable / ("plan.json" if name == "plan" else "spec.yaml")
            data = json.loads(path.read_text()) if name == "plan" else yaml.safe_load(path.read_text())
            _set(data, key, value)
            path.write_text(json.dumps(data) if name == "plan" else yaml.safe_dump(data))
    assert main(["sweep", "--resume", str(resumable)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err, err
    assert no_ray == [] and not (resumable / "raw").exists()


# ---------------------------------------------------------------------------- the report reads data only
GUARD = '''
import os, sys

def refuse(*args, **kwargs):
    print("UNPICKLER CALLED", file=sys.stderr, flush=True)
    os._exit(97)  # no except clause can swallow this

sys.addaudithook(lambda event, args: refuse() if event == "pickle.find_class" else None)
import pickle, _pickle
import numpy, pandas, torch
for module, names in ((pickle, ("load", "loads", "Unpickler")), (_pickle, ("load", "loads", "Unpickler")),
                      (torch, ("load",)), (pandas, ("read_pickle",)), (numpy, ("load",))):
    for name in names:
        setattr(module, name, refuse)
from harness.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A tiny real results directory, with pickles lying in it as bait."""
    from harness.datasets import load_dataset
    from tests.report_fixtures import env_for, run_sweep, spec_for, write_results

    train = {"epochs": 1, "patience": 5, "batch_size": 64}
    trials, epochs, summary = run_sweep(load_dataset("digits"), ("bp",), search_configs=1, seeds=(0, 1),
                                        search_train=train, final_train=train)
    out = write_results(tmp_path_factory.mktemp("report") / "sweep", trials, epochs,
                        spec_for(("bp",), seeds=(0, 1), search_configs=1, search_train=train, final_train=train),
                        env_for(summary))
    marker = out.parent / "marker"
    (out / "raw" / "trials" / "x").mkdir(parents=True)
    torch.save({"history": [], "extra": Payload(marker)}, out / "raw" / "trials" / "x" / "checkpoint.pt")
    (out / "results.pkl").write_bytes(__import__("pickle").dumps(Payload(marker)))
    return out


def test_report_runs_without_any_unpickler(report_dir, tmp_path):
    guard = tmp_path / "guard.py"
    guard.write_text(GUARD)
    proc = subprocess.run([sys.executable, str(guard), "report", str(report_dir), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "report.md").is_file() and list((tmp_path / "out" / "figures").glob("*.png"))
    assert not (report_dir.parent / "marker").exists()


def test_the_guard_catches_an_unpickling_report(report_dir, tmp_path):
    """The guard above is not vacuous: a report that reads a pickle dies with it."""
    guard = tmp_path / "guard.py"
    guard.write_text(GUARD.replace("from harness.cli import main",
                                   "import harness.report_data as rd\n"
                                   "rd.yaml.safe_load = lambda text: pandas.read_pickle('x')\n"
                                   "from harness.cli import main"))
    proc = subprocess.run([sys.executable, str(guard), "report", str(report_dir), "--out", str(tmp_path / "out"),
                           "--no-figures"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 97 and "UNPICKLER CALLED" in proc.stderr


# ---------------------------------------------------------------------------- reproducible installs
def test_install_uses_exact_constraints_for_every_dependency():
    import re
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = [ln for ln in (REPO / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!]+", ln) for ln in lines)
    pins = {canonicalize_name(n): v for n, v in (ln.split("==") for ln in lines)}
    assert len(pins) == len(lines)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for req in map(Requirement, project["dependencies"] + project["optional-dependencies"]["dev"]):
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name]), req
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    makefile = (REPO / "Makefile").read_text()
    # offline-safe when everything is met: no build isolation (it would fetch setuptools), no pip upgrade
    assert "pip install --quiet --no-build-isolation -c constraints.txt -e '.[dev]'" in makefile
    # ... and the pinned setuptools comes first: a new venv's bundled one cannot build an editable
    # install without `wheel` (CI's fresh clone failed on exactly that)
    pin_setuptools = "pip install --quiet -c constraints.txt setuptools\n"
    assert pin_setuptools in makefile and makefile.index(pin_setuptools) < makefile.index("--no-build-isolation -c")
    assert "--upgrade pip" not in makefile

"""`creditbench new-algorithm NAME`: the skeleton registers, passes the contract tests, trains, and its
generated oracle test passes (and fails when the rule changes)."""

import importlib.util
import sys

import pytest

from harness.cli import main
from harness.registry import ALGORITHMS, get_algorithm

NAME = "scaffold_probe"


def _import(path, module_name):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # inspect (source hash) finds the file through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def generated(tmp_path):
    algos, tests = tmp_path / "algorithms", tmp_path / "tests"
    algos.mkdir()
    tests.mkdir()
    assert main(["new-algorithm", NAME, "--dir", str(algos), "--tests-dir", str(tests)]) == 0
    names = [f"_generated_{NAME}", f"_generated_test_{NAME}"]
    try:
        plugin = _import(algos / f"{NAME}.py", names[0])  # @register_algorithm registers it
        yield plugin, _import(tests / f"test_{NAME}.py", names[1]), tmp_path
    finally:
        ALGORITHMS.unregister(NAME)
        for name in names:
            sys.modules.pop(name, None)


def test_skeleton_registers_passes_the_contract_and_trains(generated, digits):
    import tests.test_algorithms_contract as contract

    plugin, _, _ = generated
    cls = get_algorithm(NAME)
    assert cls.__module__ == plugin.__name__ and cls.version == 1
    assert cls.spec()["source_files"] == [str(plugin.__file__)]
    contract.test_spec_is_complete(NAME)
    contract.test_one_update_changes_every_trainable_parameter(NAME)
    contract.test_compute_update_changes_no_state(NAME)
    contract.test_trial_reports_finite_metrics_and_cost(NAME, digits)  # trains two epochs on digits
    net = contract.make(NAME)[0]
    record = cls(net).plausibility()
    assert record.weight_transport and not record.local  # bp's rule through W_lᵀ, declared as such


def test_generated_test_checks_the_rule_against_its_oracle(generated, monkeypatch):
    plugin, test_module, _ = generated
    for spec in ("mlp-3x12-tanh", "mlp-2x12-leaky-relu"):
        test_module.check_update_equals_oracle(spec)
    cls = get_algorithm(NAME)
    original = cls.feedback
    monkeypatch.setattr(cls, "feedback", lambda self, l: original(self, l) * 1.01)  # a 1% change in the rule
    with pytest.raises(AssertionError):
        test_module.check_update_equals_oracle()


def test_skeleton_text_points_the_author_at_the_rule(generated):
    _, _, root = generated
    source = (root / "algorithms" / f"{NAME}.py").read_text()
    assert source.count("TODO") >= 5 and "docs/plugins.md" in source
    assert "layers[l].backward(delta, fw.h[l], feedback)" in source and "weight_transport=True" in source
    assert "class ScaffoldProbe(Algorithm)" in source and f'name = "{NAME}"' in source
    assert f'NAME = "{NAME}"' in (root / "tests" / f"test_{NAME}.py").read_text()


@pytest.mark.parametrize("name,needle", [
    ("fa", "algorithm 'fa' already exists"),
    ("my-rule", "must also be a Python module name"),
    ("../evil", "is not a valid name"),
    ("class", "must also be a Python module name"),
    ("_helper", "must also be a Python module name"),
])
def test_bad_or_existing_names_are_refused(name, needle, tmp_path, capsys):
    code = main(["new-algorithm", name, "--dir", str(tmp_path), "--tests-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and needle in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_mine.py").write_text("# the author's own test\n")
    code = main(["new-algorithm", "mine", "--dir", str(tmp_path), "--tests-dir", str(tmp_path / "tests")])
    assert code == 2 and "test_mine.py already exists" in capsys.readouterr().err
    assert (tmp_path / "tests" / "test_mine.py").read_text() == "# the author's own test\n"
    assert not (tmp_path / "mine.py").exists()


def test_default_folders_are_the_repositorys():
    from harness.cli import build_parser
    from harness.registry import BUILTIN_DIR

    args = build_parser("new-algorithm").parse_args(["new-algorithm", "x"])
    assert args.dir == str(BUILTIN_DIR) and args.tests_dir.endswith("tests")


def test_source_hash_covers_the_package_modules_an_algorithm_uses():
    """ddtp-rhl's class inherits from ddtp-linear and tp but also calls drl's difference reconstruction gradient:
    the recorded hash covers every file its results depend on, in a stated order."""
    import hashlib
    from pathlib import Path

    spec = get_algorithm("ddtp-rhl").spec()
    assert spec["source_files"] == ["algorithms/ddtp_rhl.py", "algorithms/ddtp_linear.py", "algorithms/tp.py",
                                    "algorithms/drl.py", "algorithms/dtp.py"]
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(b"".join((root / f).read_bytes() for f in spec["source_files"]))
    assert spec["source_sha256"] == digest.hexdigest()
    assert get_algorithm("bp").spec()["source_files"] == ["algorithms/bp.py"]

import re

import pytest

from harness.algorithm import Algorithm
from harness.errors import CreditbenchError, UnknownNameError
from harness.hparams import HParams, hp
from harness.registry import ALGORITHMS, DATASETS, Registry, algorithm_names, get_algorithm, register_algorithm

FA_PLAUSIBILITY = get_algorithm("fa").plausibility


def test_builtins_registered():
    names = algorithm_names()
    assert {"bp", "fa"} <= set(names)
    assert {"digits", "mnist", "fashion-mnist", "cifar10"} <= set(DATASETS.names())


def test_unknown_algorithm_lists_valid_names_and_suggests():
    with pytest.raises(UnknownNameError) as err:
        get_algorithm("bpp")
    msg = str(err.value)
    assert "unknown algorithm 'bpp' (did you mean 'bp'?)" in msg and "bp" in msg and "fa" in msg and "did you mean" in msg
    assert "\n" not in msg


def test_duplicate_id_is_an_error():
    reg = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(CreditbenchError, match="duplicate thing id 'a'"):
        reg.register("a", 2)
    reg.register("a", 2, override=True)
    assert reg.get("a") == 2


def test_wildcard_listing():
    assert algorithm_names("b*") == ["bp", "brsf"]
    assert algorithm_names("d*p") == ["drtp", "dtp"]


def test_plugin_registration_and_validation():
    class Dummy(Algorithm):
        name = "dummy-test"
        description = "test plugin"
        reference = "none"
        plausibility = FA_PLAUSIBILITY

        class Params(HParams):
            knob: float = hp(1.0, "a knob", gt=0)

    try:
        register_algorithm(Dummy)
        assert get_algorithm("dummy-test") is Dummy
        with pytest.raises(CreditbenchError, match="duplicate"):
            class Dummy2(Dummy):
                pass
            register_algorithm(Dummy2)
    finally:
        ALGORITHMS.unregister("dummy-test")


def test_plugin_without_plausibility_is_refused():
    class Silent(Algorithm):
        name = "silent-test"
        description = "declares no plausibility"
        reference = "none"

    with pytest.raises(CreditbenchError, match="silent-test.*must declare plausibility"):
        register_algorithm(Silent)
    assert "silent-test" not in ALGORITHMS


def test_plugin_hyperparameter_clashing_with_training_is_refused():
    class Clash(Algorithm):
        name = "clash-test"
        description = "x"
        reference = "x"
        plausibility = FA_PLAUSIBILITY

        class Params(HParams):
            lr: float = hp(1.0, "clashes with the shared lr")

    with pytest.raises(CreditbenchError, match="clash"):
        register_algorithm(Clash)
    assert "clash-test" not in ALGORITHMS


def test_entry_point_plugin_failing_to_import_is_loud(monkeypatch):
    import harness.registry as registry

    class FakeEP:
        name, value, group = "broken", "no_such_module_xyz:Algo", registry.ENTRY_POINT_GROUP

        def load(self):
            import no_such_module_xyz  # noqa: F401

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEP()])
    with pytest.raises(CreditbenchError, match="plugin 'broken'.*failed to import"):
        registry.load_plugins()


def test_entry_point_plugin_class_is_registered(monkeypatch):
    import harness.registry as registry

    class External(Algorithm):
        name = "external-test"
        description = "from a third-party package"
        reference = "none"
        plausibility = FA_PLAUSIBILITY

    class FakeEP:
        name, value, group = "external-test", "pkg:External", registry.ENTRY_POINT_GROUP

        def load(self):
            return External

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEP()])
    try:
        registry.load_plugins()
        assert get_algorithm("external-test") is External
    finally:
        ALGORITHMS.unregister("external-test")


def test_origin_names_the_code_behind_each_algorithm(monkeypatch, capsys, digits):
    """Built-in modules, and the distribution and version of an entry-point plugin, in `list` and summaries."""
    import harness.registry as registry
    from harness.cli import main
    from harness.train import Trainer
    from tests.conftest import tiny_trial

    assert get_algorithm("fa").spec()["origin"] == {"kind": "built-in", "module": "algorithms.fa"}

    class Thirdparty(Algorithm):
        name = "thirdparty-test"
        description = "from an installed distribution"
        reference = "none"
        plausibility = FA_PLAUSIBILITY

    class FakeDist:
        name, version = "creditbench-extras", "9.8.7"

    class FakeEP:
        name, value, group, dist = "thirdparty-test", "extras.rule:Thirdparty", registry.ENTRY_POINT_GROUP, FakeDist()

        def load(self):
            return Thirdparty

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEP()])
    try:
        assert main(["list"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"code: +entry point 'thirdparty-test = extras.rule:Thirdparty' of creditbench-extras 9.8.7", out)
        assert re.search(r"code: +built-in \(module algorithms.rfl\)", out)
        origin = {"kind": "entry-point", "entry_point": "thirdparty-test = extras.rule:Thirdparty",
                  "distribution": "creditbench-extras", "version": "9.8.7", "module": Thirdparty.__module__}
        assert get_algorithm("thirdparty-test").spec()["origin"] == origin
    finally:
        ALGORITHMS.unregister("thirdparty-test")
    summary = Trainer(tiny_trial("bp", train={"epochs": 1}), data=digits).run(None, log=open("/dev/null", "w"))
    assert summary["algorithm"]["origin"] == {"kind": "built-in", "module": "algorithms.bp"}


def _load_builtins_from(monkeypatch, folder):
    """Run ``load_plugins`` with ``algorithms/`` replaced by ``folder`` (its modules are cleaned up after)."""
    import sys

    import algorithms
    import harness.registry as registry

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    monkeypatch.setattr(algorithms, "__path__", [str(folder)])
    for f in folder.glob("*.py"):
        monkeypatch.delitem(sys.modules, f"algorithms.{f.stem}", raising=False)
    before = set(ALGORITHMS.names())
    try:
        registry.load_plugins()
    finally:
        for name in set(ALGORITHMS.names()) - before:
            ALGORITHMS.unregister(name)
        for f in folder.glob("*.py"):
            sys.modules.pop(f"algorithms.{f.stem}", None)


PLUGIN = '''
from harness.algorithm import Algorithm, Plausibility
from harness.registry import register_algorithm
{decorator}
class Rule(Algorithm):
    name = "{name}"
    description = "test plugin"
    reference = "none"

    def plausibility(self):
        return Plausibility(False, True, "single", False, "test plugin")
'''


def test_module_in_algorithms_that_registers_nothing_is_an_error_naming_the_file(monkeypatch, tmp_path):
    (tmp_path / "good_rule.py").write_text(PLUGIN.format(decorator="@register_algorithm", name="good-rule-test"))
    (tmp_path / "forgot.py").write_text(PLUGIN.format(decorator="", name="forgot-test"))
    with pytest.raises(CreditbenchError) as err:
        _load_builtins_from(monkeypatch, tmp_path)
    assert f"{tmp_path / 'forgot.py'} registers no algorithm" in str(err.value) and "@register_algorithm" in str(err.value)
    assert "forgot-test" not in ALGORITHMS


def test_module_importing_another_plugin_must_register_its_own(monkeypatch, tmp_path):
    """dtp.py imports tp.py: a module that only imports another plugin's class registers nothing itself."""
    (tmp_path / "base_rule.py").write_text(PLUGIN.format(decorator="@register_algorithm", name="base-rule-test"))
    (tmp_path / "derived.py").write_text("from algorithms.base_rule import Rule  # noqa: F401\n")
    with pytest.raises(CreditbenchError, match="derived.py registers no algorithm"):
        _load_builtins_from(monkeypatch, tmp_path)
    (tmp_path / "derived.py").write_text(
        "from algorithms.base_rule import Rule\nfrom harness.registry import register_algorithm\n\n\n"
        "@register_algorithm\nclass Derived(Rule):\n    name = 'derived-test'\n")
    (tmp_path / "_helper.py").write_text("X = 1  # a helper: not imported, registers nothing\n")
    _load_builtins_from(monkeypatch, tmp_path)  # no error


# ------------------------------------------------------------------------------- lazy loading, index
def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter at the repository root; returns its stdout."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_index_specs_are_what_importing_the_code_gives():
    import harness.registry as registry

    registry.load_plugins()  # imports every built-in and (re)writes the index
    rows = registry._read_index(registry._builtin_folders())
    assert rows is not None and {r["name"] for r in rows} >= {"bp", "fa", "tp", "dtp", "rfl"}
    for row in rows:
        cls = get_algorithm(row["name"])
        assert row["spec"] == cls.spec() and row["entry_point"] == f"{cls.__module__}:{cls.__qualname__}"


def test_listing_imports_no_plugin_and_no_torch_while_the_index_is_current():
    import harness.registry as registry

    registry.load_plugins()
    out = _fresh_python(
        "import sys\nfrom harness.cli import main\nmain(['list', '--json'])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('algorithms.')))")
    assert out.strip().splitlines()[-1] == "[]"
    out = _fresh_python(  # asking for one algorithm imports that module only
        "import sys\nfrom harness.registry import get_algorithm\nget_algorithm('fa')\n"
        "print(sorted(m for m in sys.modules if m.startswith('algorithms.')))")
    assert out.strip() == "['algorithms.fa']"


def test_index_is_used_only_while_every_file_is_unchanged(monkeypatch, tmp_path):
    """An edit or a new file in algorithms/ makes the index stale: the modules are imported again."""
    import sys

    import algorithms
    import harness.registry as registry

    (tmp_path / "good_rule.py").write_text(PLUGIN.format(decorator="@register_algorithm", name="good-rule-test"))
    _load_builtins_from(monkeypatch, tmp_path)  # writes tmp_path/__pycache__/creditbench-index.json
    folders = [tmp_path]
    assert [r["name"] for r in registry._read_index(folders)] == ["good-rule-test"]
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    monkeypatch.setattr(algorithms, "__path__", [str(tmp_path)])
    try:
        registry._discover()  # from the index: known by name, not imported
        assert "good-rule-test" in ALGORITHMS and "algorithms.good_rule" not in sys.modules
        assert registry.algorithm_spec("good-rule-test")["description"] == "test plugin"
        assert get_algorithm("good-rule-test").__module__ == "algorithms.good_rule"  # imported on demand
    finally:
        ALGORITHMS.unregister("good-rule-test")
        sys.modules.pop("algorithms.good_rule", None)
    (tmp_path / "new_rule.py").write_text(PLUGIN.format(decorator="@register_algorithm", name="new-rule-test"))
    assert registry._read_index(folders) is None  # a new file: not current
    (tmp_path / "new_rule.py").unlink()
    assert registry._read_index(folders) is not None
    (tmp_path / "good_rule.py").write_text(PLUGIN.format(decorator="@register_algorithm", name="renamed-test"))
    assert registry._read_index(folders) is None  # an edit: not current

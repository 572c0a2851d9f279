"""The only place that maps algorithm names to code; a leaf: it imports no algorithm, dataset or network
code when it is imported.

Where algorithms come from:

* **Built-in**: every module of the ``algorithms`` package whose name does not start with ``_`` (those
  are helpers). The folder is scanned by file name (``pkgutil.iter_modules``, nothing imported); a
  module registers its class with ``@register_algorithm`` when it is imported. A new algorithm is one
  new file there, with no other edit; a module there that registers no algorithm defined in it is an
  error naming the file.
* **Third-party**: packages add algorithms through the entry-point group ``creditbench.algorithms``
  (each entry point names a module or an algorithm class; importing it registers it). A plugin that
  fails to import is a loud error, never skipped.

A plugin is imported, validated and cached only when it is asked for. The names of the built-in
algorithms, their ``module:Class`` entry points and their specs (``Algorithm.spec()``: version,
description, reference, capabilities, hyperparameters, origin, source hash) are kept in an *index*
written beside the modules (``algorithms/__pycache__/creditbench-index.json``) by the first full
import, and reused only while it is provably current: its key is the SHA-256 of every ``.py`` file of
the scanned folder and of ``harness/``, of the folder's path, and of the versions of Python, torch,
numpy and pydantic (what a declaration can depend on). Any edit, new file or upgrade changes the key,
and the next use imports the modules again and rewrites the index; so ``creditbench list`` and
``get_algorithm("rfl")`` import no plugin (and no torch) they do not need, and what they show is what
importing the code gives. Entry-point plugins are not indexed: they are imported whenever the table
is read. ``algorithm_origin`` says where each algorithm's code comes from.

Datasets and networks own their tables (``harness.datasets.DATASETS``,
``harness.network_presets.NETWORKS``); ``registry.DATASETS`` and ``registry.NETWORKS`` are those
tables, imported on first access (a module ``__getattr__``, the one function-level import of theirs
here).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import inspect
import json
import os
import pkgutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Generic, Iterator, TypeVar

from harness.errors import CreditbenchError, UnknownNameError
from harness.names import safe_name

T = TypeVar("T")

ENTRY_POINT_GROUP = "creditbench.algorithms"
HARNESS_DIR = Path(__file__).resolve().parent
BUILTIN_DIR = HARNESS_DIR.parent / "algorithms"
INDEX_FILE = Path("__pycache__") / "creditbench-index.json"  # under the scanned algorithms folder
INDEX_VERSION = 1
KEYED_PACKAGES = ("torch", "numpy", "pydantic")  # their versions are part of the index key


class Registry(Generic[T]):
    """A named table of things of one kind; duplicates are an error unless ``override=True``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, override: bool = False) -> T:
        safe_name(name, f"{self.kind} id")  # ids become parts of paths (trial ids, run directories)
        if name in self._items and not override and self._items[name] is not item:
            raise CreditbenchError(f"duplicate {self.kind} id '{name}' (pass override=True to replace it)")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)


class AlgorithmTable(Registry):
    """Algorithm ids → classes, or :class:`LazyAlgorithm` entries not imported yet. ``get`` always
    returns the class (importing it on first use)."""

    def register(self, name, item, *, override=False):
        current = self._items.get(name)
        if isinstance(current, LazyAlgorithm) and not isinstance(item, LazyAlgorithm) and current.is_for(item):
            override = True  # the class the lazy entry points at, now imported
        return super().register(name, item, override=override)

    def get(self, name: str):
        entry = super().get(name)
        if isinstance(entry, LazyAlgorithm):
            entry = entry.load(name)
        return entry

    def entry(self, name: str):
        """The class, or its lazy entry (nothing is imported)."""
        return super().get(name)


class LazyAlgorithm:
    """A built-in algorithm known from the index: where its class is (``module:Class``) and its spec."""

    def __init__(self, entry_point: str, spec: dict):
        self.entry_point, self.spec = entry_point, spec

    def is_for(self, cls) -> bool:
        return self.entry_point == f"{cls.__module__}:{cls.__qualname__}"

    def load(self, name: str):
        module = self.entry_point.partition(":")[0]
        importlib.import_module(module)  # its @register_algorithm replaces this entry
        cls = ALGORITHMS.entry(name)
        if isinstance(cls, LazyAlgorithm):
            raise CreditbenchError(f"{module} did not register algorithm '{name}' (index entry {self.entry_point})")
        return cls


ALGORITHMS: AlgorithmTable = AlgorithmTable("algorithm")


def __getattr__(name: str):
    """``DATASETS`` and ``NETWORKS``: the tables their modules own, imported on first access."""
    if name == "DATASETS":
        from harness.datasets import DATASETS

        return DATASETS
    if name == "NETWORKS":
        from harness.network_presets import NETWORKS

        return NETWORKS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_algorithm(cls=None, *, override: bool = False):
    """Class decorator: ``@register_algorithm`` on an :class:`~harness.algorithm.Algorithm` subclass."""

    def wrap(c):
        from harness.algorithm import validate_algorithm_class  # lazy: algorithm.py is the contract, not a leaf

        validate_algorithm_class(c)
        return ALGORITHMS.register(c.name, c, override=override)

    return wrap(cls) if cls is not None else wrap


_loaded = False  # every algorithm (built-in and entry point) is in ALGORITHMS, as a class or a lazy entry
_ORIGINS: dict[type, dict] = {}  # algorithm class → the entry point (and distribution) that registered it


def algorithm_origin(cls) -> dict:
    """Where an algorithm's code comes from: ``built-in`` (a module of this repository's
    ``algorithms`` package), ``entry-point`` (the installed distribution and version that declared
    it) or ``registered`` (a module that registered it at run time)."""
    module = cls.__module__
    if cls in _ORIGINS:
        return {**_ORIGINS[cls], "module": module}
    try:
        builtin = Path(inspect.getfile(cls)).resolve().parent == BUILTIN_DIR and module.startswith("algorithms.")
    except (TypeError, OSError):
        builtin = False
    return {"kind": "built-in" if builtin else "registered", "module": module}


def describe_origin(origin: dict) -> str:
    """One line for ``creditbench list``."""
    if origin["kind"] == "entry-point":
        dist = f"{origin['distribution']} {origin['version']}" if origin["distribution"] else "unknown distribution"
        return f"entry point '{origin['entry_point']}' of {dist} (module {origin['module']})"
    return f"{origin['kind']} (module {origin['module']})"


# ------------------------------------------------------------------------------------- discovery
def _builtin_folders() -> list[Path]:
    import algorithms  # the package's __init__ is empty: this imports no plugin

    return [Path(p) for p in algorithms.__path__]


def _builtin_modules(folders: list[Path]) -> list[str]:
    """Module names of ``algorithms/`` that must register an algorithm (by file name; none imported)."""
    return [m.name for m in sorted(pkgutil.iter_modules([str(f) for f in folders]), key=lambda m: m.name)
            if not m.name.startswith("_")]


def load_plugins() -> None:
    """Import every built-in algorithm module and every entry-point plugin, check that each module of
    ``algorithms/`` registers its own algorithm, and rewrite the index. Done once per process (on
    demand, only when the index is not current or a class is needed)."""
    global _loaded
    if _loaded and not any(isinstance(ALGORITHMS.entry(n), LazyAlgorithm) for n in ALGORITHMS.names()):
        return
    folders = _builtin_folders()
    builtin = _builtin_modules(folders)
    for name in builtin:
        importlib.import_module(f"algorithms.{name}")
    _check_builtins_register(builtin, folders)
    _write_index(folders, builtin)
    _load_entry_points()
    _loaded = True


def _discover() -> None:
    """Make the table complete: from the index when it is current (importing nothing but the
    entry-point plugins), else by importing everything (:func:`load_plugins`)."""
    global _loaded
    if _loaded:
        return
    folders = _builtin_folders()
    index = _read_index(folders)
    if index is None:
        load_plugins()
        return
    for row in index:
        if row["name"] not in ALGORITHMS:
            ALGORITHMS.register(row["name"], LazyAlgorithm(row["entry_point"], row["spec"]))
    _load_entry_points()
    _loaded = True


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        before = set(ALGORITHMS.names())
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not vanish silently
            raise CreditbenchError(
                f"algorithm plugin '{ep.name}' ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(obj, type) and getattr(obj, "name", None) not in ALGORITHMS:
            register_algorithm(obj)
        dist = getattr(ep, "dist", None)  # None when the entry point was not read from a distribution
        origin = {"kind": "entry-point", "entry_point": f"{ep.name} = {ep.value}",
                  "distribution": dist.name if dist else None, "version": dist.version if dist else None}
        for name in set(ALGORITHMS.names()) - before:
            _ORIGINS[ALGORITHMS.get(name)] = origin


def _check_builtins_register(modules: list[str], folders: list[Path]) -> None:
    """Every module of ``algorithms/`` (not starting with ``_``) must register an algorithm defined in it:
    a file whose class lacks ``@register_algorithm`` would otherwise be skipped without a word. Checked
    by the classes' ``__module__`` (dtp.py imports tp.py, whose class is tp.py's, not dtp.py's)."""
    defined = {ALGORITHMS.get(n).__module__ for n in ALGORITHMS.names()}
    for name in modules:
        if f"algorithms.{name}" not in defined:
            where = next((f / f"{name}.py" for f in folders if (f / f"{name}.py").is_file()), Path("algorithms") / name)
            raise CreditbenchError(
                f"{where} registers no algorithm: decorate its Algorithm subclass with @register_algorithm "
                "(from harness.registry), or start the file's name with '_' if it is a helper module")


# ------------------------------------------------------------------------------------- index
def _index_key(folders: list[Path]) -> str:
    """SHA-256 of everything a built-in algorithm's spec is computed from (see the module docstring)."""
    digest = hashlib.sha256(f"index {INDEX_VERSION}\n{sys.version}\n".encode())
    for package in KEYED_PACKAGES:
        try:
            digest.update(f"{package} {version(package)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{package} -\n".encode())
    for folder in [*folders, HARNESS_DIR]:
        digest.update(f"{folder.resolve()}\n".encode())
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{path.relative_to(folder)} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def _index_path(folders: list[Path]) -> Path:
    return folders[0] / INDEX_FILE


def _read_index(folders: list[Path]) -> list[dict] | None:
    """The indexed built-ins, or None when there is no index or it is not current."""
    try:
        index = json.loads(_index_path(folders).read_text())
        if index.get("key") == _index_key(folders):
            return index["algorithms"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _write_index(folders: list[Path], modules: list[str]) -> None:
    """Record the built-ins (all imported now). Skipped, silently, when a spec would not survive JSON
    exactly (so the index never changes what is listed) or the folder is read-only: the index only
    saves time."""
    modules_ = {f"algorithms.{m}" for m in modules}
    rows = []
    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name)
        if cls.__module__ not in modules_ or cls in _ORIGINS:
            continue
        spec = cls.spec()
        if not _same(json.loads(json.dumps(spec)), spec):
            return
        rows.append({"name": name, "entry_point": f"{cls.__module__}:{cls.__qualname__}", "spec": spec})
    path = _index_path(folders)
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".creditbench-index-")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": _index_key(folders), "algorithms": rows}, f, ensure_ascii=False)
        os.replace(tmp, path)  # atomic: concurrent processes read the old index or the new one
    except OSError:
        pass


def _same(a, b) -> bool:
    """Equal and of the same types throughout (a tuple read back as a list is not the same)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------------- queries
def get_algorithm(name: str):
    """The algorithm class registered as ``name``; imports its module (only) on first use."""
    _discover()
    return ALGORITHMS.get(name)


def algorithm_names(pattern: str = "*") -> list[str]:
    """Registered algorithm ids matching a shell wildcard (no plugin imported while the index is current)."""
    _discover()
    return ALGORITHMS.names(pattern)


def algorithm_spec(name: str) -> dict:
    """``Algorithm.spec()`` of ``name``: from the index while it is current (nothing imported), else
    from the imported class."""
    _discover()
    entry = ALGORITHMS.entry(name)
    return entry.spec if isinstance(entry, LazyAlgorithm) else entry.spec()

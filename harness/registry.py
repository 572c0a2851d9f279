"""The only place that maps names to code: algorithms, datasets and network presets.

Built-in algorithms are the modules of the ``algorithms`` package, each imported
explicitly by name when the registry loads (a new algorithm is one new file there,
with no other edit; a module there that registers no algorithm of its own is an error naming the
file, and modules whose names start with ``_`` are helpers, not imported); third-party packages add algorithms
through the entry-point group ``creditbench.algorithms`` (each entry point names a
module or an algorithm class; importing it registers it). A plugin that fails to
import is a loud error, never skipped. ``algorithm_origin`` says where each algorithm's
code comes from (built-in module, or the distribution and version of its entry point).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from harness.errors import CreditbenchError, UnknownNameError

T = TypeVar("T")

ENTRY_POINT_GROUP = "creditbench.algorithms"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "algorithms"


class Registry(Generic[T]):
    """A named table of things of one kind; duplicates are an error unless ``override=True``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, override: bool = False) -> T:
        from harness.store import safe_name

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


ALGORITHMS: Registry = Registry("algorithm")
DATASETS: Registry = Registry("dataset")
NETWORKS: Registry = Registry("network")


def register_algorithm(cls=None, *, override: bool = False):
    """Class decorator: ``@register_algorithm`` on an :class:`~harness.algorithm.Algorithm` subclass."""

    def wrap(c):
        from harness.algorithm import validate_algorithm_class

        validate_algorithm_class(c)
        return ALGORITHMS.register(c.name, c, override=override)

    return wrap(cls) if cls is not None else wrap


def register_dataset(name: str, *, override: bool = False) -> Callable:
    return lambda spec: DATASETS.register(name, spec, override=override)


def register_network(name: str, *, override: bool = False) -> Callable:
    return lambda spec: NETWORKS.register(name, spec, override=override)


_loaded = False
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


def load_plugins() -> None:
    """Import the built-in algorithms and every entry-point plugin (once)."""
    global _loaded
    if _loaded:
        return
    import harness.datasets  # noqa: F401  (registers datasets)
    import harness.networks  # noqa: F401  (registers network presets)

    import algorithms

    builtin = [m.name for m in sorted(pkgutil.iter_modules(algorithms.__path__), key=lambda m: m.name)
               if not m.name.startswith("_")]
    for name in builtin:
        importlib.import_module(f"algorithms.{name}")
    _check_builtins_register(builtin, algorithms.__path__)
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
    _loaded = True


def _check_builtins_register(modules: list[str], path) -> None:
    """Every module of ``algorithms/`` (not starting with ``_``) must register an algorithm defined in it:
    a file whose class lacks ``@register_algorithm`` would otherwise be skipped without a word. Checked
    by the classes' ``__module__`` (dtp.py imports tp.py, whose class is tp.py's, not dtp.py's)."""
    defined = {ALGORITHMS.get(n).__module__ for n in ALGORITHMS.names()}
    for name in modules:
        if f"algorithms.{name}" not in defined:
            where = next((Path(p) / f"{name}.py" for p in path if (Path(p) / f"{name}.py").is_file()),
                         Path("algorithms") / name)
            raise CreditbenchError(
                f"{where} registers no algorithm: decorate its Algorithm subclass with @register_algorithm "
                "(from harness.registry), or start the file's name with '_' if it is a helper module")


def get_algorithm(name: str):
    load_plugins()
    return ALGORITHMS.get(name)


def algorithm_names(pattern: str = "*") -> list[str]:
    load_plugins()
    return ALGORITHMS.names(pattern)

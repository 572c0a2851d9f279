"""What every result records about where it came from: versions, git commit, device, and the UTC time
stamp that names run directories."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("creditbench", "torch", "torchvision", "ray", "numpy", "pandas", "scikit-learn", "pydantic")


def utc_stamp() -> str:
    """The current UTC time as ``20260101T000000Z`` (run directories of ``train`` and ``sweep``)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@functools.lru_cache(maxsize=1)
def git_commit() -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        # untracked (not ignored) files count: an untracked algorithms/x.py is code the commit lacks
        changes = git("status", "--porcelain", "--untracked-files=all").stdout.splitlines()
        untracked = sorted(line[3:] for line in changes if line.startswith("??"))
        return {"commit": head.stdout.strip(), "dirty": bool(changes), "untracked": untracked[:50],
                "modified": sum(1 for line in changes if not line.startswith("??"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _source_modules(cls) -> list[str]:
    """The modules an algorithm's code comes from: those of the class and its bases (up to, not including, the
    harness's ``Algorithm``), then every module of the same package whose functions or classes they use
    (``algorithms.ddtp_rhl`` → ``algorithms.drl`` for its difference reconstruction gradient), transitively."""
    import inspect
    import sys

    queue = [k.__module__ for k in cls.__mro__
             if not (k.__module__.startswith("harness.") or k.__module__ == "builtins")]
    package = cls.__module__.split(".")[0]
    seen: list[str] = []
    while queue:
        name = queue.pop(0)
        if name in seen or name not in sys.modules:
            continue
        seen.append(name)
        for value in vars(sys.modules[name]).values():
            owner = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(owner, str) and owner.split(".")[0] == package and owner != package:
                queue.append(owner)
    return seen


def source_sha256(cls) -> dict:
    """SHA-256 of the source files that define an algorithm class (``_source_modules``), so that a result
    can be matched to its code without git."""
    import hashlib
    import inspect
    import sys

    files = []
    for name in _source_modules(cls):
        try:
            path = inspect.getsourcefile(sys.modules[name])
        except TypeError:
            continue
        if path and path not in files:
            files.append(path)
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).read_bytes())
    return {"source_sha256": digest.hexdigest(),
            "source_files": [str(Path(f).resolve().relative_to(REPO)) if Path(f).resolve().is_relative_to(REPO)
                             else str(f) for f in files]}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the architecture: floating-point results of the same
    seed can differ between CPU models (their math libraries pick different kernels)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def environment(device: torch.device) -> dict:
    return {"versions": versions(), "git": git_commit(), **device_info(device)}


def pinned_requirements(pyproject: Path = REPO / "pyproject.toml", extras: tuple = ("dev",)) -> dict[str, str]:
    """name → installed version of every distribution the project's dependencies (and ``extras``)
    pull in, followed through the installed metadata with markers evaluated here: the contents of
    ``constraints.txt`` (``make constraints``). Unrelated packages in the environment are left out."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads(pyproject.read_text())["project"]
    todo = [(Requirement(r), "") for r in project["dependencies"]]
    todo += [(Requirement(r), "") for e in extras for r in project.get("optional-dependencies", {}).get(e, [])]
    pins: dict[str, str] = {}
    seen = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            continue  # not needed here (e.g. an optional dependency of another platform)
        pins[dist.metadata["Name"]] = dist.version
        for r in dist.requires or []:
            todo += [(Requirement(r), e) for e in (sorted(req.extras) or [""])]
    return dict(sorted(pins.items(), key=lambda kv: canonicalize_name(kv[0])))


if __name__ == "__main__":  # python -m harness.provenance: constraints.txt on stdout
    print("# Exact versions installed by `make install` (pip install -c constraints.txt); regenerate: make constraints")
    for name, pinned in pinned_requirements().items():
        print(f"{name}=={pinned}")

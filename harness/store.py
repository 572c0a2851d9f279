"""Results files: atomic writes (a temporary sibling renamed into place), and safe reads.

A results directory is data, never code: checkpoints are loaded weights-only (``load_torch``)
and every value that becomes part of a path is checked by ``safe_name``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.errors import CheckpointError, ConfigError, ResultsError
from harness.names import NAME_RULE, safe_name  # noqa: F401  (the rule's owner; re-exported)

if TYPE_CHECKING:
    import pandas as pd


TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # as open() would create it (mkstemp makes 0600)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, write) -> None:
    """``write(binary_file)`` into a temporary sibling of ``path``, then rename it into place."""
    _atomic(path, write)


def remove_orphans(directory: Path) -> list[Path]:
    """Remove the temporary files of atomic writes that an interrupted process left in ``directory``
    (``.<name>.<random>.tmp``). Call it only while no other process writes there (e.g. under
    :func:`locked`)."""
    removed = []
    for tmp in Path(directory).glob(f".*{TMP_SUFFIX}"):
        if tmp.is_file() and tmp.name.count(".") >= 3:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def to_json(obj, indent: int | None = None) -> str:
    """Strict JSON (NaN becomes null) of plain data, numpy/torch scalars and paths."""
    return json.dumps(_jsonable(obj), indent=indent, allow_nan=False, sort_keys=False)


def write_json(path: Path, obj) -> None:
    write_text(path, to_json(obj, indent=2) + "\n")


def write_csv(path: Path, frame: "pd.DataFrame") -> None:
    write_text(path, frame.to_csv(index=False))


def parquet_available() -> bool:
    """Whether pyarrow can be imported (it is optional: the CSV tables are always written)."""
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def write_table(path: Path, frame: "pd.DataFrame") -> None:
    """``path`` (a ``.csv``) and, when pyarrow is importable, the same table as ``.parquet`` beside it
    (typed columns; a column mixing strings and numbers is stored as strings)."""
    write_csv(path, frame)
    if not parquet_available():
        return
    import io

    import pandas as pd

    typed = frame.copy()
    for col in [c for c in typed.columns if pd.api.types.is_object_dtype(typed[c]) or pd.api.types.is_string_dtype(typed[c])]:  # merged tables are held as text: type them
        vals = typed[col]
        if len(vals) and all(isinstance(v, str) for v in vals.tolist()):
            filled = vals[vals != ""]
            if len(filled) and set(filled) <= {"True", "False"} and len(filled) == len(vals):
                typed[col] = vals == "True"
                continue
            num = pd.to_numeric(filled, errors="coerce")
            if len(filled) and num.notna().all():
                typed[col] = pd.to_numeric(vals.where(vals != "", None), errors="coerce")
                continue
        kinds = {type(v) for v in typed[col] if v is not None and v == v}
        if len(kinds) > 1:
            typed[col] = [None if v is None or v != v else str(v) for v in typed[col]]
    buf = io.BytesIO()
    typed.to_parquet(buf, index=False)
    write_bytes(Path(path).with_suffix(".parquet"), buf.getvalue())


def save_torch(path: Path, obj) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def load_torch(path: Path, map_location=None):
    """A ``torch.save`` file read as data only (``weights_only=True``: tensors, numbers, strings, lists,
    dicts). Anything else, or an unreadable file, raises a one-line :class:`CheckpointError`."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  a weights-only load runs no code: any failure is the file's
        raise CheckpointError(f"{path}: refused to load ({_load_failure(exc)}); a checkpoint may hold only tensors, "
                              "numbers, strings, lists and dicts, and nothing in a results directory is run") from None


def _load_failure(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it refers to code, '{found.group(1)}'"
    found = re.search(r"WeightsUnpickler error: \s*(.+)", text)
    if found:
        return f"not plain data: {found.group(1).strip()}"
    if isinstance(exc, EOFError):
        return "empty or truncated file"
    first = text.strip().split("\n")[0].split(". ")[0]
    return f"{type(exc).__name__}: {first[:200]}" if first else f"unreadable: {type(exc).__name__}"


LOCK = ".lock"


@contextlib.contextmanager
def locked(directory: Path, what: str = "run directory", hint: str = "wait for it to finish or use another --out"):
    """Hold an exclusive lock on ``directory`` (``fcntl.flock`` on ``directory/.lock``) while the block
    runs; another holder makes this a one-line :class:`ResultsError`. The kernel releases the lock when
    its process ends, however it ends, so a lock file left by a dead process never blocks."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise ResultsError(f"{directory}: {what} in use by another creditbench process"
                               + (f" (pid {holder})" if holder.isdigit() else "")
                               + f"; {hint}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the lock


def check_writable(path: Path, what: str) -> Path:
    """Refuse (one-line :class:`ConfigError`) an output location that cannot be created or written,
    before any work: the nearest existing folder must be a directory we can create a file in."""
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {path}: cannot write there: {probe} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".creditbench-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot write there ({exc.strerror or type(exc).__name__}: {probe})") from None
    return path

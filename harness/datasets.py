"""Datasets, held whole on the device as tensors; batches are index slices.

``digits`` (scikit-learn's bundled 8×8 digits, offline; fixed stratified 60/20/20 split),
``mnist``, ``fashion-mnist`` and ``cifar10`` (torchvision's loaders). The validation split
is carved from the training set with a split seed independent of the trial seed;
normalisation statistics come from the training split only. CIFAR-10 training batches are
augmented on the device (random crop with padding 4, horizontal flip).

This module owns the table of datasets (``DATASETS``: id → :class:`DatasetSpec`). Reading the table
imports no torch (``creditbench list`` stays fast): torch is imported by the functions that make
tensors (``load_dataset``, ``random_crop_flip``), which every caller of them has imported already.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from harness.errors import DataError
from harness.registry import Registry

if TYPE_CHECKING:  # annotations only: torch is imported where tensors are made
    import torch

DATASETS: Registry = Registry("dataset")

DATA_DIR_ENV = "CREDITBENCH_DATA_DIR"
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


def register_dataset(name: str, *, override: bool = False) -> Callable:
    """``register_dataset("digits")(DatasetSpec(...))``."""
    return lambda spec: DATASETS.register(name, spec, override=override)


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "creditbench").expanduser()


@dataclass
class DatasetSpec:
    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    default_network: str
    val_size: int | float  # images (int) or fraction of the training set (float)
    load_raw: Callable[[Path], tuple]  # root -> (x_train, y_train, x_test, y_test) as uint8/float arrays
    missing: Callable[[Path], list[str]] = lambda root: []  # files absent under root
    augment: bool = False
    has_test_set: bool = True


@dataclass
class Data:
    """A dataset on the device: normalised float tensors (N, C, H, W) and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    fingerprint: str
    augment: bool = False
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def train_batch(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x_train[idx]
        if self.augment:
            x = random_crop_flip(x, 4, generator)
        return x, self.y_train[idx]


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Vectorised random crop (zero padding ``pad``) and horizontal flip of a batch (N, C, H, W)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    flip = torch.rand(n, 1, generator=generator, device=x.device) < 0.5
    rows = dy + torch.arange(h, device=x.device)  # (n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- raw loaders
def _load_digits(root: Path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    return x, d.target.astype(np.int64), None, None


def _idx_missing(folder: str, system_dir: Path | None = None):
    def missing(root: Path) -> list[str]:
        dirs = [root / folder / "raw"] + ([system_dir] if system_dir is not None else [])
        return [f for f in IDX_FILES if not any((d / f).exists() or (d / (f + ".gz")).exists() for d in dirs)]

    return missing


def _load_idx(cls_name: str, folder: str, system_dir: Path | None = None):
    def load(root: Path):
        import torchvision

        raw = root / folder / "raw"
        use_system = (system_dir is not None and _idx_missing(folder)(root)
                      and not _idx_missing(folder, system_dir)(root))
        for f in IDX_FILES:  # torchvision reads the decompressed files: unpack the .gz files found beside them
            sources = [raw / (f + ".gz")] + ([system_dir / (f + ".gz")] if use_system else [])
            src = next((p for p in sources if p.exists()), None)
            if src is not None and (not (raw / f).exists() or src.stat().st_mtime > (raw / f).stat().st_mtime):
                _unpack_gz(src, raw / f, cls_name)  # absent, or older than a replaced .gz
        missing = _idx_missing(folder)(root)
        created = [d for d in (root, root / folder, raw) if not d.exists()]  # what a failed download leaves
        cls = getattr(torchvision.datasets, cls_name)
        try:
            train = cls(str(root), train=True, download=bool(missing))
            test = cls(str(root), train=False, download=False)
        except Exception as exc:
            for d in reversed(created):  # leave no empty folders behind
                try:
                    d.rmdir()
                except OSError:
                    pass
            if not missing:  # every file is there: they are damaged, not absent
                raise DataError(_damaged_message(cls_name, raw, exc)) from None
            raise DataError(_missing_message(cls_name, raw, IDX_FILES, exc)) from None
        return (train.data.numpy()[:, None], train.targets.numpy(), test.data.numpy()[:, None], test.targets.numpy())

    return load


def _cifar_missing(root: Path) -> list[str]:
    if (root / "cifar-10-python.tar.gz").exists():
        return []
    folder = root / "cifar-10-batches-py"
    return [f for f in CIFAR_FILES if not (folder / f).exists()]


def _load_cifar10(root: Path):
    import torchvision

    try:
        train = torchvision.datasets.CIFAR10(str(root), train=True, download=bool(_cifar_missing(root)))
        test = torchvision.datasets.CIFAR10(str(root), train=False, download=False)
    except Exception as exc:
        raise DataError(_missing_message("CIFAR-10", root / "cifar-10-batches-py", CIFAR_FILES, exc)) from None
    to_nchw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731
    return to_nchw(train.data), np.asarray(train.targets), to_nchw(test.data), np.asarray(test.targets)


def _unpack_gz(src: Path, dst: Path, what: str) -> None:
    """``dst`` from the gzip file ``src``, written atomically (concurrent trials may do this at once); a bad
    archive or an unwritable folder ends in one line naming it."""
    from harness import store

    try:
        with gzip.open(src, "rb") as fin:
            data = fin.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; a truncated file ends in EOFError
        raise DataError(_damaged_message(what, src.parent, exc)) from None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        store.write_bytes(dst, data)
    except OSError as exc:
        raise DataError(f"cannot write the unpacked {dst.name} in {dst.parent} ({exc.strerror or exc}); make the "
                        f"folder writable or pass another --data-dir") from None


def _damaged_message(what: str, folder: Path, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"{what} files in {folder} could not be read ({type(exc).__name__}: {reason[:160]}): they are damaged "
            "or truncated; replace them with good copies (or delete them to download them again when online)")


def _missing_message(what: str, folder: Path, files, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"{what} could not be loaded ({reason[:160]}); offline, put the files {', '.join(files)} "
        f"in {folder} (or pass --data-dir / set {DATA_DIR_ENV})"
    )


register_dataset("digits")(DatasetSpec(
    "digits", "scikit-learn's bundled 8×8 handwritten digits (offline; stratified 60/20/20 split)",
    (1, 8, 8), 10, "mlp-2x128-tanh", 0.2, _load_digits, has_test_set=False))
register_dataset("mnist")(DatasetSpec(
    "mnist", "MNIST 28×28 handwritten digits (torchvision)", (1, 28, 28), 10, "mlp-5x256-tanh", 5000,
    _load_idx("MNIST", "MNIST"), _idx_missing("MNIST")))
register_dataset("fashion-mnist")(DatasetSpec(
    "fashion-mnist", "Fashion-MNIST 28×28 (torchvision; also found in /usr/share/datasets/fashion-mnist)",
    (1, 28, 28), 10, "mlp-5x256-tanh", 5000,
    _load_idx("FashionMNIST", "FashionMNIST", SYSTEM_FASHION_MNIST), _idx_missing("FashionMNIST", SYSTEM_FASHION_MNIST)))
register_dataset("cifar10")(DatasetSpec(
    "cifar10", "CIFAR-10 32×32 colour (torchvision; training split augmented on the device)",
    (3, 32, 32), 10, "mlp-3x1024-tanh", 5000, _load_cifar10, _cifar_missing, augment=True))


# --------------------------------------------------------------------------- processing
def check_available(name: str, data_dir: str | os.PathLike | None = None) -> None:
    """Fail fast, before any training: when a dataset's files are absent, try to download them
    now (torchvision), and turn a failure (e.g. offline) into one DataError naming the folder."""
    spec: DatasetSpec = DATASETS.get(name)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if spec.missing(root):
        spec.load_raw(root)  # downloads where online; raises DataError otherwise


def fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(str(a.shape).encode() + str(a.dtype).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def load_dataset(name: str, *, data_dir=None, device="cpu", split_seed: int = 0,
                 val_size: int | float | None = None) -> Data:
    """Load, split (train/val from the training set), normalise with training statistics, move to device."""
    import torch

    spec: DatasetSpec = DATASETS.get(name)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    check_available(name, root)
    x, y, x_test, y_test = spec.load_raw(root)
    fp = fingerprint(x, y, x_test, y_test)
    from sklearn.model_selection import train_test_split

    if not spec.has_test_set:  # fixed stratified 60/20/20 train/val/test
        idx = np.arange(len(y))
        rest, test_idx = train_test_split(idx, test_size=0.2, random_state=split_seed, stratify=y)
        x_test, y_test = x[test_idx], y[test_idx]
        x, y = x[rest], y[rest]
        val = val_size if val_size is not None else 0.25  # 20% of the whole
    else:
        val = val_size if val_size is not None else spec.val_size
    tr_idx, va_idx = train_test_split(np.arange(len(y)), test_size=val, random_state=split_seed, stratify=y)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32) / scale)  # noqa: E731
    x_tr, x_va, x_te = as_t(x[tr_idx]), as_t(x[va_idx]), as_t(x_test)
    mean = x_tr.mean(dim=(0, 2, 3), keepdim=True)
    std = x_tr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    norm = lambda t: ((t - mean) / std).to(device)  # noqa: E731
    lab = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64, device=device)  # noqa: E731
    return Data(
        name, norm(x_tr), lab(y[tr_idx]), norm(x_va), lab(y[va_idx]), norm(x_te), lab(y_test),
        spec.num_classes, fp, spec.augment,
        info={"train": len(tr_idx), "val": len(va_idx), "test": len(y_test), "split_seed": split_seed},
    )

from urllib.error import URLError

import pytest
import torch

from harness.datasets import check_available, load_dataset, random_crop_flip
from harness.errors import DataError, UnknownNameError
from tests.datafiles import write_cifar, write_idx


def test_digits_split_is_stratified_60_20_20_and_normalised(digits):
    n = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert n == 1797
    assert abs(len(digits.y_test) / n - 0.2) < 0.01 and abs(len(digits.y_val) / n - 0.2) < 0.01
    counts = torch.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37  # stratified
    assert digits.x_train.mean().abs() < 1e-4  # statistics from the training split
    assert digits.x_val.mean().abs() > 1e-5  # ... and only from it
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.x_train.dtype == torch.float32


def test_split_depends_on_split_seed_only():
    a, b = load_dataset("digits", split_seed=0), load_dataset("digits", split_seed=0)
    c = load_dataset("digits", split_seed=1)
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    assert a.fingerprint == c.fingerprint  # the fingerprint is of the data, not the split


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_loaders_on_generated_files(tmp_path, name, folder):
    write_idx(tmp_path, folder)
    d = load_dataset(name, data_dir=tmp_path, val_size=50)
    assert d.x_train.shape == (250, 1, 28, 28) and len(d.y_val) == 50 and len(d.y_test) == 100
    assert d.y_train.dtype == torch.int64 and set(d.y_test.tolist()) == set(range(10))
    assert len(d.fingerprint) == 16 and not d.augment


def test_idx_folder_holding_only_the_gz_files_loads(tmp_path):
    """A data folder with the four .gz files as distributed (a copy of the dataset carried to another machine):
    they are unpacked beside themselves and load as the plain files do."""
    import gzip

    raw = write_idx(tmp_path / "plain", "FashionMNIST")
    packed = tmp_path / "packed" / "FashionMNIST" / "raw"
    packed.mkdir(parents=True)
    for f in raw.iterdir():
        (packed / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
    a = load_dataset("fashion-mnist", data_dir=tmp_path / "plain", val_size=50)
    b = load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    assert a.fingerprint == b.fingerprint and torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert sorted(p.name for p in packed.iterdir() if not p.name.endswith(".gz")) == sorted(p.name for p in raw.iterdir())


def _gz_only(tmp_path, name="packed"):
    import gzip

    raw = write_idx(tmp_path / "plain", "FashionMNIST")
    packed = tmp_path / name / "FashionMNIST" / "raw"
    packed.mkdir(parents=True)
    for f in raw.iterdir():
        (packed / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
    return raw, packed


def test_idx_gz_bad_archives_end_in_one_line_and_a_replaced_archive_is_unpacked_again(tmp_path):
    import gzip
    import os

    raw, packed = _gz_only(tmp_path)
    good = (packed / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (packed / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"^FashionMNIST files in .*raw could not be read \(BadGzipFile") as e:
        load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    assert "\n" not in str(e.value)
    (packed / "t10k-labels-idx1-ubyte.gz").write_bytes(good[:len(good) // 2])  # truncated
    with pytest.raises(DataError, match="EOFError"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    # an archive of damaged contents unpacks to a damaged file; replacing the archive is enough to repair it
    (packed / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(DataError, match="damaged"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    (packed / "t10k-labels-idx1-ubyte.gz").write_bytes(good)
    later = (packed / "t10k-labels-idx1-ubyte").stat().st_mtime + 10
    os.utime(packed / "t10k-labels-idx1-ubyte.gz", (later, later))
    b = load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    assert b.fingerprint == load_dataset("fashion-mnist", data_dir=tmp_path / "plain", val_size=50).fingerprint


def test_idx_gz_an_unpacked_file_newer_than_its_archive_is_kept_and_a_local_copy_wins(tmp_path, monkeypatch):
    import os

    import harness.datasets as datasets

    raw, packed = _gz_only(tmp_path)
    load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    unpacked = packed / "train-labels-idx1-ubyte"
    past = unpacked.stat().st_mtime - 10
    os.utime(packed / "train-labels-idx1-ubyte.gz", (past, past))
    calls, real = [], datasets._unpack_gz
    monkeypatch.setattr(datasets, "_unpack_gz", lambda src, dst, what: (calls.append(src), real(src, dst, what)))
    load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    assert calls == []  # every plain file is there and newer than its archive: nothing unpacked again
    # a complete local set is used even where the system folder has the dataset too
    _, system = _gz_only(tmp_path, "system")
    spec = datasets.DATASETS.get("fashion-mnist")
    monkeypatch.setattr(spec, "load_raw", datasets._load_idx("FashionMNIST", "FashionMNIST", system))
    (packed / "train-labels-idx1-ubyte").unlink()
    load_dataset("fashion-mnist", data_dir=tmp_path / "packed", val_size=50)
    assert calls == [packed / "train-labels-idx1-ubyte.gz"]


def test_cifar_loader_on_generated_pickles(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    write_cifar(tmp_path)
    # generated files fail torchvision's md5 checks: bypass only those checks, keep the real parsing code
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)
    d = load_dataset("cifar10", data_dir=tmp_path, val_size=50)
    assert d.x_train.shape == (250, 3, 32, 32) and len(d.y_test) == 50 and d.augment
    g = torch.Generator().manual_seed(0)
    x, y = d.train_batch(torch.arange(16), g)
    assert x.shape == (16, 3, 32, 32) and torch.equal(y, d.y_train[:16])
    assert not torch.equal(x, d.x_train[:16])  # augmented


def test_random_crop_flip_is_a_crop_or_flip_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(3)
    out = random_crop_flip(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        found = any(
            torch.equal(out[i, 0], win) or torch.equal(out[i, 0], win.flip(1))
            for dy in range(5) for dx in range(5) for win in [padded[i, 0, dy:dy + 6, dx:dx + 6]]
        )
        assert found


def test_missing_files_offline_give_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as mnist

    def offline(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(mnist, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as err:
        check_available("mnist", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "train-images-idx3-ubyte" in msg and "\n" not in msg


def test_unknown_dataset():
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnsit'.*did you mean 'mnist'"):
        load_dataset("mnsit")

"""Results tables beside the CSVs: Parquet copies (when pyarrow is importable) and TensorBoard event files."""

from __future__ import annotations

import math
import sys

import pandas as pd
import pytest

from harness import store

from tests.test_sweep import write_spec  # the ray_session fixture lives in conftest.py

pyarrow = pytest.importorskip("pyarrow")  # optional: without it only the CSVs are written


def test_write_table_writes_csv_and_an_equal_parquet(tmp_path):
    frame = pd.DataFrame({
        "trial_id": ["a", "b", "c"], "epochs": [1, 2, 3], "best_val_acc": [0.5, math.nan, 0.75],
        "hp.sleep_every": [None, 10, None], "error": ["", "ValueError: x", ""],
        "mixed": ["chain", 3, None],  # a column mixing strings and numbers is stored as strings
        "plausibility.local": [True, False, True],
    })
    store.write_table(tmp_path / "trials.csv", frame)
    csv = pd.read_csv(tmp_path / "trials.csv")
    parquet = pd.read_parquet(tmp_path / "trials.parquet")
    assert list(parquet.columns) == list(frame.columns) and len(parquet) == 3
    assert parquet.epochs.dtype.kind == "i" and parquet["plausibility.local"].dtype == bool
    pd.testing.assert_series_equal(parquet.best_val_acc, csv.best_val_acc)
    assert parquet.mixed[:2].tolist() == ["chain", "3"] and parquet.mixed.isna()[2] and parquet.error.tolist() == ["", "ValueError: x", ""]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_without_pyarrow_only_the_csv_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "parquet_available", lambda: False)
    store.write_table(tmp_path / "epochs.csv", pd.DataFrame({"epoch": [1, 2]}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epochs.csv"]


def test_sweep_writes_parquet_tables_and_tensorboard_events(tmp_path):
    """One tiny sweep (bp, one search configuration, one seed): trials/epochs as CSV and Parquet; Ray Tune's
    TensorBoard logger writes event files under raw/tune/<phase>/<trial>/ (tensorboardX is in the venv)."""
    pytest.importorskip("tensorboardX")
    from harness.sweep import SweepOptions, new_sweep

    spec = write_spec(tmp_path, algorithms=["bp"], seeds=1, budgets={"search_trials": 1})
    # log: harness.sweep's default (sys.stderr bound when it was first imported) may be a closed capture
    out, code = new_sweep(SweepOptions(spec=str(spec), results_root=tmp_path / "results"), log=sys.stderr)
    assert code == 0
    for name in ("trials", "epochs"):
        csv, parquet = pd.read_csv(out / f"{name}.csv"), pd.read_parquet(out / f"{name}.parquet")
        assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv) > 0
        for col in ("trial_id", "epoch", "test_acc", "status"):
            if col in csv:
                assert parquet[col].tolist() == csv[col].tolist(), (name, col)
    events = sorted((out / "raw" / "tune").glob("*/*/events.out.tfevents.*"))
    assert {p.parent.parent.name for p in events} == {"search", "final"}, events

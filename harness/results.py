"""The results format shared by sweeps (writer) and reports (reader).

A results directory holds:

* ``trials.csv`` — one row per trial: ``trial_id, phase, config_id, algo, algo_version, dataset,
  dataset_fingerprint, network, seed, status, stop_reason, epochs, best_epoch, best_val_acc, test_acc,
  final_test_acc, updates, flops_per_update, flops_per_update_<phase>, seconds_per_update (the
  amortised mean: sleep phases included), seconds_per_update_median/_p10/_p90, peak_memory_bytes,
  wall_time_s, pretrain_flops``, the plausibility record as ``plausibility.<field>``, then every
  hyperparameter that acts in the trial's configuration (training and algorithm) as ``hp.<name>``
  (a knob that does not act is absent), then the algorithm's final
  diagnostics under their own names (e.g. ``pinv_residual``, ``contraction``) and the final
  per-layer ``angle_l<i>``.
* ``epochs.csv`` — one row per trial-epoch: ``trial_id, phase, config_id, algo, seed`` and every
  per-epoch metric of :mod:`harness.train` (accuracies, losses, cumulative ``flops_<phase>``,
  ``wall_time_s``, angles, diagnostics).
* ``spec.yaml`` (the resolved sweep spec) and ``env.json`` (versions, commit, device, dataset
  fingerprints).
"""

from __future__ import annotations

import pandas as pd

from harness.cost import PHASES

TRIAL_KEYS = ("trial_id", "phase", "config_id", "algo", "algo_version", "dataset", "dataset_fingerprint", "network",
              "seed")
SUMMARY_METRICS = (
    "status", "stop_reason", "epochs", "best_epoch", "best_val_acc", "test_acc", "final_test_acc", "updates",
    "seconds_per_update", "seconds_per_update_median", "seconds_per_update_p10", "seconds_per_update_p90",
    "peak_memory_bytes",
    "wall_time_s", "pretrain_flops",
)
EPOCH_KEYS = ("trial_id", "phase", "config_id", "algo", "seed")


def trial_row(summary: dict, *, trial_id: str, phase: str, config_id: str) -> dict:
    """Flatten one trial summary (``harness.train.Trainer.summary``) into a ``trials.csv`` row."""
    row = {"trial_id": trial_id, "phase": phase, "config_id": config_id}
    row.update({k: summary.get(k) for k in TRIAL_KEYS if k not in row})
    row.update({k: summary.get(k) for k in SUMMARY_METRICS})
    flops = summary.get("flops_per_update") or {}
    row["flops_per_update"] = flops.get("total")
    for p in PHASES:
        row[f"flops_per_update_{p}"] = flops.get(p)
    for key, value in (summary.get("plausibility") or {}).items():
        row[f"plausibility.{key}"] = value
    config = summary.get("config", {})
    for name, value in {**config.get("train", {}), **config.get("params", {})}.items():
        row[f"hp.{name}"] = value
    row.update(summary.get("diagnostics", {}))
    row.update(summary.get("angles", {}))
    return row


def epoch_rows(history: list[dict], *, trial_id: str, phase: str, config_id: str, algo: str, seed: int) -> list[dict]:
    keys = {"trial_id": trial_id, "phase": phase, "config_id": config_id, "algo": algo, "seed": seed}
    return [{**keys, **row} for row in history]


def hyperparameter_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("hp.")]

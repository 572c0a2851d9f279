"""The results format: every file name, column, status and stage name that a trial or a sweep
writes and a report reads, defined once here. Torch-, pandas- and Ray-free (pydantic only, for
:class:`TrialConfig`), so that the planner and the report import it without the training stack.

Who writes what:

* the **trainer** (:mod:`harness.train`) writes a trial's files in its directory: ``epochs.csv``
  (one row per epoch: :data:`EPOCH_METRICS`, then ``angle_l<i>`` and the algorithm's diagnostics),
  ``config.json``, ``checkpoint.pt`` (private to the trainer) and, once the trial has ended,
  ``summary.json``;
* the **sweep** (:mod:`harness.sweep`) only fans trials out and collects their summaries into a
  results directory: ``trials.csv`` (one row per trial, :func:`trial_row`), ``epochs.csv``
  (:data:`EPOCH_KEYS` + the trainer's rows, :func:`epoch_rows`), ``spec.yaml``, ``plan.json``,
  ``env.json``, ``algorithms.json`` (what each algorithm declares for the report) and ``raw/``;
* the **report** (:mod:`harness.report`) only reads them.

``trials.csv`` columns: :data:`TRIAL_KEYS`, :data:`SUMMARY_METRICS` (``n_test``: the test-set size), ``threads``,
``flops_per_update`` and ``flops_per_update_<cost phase>``, ``plausibility.<field>``, every hyperparameter that acts in the
trial's configuration as ``hp.<name>`` (a knob that does not act is absent), the algorithm's final
diagnostics under their own names, the final per-layer ``angle_l<i>``, and ``error``.

Words: a *cost phase* (``forward``, ``credit``, ``feedback``) is where an update spends its work; a
*sweep stage* (``search``, ``final``) is one Tune experiment of a sweep. The stage is written in the
``phase`` column of both tables (the file format keeps its name).
"""

from __future__ import annotations

from pydantic import Field

from harness.hparams import HParams

# ------------------------------------------------------------------------------------ file names
TRIALS_CSV = "trials.csv"
EPOCHS_CSV = "epochs.csv"
SPEC_YAML = "spec.yaml"
PLAN_JSON = "plan.json"
ENV_JSON = "env.json"
ALGORITHMS_JSON = "algorithms.json"
RAW_DIR = "raw"  # Ray Tune's storage (raw/tune/<stage>) and the trial directories (raw/trials/<trial id>)
SUMMARY_JSON = "summary.json"  # in a trial directory, once the trial has ended
CONFIG_JSON = "config.json"
CHECKPOINT = "checkpoint.pt"
TRAIN_LOG = "train.log"

# ------------------------------------------------------------------------------------ names
COST_PHASES = ("forward", "credit", "feedback")  # where an update's FLOPs and time are attributed
SWEEP_STAGES = ("search", "final")  # a sweep's Tune experiments, in order (the ``phase`` column)
SWEEP_MODES = ("both",) + SWEEP_STAGES  # which stages a sweep runs (plan.json ``mode``)
PLAN_KEYS = ("mode", "algorithms", "configs", "selected", "address", "spaces")
RUNNING = "running"  # a trial that has not ended (never written in trials.csv)
TRIAL_STATUSES = ("ok", "diverged", "failed", "stopped")  # trials.csv ``status``
FAILED_STATUSES = ("diverged", "failed")
STOP_REASONS = {"failed": "error", "stopped": "tune scheduler"}  # stop_reason the sweep gives these statuses
DEFAULT_BASELINE = "bp"  # the algorithm the report takes ratios and differences against (report --baseline)

# ------------------------------------------------------------------------------------ columns
TRIAL_KEYS = ("trial_id", "phase", "config_id", "algo", "algo_version", "dataset", "dataset_fingerprint", "network",
              "seed")
SUMMARY_METRICS = (
    "status", "stop_reason", "epochs", "best_epoch", "best_val_acc", "test_acc", "final_test_acc", "updates",
    "seconds_per_update", "seconds_per_update_median", "seconds_per_update_p10", "seconds_per_update_p90",
    "peak_memory_bytes",
    "wall_time_s", "pretrain_flops", "n_test",
)
EPOCH_KEYS = ("trial_id", "phase", "config_id", "algo", "seed")  # epochs.csv: which trial a row belongs to
FLOPS_COLUMNS = tuple(f"flops_{p}" for p in COST_PHASES) + ("flops_total",)  # cumulative, per epoch
EPOCH_METRICS = ("epoch", "updates", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 *FLOPS_COLUMNS, "wall_time_s", "seconds_per_update", "peak_memory_bytes")
ANGLE_PREFIX = "angle_l"  # angle_l<i>: the angle of layer i's update to the bp gradient (degrees)
HP_PREFIX = "hp."
PLAUSIBILITY_PREFIX = "plausibility."
# trials.csv columns that hold numbers (an empty cell is a missing value); and column prefixes that do
TRIAL_NUMERIC = ("seed", "epochs", "best_epoch", "best_val_acc", "test_acc", "final_test_acc", "updates",
                 "peak_memory_bytes", "wall_time_s", "pretrain_flops", "n_test", "threads")
EPOCH_NUMERIC = tuple(c for c in EPOCH_METRICS if not c.startswith("flops_"))
NUMERIC_PREFIXES = ("flops_", "seconds_per_update", ANGLE_PREFIX)
REQUIRED_TRIAL_COLUMNS = ("trial_id", "phase", "algo", "dataset", "network", "seed", "status")


# ------------------------------------------------------------------------------------ one trial
class TrialConfig(HParams):
    """Everything that defines one trial (the resolved form is saved with every result).

    :data:`SHARED_TRIAL_FIELDS` are the ones a sweep spec fixes for all its trials."""

    algo: str
    dataset: str = "digits"
    network: str | None = Field(None, description="preset or mlp-<depth>x<width>-<activation>; None: dataset default")
    seed: int = Field(0, ge=0, description="trial seed: initialisation, data order, algorithm noise")
    train: dict = Field(default_factory=dict, description="TrainConfig overrides")
    params: dict = Field(default_factory=dict, description="algorithm hyperparameter overrides")
    data_dir: str | None = None
    split_seed: int = Field(0, ge=0, description="seed of the train/validation split (independent of seed)")
    val_size: float | None = Field(None, gt=0, description="validation images (≥ 1) or fraction (< 1)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    probe_size: int = Field(256, ge=1, description="examples in the fixed probe batch for alignment/diagnostics")
    target_acc: float | None = Field(None, gt=0, le=1, description="report updates/FLOPs to this val accuracy")
    threads: int = Field(1, ge=1, le=1024, description="CPU threads torch uses while the trial trains "
                                                      "(part of what makes results reproducible)")


# the fields a planned trial carries (threads comes from the CPUs the trial holds) ...
TRIAL_FIELDS = tuple(f for f in TrialConfig.model_fields if f != "threads")
# ... and those the sweep spec fixes for every trial (the others: algo, seed, train, params)
SHARED_TRIAL_FIELDS = tuple(f for f in TRIAL_FIELDS if f not in ("algo", "seed", "train", "params"))


def trial_id(stage: str, config_id: str, seed: int) -> str:
    """``search-bp-c00-s0``: a sweep's trial of one configuration and seed."""
    return f"{stage}-{config_id}-s{seed}"


# ------------------------------------------------------------------------------------ rows
def trial_row(summary: dict, *, trial_id: str, phase: str, config_id: str) -> dict:
    """Flatten one trial summary (``harness.train.Trainer.summary``) into a ``trials.csv`` row."""
    row = {"trial_id": trial_id, "phase": phase, "config_id": config_id}
    row.update({k: summary.get(k) for k in TRIAL_KEYS if k not in row})
    row.update({k: summary.get(k) for k in SUMMARY_METRICS})
    row["n_test"] = (summary.get("dataset_info") or {}).get("test")  # test-set size: the report's resolution
    row["threads"] = (summary.get("config") or {}).get("threads")  # CPU threads the trial trained with
    flops = summary.get("flops_per_update") or {}
    row["flops_per_update"] = flops.get("total")
    for p in COST_PHASES:
        row[f"flops_per_update_{p}"] = flops.get(p)
    for key, value in (summary.get("plausibility") or {}).items():
        row[f"{PLAUSIBILITY_PREFIX}{key}"] = value
    config = summary.get("config", {})
    for name, value in {**config.get("train", {}), **config.get("params", {})}.items():
        row[f"{HP_PREFIX}{name}"] = value
    row.update(summary.get("diagnostics", {}))
    row.update(summary.get("angles", {}))
    return row


def epoch_rows(history: list[dict], *, trial_id: str, phase: str, config_id: str, algo: str, seed: int) -> list[dict]:
    keys = {"trial_id": trial_id, "phase": phase, "config_id": config_id, "algo": algo, "seed": seed}
    return [{**keys, **row} for row in history]


def hyperparameter_columns(frame) -> list[str]:
    return [c for c in frame.columns if c.startswith(HP_PREFIX)]


def is_diagnostic(column: str) -> bool:
    """An epoch column the algorithm added (its diagnostics), not the trainer's metric or an angle."""
    return column not in EPOCH_METRICS and not column.startswith(ANGLE_PREFIX)

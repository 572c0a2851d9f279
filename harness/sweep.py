"""Running a planned sweep with Ray Tune: fan the trials out, collect what they wrote.

The plan (which trials, configurations and seeds; the best configuration after the search) is
:mod:`harness.planning`'s; each trial is :class:`harness.train.Trainer`'s, which writes the trial's
files (``summary.json`` included) into ``<results>/raw/trials/<trial_id>``. This module only runs
each sweep stage as one Tune experiment whose ``param_space`` is a grid over the planned trials
(so the seeds of the final stage share one configuration), reports every epoch to Tune with a
checkpoint (a restarted trial — crash retry or ``--resume`` — continues from
``tune.get_checkpoint()``), and collects the trials' summaries and epochs into the results
directory (``trials.csv``, ``epochs.csv``, ``env.json``, ``algorithms.json``; the names are
:mod:`harness.schema`'s). Argument parsing is :mod:`harness.cli`'s.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from harness import store
from harness.errors import ConfigError, CreditbenchError
from harness.planning import (SweepOptions, load_resumable, planned_ids, resolve, select_best, stage_trials,
                              stages, trial_config, write_plan)
from harness.schema import (ALGORITHMS_JSON, CHECKPOINT, ENV_JSON, EPOCHS_CSV, HP_PREFIX, RAW_DIR, RUNNING,
                            STOP_REASONS, SUMMARY_JSON, TRAIN_LOG, TRIALS_CSV, epoch_rows, trial_row)
from harness.spec import SweepSpec

REPO = Path(__file__).resolve().parent.parent
SUMMARY_EVERY_S = 30.0


# =========================================================================== the trial (testable without Ray)
_DATA_CACHE: dict = {}


def _data(t: dict, device):
    from harness.datasets import load_dataset

    val = t["val_size"]
    key = (t["dataset"], t["data_dir"], t["split_seed"], val, str(device))
    if key not in _DATA_CACHE:  # reused actors keep the dataset in memory between trials
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(t["dataset"], data_dir=t["data_dir"], device=device,
                                        split_seed=t["split_seed"], val_size=int(val) if val and val >= 1 else val)
    return _DATA_CACHE[key]


def epoch_metrics(row: dict, trainer) -> dict:
    """What Tune sees each epoch: the epoch row plus the trainer's running best and status."""
    out = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update(best_val_acc=trainer.best["val_acc"], best_test_acc=trainer.best["test_acc"],
               best_epoch=trainer.best["epoch"], trial_status=trainer.status)
    return out


def train_trial(t: dict, *, checkpoint_dir: str | Path | None, report: Callable[[dict, Path], None],
                device: str | None = None) -> dict:
    """Run (or continue) one planned trial with :class:`harness.train.Trainer`.

    ``checkpoint_dir`` holds the last reported checkpoint (``None``: start afresh, discarding
    any files an earlier unreported attempt left); ``report(metrics, trial_dir)`` is called after
    every epoch, once the trial directory holds that epoch's checkpoint (and, after the last
    epoch, ``summary.json``)."""
    from harness.schema import TrialConfig
    from harness.train import Trainer, resolve_device

    trial_dir = Path(t["trials_root"]) / store.safe_name(t["trial_id"], "trial id")
    if trial_dir.exists():
        shutil.rmtree(trial_dir)
    if checkpoint_dir is not None:
        shutil.copytree(checkpoint_dir, trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrialConfig.build(trial_config(t, device), owner=t["trial_id"])
    trainer = Trainer(cfg, data=_data(t, resolve_device(cfg.device)))

    def on_epoch(row: dict, tr) -> None:  # the trainer has written the epoch's files (summary.json at the end)
        report(epoch_metrics(row, tr), trial_dir)

    with open(trial_dir / TRAIN_LOG, "a") as log:
        return trainer.run(trial_dir, on_epoch=on_epoch, log=log)


def tune_trainable(config: dict) -> None:
    """The Tune function trainable: one planned trial, resumed from Tune's checkpoint if any."""
    import ray
    import torch
    from ray import tune

    t = config["trial"]
    torch.set_num_threads(max(1, int(t["cpus"])))
    device = "cuda" if ray.get_gpu_ids() else ("cpu" if t["device"] == "auto" else t["device"])

    def report(metrics: dict, trial_dir: Path) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(trial_dir)))

    ck = tune.get_checkpoint()
    if ck is None:  # a continuation (see execute) starts from the checkpoint its first experiment left
        start = t.get("resume_from")
        train_trial(t, checkpoint_dir=start if start and Path(start).is_dir() else None, report=report, device=device)
    else:
        with ck.as_directory() as d:
            train_trial(t, checkpoint_dir=d, report=report, device=device)


# =========================================================================== Tune plumbing
def worker_runtime_env() -> dict:
    """Workers import this checkout's code (also right for an editable install), and read datasets where the
    driver does: its ``$CREDITBENCH_DATA_DIR`` when set. Workers of a cluster started with ``ray start``
    inherit that command's environment, not the driver's, so without this a driver-side data folder would be
    checked before the sweep and then looked for elsewhere by the trials (``--data-dir`` travels in the plan)."""
    from harness.datasets import DATA_DIR_ENV

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env_vars = {"PYTHONPATH": path}
    if os.environ.get(DATA_DIR_ENV):
        env_vars[DATA_DIR_ENV] = str(Path(os.environ[DATA_DIR_ENV]).expanduser().resolve())
    return {"env_vars": env_vars}


def _trial_dirname(trial) -> str:
    return trial.config["trial"]["trial_id"]


def _make_stopper():
    from ray.tune.stopper import Stopper

    class ConvergenceStopper(Stopper):
        """Stop a trial as soon as its Trainer has (patience/min_delta on validation accuracy, max
        epochs, divergence): the Trainer owns the rule and reports it as ``trial_status``."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            return result.get("trial_status", RUNNING) != RUNNING

        def stop_all(self) -> bool:
            return False

    return ConvergenceStopper()


def _progress_callback(stage: str, scheduler: bool = False):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per finished trial and a short summary every SUMMARY_EVERY_S seconds."""

        def setup(self, **info):
            self.last = self.start = time.monotonic()
            self.done = 0

        def _line(self, trial, what: str, trials) -> None:
            r = trial.last_result or {}
            t = trial.config["trial"]
            self.done += 1
            # a trial without a valid epoch (diverged at once) has no best accuracy yet (the Trainer's -1)
            acc = lambda k: (f"{r[k]:.4f}" if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])  # noqa: E731
                             and r[k] >= 0 else "-")
            print(f"[{stage}] {t['trial_id']:<28} {what:<9} epochs {r.get('epoch', 0):>3}  "
                  f"best val {acc('best_val_acc')}  test {acc('best_test_acc')}  ({self._counts(trials)})",
                  file=sys.stderr, flush=True)

        def _counts(self, trials) -> str:
            """``3/10 done, 2 running, 5 pending, elapsed 1:02, ETA 2:25`` (ETA: Tune's trial states, at the
            rate trials have finished so far in this run)."""
            from harness.train import clock

            states = [tr.status for tr in trials]
            done = max(self.done, sum(s in ("TERMINATED", "ERROR") for s in states))  # the one completing may
            failed, running = states.count("ERROR"), min(states.count("RUNNING"), len(states) - done)  # still run
            elapsed = time.monotonic() - self.start
            eta = clock(elapsed / self.done * (len(states) - done)) if self.done and done < len(states) else "-"
            return (f"{done}/{len(states)} done{f' ({failed} failed)' if failed else ''}, {running} running, "
                    f"{len(states) - done - running} pending, elapsed {clock(elapsed)}, ETA {eta}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            status = (trial.last_result or {}).get("trial_status", RUNNING)
            # running: Tune ended it, the scheduler (ASHA) or an interruption (Ctrl+C)
            self._line(trial, ("stopped" if scheduler else "interrupted") if status == RUNNING else status, trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED", trials)

        def on_step_end(self, iteration, trials, **info):
            if time.monotonic() - self.last < SUMMARY_EVERY_S:
                return
            self.last = time.monotonic()
            print(f"[{stage}] {self._counts(trials)}", file=sys.stderr, flush=True)

    return Progress()


def _gpus_per_trial(spec: SweepSpec) -> float:
    import ray

    g = spec.resources.gpus_per_trial
    if g == "auto":
        return 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return float(g)


def ray_address(address: str | None) -> str:
    """The Ray a sweep runs on: ``--address``, else ``$RAY_ADDRESS``, else ``local`` (a private Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def _start_ray(spec: SweepSpec, address: str | None) -> bool:
    """Start (or join) Ray; return whether this call started it (and so must shut it down)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    address = ray_address(address)
    kwargs = dict(include_dashboard=False, runtime_env=worker_runtime_env(), logging_level=logging.WARNING,
                  log_to_driver=False)  # each trial logs to raw/trials/<id>/train.log; errors reach Tune
    if address == "local":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray runs workers at nice 15 by default: on a shared machine trials would then get far less
        # CPU than the same work run by `creditbench train`, which distorts time per update
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(address="local", num_cpus=spec.resources.num_cpus or os.cpu_count(),
                 object_store_memory=spec.resources.object_store_mb * 2**20, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


def _has_scheduler(spec: SweepSpec, stage: str) -> bool:
    """Whether a Tune scheduler may stop running trials in ``stage`` (ASHA, search stage only)."""
    return stage == "search" and spec.stopping.search_scheduler == "asha"


def run_stage(experiment: str, trials: list[dict], spec: SweepSpec, out_dir: Path, *, callbacks=()):
    """Run (or restore and finish) one Tune experiment (a sweep stage, or a continuation of one, named
    ``<stage>-continue<k>``, which has no scheduler); return (ResultGrid, interrupted)."""
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables; Progress prints instead
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    storage = (out_dir / RAW_DIR / "tune").resolve()
    exp = storage / experiment
    gpus = _gpus_per_trial(spec)
    trainable = tune.with_resources(tune_trainable, {"cpu": spec.resources.cpus_per_trial, "gpu": gpus})
    if tune.Tuner.can_restore(str(exp)):
        tuner = tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=False)
    else:
        search = experiment == "search"
        st = spec.stopping
        scheduler = None
        if search and st.search_scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max",
                                      max_t=spec.budgets.search_epochs, grace_period=st.asha_grace_epochs)
        stopper = _make_stopper()
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=spec.resources.reuse_actors,
                                        max_concurrent_trials=spec.resources.max_concurrent,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=experiment, storage_path=str(storage), stop=stopper, verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[_progress_callback(experiment, _has_scheduler(spec, experiment)), *callbacks]),
        )
    before = signal.getsignal(signal.SIGINT)
    try:
        grid = tuner.fit()
    finally:
        after = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, before)  # Tune leaves its handler installed: a later Ctrl+C would do nothing
    # Tune stops for Ctrl+C by marking every trial terminated (so the counts cannot tell); its handler puts
    # the previous one back when a signal arrives, which is how an interruption is told from the end
    by_signal = after is before and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") or 0)
    interrupted = by_signal or grid.num_terminated + grid.num_errors < len(grid)
    return grid, interrupted


# =========================================================================== collecting results
def collect(grid, planned: list[dict], *, interrupted: bool = False, scheduler: bool = False,
            log=sys.stderr, declared: dict | None = None) -> tuple[list[dict], list[dict], set[str]]:
    """trials.csv and epochs.csv rows of the finished trials, in plan order; and the unfinished ids.

    A trial that Tune ended while its Trainer was still running was stopped by the scheduler
    (``scheduler``: the stage has one, e.g. ASHA) unless the stage was ``interrupted``; otherwise it
    was interrupted: it is not finished, gets no row, and continues on resume. ``declared`` (if given)
    receives each algorithm's ``report_labels`` from its trials' summaries (``algorithms.json``)."""
    by_id = {}
    for result in grid if grid is not None else ():
        tid = _result_trial_id(result)
        if tid is not None:
            by_id[tid] = result
    rows, epochs, unfinished = [], [], set()
    for t in planned:
        summary, history, error = _collect_trial(t, by_id.get(t["trial_id"]), interrupted=interrupted,
                                                 scheduler=scheduler, log=log)
        if summary is None:
            unfinished.add(t["trial_id"])
            continue
        if declared is not None and "report_labels" in summary:
            declared.setdefault(t["algo"], _declaration(summary))
        row = trial_row(summary, trial_id=t["trial_id"], phase=t["phase"], config_id=t["config_id"])
        row["error"] = error
        rows.append(row)
        epochs += epoch_rows(history, trial_id=t["trial_id"], phase=t["phase"], config_id=t["config_id"],
                             algo=t["algo"], seed=t["seed"])
    return rows, epochs, unfinished


def _declaration(summary: dict) -> dict:
    """What an algorithm declares for the report, from one trial's summary (``algorithms.json``): its
    diagnostics' labels and units, and its declared search space (for results without a spec)."""
    rows = (summary.get("algorithm") or {}).get("hyperparameters") or []
    return {"diagnostics": summary["report_labels"],
            "search_space": {r["name"]: r["search"] for r in rows if isinstance(r, dict) and r.get("search")}}


def _collect_trial(t: dict, result, *, interrupted: bool, scheduler: bool, log) -> tuple[dict | None, list, str]:
    """(summary, history, error) of one planned trial from its Tune result; summary None: unfinished.

    The summary is the one the trainer wrote; a trial that did not end by itself (it failed, or ASHA
    stopped it) gets one rebuilt from its checkpoint (:func:`harness.train.summary_from_checkpoint`)."""
    from harness.train import summary_from_checkpoint, trial_history

    summary, history, error, ended_running = None, [], "", False
    if result is not None and result.error is not None:
        error = f"{type(result.error).__name__}: {str(result.error).strip().splitlines()[-1][:300]}"
    ck = result.checkpoint if result is not None else None
    if ck is not None:
        try:
            with ck.as_directory() as d:
                d = Path(d)
                history = trial_history(d / CHECKPOINT)
                if (d / SUMMARY_JSON).exists():
                    summary = json.loads((d / SUMMARY_JSON).read_text())
                elif error:
                    summary = summary_from_checkpoint(d / CHECKPOINT, status="failed", stop_reason=STOP_REASONS["failed"])
                elif result is not None and _terminated(result):
                    if scheduler and not interrupted:  # ASHA stopped a slow starter: it is finished
                        summary = summary_from_checkpoint(d / CHECKPOINT, status="stopped",
                                                          stop_reason=STOP_REASONS["stopped"])
                    else:  # only an interruption ends a running trial here: it is not finished
                        ended_running = True
        except (CreditbenchError, OSError, ValueError, KeyError, TypeError) as exc:
            # a damaged Tune checkpoint fails this trial only: every other row is kept
            summary, history = None, []
            error = f"damaged checkpoint: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"[:400]
            print(f"warning: {t['trial_id']}: {error}", file=log, flush=True)
    if summary is None and error and not ended_running:
        summary = {"algo": t["algo"], "dataset": t["dataset"], "network": t["network"], "seed": t["seed"],
                   "status": "failed", "stop_reason": STOP_REASONS["failed"], "epochs": 0,
                   "config": {"train": t["train"], "params": t["params"]}}
    return summary, history, error


MAX_CONTINUATIONS = 3


def _checkpoint_dirs(grid, trial_ids: set) -> dict:
    """trial id → local directory of its latest Tune checkpoint, for the trials in ``trial_ids``."""
    out = {}
    for result in grid if grid is not None else ():
        tid = _result_trial_id(result)
        if tid in trial_ids and result.checkpoint is not None and Path(result.checkpoint.path).is_dir():
            out[tid] = result.checkpoint.path
    return out


def _result_trial_id(result) -> str | None:
    """The planned trial a Tune result belongs to. ``result.config`` is ``None`` for a trial that never
    reported (e.g. Ctrl+C before its first epoch); its directory is still named after the trial id."""
    config = result.config
    if isinstance(config, dict) and isinstance(config.get("trial"), dict):
        return config["trial"].get("trial_id")
    path = getattr(result, "path", None)
    return Path(path).name if path else None


def _terminated(result) -> bool:
    # a trial Tune stopped reports "done" in its last result
    return bool((result.metrics or {}).get("done"))


def _trial_columns(rows: list[dict]) -> list[str]:
    """Summary columns, then every hyperparameter, then diagnostics and angles, then ``error``."""
    seen = list(dict.fromkeys(k for row in rows for k in row))
    hps = [c for c in seen if c.startswith(HP_PREFIX)]
    first_hp = next((i for i, c in enumerate(seen) if c.startswith(HP_PREFIX)), len(seen))
    head = [c for c in seen[:first_hp] if c != "error"]
    tail = [c for c in seen[first_hp:] if not c.startswith(HP_PREFIX) and c != "error" and c not in head]
    return head + hps + tail + (["error"] if "error" in seen else [])


def _read_table(path: Path, log=sys.stderr, *, aside: bool = True):
    """A table already on disk, every cell as its text (so rewriting it changes nothing); None if absent.
    A table that cannot be parsed is kept aside as ``<name>.damaged`` rather than overwritten."""
    import pandas as pd

    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        if aside:
            kept = path.with_name(path.name + ".damaged")
            os.replace(path, kept)
            print(f"warning: {path} could not be read ({type(exc).__name__}); kept as {kept}", file=log, flush=True)
        return None


def _as_text(frame):
    import io

    import pandas as pd

    if frame.empty and not len(frame.columns):
        return frame
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)), dtype=str, keep_default_na=False)


def merge_tables(out_dir: Path, rows: list[dict], epochs: list[dict], log=sys.stderr):
    """trials.csv and epochs.csv as they will be written: what is on disk, plus the rows of trials it
    does not hold yet. A finished trial's row on disk is never replaced, so a table is only ever
    replaced by a superset of itself (a resume whose collection fails for one trial loses nothing)."""
    import pandas as pd

    new_t = _as_text(pd.DataFrame(rows, columns=_trial_columns(rows)))
    new_e = _as_text(pd.DataFrame(epochs))
    old_t, old_e = _read_table(out_dir / TRIALS_CSV, log), _read_table(out_dir / EPOCHS_CSV, log)
    if old_t is None or "trial_id" not in old_t.columns:
        trials = new_t
        kept: set = set()
    else:
        kept = set(old_t["trial_id"])
        add = new_t[~new_t["trial_id"].isin(kept)] if "trial_id" in new_t.columns else new_t.iloc[0:0]
        trials = pd.concat([old_t, add], ignore_index=True, sort=False).fillna("")
    if old_e is None or "trial_id" not in old_e.columns:
        frame_e = new_e
    else:
        have = kept | set(old_e["trial_id"])
        add = new_e[~new_e["trial_id"].isin(have)] if "trial_id" in new_e.columns else new_e.iloc[0:0]
        frame_e = pd.concat([old_e, add], ignore_index=True, sort=False).fillna("")
    return trials, frame_e


def write_tables(out_dir: Path, rows: list[dict], epochs: list[dict], log=sys.stderr):
    """Write the merged tables (see :func:`merge_tables`); return the trials frame written."""
    trials, frame_e = merge_tables(out_dir, rows, epochs, log)
    store.write_table(out_dir / TRIALS_CSV, trials)  # + .parquet
    store.write_table(out_dir / EPOCHS_CSV, frame_e)
    return trials


def _nodes() -> list[dict]:
    """The cluster's live nodes (address and resources): which machines the trials could run on."""
    import ray

    return sorted(({"address": n.get("NodeManagerAddress"), "hostname": n.get("NodeManagerHostname"),
                    "resources": {k: v for k, v in (n.get("Resources") or {}).items() if k in ("CPU", "GPU")}}
                   for n in ray.nodes() if n.get("Alive")), key=lambda n: (str(n["address"]), str(n["hostname"])))


def _env(spec: SweepSpec, rows: list[dict], started: float, argv: list[str] | None,
         resumed_with: dict | None = None, address: str | None = None) -> dict:
    import ray
    import torch

    from harness.provenance import environment

    env = environment(torch.device("cuda" if torch.cuda.is_available() and spec.device != "cpu" else "cpu"))
    env["command"] = argv
    if resumed_with is not None:  # a resume: the options it applied on top of the plan (none: {})
        env["resumed_with"] = resumed_with
    env["ray"] = {"address": address, "cluster_resources": ray.cluster_resources() if ray.is_initialized() else None,
                  "nodes": _nodes() if ray.is_initialized() else None}
    fps = sorted({r.get("dataset_fingerprint") for r in rows if r.get("dataset_fingerprint")})
    if len(fps) > 1:
        raise CreditbenchError(f"trials of one sweep saw different data for {spec.dataset}: fingerprints {fps}")
    env["dataset"] = {"name": spec.dataset, "fingerprints": {spec.dataset: fps[0]} if fps else {}}
    env["sweep_wall_time_s"] = time.time() - started
    return env


# =========================================================================== the sweep
def execute(out_dir: Path, spec: SweepSpec, plan: dict, *, callbacks=(), argv=None, log=sys.stderr,
            resumed_with: dict | None = None, on_finished: Callable[[Path], None] | None = None) -> int:
    """Run the stages that are not finished yet; write the tables after each. Return an exit code.
    ``on_finished(out_dir)`` is called once every stage has finished (the CLI prints its table).

    The results directory is locked meanwhile: a second sweep (or resume) into it is refused."""
    started = time.time()
    trials_root = (out_dir / RAW_DIR / "trials").resolve()
    with store.locked(out_dir, "sweep directory", hint="wait for that sweep to finish"):
        store.remove_orphans(out_dir)  # temporary files of table writes an interrupted sweep left behind
        run = _Run(out_dir, spec, plan, callbacks=callbacks, argv=argv, log=log, resumed_with=resumed_with,
                   started=started, trials_root=trials_root)
        code = run.all_stages()
        if code == 0 and on_finished is not None:
            on_finished(out_dir)
        return code


def every_trial_failed(rows: list[dict]) -> str | None:
    """One line when a run had trials and none of them finished (status ``failed``): a sweep that measured
    nothing must not exit as a success (its tables are written all the same)."""
    if not rows or any(r.get("status") != "failed" for r in rows):
        return None
    first = next((str(r["error"]).splitlines()[0] for r in rows if r.get("error")), "no error recorded")
    return f"every trial failed ({len(rows)}; the first: {first}); see trials.csv"


class _Run:
    """One execution of a plan: the rows collected so far, and where it stands (for an interruption)."""

    def __init__(self, out_dir, spec, plan, *, callbacks, argv, log, resumed_with, started, trials_root):
        self.out_dir, self.spec, self.plan = out_dir, spec, plan
        self.callbacks, self.argv, self.log = callbacks, argv, log
        self.resumed_with, self.started, self.trials_root = resumed_with, started, trials_root
        self.rows: list[dict] = []
        self.epochs: list[dict] = []
        self.declared: dict = {}
        self.stage, self.planned, self.unfinished = None, [], set()

    def all_stages(self) -> int:
        import ray

        owns_ray = False
        try:
            owns_ray = _start_ray(self.spec, self.plan.get("address"))
            for stage in stages(self.plan["mode"]):
                if not self.one_stage(stage):
                    self.interrupted_line()
                    return 130
            problem = every_trial_failed(self.rows)
            if problem:
                print(f"error: {problem}", file=self.log, flush=True)
                return 1
            return 0
        except KeyboardInterrupt:  # Ctrl+C outside Tune (starting Ray, collecting, writing): keep what finished
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tables are written before stopping
            try:
                self.write()
            finally:
                signal.signal(signal.SIGINT, previous)
            self.interrupted_line()
            return 130
        finally:
            if owns_ray:
                ray.shutdown()

    def one_stage(self, stage: str) -> bool:
        """Run one stage (and continuations of trials Tune ended early); write the tables. Return
        whether every trial of the stage finished."""
        self.stage = stage
        self.planned = stage_trials(self.spec, self.plan, stage, self.trials_root)
        self.unfinished = {t["trial_id"] for t in self.planned}
        print(f"[{stage}] {len(self.planned)} trials: {', '.join(self.plan['algorithms'])}", file=self.log, flush=True)
        grid, interrupted = self.run(stage, self.planned)
        rows, epochs, self.unfinished = collect(grid, self.planned, interrupted=interrupted,
                                                scheduler=_has_scheduler(self.spec, stage), log=self.log,
                                                declared=self.declared)
        for k in range(1, MAX_CONTINUATIONS + 1):
            if interrupted or not self.unfinished:
                break
            # Tune ended these trials (e.g. stopping them for an interruption) before their Trainer
            # finished: Tune will not run them again, so they continue from their last checkpoint in a
            # continuation experiment of their own
            starts = _checkpoint_dirs(grid, self.unfinished)
            retry = [{**t, "resume_from": starts.get(t["trial_id"])} for t in self.planned
                     if t["trial_id"] in self.unfinished]
            print(f"[{stage}] {len(retry)} trial(s) ended before they finished: continuing them "
                  f"({', '.join(t['trial_id'] for t in retry)})", file=self.log, flush=True)
            grid, interrupted = self.run(f"{stage}-continue{k}", retry)
            more_rows, more_epochs, self.unfinished = collect(grid, retry, interrupted=interrupted, log=self.log,
                                                              declared=self.declared)
            rows, epochs = rows + more_rows, epochs + more_epochs
        self.rows += rows
        self.epochs += epochs
        self.write()
        if interrupted or self.unfinished:
            return False
        if stage == "search" and self.plan["mode"] == "both" and not self.plan["selected"]:  # a resume keeps its choice
            self.plan["selected"] = select_best(rows, self.plan["algorithms"])
            write_plan(self.out_dir, self.spec, self.plan)
            for algo, cid in self.plan["selected"].items():
                print(f"[search] {algo}: best configuration {cid}", file=self.log, flush=True)
        return True

    def run(self, experiment: str, trials: list[dict]):
        try:
            return run_stage(experiment, trials, self.spec, self.out_dir, callbacks=self.callbacks)
        except KeyboardInterrupt:  # a second Ctrl+C while Tune was stopping: read what it saved
            return _saved_grid(experiment, self.out_dir), True

    def write(self) -> None:
        write_tables(self.out_dir, self.rows, self.epochs, self.log)
        store.write_json(self.out_dir / ENV_JSON, _env(self.spec, self.rows, self.started, self.argv, self.resumed_with,
                                                       ray_address(self.plan.get("address"))))
        write_declarations(self.out_dir, self.declared)

    def interrupted_line(self) -> None:
        _interrupted_line(self.out_dir, self.stage, self.planned, self.unfinished, self.log)


def write_declarations(out_dir: Path, declared: dict) -> None:
    """``algorithms.json``: what each algorithm declares for the report (:func:`_declaration`), as its
    trials' summaries recorded it; merged with the file a previous run of the sweep wrote."""
    path = out_dir / ALGORITHMS_JSON
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        old = {}
    merged = {**(old if isinstance(old, dict) else {}), **declared}
    if merged:
        store.write_json(path, dict(sorted(merged.items())))


def _interrupted_line(out_dir: Path, stage, planned: list, unfinished: set, log) -> None:
    done = f"{len(planned) - len(unfinished)} of {len(planned)} {stage} trials finished; " if stage else ""
    print(f"interrupted: {done}continue with: creditbench sweep --resume {out_dir}", file=log, flush=True)


def _saved_grid(experiment: str, out_dir: Path):
    """The ResultGrid Tune saved for ``experiment`` (read without running anything), or None."""
    from ray import tune

    exp = (out_dir / RAW_DIR / "tune" / experiment).resolve()
    try:
        if tune.Tuner.can_restore(str(exp)):
            return tune.Tuner.restore(str(exp), tune_trainable).get_results()
    except Exception:  # noqa: BLE001  nothing saved yet: every trial of the stage is unfinished
        pass
    return None


def new_sweep(opts: SweepOptions, *, callbacks=(), argv=None, log=sys.stderr,
              on_finished: Callable[[Path], None] | None = None) -> tuple[Path, int]:
    """Validate, create the results directory, run. Nothing is created if validation fails."""
    from harness.provenance import utc_stamp

    store.check_writable(opts.results_root, "--results")  # before the spec's data is loaded
    spec, plan = resolve(opts)
    out_dir = Path(opts.results_root).resolve() / f"{spec.name}-{utc_stamp()}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:  # mkdir is the test: two sweeps of one name started in the same second get different folders
        try:
            out_dir.mkdir()
            break
        except FileExistsError:
            out_dir = out_dir.parent / f"{spec.name}-{utc_stamp()}-{n}"
            n += 1
    write_plan(out_dir, spec, plan)
    return out_dir, execute(out_dir, spec, plan, callbacks=callbacks, argv=argv, log=log, on_finished=on_finished)



def finished_trials(out_dir: Path, spec: SweepSpec, plan: dict) -> int | None:
    """The number of planned trials when trials.csv holds every one of them (the sweep is finished), else None."""
    if plan["mode"] == "both" and not plan["selected"]:
        return None
    table = _read_table(out_dir / TRIALS_CSV, aside=False)
    if table is None or "trial_id" not in table.columns:
        return None
    planned = planned_ids(spec, plan)
    return len(planned) if set(planned) <= set(table["trial_id"]) else None


def resume_sweep(out_dir: Path, *, address: str | None = None, num_cpus: int | None = None, callbacks=(), argv=None,
                 log=sys.stderr, on_finished: Callable[[Path], None] | None = None) -> tuple[Path, int]:
    """Continue an interrupted sweep: finished trials are kept, unfinished ones continue."""
    out_dir = Path(out_dir).resolve()
    spec, plan = load_resumable(out_dir)
    done = finished_trials(out_dir, spec, plan)
    if done is None:
        store.check_writable(out_dir, "--resume")
    if done is not None:
        print(f"{out_dir}: the sweep is finished (all {done} planned trials are in trials.csv); nothing to resume, "
              "nothing changed", file=log, flush=True)
        return out_dir, 0
    resumed_with = {}
    if address is not None:
        plan["address"] = resumed_with["address"] = address
    if num_cpus is not None:
        if num_cpus < 1:
            raise ConfigError(f"--num-cpus must be ≥ 1, got {num_cpus}")
        spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"num_cpus": num_cpus})})
        resumed_with["num_cpus"] = num_cpus
    print(f"resuming {out_dir}: Ray Tune restores its own state under {RAW_DIR}/ by unpickling it "
          "(resume only directories you created)", file=log, flush=True)
    return out_dir, execute(out_dir, spec, plan, callbacks=callbacks, argv=argv, log=log, resumed_with=resumed_with,
                            on_finished=on_finished)

"""Sweeps with Ray Tune: every registered algorithm, the same budgets and seeds, two phases.

Protocol (docs/design.md): a *search* phase (``budgets.search_trials`` configurations per algorithm,
drawn first with a seeded sampler from the algorithm's search space, one seed each), then a
*final* phase (each algorithm's best configuration by validation accuracy × every seed,
trained to convergence: patience/min_delta on validation accuracy, at most
``budgets.final_epochs``). Each phase is one Tune experiment whose ``param_space`` is a grid
over the planned trials, so the seeds of the final phase share one configuration.

Each trial runs :class:`harness.train.Trainer` in its own directory under
``<results>/raw/trials/<trial_id>`` and reports every epoch to Tune with a checkpoint; a
restarted trial (crash retry or ``--resume``) continues from ``tune.get_checkpoint()``.
Results go to ``results/<spec>-<UTC stamp>/`` (``trials.csv``, ``epochs.csv``, ``spec.yaml``,
``plan.json``, ``env.json``; Tune's own storage under ``raw/``). Everything checkable is
checked before Ray starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from harness import store
from harness.errors import ConfigError, CreditbenchError, ResultsError, UnknownNameError
from harness.results import epoch_rows, trial_row
from harness.spec import (ALL, BUDGET_KEYS, SweepSpec, load_spec, parse_spec, sample_configs, space_to_yaml,
                          spec_for_dataset, split_train, validate)

REPO = Path(__file__).resolve().parent.parent
RAW = "raw"
PHASES = ("search", "final")
TRIAL_FIELDS = ("algo", "dataset", "network", "seed", "train", "params", "data_dir", "split_seed", "val_size",
                "device", "probe_size", "target_acc")
SUMMARY_EVERY_S = 30.0


# =========================================================================== planning (no Ray)
@dataclass
class SweepOptions:
    """What the command line (or ``make sweep``) asks for, on top of a spec."""

    spec: str | None = None
    algo: str | None = None  # one id, a comma list, or "all"
    dataset: str | None = None
    network: str | None = None
    seeds: int | None = None
    trials: int | None = None
    epochs: int | None = None
    address: str | None = None
    search_only: bool = False
    final_only: bool = False
    sets: dict = field(default_factory=dict)  # --set key=value (fixed for every algorithm)
    results_root: Path = Path("results")
    data_dir: str | None = None
    num_cpus: int | None = None
    max_concurrent: int | None = None
    name: str | None = None


def _algorithm_list(value, source: str) -> list[str]:
    from harness.registry import algorithm_names

    registered = algorithm_names()
    if value == ALL or value == [ALL]:
        return registered
    names = [a.strip() for a in value.split(",")] if isinstance(value, str) else list(value)
    names = [a for a in names if a]
    if not names:
        raise ConfigError(f"{source}: no algorithm given; valid: {ALL}, {', '.join(registered)}")
    for a in names:
        if a not in registered:
            raise UnknownNameError(f"algorithm at {source}", a, registered + [ALL])
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: algorithm listed twice in {names}")
    return names


def _check_network(spec: SweepSpec, algorithms: list[str]) -> str:
    """The network every algorithm trains, checked against each algorithm's capabilities."""
    from harness.networks import build_network
    from harness.registry import DATASETS, get_algorithm

    ds = DATASETS.get(spec.dataset)
    name = spec.network or ds.default_network
    net = build_network(name, ds.input_shape, ds.num_classes)
    for algo in algorithms:
        get_algorithm(algo).capabilities.check(algo, net)
    return name


def resolve(opts: SweepOptions) -> tuple[SweepSpec, dict]:
    """Apply the options to the spec and validate everything; return the resolved spec and the plan.

    Raises a :class:`CreditbenchError` on anything wrong, before any output or Ray."""
    from harness.datasets import check_available, default_data_dir
    from harness.hparams import TrainConfig, split_overrides
    from harness.registry import DATASETS, get_algorithm, load_plugins

    load_plugins()
    if opts.search_only and opts.final_only:
        raise ConfigError("--search-only and --final-only exclude each other")
    if opts.dataset is not None:
        DATASETS.get(opts.dataset)
    source = opts.spec or (spec_for_dataset(opts.dataset) if opts.dataset else "default")
    spec, path = load_spec(source)
    if opts.name is not None:  # the results directory's prefix
        store.safe_name(opts.name, "--name")
    else:
        store.safe_name(spec.name, f"{path}: name")
    update: dict = {}
    if opts.dataset is not None and opts.dataset != spec.dataset:
        update.update(dataset=opts.dataset, network=None, val_size=None)
    if opts.network is not None:
        update["network"] = opts.network
    if opts.data_dir is not None:
        update["data_dir"] = opts.data_dir
    if opts.name is not None:
        update["name"] = opts.name
    if opts.seeds is not None:
        if opts.seeds < 1:
            raise ConfigError(f"--seeds must be ≥ 1, got {opts.seeds}")
        update["seeds"] = opts.seeds
    budgets = spec.budgets.model_dump()
    if opts.trials is not None:
        if opts.trials < 0:
            raise ConfigError(f"--trials must be ≥ 0, got {opts.trials}")
        budgets["search_trials"] = opts.trials
    if opts.epochs is not None:
        if opts.epochs < 1:
            raise ConfigError(f"--epochs must be ≥ 1, got {opts.epochs}")
        budgets["final_epochs"] = opts.epochs
        budgets["search_epochs"] = min(budgets["search_epochs"], opts.epochs)
    resources = spec.resources.model_dump()
    if opts.num_cpus is not None:
        resources["num_cpus"] = opts.num_cpus
    if opts.max_concurrent is not None:
        resources["max_concurrent"] = opts.max_concurrent
    spec = parse_spec({**spec.model_dump(), **update, "budgets": budgets, "resources": resources},
                      f"{path} with command-line options")
    DATASETS.get(spec.dataset)
    from harness.train import parse_device

    parse_device(spec.device)
    if opts.algo is not None:
        algorithms = _algorithm_list(opts.algo, "--algo")
    try:
        if opts.algo is None:
            algorithms = _algorithm_list(spec.algorithms, "algorithms")
        spaces = validate(spec, algorithms)
        network = _check_network(spec, algorithms)
    except CreditbenchError as exc:  # name the spec file in the one-line message
        exc.args = (f"{path}: {exc.args[0]}",) + exc.args[1:]
        raise

    sets = dict(opts.sets)
    for key in sets:
        if key in BUDGET_KEYS:
            raise ConfigError(f"--set {key}: '{key}' is set by {BUDGET_KEYS[key]} (or --epochs), not --set")
    mode = "search" if opts.search_only else "final" if opts.final_only or spec.budgets.search_trials == 0 else "both"
    if mode == "search" and spec.budgets.search_trials == 0:
        raise ConfigError("--search-only needs at least one search trial (budgets.search_trials / --trials)")
    fixed = {}
    for algo in algorithms:
        cls = get_algorithm(algo)
        given_train, given_params = split_overrides(sets, cls.Params, algo)
        base_train, base_params = split_train(spec.params.get(algo, {}))
        train = {**spec.optimizer, **base_train, **given_train}
        params = {**base_params, **given_params}
        tc = TrainConfig.build(train, owner=f"{algo} (fixed)")
        pc = cls.Params.build(params, owner=f"{algo} (fixed)")
        # keep only the keys given, as their validated values (--set passes strings)
        fixed[algo] = {"train": {k: getattr(tc, k) for k in train}, "params": {k: getattr(pc, k) for k in params}}
        for key in set(given_train) | set(given_params):
            spaces[algo].pop(key, None)  # a value given on the command line is not searched
    data_dir = str(Path(spec.data_dir).expanduser().resolve()) if spec.data_dir else None
    check_available(spec.dataset, data_dir)
    # prepare the files once here (e.g. Fashion-MNIST is decompressed from the system copy on first
    # use), so that concurrent trials never write the same files at once
    DATASETS.get(spec.dataset).load_raw(Path(data_dir) if data_dir else default_data_dir())

    if mode == "final":  # no search: a fixed value must act in the one configuration that runs
        for algo in algorithms:
            TrainConfig.build(fixed[algo]["train"], owner=f"{algo} (fixed)", refuse_inactive=True)
            get_algorithm(algo).Params.build(fixed[algo]["params"], owner=f"{algo} (fixed)", refuse_inactive=True)
    configs = {}
    if mode != "final":
        for algo in algorithms:
            draws = sample_configs(spaces[algo], spec.budgets.search_trials, seed=spec.sampler_seed, algo=algo)
            configs[algo] = []
            cls = get_algorithm(algo)
            for k, draw in enumerate(draws):
                train, params = split_train(draw)
                train, params = {**fixed[algo]["train"], **train}, {**fixed[algo]["params"], **params}
                # a knob whose value cannot act in this configuration is not part of it (no phantom knobs)
                idle = TrainConfig.inactive({**spec.optimizer, **train}) | cls.Params.inactive(params)
                configs[algo].append({"config_id": f"{algo}-c{k:02d}",
                                      "train": {k2: v for k2, v in train.items() if k2 not in idle},
                                      "params": {k2: v for k2, v in params.items() if k2 not in idle}})
    else:
        configs = {algo: [{"config_id": f"{algo}-given", **fixed[algo]}] for algo in algorithms}

    declared = {a: set(TrainConfig.search_space()) | set(get_algorithm(a).Params.search_space()) for a in algorithms}
    given = {a: {k: v for k, v in {**fixed[a]["train"], **fixed[a]["params"]}.items()
                 if k in spec.params.get(a, {}) or k in sets} for a in algorithms}
    resolved = spec.model_copy(update={
        "network": network, "algorithms": algorithms, "seeds": spec.seed_list(), "data_dir": data_dir,
        "params": {a: v for a, v in given.items() if v},
        "search_spaces": {a: {**{k: None for k in sorted(declared[a] - set(spaces[a]) - set(spec.optimizer)
                                                          - set(given[a]) - set(BUDGET_KEYS))},
                              **spaces[a]} for a in algorithms},
    })
    plan = {"mode": mode, "algorithms": algorithms, "configs": configs, "selected": {},
            "address": opts.address, "spaces": {a: space_to_yaml(s) for a, s in spaces.items()}}
    return resolved, plan


def trial_dict(spec: SweepSpec, *, phase: str, algo: str, config: dict, seed: int, trials_root: Path) -> dict:
    """One planned trial: everything the trainable needs, as plain data (Tune's config)."""
    st = spec.stopping
    search = phase == "search"
    train = {**config["train"], "epochs": spec.budgets.search_epochs if search else spec.budgets.final_epochs,
             "patience": (st.search_patience or st.patience) if search else st.patience, "min_delta": st.min_delta}
    return {
        "trial_id": f"{phase}-{config['config_id']}-s{seed}", "phase": phase, "config_id": config["config_id"],
        "algo": algo, "seed": seed, "train": train, "params": dict(config["params"]),
        "dataset": spec.dataset, "network": spec.network, "data_dir": spec.data_dir, "split_seed": spec.split_seed,
        "val_size": spec.val_size, "device": spec.device, "probe_size": spec.probe_size,
        "target_acc": spec.target_acc, "trials_root": str(trials_root), "cpus": spec.resources.cpus_per_trial,
    }


def phase_trials(spec: SweepSpec, plan: dict, phase: str, trials_root: Path) -> list[dict]:
    seeds = spec.seed_list()
    out = []
    for algo in plan["algorithms"]:
        if phase == "search":
            out += [trial_dict(spec, phase=phase, algo=algo, config=c, seed=seeds[0], trials_root=trials_root)
                    for c in plan["configs"][algo]]
        else:
            chosen = plan["selected"].get(algo, plan["configs"][algo][0]["config_id"])
            config = next(c for c in plan["configs"][algo] if c["config_id"] == chosen)
            out += [trial_dict(spec, phase=phase, algo=algo, config=config, seed=s, trials_root=trials_root)
                    for s in seeds]
    return out


def select_best(rows: list[dict], algorithms: list[str]) -> dict[str, str]:
    """Per algorithm, the search configuration with the highest best validation accuracy
    (a diverged/failed trial counts as -inf; ties go to the earlier configuration)."""
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        acc = row.get("best_val_acc")
        acc = acc if isinstance(acc, (int, float)) and math.isfinite(acc) else -math.inf
        if row["algo"] not in best or acc > best[row["algo"]][0]:
            best[row["algo"]] = (acc, row["config_id"])
    return {a: best[a][1] for a in algorithms if a in best}


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


def trial_config(t: dict, device: str | None = None) -> dict:
    cfg = {k: t[k] for k in TRIAL_FIELDS}
    cfg["threads"] = max(1, int(t.get("cpus", 1)))  # one thread per CPU the trial holds, as `train --threads`
    if device is not None:
        cfg["device"] = device
    return cfg


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
    from harness.train import TrialConfig, Trainer, resolve_device

    trial_dir = Path(t["trials_root"]) / store.safe_name(t["trial_id"], "trial id")
    if trial_dir.exists():
        shutil.rmtree(trial_dir)
    if checkpoint_dir is not None:
        shutil.copytree(checkpoint_dir, trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrialConfig.build(trial_config(t, device), owner=t["trial_id"])
    trainer = Trainer(cfg, data=_data(t, resolve_device(cfg.device)))

    def on_epoch(row: dict, tr) -> None:
        if tr.status != "running":
            store.write_json(trial_dir / "summary.json", tr.summary())
        report(epoch_metrics(row, tr), trial_dir)

    with open(trial_dir / "train.log", "a") as log:
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
    """Workers import this checkout's code (also right for an editable install)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def _trial_dirname(trial) -> str:
    return trial.config["trial"]["trial_id"]


def _make_stopper():
    from ray.tune.stopper import Stopper

    class ConvergenceStopper(Stopper):
        """Stop a trial as soon as its Trainer has (patience/min_delta on validation accuracy, max
        epochs, divergence): the Trainer owns the rule and reports it as ``trial_status``."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            return result.get("trial_status", "running") != "running"

        def stop_all(self) -> bool:
            return False

    return ConvergenceStopper()


def _progress_callback(phase: str, scheduler: bool = False):
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
            print(f"[{phase}] {t['trial_id']:<28} {what:<9} epochs {r.get('epoch', 0):>3}  "
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
            status = (trial.last_result or {}).get("trial_status", "running")
            # running: Tune ended it, the scheduler (ASHA) or an interruption (Ctrl+C)
            self._line(trial, ("stopped" if scheduler else "interrupted") if status == "running" else status, trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED", trials)

        def on_step_end(self, iteration, trials, **info):
            if time.monotonic() - self.last < SUMMARY_EVERY_S:
                return
            self.last = time.monotonic()
            print(f"[{phase}] {self._counts(trials)}", file=sys.stderr, flush=True)

    return Progress()


def _gpus_per_trial(spec: SweepSpec) -> float:
    import ray

    g = spec.resources.gpus_per_trial
    if g == "auto":
        return 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return float(g)


def _start_ray(spec: SweepSpec, address: str | None) -> bool:
    """Start (or join) Ray; return whether this call started it (and so must shut it down)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
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


def _has_scheduler(spec: SweepSpec, phase: str) -> bool:
    """Whether a Tune scheduler may stop running trials in ``phase`` (ASHA, search phase only)."""
    return phase == "search" and spec.stopping.search_scheduler == "asha"


def run_phase(phase: str, trials: list[dict], spec: SweepSpec, out_dir: Path, *, callbacks=()):
    """Run (or restore and finish) one phase's Tune experiment; return (ResultGrid, interrupted)."""
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables; Progress prints instead
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    storage = (out_dir / RAW / "tune").resolve()
    exp = storage / phase
    gpus = _gpus_per_trial(spec)
    trainable = tune.with_resources(tune_trainable, {"cpu": spec.resources.cpus_per_trial, "gpu": gpus})
    if tune.Tuner.can_restore(str(exp)):
        tuner = tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=False)
    else:
        search = phase == "search"
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
                name=phase, storage_path=str(storage), stop=stopper, verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[_progress_callback(phase, _has_scheduler(spec, phase)), *callbacks]),
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
def _rebuild_summary(t: dict, ck_dir: Path, status: str, reason: str) -> dict:
    """The summary of a trial that did not finish by itself (stopped by the scheduler, or failed)."""
    from harness.train import CHECKPOINT, Trainer, TrialConfig

    cfg = TrialConfig.build(trial_config(t, "cpu"), owner=t["trial_id"])
    trainer = Trainer(cfg, data=_data(t, "cpu"))
    trainer.load_checkpoint(ck_dir / CHECKPOINT)
    if trainer.status == "running":
        trainer.status, trainer.stop_reason = status, reason
    return trainer.summary()


def collect(grid, planned: list[dict], *, interrupted: bool = False, scheduler: bool = False,
            log=sys.stderr) -> tuple[list[dict], list[dict], set[str]]:
    """trials.csv and epochs.csv rows of the finished trials, in plan order; and the unfinished ids.

    A trial that Tune ended while its Trainer was still running was stopped by the scheduler
    (``scheduler``: the phase has one, e.g. ASHA) unless the phase was ``interrupted``; otherwise it
    was interrupted: it is not finished, gets no row, and continues on resume."""
    interrupted_ids: set[str] = set()
    from harness.train import CHECKPOINT

    by_id = {}
    for result in grid if grid is not None else ():
        trial_id = _result_trial_id(result)
        if trial_id is not None:
            by_id[trial_id] = result
    rows, epochs, unfinished = [], [], set()
    for t in planned:
        result = by_id.get(t["trial_id"])
        summary, history, error = None, [], ""
        if result is not None and result.error is not None:
            error = f"{type(result.error).__name__}: {str(result.error).strip().splitlines()[-1][:300]}"
        ck = result.checkpoint if result is not None else None
        if ck is not None:
            try:
                with ck.as_directory() as d:
                    d = Path(d)
                    history = store.load_torch(d / CHECKPOINT, map_location="cpu")["history"]
                    if (d / "summary.json").exists():
                        summary = json.loads((d / "summary.json").read_text())
                    elif error:
                        summary = _rebuild_summary(t, d, "failed", "error")
                    elif result is not None and _terminated(result):
                        if scheduler and not interrupted:  # ASHA stopped a slow starter: it is finished
                            summary = _rebuild_summary(t, d, "stopped", "tune scheduler")
                        else:  # only an interruption ends a running trial here: it is not finished
                            interrupted_ids.add(t["trial_id"])
            except (CreditbenchError, OSError, ValueError, KeyError, TypeError) as exc:
                # a damaged Tune checkpoint fails this trial only: every other row is kept
                summary, history = None, []
                error = f"damaged checkpoint: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"[:400]
                print(f"warning: {t['trial_id']}: {error}", file=log, flush=True)
        if summary is None:
            if not error or t["trial_id"] in interrupted_ids:
                unfinished.add(t["trial_id"])
                continue
            summary = {"algo": t["algo"], "dataset": t["dataset"], "network": t["network"], "seed": t["seed"],
                       "status": "failed", "stop_reason": "error", "epochs": 0,
                       "config": {"train": t["train"], "params": t["params"]}}
        row = trial_row(summary, trial_id=t["trial_id"], phase=t["phase"], config_id=t["config_id"])
        row["error"] = error
        rows.append(row)
        epochs += epoch_rows(history, trial_id=t["trial_id"], phase=t["phase"], config_id=t["config_id"],
                             algo=t["algo"], seed=t["seed"])
    return rows, epochs, unfinished


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
    hps = [c for c in seen if c.startswith("hp.")]
    first_hp = next((i for i, c in enumerate(seen) if c.startswith("hp.")), len(seen))
    head = [c for c in seen[:first_hp] if c != "error"]
    tail = [c for c in seen[first_hp:] if not c.startswith("hp.") and c != "error" and c not in head]
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
    old_t, old_e = _read_table(out_dir / "trials.csv", log), _read_table(out_dir / "epochs.csv", log)
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
    store.write_table(out_dir / "trials.csv", trials)  # + .parquet
    store.write_table(out_dir / "epochs.csv", frame_e)
    return trials


def _env(spec: SweepSpec, rows: list[dict], started: float, argv: list[str] | None,
         resumed_with: dict | None = None) -> dict:
    import ray
    import torch

    from harness.provenance import environment

    env = environment(torch.device("cuda" if torch.cuda.is_available() and spec.device != "cpu" else "cpu"))
    env["command"] = argv
    if resumed_with is not None:  # a resume: the options it applied on top of the plan (none: {})
        env["resumed_with"] = resumed_with
    env["ray"] = {"cluster_resources": ray.cluster_resources() if ray.is_initialized() else None}
    fps = sorted({r.get("dataset_fingerprint") for r in rows if r.get("dataset_fingerprint")})
    if len(fps) > 1:
        raise CreditbenchError(f"trials of one sweep saw different data for {spec.dataset}: fingerprints {fps}")
    env["dataset"] = {"name": spec.dataset, "fingerprints": {spec.dataset: fps[0]} if fps else {}}
    env["sweep_wall_time_s"] = time.time() - started
    return env


# =========================================================================== the sweep
def _write_plan(out_dir: Path, spec: SweepSpec, plan: dict) -> None:
    data = spec.model_dump(mode="json")
    data["search_spaces"] = {a: {k: (None if d is None else {f: v for f, v in d.items() if v is not None})
                                 for k, d in block.items()} for a, block in data["search_spaces"].items()}
    store.write_text(out_dir / "spec.yaml", yaml.safe_dump(data, sort_keys=False))
    store.write_json(out_dir / "plan.json", plan)


def execute(out_dir: Path, spec: SweepSpec, plan: dict, *, callbacks=(), argv=None, log=sys.stderr,
            resumed_with: dict | None = None) -> int:
    """Run the phases that are not finished yet; write the tables after each. Return an exit code.

    The results directory is locked meanwhile: a second sweep (or resume) into it is refused."""
    started = time.time()
    trials_root = (out_dir / RAW / "trials").resolve()
    with store.locked(out_dir, "sweep directory", hint="wait for that sweep to finish"):
        store.remove_orphans(out_dir)  # temporary files of table writes an interrupted sweep left behind
        return _execute(out_dir, spec, plan, callbacks=callbacks, argv=argv, log=log, resumed_with=resumed_with,
                        started=started, trials_root=trials_root)


def _execute(out_dir, spec, plan, *, callbacks, argv, log, resumed_with, started, trials_root) -> int:
    import ray

    rows: list[dict] = []
    epochs: list[dict] = []
    owns_ray = False
    phase, planned, unfinished, table = None, [], set(), None
    try:
        owns_ray = _start_ray(spec, plan.get("address"))
        phases = [p for p in PHASES if plan["mode"] in ("both", p)]
        for phase in phases:
            planned = phase_trials(spec, plan, phase, trials_root)
            unfinished = {t["trial_id"] for t in planned}
            print(f"[{phase}] {len(planned)} trials: {', '.join(plan['algorithms'])}", file=log, flush=True)
            try:
                grid, interrupted = run_phase(phase, planned, spec, out_dir, callbacks=callbacks)
            except KeyboardInterrupt:  # a second Ctrl+C while Tune was stopping: read what it saved
                grid, interrupted = _saved_grid(phase, out_dir), True
            phase_rows, phase_epochs, unfinished = collect(grid, planned, interrupted=interrupted,
                                                           scheduler=_has_scheduler(spec, phase), log=log)
            for k in range(1, MAX_CONTINUATIONS + 1):
                if interrupted or not unfinished:
                    break
                # Tune ended these trials (e.g. stopping them for an interruption) before their Trainer
                # finished: Tune will not run them again, so they continue from their last checkpoint in a
                # continuation experiment of their own
                starts = _checkpoint_dirs(grid, unfinished)
                retry = [{**t, "resume_from": starts.get(t["trial_id"])} for t in planned if t["trial_id"] in unfinished]
                print(f"[{phase}] {len(retry)} trial(s) ended before they finished: continuing them "
                      f"({', '.join(t['trial_id'] for t in retry)})", file=log, flush=True)
                try:
                    grid, interrupted = run_phase(f"{phase}-continue{k}", retry, spec, out_dir, callbacks=callbacks)
                except KeyboardInterrupt:
                    grid, interrupted = _saved_grid(f"{phase}-continue{k}", out_dir), True
                more_rows, more_epochs, unfinished = collect(grid, retry, interrupted=interrupted, log=log)
                phase_rows, phase_epochs = phase_rows + more_rows, phase_epochs + more_epochs
            rows += phase_rows
            epochs += phase_epochs
            table = write_tables(out_dir, rows, epochs, log)
            store.write_json(out_dir / "env.json", _env(spec, rows, started, argv, resumed_with))
            if interrupted or unfinished:
                _interrupted_line(out_dir, phase, planned, unfinished, log)
                return 130
            if phase == "search" and plan["mode"] == "both" and not plan["selected"]:  # a resume keeps its choice
                plan["selected"] = select_best(phase_rows, plan["algorithms"])
                _write_plan(out_dir, spec, plan)
                for algo, cid in plan["selected"].items():
                    print(f"[search] {algo}: best configuration {cid}", file=log, flush=True)
        print_table(table.to_dict("records"), log)
        return 0
    except KeyboardInterrupt:  # Ctrl+C outside Tune (starting Ray, collecting, writing): keep what finished
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tables are written before stopping
        try:
            write_tables(out_dir, rows, epochs, log)
            store.write_json(out_dir / "env.json", _env(spec, rows, started, argv, resumed_with))
        finally:
            signal.signal(signal.SIGINT, previous)
        _interrupted_line(out_dir, phase, planned, unfinished, log)
        return 130
    finally:
        if owns_ray:
            ray.shutdown()


def _interrupted_line(out_dir: Path, phase, planned: list, unfinished: set, log) -> None:
    done = f"{len(planned) - len(unfinished)} of {len(planned)} {phase} trials finished; " if phase else ""
    print(f"interrupted: {done}continue with: creditbench sweep --resume {out_dir}", file=log, flush=True)


def _saved_grid(phase: str, out_dir: Path):
    """The ResultGrid Tune saved for ``phase`` (read without running anything), or None."""
    from ray import tune

    exp = (out_dir / RAW / "tune" / phase).resolve()
    try:
        if tune.Tuner.can_restore(str(exp)):
            return tune.Tuner.restore(str(exp), tune_trainable).get_results()
    except Exception:  # noqa: BLE001  nothing saved yet: every trial of the phase is unfinished
        pass
    return None


def print_table(rows: list[dict], log=sys.stderr) -> None:
    """Mean ± std of test accuracy (at the best validation epoch) over the final seeds."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if frame.empty:
        return
    phase = "final" if (frame["phase"] == "final").any() else "search"
    f = frame[frame["phase"] == phase]
    print(f"\n{phase} phase: test accuracy at the best validation epoch", file=log)
    print(f"{'algorithm':<10} {'n':>3} {'ok':>3} {'test acc mean ± std':>22} {'epochs':>7}", file=log)
    for algo, g in f.groupby("algo", sort=True):
        acc = pd.to_numeric(g["test_acc"], errors="coerce")
        std = acc.std(ddof=1) if acc.count() > 1 else float("nan")
        spread = f"{std:<7.4f}" if math.isfinite(std) else f"{'-':<7}"
        print(f"{algo:<10} {len(g):>3} {(g['status'] == 'ok').sum():>3} {acc.mean():>12.4f} ± {spread} "
              f"{pd.to_numeric(g['epochs']).mean():>7.1f}", file=log)
    print("", file=log, flush=True)


def new_sweep(opts: SweepOptions, *, callbacks=(), argv=None, log=sys.stderr) -> tuple[Path, int]:
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
    _write_plan(out_dir, spec, plan)
    return out_dir, execute(out_dir, spec, plan, callbacks=callbacks, argv=argv, log=log)


PLAN_KEYS = ("mode", "algorithms", "configs", "selected", "address", "spaces")
MODES = ("both", "search", "final")


def _read_data(path: Path, parse, what: str):
    if not path.is_file():
        raise ResultsError(f"--resume {path.parent}: not a sweep results directory (no {path.name})")
    try:
        return parse(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ResultsError(f"{path}: not valid {what} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                           ) from None


def check_plan(plan, spec: SweepSpec, source: str) -> None:
    """Refuse (one line) a plan.json that ``resolve`` could not have written for ``spec``."""
    from harness.hparams import TrainConfig
    from harness.registry import get_algorithm

    def bad(problem: str):
        raise ResultsError(f"{source}: {problem}")

    if not isinstance(spec.algorithms, list):
        bad("spec.yaml does not list its algorithms (a sweep writes the resolved list)")
    if not isinstance(plan, dict):
        bad(f"a plan is a JSON object, got {type(plan).__name__}")
    if set(plan) != set(PLAN_KEYS):
        bad(f"keys {sorted(plan)} are not the plan's; expected: {', '.join(PLAN_KEYS)}")
    if plan["mode"] not in MODES:
        bad(f"mode {plan['mode']!r} is not valid; valid: {', '.join(MODES)}")
    if plan["algorithms"] != spec.algorithms:
        bad(f"algorithms {plan['algorithms']!r} differ from spec.yaml's {spec.algorithms!r}")
    for algo in spec.algorithms:
        try:
            get_algorithm(algo)
        except UnknownNameError as exc:
            raise UnknownNameError(f"algorithm in {source}", algo, exc.valid) from None
    if not isinstance(plan["configs"], dict) or set(plan["configs"]) != set(spec.algorithms):
        bad(f"configs must be given for exactly the algorithms {spec.algorithms!r}")
    if plan["address"] is not None and not isinstance(plan["address"], str):
        bad(f"address must be a string or null, got {plan['address']!r}")
    n = 1 if plan["mode"] == "final" else spec.budgets.search_trials
    for algo in spec.algorithms:
        cls = get_algorithm(algo)
        configs = plan["configs"][algo]
        if not isinstance(configs, list) or len(configs) != n:
            bad(f"configs.{algo} must list {n} configuration(s) (budgets.search_trials in spec.yaml)")
        for c in configs:
            if not (isinstance(c, dict) and set(c) == {"config_id", "train", "params"}
                    and isinstance(c["train"], dict) and isinstance(c["params"], dict)):
                bad(f"configs.{algo}: each configuration is {{config_id, train, params}}, got {c!r}")
            store.safe_name(c["config_id"], f"{source}: config id")
            if not c["config_id"].startswith(f"{algo}-"):
                bad(f"config id {c['config_id']!r} does not belong to algorithm {algo}")
            TrainConfig.build(c["train"], owner=f"{source}: {c['config_id']}")
            cls.Params.build(c["params"], owner=f"{source}: {c['config_id']}")
        if len({c["config_id"] for c in configs}) != len(configs):
            bad(f"configs.{algo}: config ids are not unique")
    selected = plan["selected"]
    if not isinstance(selected, dict) or (selected and plan["mode"] != "both"):
        bad("selected must be an object, empty unless mode is both")
    for algo, cid in selected.items():
        if algo not in plan["configs"] or cid not in [c["config_id"] for c in plan["configs"][algo]]:
            bad(f"selected {algo}: {cid!r} is not one of its planned configurations")


def load_resumable(out_dir: Path) -> tuple[SweepSpec, dict]:
    """The spec and plan of an interrupted sweep, checked before Ray sees the directory.

    Only the harness's own files can be checked: ``spec.yaml`` and ``plan.json`` must parse and
    agree, and ``env.json`` (written when a phase ends, with ``trials.csv``) must parse once
    ``trials.csv`` exists or a configuration was selected. Ray Tune then restores its experiment
    state under ``raw/`` by unpickling it: resume only directories you created."""
    if not out_dir.is_dir():
        raise ResultsError(f"--resume {out_dir}: no such directory")
    spec = parse_spec(_read_data(out_dir / "spec.yaml", yaml.safe_load, "YAML"), str(out_dir / "spec.yaml"))
    plan = _read_data(out_dir / "plan.json", json.loads, "JSON")
    check_plan(plan, spec, str(out_dir / "plan.json"))
    if (out_dir / "trials.csv").exists() or plan["selected"]:
        env = _read_data(out_dir / "env.json", json.loads, "JSON")
        if not isinstance(env, dict) or not isinstance(env.get("versions"), dict):
            raise ResultsError(f"{out_dir / 'env.json'}: not the sweep's env.json (no 'versions' object)")
    return spec, plan


def finished_trials(out_dir: Path, spec: SweepSpec, plan: dict) -> int | None:
    """The number of planned trials when trials.csv holds every one of them (the sweep is finished), else None."""
    if plan["mode"] == "both" and not plan["selected"]:
        return None
    table = _read_table(out_dir / "trials.csv", aside=False)
    if table is None or "trial_id" not in table.columns:
        return None
    root = (out_dir / RAW / "trials").resolve()
    planned = [t["trial_id"] for p in PHASES if plan["mode"] in ("both", p) for t in phase_trials(spec, plan, p, root)]
    return len(planned) if set(planned) <= set(table["trial_id"]) else None


def resume_sweep(out_dir: Path, *, address: str | None = None, num_cpus: int | None = None, callbacks=(), argv=None,
                 log=sys.stderr) -> tuple[Path, int]:
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
    print(f"resuming {out_dir}: Ray Tune restores its own state under {RAW}/ by unpickling it "
          "(resume only directories you created)", file=log, flush=True)
    return out_dir, execute(out_dir, spec, plan, callbacks=callbacks, argv=argv, log=log, resumed_with=resumed_with)


# =========================================================================== command line
def cmd_sweep(args) -> int:
    from harness.hparams import parse_assignments

    argv = sys.argv[:]
    if args.resume:
        check_resume_options(args)
        out_dir, code = resume_sweep(Path(args.resume), address=args.address, num_cpus=args.num_cpus, argv=argv)
    else:
        opts = SweepOptions(
            spec=args.spec or None, algo=args.algo or None, dataset=args.dataset or None,
            network=args.network or None, seeds=args.seeds, trials=args.trials, epochs=args.epochs,
            address=args.address or None, search_only=args.search_only, final_only=args.final_only,
            sets=parse_assignments(args.set), results_root=Path(args.results), data_dir=args.data_dir,
            num_cpus=args.num_cpus, max_concurrent=args.max_concurrent, name=args.name)
        out_dir, code = new_sweep(opts, argv=argv)
    print(out_dir)
    return code


# what --resume cannot honour: the plan (algorithms, configurations, seeds, budgets) is fixed in DIR and
# Ray Tune restores each phase's trials with the configuration they were planned with
RESUME_FIXED = {"spec": "--spec", "algo": "--algo", "dataset": "--dataset", "network": "--network",
                "seeds": "--seeds", "trials": "--trials", "epochs": "--epochs", "set": "--set",
                "search_only": "--search-only", "final_only": "--final-only", "data_dir": "--data-dir",
                "max_concurrent": "--max-concurrent", "name": "--name"}


def check_resume_options(args) -> None:
    """Refuse (one line) options that ``--resume`` would otherwise silently ignore."""
    given = [flag for key, flag in RESUME_FIXED.items() if getattr(args, key, None) not in (None, False, [], "")]
    if args.results != "results":
        given.append("--results")
    if given:
        raise ConfigError(f"--resume {args.resume} continues the sweep exactly as planned in its plan.json and "
                          f"spec.yaml; {', '.join(given)} cannot change it (start a new sweep instead); "
                          "with --resume only --address and --num-cpus apply")


def _int_or_empty(value: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{value}'") from None


def add_sweep_parser(sub) -> None:
    from harness.cli import dataset_names, registered_dataset

    s = sub.add_parser("sweep", help="run a Ray Tune sweep (search phase, then final phase over seeds)",
                       description="Run a sweep spec (sweeps/*.yaml); the last line printed is the results directory.")
    s.add_argument("--spec", default=None, help="spec file or name in sweeps/ (default: the spec matching "
                                                "--dataset, else sweeps/default.yaml)")
    s.add_argument("--algo", default=None, help=f"algorithm id, comma list, or '{ALL}' (default: the spec's list)")
    s.add_argument("--dataset", default=None, type=registered_dataset, choices=dataset_names(),
                   help="dataset (default: the spec's)")
    s.add_argument("--network", default=None, help="preset or mlp-<depth>x<width>-<activation> (default: the spec's)")
    s.add_argument("--seeds", type=_int_or_empty, default=None, help="number of final-phase seeds (default: the spec's)")
    s.add_argument("--trials", type=_int_or_empty, default=None,
                   help="search configurations per algorithm (default: the spec's)")
    s.add_argument("--epochs", type=_int_or_empty, default=None,
                   help="maximum epochs (final; caps search) (default: the spec's)")
    s.add_argument("--address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS or a local Ray)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="hyperparameter held fixed for every algorithm (e.g. with --final-only) (default: none)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--search-only", action="store_true", help="only the search phase")
    mode.add_argument("--final-only", action="store_true",
                      help="only the final phase, with the spec's fixed values and --set (no search)")
    s.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted sweep in DIR (default: a new sweep)")
    s.add_argument("--results", default="results", help="parent folder of the results directory")
    s.add_argument("--data-dir", default=None, help="dataset folder (default: $CREDITBENCH_DATA_DIR or ~/.cache/creditbench)")
    s.add_argument("--num-cpus", type=_int_or_empty, default=None, help="CPUs of the local Ray instance (default: the spec's, else every CPU)")
    s.add_argument("--max-concurrent", type=_int_or_empty, default=None, help="trials running at once (default: the spec's)")
    s.add_argument("--name", default=None, help="results directory prefix (default: the spec's name)")
    s.set_defaults(func=cmd_sweep)

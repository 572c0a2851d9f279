"""Planning a sweep: spec + options → a validated, resolved spec and a plan of trials. No Ray.

Protocol (docs/design.md): a *search* stage (``budgets.search_trials`` configurations per
algorithm, drawn first with a seeded sampler from the algorithm's search space, one seed each),
then a *final* stage (each algorithm's best configuration by validation accuracy × every seed,
trained to convergence). This module decides everything a sweep runs — algorithms, network,
fixed values, the drawn configurations, the trials of each stage, the best configuration after
the search — and checks a saved plan before a resume; :mod:`harness.sweep` only runs it with
Ray Tune. Everything checkable is checked here, before any output or Ray.

A plan (``plan.json``, :data:`harness.schema.PLAN_KEYS`) is ``{mode, algorithms, configs,
selected, address, spaces}``: ``configs[algo]`` lists ``{config_id, train, params}``;
``selected[algo]`` is the configuration the final stage trains (set after the search).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness import store
from harness.errors import ConfigError, CreditbenchError, ResultsError, UnknownNameError
from harness.schema import (ENV_JSON, PLAN_JSON, PLAN_KEYS, SHARED_TRIAL_FIELDS, SPEC_YAML, SWEEP_MODES, SWEEP_STAGES,
                            TRIAL_FIELDS, TRIALS_CSV, trial_id)
from harness.spec import (ALL, BUDGET_KEYS, SweepSpec, load_spec, parse_spec, sample_configs, space_to_yaml,
                          spec_for_dataset, split_train, validate)


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


def stages(mode: str) -> list[str]:
    """The sweep stages a plan of ``mode`` runs, in order."""
    return [s for s in SWEEP_STAGES if mode in ("both", s)]


# =========================================================================== resolve: spec + options
def resolve(opts: SweepOptions) -> tuple[SweepSpec, dict]:
    """Apply the options to the spec and validate everything; return the resolved spec and the plan.

    Raises a :class:`CreditbenchError` on anything wrong, before any output or Ray."""
    from harness.registry import load_plugins

    load_plugins()
    spec, path = _spec_with_options(opts)
    algorithms, spaces, network = _algorithms(spec, path, opts)
    mode = _mode(opts, spec)
    fixed = _fixed_values(spec, algorithms, opts.sets, spaces)
    data_dir = _prepare_data(spec)
    if mode == "final":
        _refuse_inactive(algorithms, fixed)
        configs = {algo: [{"config_id": f"{algo}-given", **fixed[algo]}] for algo in algorithms}
    else:
        configs = {algo: _draw_configs(spec, algo, spaces[algo], fixed[algo]) for algo in algorithms}
    resolved = _resolved_spec(spec, algorithms=algorithms, network=network, data_dir=data_dir, spaces=spaces,
                              fixed=fixed, sets=opts.sets)
    plan = {"mode": mode, "algorithms": algorithms, "configs": configs, "selected": {},
            "address": opts.address, "spaces": {a: space_to_yaml(s) for a, s in spaces.items()}}
    return resolved, plan


def _spec_with_options(opts: SweepOptions) -> tuple[SweepSpec, Path]:
    """The spec the options name (or the dataset's), with the options applied and validated."""
    from harness.registry import DATASETS
    from harness.train import parse_device

    if opts.search_only and opts.final_only:
        raise ConfigError("--search-only and --final-only exclude each other")
    if opts.dataset is not None:
        DATASETS.get(opts.dataset)
    spec, path = load_spec(opts.spec or (spec_for_dataset(opts.dataset) if opts.dataset else "default"))
    if opts.name is not None:  # the results directory's prefix
        store.safe_name(opts.name, "--name")
    else:
        store.safe_name(spec.name, f"{path}: name")
    spec = parse_spec({**spec.model_dump(), **_spec_update(spec, opts), "budgets": _budgets(spec, opts),
                       "resources": _resources(spec, opts)}, f"{path} with command-line options")
    DATASETS.get(spec.dataset)
    parse_device(spec.device)
    return spec, path


def _spec_update(spec: SweepSpec, opts: SweepOptions) -> dict:
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
    return update


def _budgets(spec: SweepSpec, opts: SweepOptions) -> dict:
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
    return budgets


def _resources(spec: SweepSpec, opts: SweepOptions) -> dict:
    """The spec's resources with the command line's. ``cpus_per_trial: auto``: with a local Ray, trials that run at
    most ``max_concurrent`` at once each get the machine's share of CPUs (and as many threads): one trial at a time
    on 2 cores uses both, two at once one each; without a limit, or on a cluster, one CPU each."""
    resources = spec.resources.model_dump()
    if opts.num_cpus is not None:
        resources["num_cpus"] = opts.num_cpus
    if opts.max_concurrent is not None:
        resources["max_concurrent"] = opts.max_concurrent
    if resources["cpus_per_trial"] == "auto":
        local = not (opts.address or os.environ.get("RAY_ADDRESS"))
        cpus = resources["num_cpus"] or os.cpu_count() or 1
        limit = resources["max_concurrent"]
        resources["cpus_per_trial"] = float(max(1, cpus // limit)) if limit and local else 1.0
    return resources


def _algorithms(spec: SweepSpec, path: Path, opts: SweepOptions) -> tuple[list[str], dict, str]:
    """The algorithms, their search spaces and the network they all train (checked against each)."""
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
    return algorithms, spaces, network


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


def _mode(opts: SweepOptions, spec: SweepSpec) -> str:
    """Which stages run (:data:`harness.schema.SWEEP_MODES`)."""
    for key in opts.sets:
        if key in BUDGET_KEYS:
            raise ConfigError(f"--set {key}: '{key}' is set by {BUDGET_KEYS[key]} (or --epochs), not --set")
    mode = "search" if opts.search_only else "final" if opts.final_only or spec.budgets.search_trials == 0 else "both"
    if mode == "search" and spec.budgets.search_trials == 0:
        raise ConfigError("--search-only needs at least one search trial (budgets.search_trials / --trials)")
    return mode


def _fixed_values(spec: SweepSpec, algorithms: list[str], sets: dict, spaces: dict) -> dict:
    """Per algorithm, the values held fixed (spec ``optimizer``/``params`` and ``--set``), validated;
    a value given on the command line leaves the algorithm's search space (``spaces`` is updated)."""
    from harness.hparams import TrainConfig, split_overrides
    from harness.registry import get_algorithm

    fixed = {}
    for algo in algorithms:
        cls = get_algorithm(algo)
        given_train, given_params = split_overrides(dict(sets), cls.Params, algo)
        base_train, base_params = split_train(spec.params.get(algo, {}))
        train = {**spec.optimizer, **base_train, **given_train}
        params = {**base_params, **given_params}
        tc = TrainConfig.build(train, owner=f"{algo} (fixed)")
        pc = cls.Params.build(params, owner=f"{algo} (fixed)")
        # keep only the keys given, as their validated values (--set passes strings)
        fixed[algo] = {"train": {k: getattr(tc, k) for k in train}, "params": {k: getattr(pc, k) for k in params}}
        for key in set(given_train) | set(given_params):
            spaces[algo].pop(key, None)  # a value given on the command line is not searched
    return fixed


def _prepare_data(spec: SweepSpec) -> str | None:
    """Check the dataset is there and prepare its files once (e.g. Fashion-MNIST is decompressed from
    the system copy on first use), so that concurrent trials never write the same files at once."""
    from harness.datasets import check_available, default_data_dir
    from harness.registry import DATASETS

    data_dir = str(Path(spec.data_dir).expanduser().resolve()) if spec.data_dir else None
    check_available(spec.dataset, data_dir)
    DATASETS.get(spec.dataset).load_raw(Path(data_dir) if data_dir else default_data_dir())
    return data_dir


def _refuse_inactive(algorithms: list[str], fixed: dict) -> None:
    """No search: a fixed value must act in the one configuration that runs."""
    from harness.hparams import TrainConfig
    from harness.registry import get_algorithm

    for algo in algorithms:
        TrainConfig.build(fixed[algo]["train"], owner=f"{algo} (fixed)", refuse_inactive=True)
        get_algorithm(algo).Params.build(fixed[algo]["params"], owner=f"{algo} (fixed)", refuse_inactive=True)


def _draw_configs(spec: SweepSpec, algo: str, space: dict, fixed: dict) -> list[dict]:
    """The search configurations of one algorithm: drawn values on top of the fixed ones; a knob whose
    value cannot act in a configuration is not part of it (no phantom knobs)."""
    from harness.hparams import TrainConfig
    from harness.registry import get_algorithm

    cls = get_algorithm(algo)
    configs = []
    for k, draw in enumerate(sample_configs(space, spec.budgets.search_trials, seed=spec.sampler_seed, algo=algo)):
        train, params = split_train(draw)
        train, params = {**fixed["train"], **train}, {**fixed["params"], **params}
        idle = TrainConfig.inactive({**spec.optimizer, **train}) | cls.Params.inactive(params)
        configs.append({"config_id": f"{algo}-c{k:02d}",
                        "train": {k2: v for k2, v in train.items() if k2 not in idle},
                        "params": {k2: v for k2, v in params.items() if k2 not in idle}})
    return configs


def _resolved_spec(spec: SweepSpec, *, algorithms, network, data_dir, spaces, fixed, sets) -> SweepSpec:
    """The spec as it runs (``spec.yaml``): explicit algorithms, network, seeds and search spaces."""
    from harness.hparams import TrainConfig
    from harness.registry import get_algorithm

    declared = {a: set(TrainConfig.search_space()) | set(get_algorithm(a).Params.search_space()) for a in algorithms}
    given = {a: {k: v for k, v in {**fixed[a]["train"], **fixed[a]["params"]}.items()
                 if k in spec.params.get(a, {}) or k in sets} for a in algorithms}
    return spec.model_copy(update={
        "network": network, "algorithms": algorithms, "seeds": spec.seed_list(), "data_dir": data_dir,
        "params": {a: v for a, v in given.items() if v},
        "search_spaces": {a: {**{k: None for k in sorted(declared[a] - set(spaces[a]) - set(spec.optimizer)
                                                          - set(given[a]) - set(BUDGET_KEYS))},
                              **spaces[a]} for a in algorithms},
    })


# =========================================================================== the trials of a plan
def planned_trial(spec: SweepSpec, *, stage: str, algo: str, config: dict, seed: int, trials_root: Path) -> dict:
    """One planned trial: everything the trainable needs, as plain data (Tune's config). Its
    :data:`harness.schema.TRIAL_FIELDS` are the trainer's :class:`harness.schema.TrialConfig`."""
    st = spec.stopping
    search = stage == "search"
    train = {**config["train"], "epochs": spec.budgets.search_epochs if search else spec.budgets.final_epochs,
             "patience": (st.search_patience or st.patience) if search else st.patience, "min_delta": st.min_delta}
    t = {"trial_id": trial_id(stage, config["config_id"], seed), "phase": stage, "config_id": config["config_id"],
         "algo": algo, "seed": seed, "train": train, "params": dict(config["params"]),
         **{k: getattr(spec, k) for k in SHARED_TRIAL_FIELDS},
         "trials_root": str(trials_root), "cpus": spec.resources.cpus_per_trial}
    return t


def trial_config(t: dict, device: str | None = None) -> dict:
    """The :class:`harness.schema.TrialConfig` fields of a planned trial (one thread per CPU it holds)."""
    cfg = {k: t[k] for k in TRIAL_FIELDS}
    cfg["threads"] = max(1, int(t.get("cpus", 1)))  # one thread per CPU the trial holds, as `train --threads`
    if device is not None:
        cfg["device"] = device
    return cfg


def stage_trials(spec: SweepSpec, plan: dict, stage: str, trials_root: Path) -> list[dict]:
    """The planned trials of one stage: every configuration × the first seed (search), or the selected
    configuration × every seed (final)."""
    seeds = spec.seed_list()
    out = []
    for algo in plan["algorithms"]:
        if stage == "search":
            out += [planned_trial(spec, stage=stage, algo=algo, config=c, seed=seeds[0], trials_root=trials_root)
                    for c in plan["configs"][algo]]
        else:
            chosen = plan["selected"].get(algo, plan["configs"][algo][0]["config_id"])
            config = next(c for c in plan["configs"][algo] if c["config_id"] == chosen)
            out += [planned_trial(spec, stage=stage, algo=algo, config=config, seed=s, trials_root=trials_root)
                    for s in seeds]
    return out


def planned_ids(spec: SweepSpec, plan: dict) -> list[str]:
    """The trial ids of every stage the plan runs."""
    root = Path("raw")  # the ids do not depend on where the trials run
    return [t["trial_id"] for s in stages(plan["mode"]) for t in stage_trials(spec, plan, s, root)]


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


# =========================================================================== a saved plan (resume)
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
    def bad(problem: str):
        raise ResultsError(f"{source}: {problem}")

    if not isinstance(spec.algorithms, list):
        bad("spec.yaml does not list its algorithms (a sweep writes the resolved list)")
    if not isinstance(plan, dict):
        bad(f"a plan is a JSON object, got {type(plan).__name__}")
    if set(plan) != set(PLAN_KEYS):
        bad(f"keys {sorted(plan)} are not the plan's; expected: {', '.join(PLAN_KEYS)}")
    if plan["mode"] not in SWEEP_MODES:
        bad(f"mode {plan['mode']!r} is not valid; valid: {', '.join(SWEEP_MODES)}")
    if plan["algorithms"] != spec.algorithms:
        bad(f"algorithms {plan['algorithms']!r} differ from spec.yaml's {spec.algorithms!r}")
    _check_plan_algorithms(spec, source)
    if not isinstance(plan["configs"], dict) or set(plan["configs"]) != set(spec.algorithms):
        bad(f"configs must be given for exactly the algorithms {spec.algorithms!r}")
    if plan["address"] is not None and not isinstance(plan["address"], str):
        bad(f"address must be a string or null, got {plan['address']!r}")
    n = 1 if plan["mode"] == "final" else spec.budgets.search_trials
    for algo in spec.algorithms:
        _check_plan_configs(plan["configs"][algo], algo, n, source, bad)
    selected = plan["selected"]
    if not isinstance(selected, dict) or (selected and plan["mode"] != "both"):
        bad("selected must be an object, empty unless mode is both")
    for algo, cid in selected.items():
        if algo not in plan["configs"] or cid not in [c["config_id"] for c in plan["configs"][algo]]:
            bad(f"selected {algo}: {cid!r} is not one of its planned configurations")


def _check_plan_algorithms(spec: SweepSpec, source: str) -> None:
    from harness.registry import get_algorithm

    for algo in spec.algorithms:
        try:
            get_algorithm(algo)
        except UnknownNameError as exc:
            raise UnknownNameError(f"algorithm in {source}", algo, exc.valid) from None


def _check_plan_configs(configs, algo: str, n: int, source: str, bad) -> None:
    from harness.hparams import TrainConfig
    from harness.registry import get_algorithm

    cls = get_algorithm(algo)
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


def load_resumable(out_dir: Path) -> tuple[SweepSpec, dict]:
    """The spec and plan of an interrupted sweep, checked before Ray sees the directory.

    Only the harness's own files can be checked: ``spec.yaml`` and ``plan.json`` must parse and
    agree, and ``env.json`` (written when a stage ends, with ``trials.csv``) must parse once
    ``trials.csv`` exists or a configuration was selected. Ray Tune then restores its experiment
    state under ``raw/`` by unpickling it: resume only directories you created."""
    if not out_dir.is_dir():
        raise ResultsError(f"--resume {out_dir}: no such directory")
    spec = parse_spec(_read_data(out_dir / SPEC_YAML, yaml.safe_load, "YAML"), str(out_dir / SPEC_YAML))
    plan = _read_data(out_dir / PLAN_JSON, json.loads, "JSON")
    check_plan(plan, spec, str(out_dir / PLAN_JSON))
    if (out_dir / TRIALS_CSV).exists() or plan["selected"]:
        env = _read_data(out_dir / ENV_JSON, json.loads, "JSON")
        if not isinstance(env, dict) or not isinstance(env.get("versions"), dict):
            raise ResultsError(f"{out_dir / ENV_JSON}: not the sweep's env.json (no 'versions' object)")
    return spec, plan


def write_plan(out_dir: Path, spec: SweepSpec, plan: dict) -> None:
    """``spec.yaml`` (the resolved spec, usable as a spec) and ``plan.json``."""
    data = spec.model_dump(mode="json")
    data["search_spaces"] = {a: {k: (None if d is None else {f: v for f, v in d.items() if v is not None})
                                 for k, d in block.items()} for a, block in data["search_spaces"].items()}
    store.write_text(out_dir / SPEC_YAML, yaml.safe_dump(data, sort_keys=False))
    store.write_json(out_dir / PLAN_JSON, plan)

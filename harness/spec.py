"""Sweep specifications: the YAML files in ``sweeps/``, validated before anything runs.

A spec fixes what every algorithm in a comparison shares (dataset, network, optimizer,
seeds, budgets, stopping, resources) and, per algorithm, the hyperparameters that are
held fixed (``params``) or searched (``search_spaces``). An algorithm's search space is
its plugin's declared one (``Algo.Params.search_space()``) plus the training ``lr``
(``TrainConfig.search_space()``), unless the spec overrides an entry (a distribution) or
removes it (``null``); a hyperparameter held fixed leaves the space. Keys that are not
declared hyperparameters are rejected (no phantom knobs). Every error names the bad key
and its path in the spec.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ConfigError, UnknownNameError
from harness.hparams import HParams, TrainConfig

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
ALL = "all"  # the algorithm list that means "every registered algorithm", and the shared search-space key
BUDGET_KEYS = {"epochs": "budgets.search_epochs / budgets.final_epochs", "patience": "stopping.patience",
               "min_delta": "stopping.min_delta"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dist(_Strict):
    """A search distribution, written as ``creditbench list`` shows it: ``{kind: loguniform, low: 1.0e-4, high: 1.0e-2}``
    or ``{kind: choice, values: [a, b]}``; ``randint`` is inclusive of ``high``."""

    kind: Literal["loguniform", "uniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "choice":
            if not self.values or self.low is not None or self.high is not None:
                raise ValueError("choice takes a non-empty 'values' list and no low/high")
        else:
            if self.low is None or self.high is None or self.values is not None:
                raise ValueError(f"{self.kind} takes 'low' and 'high' and no values")
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.kind == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")
            if self.kind == "randint" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("randint takes integer low and high")
        return self

    def endpoints(self) -> list:
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "randint":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def sample(self, rng):
        """One draw with ``rng`` (a ``numpy.random.Generator``), exactly as Ray Tune's sampler of this
        distribution draws it (``tune.loguniform``, ``tune.uniform``, ``tune.randint`` with ``high``
        included, ``tune.choice``; tests/test_planning.py compares them), without importing Ray."""
        import numpy as np

        if self.kind == "choice":
            return self.values[int(rng.choice(np.arange(0, len(self.values)), size=1)[0])]
        if self.kind == "randint":
            return int(rng.integers(int(self.low), int(self.high) + 1, size=1)[0])
        if self.kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high), size=1))[0])
        return float(rng.uniform(self.low, self.high, size=1)[0])


class Budgets(_Strict):
    search_trials: int = Field(4, ge=0, description="sampled configurations per algorithm (0: no search phase)")
    search_epochs: int = Field(10, ge=1, description="maximum epochs of a search trial")
    final_epochs: int = Field(30, ge=1, description="maximum epochs of a final trial")


class Stopping(_Strict):
    patience: int = Field(5, ge=1, description="stop when val accuracy has not improved by min_delta for this many epochs")
    min_delta: float = Field(0.0, ge=0, le=1, description="smallest val accuracy improvement that resets patience")
    search_patience: int | None = Field(None, ge=1, description="patience in the search phase (None: patience)")
    search_scheduler: Literal["none", "asha"] = Field(
        "none", description="early stopping of search trials (asha kills slow starters; never used in the final phase)")
    asha_grace_epochs: int = Field(2, ge=1, description="epochs every search trial gets before asha may stop it")


class Resources(_Strict):
    cpus_per_trial: float | Literal["auto"] = Field(
        "auto", description="CPUs (and torch threads) per trial; auto: with a local Ray, its CPUs / max_concurrent "
                            "(1 without a limit, or on a cluster)")
    gpus_per_trial: float | Literal["auto"] = Field(
        "auto", description="GPU fraction per trial; auto: 0.25 where the cluster has GPUs, else 0")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray instance (None: all)")
    max_concurrent: int | None = Field(None, ge=1, description="trials running at once (None: as resources allow)")
    max_failures: int = Field(2, ge=0, description="retries of a crashed trial from its last checkpoint")
    reuse_actors: bool = True
    object_store_mb: int = Field(256, ge=64, description="object store of the local Ray instance (MB)")


class SweepSpec(_Strict):
    name: str | None = Field(None, description="results folder prefix (default: the spec file's name)")
    description: str = ""
    dataset: str = "digits"
    network: str | None = Field(None, description="preset or mlp-<depth>x<width>-<activation>; None: dataset default")
    data_dir: str | None = None
    val_size: float | None = Field(None, gt=0, description="validation images (≥ 1) or fraction (< 1)")
    split_seed: int = Field(0, ge=0)
    device: str = "auto"
    algorithms: Literal["all"] | list[str] = ALL
    optimizer: dict[str, Any] = Field(default_factory=dict, description="training hyperparameters fixed for all")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="fixed hyperparameters per algorithm")
    search_spaces: dict[str, dict[str, Dist | None]] = Field(
        default_factory=dict, description="per algorithm (or 'all' for training ones): distribution, or null to fix")
    seeds: int | list[int] = Field(3, description="final-phase seeds: a count (0..n-1) or a list")
    sampler_seed: int = Field(0, ge=0, description="seed of the configuration sampler")
    budgets: Budgets = Budgets()
    stopping: Stopping = Stopping()
    resources: Resources = Resources()
    probe_size: int = Field(256, ge=1)
    target_acc: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self):
        seeds = self.seed_list()
        if not seeds:
            raise ValueError("seeds must be at least 1")
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct and ≥ 0, got {seeds}")
        return self

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


# --------------------------------------------------------------------------- loading
def _walk_fields(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The valid keys at ``loc`` (the parent of a rejected key), when that is a model."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return list(model.model_fields)


def _format_errors(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("list[", "literal[", "float", "int"))))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = _walk_fields(SweepSpec, loc[:-1])
            parts.append(f"unknown key '{loc[-1]}' at {path}" + (f"; valid: {', '.join(valid)}" if valid else ""))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{path}: {msg} (got {err.get('input')!r})")
    # a union reports one error per member; keep them, they name the alternatives
    return f"{source}: " + "; ".join(dict.fromkeys(parts))


def spec_path(name_or_path: str | Path) -> Path:
    """A spec by file path, or by name in ``sweeps/`` (``mnist-mlp`` → ``sweeps/mnist-mlp.yaml``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p.resolve()
    candidate = SWEEPS_DIR / f"{p.name.removesuffix('.yaml')}.yaml"
    if candidate.exists():
        return candidate
    names = sorted(f.stem for f in SWEEPS_DIR.glob("*.yaml"))
    raise UnknownNameError("sweep spec (file path or name in sweeps/)", str(name_or_path), names)


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a sweep spec is a YAML mapping, got {type(data).__name__}")
    try:
        return SweepSpec(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_spec(name_or_path: str | Path) -> tuple[SweepSpec, Path]:
    path = spec_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    spec = parse_spec(data if data is not None else {}, str(path))
    if spec.name is None:
        spec = spec.model_copy(update={"name": path.stem})
    return spec, path


def spec_for_dataset(dataset: str) -> Path:
    """The spec in ``sweeps/`` whose dataset is ``dataset`` (default.yaml when it matches or none does)."""
    default = SWEEPS_DIR / "default.yaml"
    matches = []
    for f in sorted(SWEEPS_DIR.glob("*.yaml")):
        data = yaml.safe_load(f.read_text()) or {}
        if isinstance(data, dict) and data.get("dataset", "digits") == dataset:
            matches.append(f)
    if default in matches or not matches:
        return default
    return matches[0]


# --------------------------------------------------------------------------- search spaces
def _check_keys(keys, algo_params: type[HParams], where: str, algo: str, *, train_only: bool = False) -> None:
    valid = list(TrainConfig.model_fields) + ([] if train_only else list(algo_params.model_fields))
    for key in keys:
        if key in BUDGET_KEYS:
            raise ConfigError(f"{where}.{key}: '{key}' is set by {BUDGET_KEYS[key]}, not here")
        if key not in valid:
            raise UnknownNameError(f"hyperparameter at {where} (declared by training{'' if train_only else ' or ' + algo})",
                                   key, [v for v in valid if v not in BUDGET_KEYS])


def _as_dist(search: dict) -> Dist:
    return Dist(**search)


def split_train(values: dict) -> tuple[dict, dict]:
    train = {k: v for k, v in values.items() if k in TrainConfig.model_fields}
    return train, {k: v for k, v in values.items() if k not in TrainConfig.model_fields}


def resolve_space(spec: SweepSpec, algo: str, algo_cls) -> dict[str, Dist]:
    """The search space of one algorithm: declared defaults, minus fixed keys, with the spec's overrides."""
    fixed = set(spec.optimizer) | set(spec.params.get(algo, {}))
    space: dict[str, Dist] = {}
    for key, search in {**TrainConfig.search_space(), **algo_cls.Params.search_space()}.items():
        if key not in fixed and key not in BUDGET_KEYS:
            space[key] = _as_dist(search)
    for block, where in ((spec.search_spaces.get(ALL, {}), f"search_spaces.{ALL}"),
                         (spec.search_spaces.get(algo, {}), f"search_spaces.{algo}")):
        for key, dist in block.items():
            if key in fixed:
                raise ConfigError(f"{where}.{key}: '{key}' is both searched and held fixed "
                                  f"({'optimizer' if key in spec.optimizer else 'params.' + algo}); remove one")
            if dist is None:
                space.pop(key, None)
            else:
                space[key] = dist
    return dict(sorted(space.items()))


def validate(spec: SweepSpec, algorithms: list[str]) -> dict[str, dict[str, Dist]]:
    """Check every name and value the sweep will use; return the search space of each algorithm."""
    from harness.registry import get_algorithm

    for algo in list(spec.params) + [a for a in spec.search_spaces if a != ALL]:
        where = "params" if algo in spec.params else "search_spaces"
        try:
            get_algorithm(algo)
        except UnknownNameError as exc:
            raise UnknownNameError(f"algorithm at {where}.{algo}", algo, exc.valid) from None
    _check_keys(spec.optimizer, HParams, "optimizer", "", train_only=True)
    TrainConfig.build(spec.optimizer, owner="optimizer")
    _check_keys(spec.search_spaces.get(ALL, {}), HParams, f"search_spaces.{ALL}", "", train_only=True)
    for algo, values in spec.params.items():
        cls = get_algorithm(algo)
        _check_keys(values, cls.Params, f"params.{algo}", algo)
        train, params = split_train(values)
        TrainConfig.build({**spec.optimizer, **train}, owner=f"params.{algo}")
        cls.Params.build(params, owner=f"params.{algo}")
    for algo, block in spec.search_spaces.items():
        if algo != ALL:
            _check_keys(block, get_algorithm(algo).Params, f"search_spaces.{algo}", algo)
    spaces = {}
    for algo in algorithms:
        cls = get_algorithm(algo)
        space = resolve_space(spec, algo, cls)
        for key, dist in space.items():  # every value the sampler can draw must be valid
            for value in dist.endpoints():
                train, params = split_train({key: value})
                TrainConfig.build({**spec.optimizer, **train}, owner=f"search space of {algo}")
                cls.Params.build(params, owner=f"search space of {algo}")
        spaces[algo] = space
    return spaces


def _plain(value):
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value):
        return float(value)
    return value


def sample_configs(space: dict[str, Dist], n: int, *, seed: int, algo: str) -> list[dict]:
    """``n`` configurations drawn from ``space`` (as Ray Tune's samplers draw them, without Ray),
    seeded per algorithm (adding an algorithm to a sweep does not change the others' draws)."""
    import numpy as np

    rng = np.random.default_rng([seed, zlib.crc32(algo.encode())])
    return [{k: _plain(d.sample(rng)) for k, d in space.items()} for _ in range(n)]


def space_to_yaml(space: dict[str, Dist]) -> dict:
    return {k: d.model_dump(exclude_none=True) for k, d in space.items()}

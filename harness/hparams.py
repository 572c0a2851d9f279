"""Typed hyperparameter declarations, validation, and the shared training hyperparameters.

Every tunable number is declared once, with its type, default, valid range, a docstring
and (optionally) its default search space. Unknown keys and out-of-range values are
rejected with a one-line :class:`~harness.errors.ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Search:
    """A default search space for one hyperparameter (turned into a Ray Tune sampler by the sweep)."""

    kind: Literal["loguniform", "uniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: tuple | None = None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    @property
    def log_scale(self) -> bool:
        return self.kind == "loguniform"


def loguniform(low: float, high: float) -> Search:
    return Search("loguniform", float(low), float(high))


def uniform(low: float, high: float) -> Search:
    return Search("uniform", float(low), float(high))


def randint(low: int, high: int) -> Search:
    """Integers in [low, high] inclusive."""
    return Search("randint", int(low), int(high))


def choice(*values) -> Search:
    return Search("choice", values=tuple(values))


def hp(default: Any, doc: str, *, search: Search | None = None,
       when: dict[str, tuple] | list[dict[str, tuple]] | None = None, **bounds) -> Any:
    """Declare one hyperparameter: ``beta: float = hp(0.1, "output step", gt=0, search=loguniform(...))``.

    ``bounds`` are pydantic constraints (``ge``, ``gt``, ``le``, ``lt``). ``when`` says in which
    configurations the knob acts: ``{"propagation": ("inverse",)}`` (every listed field has one of
    its values), or a list of such alternatives (any of them). Elsewhere the knob is neither searched
    nor recorded, and setting it explicitly is refused (no phantom knobs).
    """
    extra = {}
    if search is not None:
        extra["search"] = search.to_dict()
    if when:
        alternatives = [when] if isinstance(when, dict) else list(when)
        extra["when"] = [{k: list(v) for k, v in alt.items()} for alt in alternatives]
    return Field(default, description=doc, json_schema_extra=extra or None, **bounds)


def describe_when(alternatives: list[dict]) -> str:
    """``[{"a": [1, 2]}, {"b": ["x"]}]`` → ``a in {1, 2} or b = x``."""
    def one(alt):
        return " and ".join(f"{k} = {v[0]}" if len(v) == 1 else f"{k} in {{{', '.join(map(str, v))}}}"
                            for k, v in alt.items())
    return " or ".join(one(alt) for alt in alternatives)


class HParams(BaseModel):
    """Base class of every hyperparameter set: unknown keys are rejected, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    @classmethod
    def build(cls, values: dict | None = None, *, owner: str = "", refuse_inactive: bool = False) -> "HParams":
        """Validate ``values``; with ``refuse_inactive``, a knob given explicitly where it does not act
        (see ``hp(when=...)``) is an error."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise UnknownNameError(f"hyperparameter{' of ' + owner if owner else ''}", unknown[0], cls.model_fields)
        try:
            built = cls(**values)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, owner)) from None
        if refuse_inactive:
            idle = sorted(set(values) - built.active_names())
            if idle:
                needs = describe_when(cls.conditions()[idle[0]])
                raise ConfigError(f"{owner + ': ' if owner else ''}hyperparameter '{idle[0]}' does not act in this "
                                  f"configuration (it acts only when {needs}); remove it")
        return built

    @classmethod
    def conditions(cls) -> dict[str, list[dict[str, list]]]:
        """{name: [{field: values}, ...]} for every knob that acts only in some configurations."""
        return {name: list(f.json_schema_extra["when"]) for name, f in cls.model_fields.items()
                if f.json_schema_extra and "when" in f.json_schema_extra}

    @classmethod
    def inactive(cls, values: dict) -> set[str]:
        """Names that do not act given ``values`` (missing fields take their defaults). A knob is
        inactive when no alternative of its ``when`` holds (a field it depends on has another value,
        or is itself inactive)."""
        full = {name: f.default for name, f in cls.model_fields.items()}
        full.update({k: v for k, v in values.items() if k in full})
        conds, idle = cls.conditions(), set()
        changed = True
        while changed:
            changed = False
            for name, alternatives in conds.items():
                acts = any(all(k not in idle and full[k] in v for k, v in alt.items()) for alt in alternatives)
                if name not in idle and not acts:
                    idle.add(name)
                    changed = True
        return idle

    def active_names(self) -> set[str]:
        return set(type(self).model_fields) - type(self).inactive(self.model_dump())

    def active_dump(self) -> dict:
        """The values of the knobs that act in this configuration (what a result records)."""
        active = self.active_names()
        return {k: v for k, v in self.model_dump().items() if k in active}

    @classmethod
    def search_space(cls) -> dict[str, dict]:
        """The declared default search space: {name: Search.to_dict()}."""
        out = {}
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra or {}
            if "search" in extra:
                out[name] = dict(extra["search"])
        return out

    @classmethod
    def describe(cls) -> list[dict]:
        """One dict per hyperparameter: name, type, default, bounds, search space, doc."""
        rows = []
        for name, field in cls.model_fields.items():
            bounds = {}
            for meta in field.metadata:
                for key in ("ge", "gt", "le", "lt"):
                    if getattr(meta, key, None) is not None:
                        bounds[key] = getattr(meta, key)
            ann = field.annotation
            if get_origin(ann) is Literal:
                type_name = "one of " + "|".join(map(str, get_args(ann)))
            else:
                type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            rows.append(
                {
                    "name": name,
                    "type": type_name,
                    "default": field.default,
                    "bounds": bounds,
                    "search": (field.json_schema_extra or {}).get("search"),
                    "when": (field.json_schema_extra or {}).get("when"),
                    "doc": field.description or "",
                }
            )
        return rows


def _one_line(exc: ValidationError, owner: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        msg = err["msg"]
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            msg = f"must be one of {ctx['expected']}"
        parts.append(f"{loc}={value}: {msg}")
    prefix = f"{owner}: " if owner else ""
    return prefix + "invalid hyperparameter " + "; ".join(parts)


class TrainConfig(HParams):
    """Training hyperparameters shared by every algorithm (declared once, here)."""

    optimizer: Literal["sgd", "momentum", "adam"] = hp("adam", "shared optimizer applied to every algorithm's update")
    lr: float = hp(1e-3, "learning rate of the forward weights", gt=0, le=1e6, search=loguniform(1e-4, 1e-2))
    weight_decay: float = hp(0.0, "L2 weight decay (coupled, as torch.optim)", ge=0, le=1)
    momentum: float = hp(0.9, "momentum coefficient", ge=0, lt=1, when={"optimizer": ("momentum",)})
    batch_size: int = hp(128, "training minibatch size", ge=1, le=65536)
    epochs: int = hp(100, "maximum number of epochs", ge=1, le=100000)
    patience: int = hp(10, "stop when validation accuracy has not improved by min_delta for this many epochs", ge=1)
    min_delta: float = hp(0.0, "smallest improvement of validation accuracy that resets patience", ge=0, le=1)
    diverge_loss: float = hp(100.0, "a mean training loss above this (or non-finite) ends the trial as diverged", gt=0)
    init: Literal["glorot", "kaiming", "torch"] = hp("glorot", "weight initialisation (biases start at zero)")
    lr_schedule: Literal["constant", "multistep", "cosine"] = hp(
        "constant", "learning-rate schedule of the shared optimizer, set at the start of every epoch")
    lr_milestones: str = hp("", "epochs (comma-separated, increasing) after which the learning rate is multiplied "
                                "by lr_gamma", when={"lr_schedule": ("multistep",)})
    lr_gamma: float = hp(0.1, "factor applied to the learning rate at each milestone", gt=0, le=1,
                         when={"lr_schedule": ("multistep",)})

    @field_validator("lr_milestones")
    @classmethod
    def _increasing_epochs(cls, value: str) -> str:
        try:
            epochs = [int(v) for v in value.split(",")] if value.strip() else []
        except ValueError:
            raise ValueError(f"lr_milestones '{value}': expected comma-separated epochs, e.g. 50,75") from None
        if any(e < 1 for e in epochs) or epochs != sorted(set(epochs)):
            raise ValueError(f"lr_milestones '{value}': epochs must be positive and strictly increasing")
        return ",".join(map(str, epochs))

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (1-based) ``epoch``: a pure function of the epoch, so a resumed trial continues
        the same schedule. multistep: lr · γ^(milestones < epoch); cosine: lr · (1 + cos(π (epoch−1)/epochs))/2,
        the closed form of torch's CosineAnnealingLR with T_max = epochs and η_min = 0."""
        if self.lr_schedule == "multistep":
            passed = sum(1 for m in self.lr_milestones.split(",") if m and int(m) < epoch)
            return self.lr * self.lr_gamma ** passed
        if self.lr_schedule == "cosine":
            return self.lr * (1 + math.cos(math.pi * (epoch - 1) / self.epochs)) / 2
        return self.lr


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["lr=1e-3", "beta=0.1"]`` → ``{"lr": "1e-3", "beta": "0.1"}`` (pydantic converts the strings)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}'")
        out[key.strip()] = value.strip()
    return out


def split_overrides(overrides: dict, algo_params: type[HParams], algo: str) -> tuple[dict, dict]:
    """Split flat ``key=value`` overrides into (training, algorithm) hyperparameters."""
    train, algo_values = {}, {}
    for key, value in overrides.items():
        if key in TrainConfig.model_fields:
            train[key] = value
        elif key in algo_params.model_fields:
            algo_values[key] = value
        else:
            valid = list(TrainConfig.model_fields) + list(algo_params.model_fields)
            raise UnknownNameError(f"hyperparameter (training or {algo})", key, valid)
    return train, algo_values


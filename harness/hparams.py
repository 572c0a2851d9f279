"""Typed hyperparameter declarations, validation, and the shared training hyperparameters.

Every tunable number is declared once, with its type, default, valid range, a docstring
and (optionally) its default search space. Unknown keys and out-of-range values are
rejected with a one-line :class:`~harness.errors.ConfigError`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def hp(default: Any, doc: str, *, search: Search | None = None, **bounds) -> Any:
    """Declare one hyperparameter: ``beta: float = hp(0.1, "output step", gt=0, search=loguniform(...))``.

    ``bounds`` are pydantic constraints (``ge``, ``gt``, ``le``, ``lt``).
    """
    extra = {"search": search.to_dict()} if search is not None else None
    return Field(default, description=doc, json_schema_extra=extra, **bounds)


class HParams(BaseModel):
    """Base class of every hyperparameter set: unknown keys are rejected, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    @classmethod
    def build(cls, values: dict | None = None, *, owner: str = "") -> "HParams":
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise UnknownNameError(f"hyperparameter{' of ' + owner if owner else ''}", unknown[0], cls.model_fields)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, owner)) from None

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
    momentum: float = hp(0.9, "momentum coefficient (optimizer=momentum only)", ge=0, lt=1)
    batch_size: int = hp(128, "training minibatch size", ge=1, le=65536)
    epochs: int = hp(100, "maximum number of epochs", ge=1, le=100000)
    patience: int = hp(10, "stop when validation accuracy has not improved by min_delta for this many epochs", ge=1)
    min_delta: float = hp(0.0, "smallest improvement of validation accuracy that resets patience", ge=0, le=1)
    diverge_loss: float = hp(100.0, "a mean training loss above this (or non-finite) ends the trial as diverged", gt=0)
    init: Literal["glorot", "kaiming", "torch"] = hp("glorot", "weight initialisation (biases start at zero)")


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


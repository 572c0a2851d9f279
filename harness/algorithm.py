"""The plugin contract: what an algorithm is (docs/design.md, "Plugin contract"; docs/plugins.md).

An algorithm subclasses :class:`Algorithm`, declares ``name``, ``description``,
``reference``, ``version`` (bump it whenever the update rule changes), its hyperparameters
as a nested ``Params(HParams)`` class and its ``capabilities``, and implements

* ``compute_update(x, y)``: write the update direction (a pseudo-gradient) of every forward
  parameter into ``.grad`` and return the loss and logits, *without* changing any state
  (the harness calls it on probe batches for the alignment metric);
* optionally ``step(x, y)``, one training update (the default is ``compute_update``), when the
  algorithm also learns feedback: it runs its feedback work under ``self.phase("feedback")``
  before or after ``compute_update`` (tp's inverses, rfl's sleep–wake schedule);
* optionally ``pretrain(data, batch_size)`` (feedback work before the first update) and
  ``between_epochs(data, batch_size)`` (feedback-only work after every forward epoch);
* ``extra_state``/``load_extra_state`` for checkpoints, ``diagnostics`` for per-epoch metrics;
* ``plausibility()``: what the configuration actually run does (weight transport, locality,
  phases, feedback learning), recorded in every trial summary.

Work is marked with ``self.phase("forward" | "credit" | "feedback")`` for the cost meter.
Only ``bp`` may call ``loss.backward()`` on the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

import torch

from harness.cost import NullMeter
from harness.errors import CreditbenchError, UnsupportedError
from harness.hparams import HParams, TrainConfig
from harness.networks import Network


@dataclass(frozen=True)
class Capabilities:
    """What an algorithm supports; ``check`` refuses any other network with a clear error."""

    layers: frozenset = frozenset({"linear"})
    activations: frozenset | None = None  # None: any activation
    needs_invertible: bool = False  # needs f⁻¹ of every hidden activation (target propagation)

    def check(self, algo: str, net: Network) -> None:
        bad_layers = net.layer_kinds - self.layers
        if bad_layers:
            raise UnsupportedError(
                f"algorithm '{algo}' does not support {'/'.join(sorted(bad_layers))} layers (network '{net.spec}'); "
                f"supported layers: {', '.join(sorted(self.layers))}"
            )
        if self.activations is not None:
            bad = net.activations - self.activations
            if bad:
                raise UnsupportedError(
                    f"algorithm '{algo}' does not support activation {'/'.join(sorted(bad))} (network '{net.spec}'); "
                    f"supported: {', '.join(sorted(self.activations))}"
                )
        if self.needs_invertible:
            bad = sorted(layer.act.name for layer in net.layers[:-1] if not layer.act.invertible)
            if bad:
                raise UnsupportedError(f"algorithm '{algo}' needs invertible hidden activations; "
                                       f"'{bad[0]}' (network '{net.spec}') is not")

    def to_dict(self) -> dict:
        return {
            "layers": sorted(self.layers),
            "activations": "any" if self.activations is None else sorted(self.activations),
            "needs_invertible": self.needs_invertible,
        }


PHASE_KINDS = ("single", "two", "sleep_wake")
TRANSPORT_KINDS = ("none", "values", "sign", "init")


@dataclass(frozen=True)
class Plausibility:
    """What one configuration of an algorithm does, as recorded in every trial summary.

    ``weight_transport``: any credit or feedback computation reads W (its values, its sign, or a
    copy of it used to initialise feedback); ``transport`` says which of these (``TRANSPORT_KINDS``:
    ``none``, ``values``, ``sign``, ``init``; by default ``values`` when ``weight_transport`` and
    ``none`` otherwise), so that sign-concordant feedback is not mistaken for full transport. ``local``: every weight update uses only its pre- and
    post-synaptic quantities and a broadcast signal. ``phases``: ``single`` (forward pass and credit
    signal, nothing else), ``two`` (a separate feedback-learning pass on every update) or
    ``sleep_wake`` (feedback learned in offline phases with the forward weights frozen).
    ``feedback_learning``: the feedback pathway is learned. ``notes``: one line saying why."""

    weight_transport: bool
    local: bool
    phases: Literal["single", "two", "sleep_wake"]
    feedback_learning: bool
    notes: str
    transport: str = ""

    def __post_init__(self):
        if self.phases not in PHASE_KINDS:
            raise CreditbenchError(f"plausibility phases '{self.phases}': valid: {', '.join(PHASE_KINDS)}")
        if not self.transport:
            object.__setattr__(self, "transport", "values" if self.weight_transport else "none")
        if self.transport not in TRANSPORT_KINDS:
            raise CreditbenchError(f"plausibility transport '{self.transport}': valid: {', '.join(TRANSPORT_KINDS)}")
        if (self.transport != "none") != self.weight_transport:
            raise CreditbenchError(f"plausibility transport '{self.transport}' contradicts "
                                   f"weight_transport={self.weight_transport}")
        if not self.notes or "\n" in self.notes:
            raise CreditbenchError("plausibility notes must be one non-empty line")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, mean cross-entropy of the batch
    logits: torch.Tensor
    info: dict = field(default_factory=dict)


class Algorithm:
    name: ClassVar[str]
    description: ClassVar[str]
    reference: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[HParams]] = HParams
    capabilities: ClassVar[Capabilities] = Capabilities()
    # what the report needs to show diagnostics(): name → {"label": ..., "unit": ...}; a name ending in
    # "_l*" covers the per-layer columns name_l1, name_l2, ... Recorded in every trial summary, so the
    # report reads it from the results and never imports algorithm code. Undeclared ones show their name.
    report_labels: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, net: Network, params: HParams | dict | None = None, *,
                 generator: torch.Generator | None = None, meter=None):
        self.capabilities.check(self.name, net)
        self.net = net
        self.hp = params if isinstance(params, self.Params) else self.Params.build(params, owner=self.name)
        self.gen = generator if generator is not None else torch.Generator(device=self.device).manual_seed(0)
        self.meter = meter or NullMeter()
        self.setup()

    # ---------------------------------------------------------------- to override
    def setup(self) -> None:
        """Build extra state (feedback weights, inverses, ...) for ``self.net``."""

    def compute_update(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        raise NotImplementedError

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        """One training update: pseudo-gradients into ``.grad``. Override it to learn feedback too
        (under ``self.phase("feedback")``), before or after ``compute_update``."""
        return self.compute_update(x, y)

    def pretrain(self, data, batch_size: int) -> None:
        """Optional feedback pre-training before forward training (e.g. DTP inverses)."""

    def between_epochs(self, data, batch_size: int) -> None:
        """Optional feedback-only work after every forward epoch (e.g. DDTP's extra feedback epochs),
        the same work each time; the cost meter counts it as feedback, amortised over the updates."""

    def update_kind(self) -> str:
        """Kind of the next update; updates of one kind do the same work (the cost meter counts
        one of each kind), e.g. ``wake``/``sleep`` under a sleep–wake schedule."""
        return "update"

    def update_mix(self) -> dict[str, float]:
        """Long-run share of each update kind (the cost meter amortises per-update cost with it)."""
        return {"update": 1.0}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        if state:
            raise CreditbenchError(f"algorithm '{self.name}' has no extra state to restore")

    def diagnostics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Per-epoch diagnostics on the probe batch (off the training path)."""
        return {}

    def plausibility(self) -> Plausibility:
        """What this configuration does (weight transport, locality, phases, feedback learning)."""
        raise NotImplementedError(f"algorithm '{self.name}' must declare plausibility()")

    # ---------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return self.net.layers[0].weight.device

    def phase(self, name: str):
        return self.meter.phase(name)

    @classmethod
    def spec(cls) -> dict:
        """A JSON-serialisable description, saved with every result (``origin``: where its code comes from)."""
        from harness.provenance import source_sha256
        from harness.registry import algorithm_origin

        return {
            "name": cls.name,
            "version": cls.version,
            "description": cls.description,
            "reference": cls.reference,
            "capabilities": cls.capabilities.to_dict(),
            "hyperparameters": cls.Params.describe(),
            "origin": algorithm_origin(cls),
            **source_sha256(cls),
        }


def output_error(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean softmax cross-entropy and e = ∂L/∂a_L = (softmax(a_L) − onehot(y)) / n.

    Evaluated with the same ATen kernels as the cross-entropy's derivative in bp, so that
    rules equal to bp in exact arithmetic are equal to it bit for bit."""
    logp = torch.ops.aten._log_softmax(logits, 1, False)
    loss, total = torch.ops.aten.nll_loss_forward(logp, y, None, 1, -100)
    g = torch.ops.aten.nll_loss_backward(torch.ones_like(loss), logp, y, None, 1, -100, total)
    return loss, torch.ops.aten._log_softmax_backward_data(g, logp, 1, logits.dtype)


def set_grad(param: torch.Tensor, value: torch.Tensor) -> None:
    param.grad = value


def validate_algorithm_class(cls) -> None:
    """Called by the registry: a plugin must declare its identity and its hyperparameters."""
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise CreditbenchError(f"{cls!r} is not an Algorithm subclass")
    for attr in ("name", "description", "reference"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise CreditbenchError(f"algorithm class {cls.__name__} must declare a non-empty '{attr}'")
    if cls.plausibility is Algorithm.plausibility:
        raise CreditbenchError(f"algorithm '{cls.name}' must declare plausibility() (see harness.algorithm.Plausibility)")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, HParams)):
        raise CreditbenchError(f"algorithm '{cls.name}': Params must subclass harness.hparams.HParams")
    clash = set(cls.Params.model_fields) & set(TrainConfig.model_fields)
    if clash:
        raise CreditbenchError(
            f"algorithm '{cls.name}' declares hyperparameters that clash with training ones: {sorted(clash)}"
        )

"""The cost meter: FLOPs per update by phase, wall time per update, peak memory.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over a short window of
real updates (the counter roughly doubles step time, and shapes fix the count). Matmuls and
convolutions count 2·M·N·K as in PyTorch's own registry; elementwise work, which that
registry counts as 0, is added here at one FLOP per output element (reductions: per input
element), so outer-product / Hebbian updates written with broadcasting are not missed.

Algorithms mark their phases with ``with self.phase("credit"): ...``; work outside every
phase is not attributed. Phases nest: the innermost one gets the work.
"""

from __future__ import annotations

import math
import resource
import time
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

PHASES = ("forward", "credit", "feedback")

aten = torch.ops.aten
_ELEMENTWISE = [
    aten.add, aten.sub, aten.mul, aten.div, aten.neg, aten.exp, aten.log, aten.sqrt, aten.rsqrt, aten.pow,
    aten.tanh, aten.tanh_backward, aten.atanh, aten.relu, aten.leaky_relu, aten.threshold_backward,
    aten.leaky_relu_backward, aten.clamp, aten.clamp_min, aten.clamp_max, aten.where, aten.reciprocal,
    aten.addcmul, aten.addcdiv, aten.lerp, aten.sign, aten.abs, aten.eq, aten.gt, aten.lt, aten.ge, aten.le,
    aten._softmax, aten._log_softmax, aten._log_softmax_backward_data, aten._softmax_backward_data,
    aten.sigmoid, aten.square, aten.maximum, aten.minimum, aten.copy_, aten.fill_,
]
_ELEMENTWISE += [getattr(aten, op.__name__.split(".")[-1] + "_") for op in list(_ELEMENTWISE)
                 if hasattr(aten, op.__name__.split(".")[-1] + "_")]  # in-place variants (mul_, add_, lerp_, ...)
_REDUCTIONS = [aten.sum, aten.mean, aten.nll_loss_forward, aten.nll_loss_backward, aten.linalg_vector_norm,
               aten.amax, aten.max, aten.norm]


def _numel(shape) -> int:
    if shape is None:
        return 0
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple, torch.Size)):
        return sum(_numel(s) for s in shape)
    return math.prod(shape) if isinstance(shape, (list, tuple, torch.Size)) else 0


def _elementwise(*args, out_shape=None, **kwargs) -> int:
    return _numel(out_shape)


def _reduction(*args, out_shape=None, **kwargs) -> int:
    return max((_numel(a) for a in args if isinstance(a, (list, tuple, torch.Size))), default=0)


ELEMENTWISE_MAPPING = {**{op: _elementwise for op in _ELEMENTWISE}, **{op: _reduction for op in _REDUCTIONS}}


def flop_counter(elementwise: bool = True) -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=ELEMENTWISE_MAPPING if elementwise else None)


class CostMeter:
    """Collects per-update cost. ``phase(name)`` is cheap when no count is running."""

    def __init__(self, device: torch.device | str = "cpu", *, warmup: int = 5, elementwise: bool = True):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.warmup = warmup
        self.elementwise = elementwise
        self.updates_seen = 0
        self.step_ns: list[int] = []  # measured wall time per update (after warm-up)
        self.phase_ns: dict[str, list[int]] = {p: [] for p in PHASES}  # per timed update
        self.flops_by_phase: dict[str, float] | None = None  # averaged per update over the window
        self._counter: FlopCounterMode | None = None
        self._stack: list[str] = []
        self._mark_flops = 0
        self._mark_ns = 0
        self._window: list[dict[str, int]] = []
        self._current: dict[str, int] = {}  # FLOPs of the update in progress, by phase
        self._cur_ns: dict[str, int] = {}  # its wall time, by phase
        self._cuda_events: list = []

    # ------------------------------------------------------------------ phases
    def _flush(self) -> None:
        now_ns = time.perf_counter_ns()
        if self._stack:
            top = self._stack[-1]
            if self._counter is not None:
                total = self._counter.get_total_flops()
                self._current[top] = self._current.get(top, 0) + total - self._mark_flops
                self._mark_flops = total
            self._cur_ns[top] = self._cur_ns.get(top, 0) + now_ns - self._mark_ns
        elif self._counter is not None:
            self._mark_flops = self._counter.get_total_flops()
        self._mark_ns = now_ns

    @contextmanager
    def phase(self, name: str):
        if name not in PHASES:
            raise ValueError(f"unknown phase '{name}'; valid: {', '.join(PHASES)}")
        self._flush()
        self._stack.append(name)
        try:
            yield
        finally:
            self._flush()
            self._stack.pop()

    # ------------------------------------------------------------------ updates
    @contextmanager
    def update(self, count_flops: bool = False):
        """Wrap one whole update (algorithm step + optimizer step)."""
        self._current: dict[str, int] = {}
        self._cur_ns: dict[str, int] = {}
        timed = self.updates_seen >= self.warmup and not count_flops
        if count_flops:
            self._counter = flop_counter(self.elementwise)
            self._counter.__enter__()
            self._mark_flops = 0
        if self.cuda and timed:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter_ns()
        self._mark_ns = t0
        try:
            yield
        finally:
            t1 = time.perf_counter_ns()
            if count_flops:
                self._counter.__exit__(None, None, None)
                self._window.append(dict(self._current))
                self._counter = None
            if timed:
                if self.cuda:
                    end.record()
                    self._cuda_events.append((start, end))
                else:
                    self.step_ns.append(t1 - t0)
                    for p in PHASES:
                        self.phase_ns[p].append(self._cur_ns.get(p, 0))
            self.updates_seen += 1

    def close_flop_window(self) -> None:
        """Average the counted updates into per-update FLOPs by phase."""
        if self._window:
            n = len(self._window)
            self.flops_by_phase = {p: sum(w.get(p, 0) for w in self._window) / n for p in PHASES}
            self._window = []

    @property
    def counting_done(self) -> bool:
        return self.flops_by_phase is not None

    def _resolve_cuda(self) -> None:
        if self._cuda_events:
            torch.cuda.synchronize()
            self.step_ns.extend(int(s.elapsed_time(e) * 1e6) for s, e in self._cuda_events)
            self._cuda_events = []

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        self._resolve_cuda()
        self.close_flop_window()
        flops = dict(self.flops_by_phase or {})
        out: dict = {"flops_per_update": {"total": sum(flops.values()), **flops} if flops else {}}
        if self.step_ns:
            ns = np.asarray(self.step_ns, dtype=np.float64)
            out["seconds_per_update"] = float(np.median(ns)) / 1e9
            out["seconds_per_update_mean"] = float(ns.mean()) / 1e9  # amortises rare work (sleep phases)
            out["seconds_per_update_p10"] = float(np.percentile(ns, 10)) / 1e9
            out["seconds_per_update_p90"] = float(np.percentile(ns, 90)) / 1e9
            out["timed_updates"] = int(ns.size)
        else:
            out["seconds_per_update"] = float("nan")
        if self.phase_ns["forward"]:
            out["seconds_per_update_by_phase"] = {p: float(np.median(self.phase_ns[p])) / 1e9 for p in PHASES}
        out["peak_memory_bytes"] = peak_memory_bytes(self.device)
        return out

    def state_dict(self) -> dict:
        self._resolve_cuda()
        return {"updates_seen": self.updates_seen, "step_ns": list(self.step_ns), "flops_by_phase": self.flops_by_phase,
                "phase_ns": {p: list(v) for p, v in self.phase_ns.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates_seen = state["updates_seen"]
        self.step_ns = list(state["step_ns"])
        self.flops_by_phase = state["flops_by_phase"]
        self.phase_ns = {p: list(v) for p, v in state["phase_ns"].items()}


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the allocator's peak; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class NullMeter:
    """Used outside training (probes, diagnostics): phases cost nothing."""

    @contextmanager
    def phase(self, name: str):
        yield

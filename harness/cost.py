"""The cost meter: FLOPs per update by phase, wall time per update, peak memory.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over a short window of
real updates (the counter roughly doubles step time, and shapes fix the count). Matmuls and
convolutions count 2·M·N·K as in PyTorch's own registry; elementwise work, which that
registry counts as 0, is added here at one FLOP per output element (reductions: per input
element; a max-pool is a reduction of its input), so outer-product / Hebbian updates written with
broadcasting are not missed; SVDs and
pseudoinverses, which it does not count either, get the analytic LAPACK count (``svd_flops``), and
matrix–vector and dot products (also missing from it) 2·m·n and 2·n.

Algorithms mark their phases with ``with self.phase("credit"): ...``; work outside every
phase is not attributed. Phases nest: the innermost one gets the work.

Work before the first update (``Algorithm.pretrain``: rfl's σ̂ warm-up and first sleep, tp/dtp's
inverse pre-training) runs inside :meth:`CostMeter.pretraining`, a FLOP window of its own: all of it
is ``pretrain_flops``, and counts as feedback work in the cumulative FLOPs, not in any update's cost.

Feedback-only work after every forward epoch (``Algorithm.between_epochs``: DDTP's extra feedback
epochs) runs inside :meth:`CostMeter.between_epochs`: its first call is FLOP-counted (every call does
the same work: same data, same batches), every call is timed, and all of it is feedback work. It is an
update's cost too, amortised: per-update FLOPs and mean time add (its total so far) / (updates so far),
which over whole epochs is exactly one interlude per epoch's updates.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.schema import COST_PHASES as PHASES  # the results format owns the cost-phase names

aten = torch.ops.aten
_ELEMENTWISE = [
    aten.add, aten.sub, aten.mul, aten.div, aten.neg, aten.exp, aten.log, aten.sqrt, aten.rsqrt, aten.pow,
    aten.tanh, aten.tanh_backward, aten.atanh, aten.relu, aten.leaky_relu, aten.threshold_backward,
    aten.leaky_relu_backward, aten.clamp, aten.clamp_min, aten.clamp_max, aten.where, aten.reciprocal,
    aten.addcmul, aten.addcdiv, aten.lerp, aten.sign, aten.abs, aten.eq, aten.gt, aten.lt, aten.ge, aten.le,
    aten._softmax, aten._log_softmax, aten._log_softmax_backward_data, aten._softmax_backward_data,
    aten.sigmoid, aten.square, aten.maximum, aten.minimum, aten.copy_, aten.fill_,
    aten.max_pool2d_with_indices_backward,  # one FLOP per element of the pool's input (the routed signal)
]
_ELEMENTWISE += [getattr(aten, op.__name__.split(".")[-1] + "_") for op in list(_ELEMENTWISE)
                 if hasattr(aten, op.__name__.split(".")[-1] + "_")]  # in-place variants (mul_, add_, lerp_, ...)
_REDUCTIONS = [aten.sum, aten.mean, aten.nll_loss_forward, aten.nll_loss_backward, aten.linalg_vector_norm,
               aten.amax, aten.max, aten.norm, aten.max_pool2d_with_indices]


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


def svd_flops(m: int, n: int, *, compute_uv: bool = True) -> int:
    """Golub & Van Loan's (Matrix Computations, 3rd ed., Fig. 8.6.1) count for the Golub–Reinsch SVD of
    an m×n matrix, p = max(m, n), k = min(m, n): singular values only 4pk² − 4k³/3; thin U and V
    14pk² + 8k³. PyTorch's FLOP counter has no formula for decompositions."""
    p, k = max(m, n), min(m, n)
    return int(14 * p * k * k + 8 * k ** 3) if compute_uv else int(4 * p * k * k - 4 * k ** 3 / 3)


def _svd(a_shape, *args, out_shape=None, **kwargs) -> int:
    """U and V computed unless they come back empty. (``torch.linalg.svdvals`` under a dispatch mode, as
    while counting, takes the path that computes them: a full SVD runs, and is counted.)"""
    batch = math.prod(a_shape[:-2])
    u_shape = out_shape[0] if out_shape else None
    return batch * svd_flops(a_shape[-2], a_shape[-1], compute_uv=bool(u_shape) and _numel(u_shape) > 0)


def _pinv(a_shape, *args, out_shape=None, **kwargs) -> int:
    """pinv(A) = V diag(1/s) Uᵀ: a thin SVD, the scaling of k columns and an m×k by k×n product."""
    m, n = a_shape[-2], a_shape[-1]
    k = min(m, n)
    return math.prod(a_shape[:-2]) * (svd_flops(m, n) + n * k + 2 * m * n * k)


def _grouped(*args, out_shape=None, **kwargs) -> int:
    """A grouped (``_foreach_*``) form of an elementwise op or reduction, as optimizers with ``foreach=True`` and
    ``clip_grad_norm_`` run it: one FLOP per element of every tensor in its first list of tensors (wherever it
    stands: ``_foreach_pow(scalar, tensors)``), as the per-tensor ops it stands for. (The counter sees the grouped
    op only: on CPU its per-tensor loop runs below the dispatch mode.)"""
    lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], (list, tuple, torch.Size))]
    return _numel(lists[0]) if lists else 0


# every elementwise op's grouped forms, out-of-place and in place (``_foreach_add``, ``_foreach_add_``, ...)
_GROUPED = [getattr(aten, f"_foreach_{op.__name__.split('.')[-1].rstrip('_')}{suffix}")
            for op in _ELEMENTWISE + _REDUCTIONS for suffix in ("", "_")
            if hasattr(aten, f"_foreach_{op.__name__.split('.')[-1].rstrip('_')}{suffix}")]
ELEMENTWISE_MAPPING = {**{op: _elementwise for op in _ELEMENTWISE}, **{op: _reduction for op in _REDUCTIONS},
                       **{op: _grouped for op in _GROUPED}}
def _mv(a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """Matrix × vector (PyTorch's registry has no formula for it): 2·m·n."""
    return 2 * a_shape[0] * a_shape[1]


def _dot(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


DECOMPOSITION_MAPPING = {aten._linalg_svd: _svd, aten.linalg_pinv: _pinv, aten.mv: _mv, aten.dot: _dot}


def flop_counter(elementwise: bool = True) -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={**DECOMPOSITION_MAPPING,
                                                          **(ELEMENTWISE_MAPPING if elementwise else {})})


class CostMeter:
    """Collects per-update cost. ``phase(name)`` is cheap when no count is running.

    Updates come in *kinds* (``Algorithm.update_kind``): updates of one kind do the same work
    (shapes fix the count), e.g. rfl's sleep–wake schedule has ``wake`` updates and ``sleep``
    updates that start with a sleep phase. The first update of each kind is FLOP-counted; every
    other update after the warm-up is timed. With the algorithm's long-run mix of kinds
    (``Algorithm.update_mix``), the per-update cost is the amortised cost of a whole period:
    Σ_kind share_kind · cost_kind, for FLOPs and for wall time alike. While a kind in the mix has
    not yet been seen (e.g. a sleep every S updates and fewer than S updates so far), the
    per-update figures are NaN: a number is reported only when it is what its name says.
    Cumulative FLOPs are exact: Σ_kind (updates of that kind so far) · FLOPs of one."""

    def __init__(self, device: torch.device | str = "cpu", *, warmup: int = 5, elementwise: bool = True,
                 mix: dict[str, float] | None = None):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.warmup = warmup
        self.elementwise = elementwise
        self.mix = dict(mix or {"update": 1.0})
        self.updates_seen = 0
        self.kind_updates: dict[str, int] = {}  # updates run, by kind
        self.kind_flops: dict[str, dict[str, int]] = {}  # FLOPs by phase of one update, by kind
        self.step_ns: dict[str, list[int]] = {}  # wall time of each timed update, by kind
        self.phase_ns: dict[str, dict[str, list[int]]] = {}  # by kind, by phase
        self._counter: FlopCounterMode | None = None
        self._stack: list[str] = []
        self._mark_flops = 0
        self._mark_ns = 0
        self._current: dict[str, int] = {}  # FLOPs of the update in progress, by phase
        self._cur_ns: dict[str, int] = {}  # its wall time, by phase
        self._cuda_events: list = []
        self.memory = MemoryWatch(self.device)
        self.pretrain_flops = 0.0  # FLOPs of the work before the first update (see pretraining)
        self.interlude_flops: dict[str, int] | None = None  # FLOPs by phase of one between-epochs call
        self.interlude_ns: list[int] = []  # wall time of each between-epochs call

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

    # ------------------------------------------------------------------ pre-training
    @contextmanager
    def pretraining(self):
        """The window before the first update: every FLOP counted in it, whatever its phase, is
        pre-training work (``pretrain_flops``), attributed to feedback in :meth:`cumulative_flops`."""
        counter = flop_counter(self.elementwise)
        with counter:
            yield
        self.pretrain_flops += float(counter.get_total_flops())

    # ------------------------------------------------------------------ between epochs
    @contextmanager
    def between_epochs(self):
        """Feedback-only work after a forward epoch: FLOP-counted on the first call, timed on every call;
        all of it is feedback work (whatever phase it marks), amortised over the updates."""
        counter = flop_counter(self.elementwise) if self.interlude_flops is None else None
        t0 = time.perf_counter_ns()
        if counter is not None:
            counter.__enter__()
        try:
            yield
        finally:
            if counter is not None:
                counter.__exit__(None, None, None)
                self.interlude_flops = {p: 0 for p in PHASES} | {"feedback": int(counter.get_total_flops())}
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self.interlude_ns.append(time.perf_counter_ns() - t0)

    def _interlude_share(self) -> dict[str, float]:
        """Between-epochs work so far per update so far, by phase (zeros when there is none)."""
        if not self.interlude_ns or self.updates_seen == 0:
            return {p: 0.0 for p in PHASES}
        return {p: len(self.interlude_ns) * f / self.updates_seen for p, f in self.interlude_flops.items()}

    # ------------------------------------------------------------------ updates
    @contextmanager
    def update(self, kind: str = "update", count_flops: bool | None = None):
        """Wrap one whole update (algorithm step + optimizer step) of the given kind. By default the
        first update of each kind is FLOP-counted (the counter slows it, so it is not timed)."""
        self._current, self._cur_ns = {}, {}
        if count_flops is None:
            count_flops = kind not in self.kind_flops
        timed = self.updates_seen >= self.warmup and not count_flops
        if count_flops:
            self._counter = flop_counter(self.elementwise)
            self._counter.__enter__()
            self._mark_flops = 0
        if self.cuda and timed:
            stream = torch.cuda.current_stream(self.device)  # the trial's device, not the current one
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
        t0 = time.perf_counter_ns()
        self._mark_ns = t0
        try:
            yield
        finally:
            t1 = time.perf_counter_ns()
            if count_flops:
                self._counter.__exit__(None, None, None)
                self._counter = None
                self.kind_flops[kind] = {p: self._current.get(p, 0) for p in PHASES}
            if timed and self.cuda:  # phases are not timed: the host clock sees only kernel launches
                end.record(stream)
                self._cuda_events.append((kind, start, end))
            elif timed:
                by_phase = self.phase_ns.setdefault(kind, {p: [] for p in PHASES})
                for p in PHASES:
                    by_phase[p].append(self._cur_ns.get(p, 0))
                self.step_ns.setdefault(kind, []).append(t1 - t0)
            self.kind_updates[kind] = self.kind_updates.get(kind, 0) + 1
            self.updates_seen += 1

    def _resolve_cuda(self) -> None:
        if self._cuda_events:
            torch.cuda.synchronize(self.device)
            for kind, s, e in self._cuda_events:
                self.step_ns.setdefault(kind, []).append(int(s.elapsed_time(e) * 1e6))
            self._cuda_events = []

    def _amortised(self, per_kind: dict[str, float]) -> float:
        """Σ_kind share · value over the mix; NaN while a kind of the mix has no value yet."""
        total = sum(self.mix.values())
        if any(k not in per_kind for k, w in self.mix.items() if w > 0):
            return float("nan")
        return sum(w * per_kind[k] for k, w in self.mix.items() if w > 0) / total

    @property
    def flops_by_phase(self) -> dict[str, float] | None:
        """Amortised FLOPs per update by phase (None until every kind of the mix has been counted)."""
        if any(k not in self.kind_flops for k, w in self.mix.items() if w > 0):
            return None
        extra = self._interlude_share()
        return {p: self._amortised({k: f[p] for k, f in self.kind_flops.items()}) + extra[p] for p in PHASES}

    def cumulative_flops(self) -> dict[str, float]:
        """FLOPs of every update run so far, by phase (NaN if a kind that ran was never counted), and
        of the pre-training and the between-epochs work, which are feedback work."""
        out = {}
        for p in PHASES:
            out[p] = float(sum(n * self.kind_flops[k][p] if k in self.kind_flops else float("nan")
                               for k, n in self.kind_updates.items())) + (self.pretrain_flops if p == "feedback" else 0)
            if self.interlude_ns:
                out[p] += len(self.interlude_ns) * self.interlude_flops[p]
        return out

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        self._resolve_cuda()
        flops = self.flops_by_phase
        out: dict = {"flops_per_update": {"total": sum(flops.values()), **flops} if flops else {}}
        means = {k: float(np.mean(v)) / 1e9 for k, v in self.step_ns.items() if v}
        interlude_s = sum(self.interlude_ns) / 1e9 / self.updates_seen if self.updates_seen else 0.0
        # amortised mean: rare work (sleeps, between-epochs feedback) included
        out["seconds_per_update"] = self._amortised(means) + interlude_s
        every = [t for v in self.step_ns.values() for t in v]
        if every:
            ns = np.asarray(every, dtype=np.float64)
            out["seconds_per_update_median"] = float(np.median(ns)) / 1e9
            out["seconds_per_update_p10"] = float(np.percentile(ns, 10)) / 1e9
            out["seconds_per_update_p90"] = float(np.percentile(ns, 90)) / 1e9
        out["timed_updates"] = len(every)
        if self.phase_ns:
            out["seconds_per_update_by_phase"] = {
                p: self._amortised({k: float(np.mean(v[p])) / 1e9 for k, v in self.phase_ns.items() if v[p]})
                + (interlude_s if p == "feedback" else 0.0) for p in PHASES}
        if self.interlude_ns:
            out["between_epochs"] = {"calls": len(self.interlude_ns), "flops_each": sum(self.interlude_flops.values()),
                                     "seconds_mean": float(np.mean(self.interlude_ns)) / 1e9}
        out["update_mix"] = dict(self.mix)
        out["peak_memory_bytes"] = self.memory.peak_bytes()
        return out

    def state_dict(self) -> dict:
        self._resolve_cuda()
        return {"updates_seen": self.updates_seen, "kind_updates": dict(self.kind_updates),
                "kind_flops": {k: dict(v) for k, v in self.kind_flops.items()},
                "step_ns": {k: list(v) for k, v in self.step_ns.items()},
                "phase_ns": {k: {p: list(v) for p, v in d.items()} for k, d in self.phase_ns.items()},
                "interlude_flops": dict(self.interlude_flops) if self.interlude_flops is not None else None,
                "interlude_ns": list(self.interlude_ns), "peak_memory_bytes": self.memory.peak_bytes()}

    def load_state_dict(self, state: dict) -> None:
        self.updates_seen = state["updates_seen"]
        self.kind_updates = dict(state["kind_updates"])
        self.kind_flops = {k: dict(v) for k, v in state["kind_flops"].items()}
        self.step_ns = {k: list(v) for k, v in state["step_ns"].items()}
        self.phase_ns = {k: {p: list(v) for p, v in d.items()} for k, d in state["phase_ns"].items()}
        self.memory.carried = state.get("peak_memory_bytes")
        flops = state.get("interlude_flops")  # absent in checkpoints from before between-epochs work
        self.interlude_flops = dict(flops) if flops is not None else None
        self.interlude_ns = list(state.get("interlude_ns", []))


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryWatch:
    """Peak memory of one trial. CUDA: the allocator's peak since the trial started (stats reset) over what was
    allocated when it started (the dataset on the device, anything an earlier trial of the process still holds).
    CPU (Linux): the rise of the process's peak resident set size (VmHWM, reset through
    /proc/self/clear_refs) over its resident size when the trial started, i.e. what the trial's
    network, algorithm state, optimizer and activations added on top of the process (and the dataset
    loaded before it). Elsewhere None: a lifetime peak of a reused process is not a per-trial figure."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.start_kib: int | None = None
        self.carried: int | None = None  # the peak before a resume (from the checkpoint)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = int(torch.cuda.memory_allocated(self.device))
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set size
            self.start_kib = _rss_kib("VmRSS")
        except OSError:
            self.start_kib = None

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            now = int(torch.cuda.max_memory_allocated(self.device)) - self.start_bytes  # the reset peak ≥ the start
        else:
            hwm = _rss_kib("VmHWM")
            if self.start_kib is None or hwm is None:
                return None
            now = max(0, hwm - self.start_kib) * 1024
        return max(now, self.carried or 0)


class NullMeter:
    """Used outside training (probes, diagnostics): phases cost nothing."""

    @contextmanager
    def phase(self, name: str):
        yield

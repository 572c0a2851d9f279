"""``creditbench bench --profile``: where an update's time goes, by kind of work, from ``torch.profiler``.

A FLOP count weighs every elementwise operation as one FLOP per element, but on a CPU an element of ``tanh``
costs about as much time as twenty of a multiply, and a random number more than that. The time ratio to bp can
therefore exceed the FLOP ratio with no harness overhead at all. This splits the time per update into

* ``matmul``: matrix products, convolutions and decompositions (the work the FLOP count is dominated by);
* ``transcendental``: ``tanh``, ``atanh``, ``exp``, ``log``, ``sigmoid``, ``pow``, the softmaxes and their backward;
* ``random``: drawing random numbers (noise, random feedback magnitudes, batch permutations);
* ``optimizer``: every tensor operation inside an optimizer's ``step`` (the shared one and any feedback one);
* ``other ops``: every other tensor operation (multiplies, adds, copies, reductions, indexing, and the views,
  transposes, type conversions and allocations the profiler records as operations of their own);
* ``rest``: the profiled window's wall time minus all of the above: Python, dispatch outside the recorded
  operations and the profiler's own recording (on CUDA, where the kinds are the device time of the kernels each operation
  launched: the device's idle time).

Each operation's *self* time counts once (its children are counted in their own kind). The split comes from one
profiled window per algorithm after the timed rounds (a fresh trainer, the same warm-up), and is given in that
window's own time per update (``profiled``), which the profiler makes longer than the unprofiled mean.
"""

from __future__ import annotations

import time

import torch

from harness.listing import aligned_table

KINDS = ("matmul", "transcendental", "random", "optimizer", "other ops", "rest")

MATMUL_OPS = frozenset({"mm", "addmm", "_addmm_activation", "bmm", "baddbmm", "addbmm", "mv", "addmv", "addr", "dot",
                        "vdot", "_linalg_svd", "linalg_svd", "_linalg_eigh", "linalg_lstsq", "linalg_solve",
                        "_linalg_solve_ex", "linalg_inv_ex", "linalg_cholesky_ex", "linalg_qr"})
TRANSCENDENTAL_OPS = frozenset({"tanh", "atanh", "exp", "log", "sigmoid", "pow", "_log_softmax", "_softmax",
                                "_log_softmax_backward_data", "_softmax_backward_data", "log1p", "expm1"})
RANDOM_OPS = frozenset({"normal_", "uniform_", "random_", "randn", "rand", "randint", "randperm", "bernoulli_",
                        "bernoulli", "multinomial", "exponential_"})


def op_kind(name: str) -> str | None:
    """The kind of an ``aten::`` operation (None for anything that is not a tensor operation)."""
    if not name.startswith("aten::"):
        return None
    op = name[len("aten::"):]
    base = op.removesuffix("_")  # in place or not
    if base in MATMUL_OPS or "convolution" in op:
        return "matmul"
    if base in TRANSCENDENTAL_OPS:
        return "transcendental"
    if op in RANDOM_OPS:
        return "random"
    return "other ops"


def _in_optimizer(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return True
        parent = parent.cpu_parent
    return False


def split_events(events, cuda: bool = False) -> dict[str, float]:
    """Self seconds by kind (without ``rest``) over profiler events: CPU time, or on CUDA the device time of the
    kernels each operation launched."""
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    seconds = {k: 0.0 for k in KINDS if k != "rest"}
    for event in events:
        kind = op_kind(event.name)
        if kind is None:
            continue
        if _in_optimizer(event):
            kind = "optimizer"
        seconds[kind] += getattr(event, attr) / 1e6
    return seconds


def profile_window(trainer, perm, updates: int) -> dict[str, float]:
    """Seconds per update by kind (without ``rest``) over ``updates`` updates of the training path."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        t0 = time.perf_counter()
        trainer.train_batches(perm, updates)
        if cuda:
            torch.cuda.synchronize(trainer.device)
        wall = time.perf_counter() - t0
    return with_rest({k: s / updates for k, s in split_events(prof.events(), cuda).items()}, wall / updates)


def with_rest(split: dict[str, float], wall_s: float) -> dict[str, float]:
    """``profiled`` = the window's wall seconds per update, the kinds, and ``rest`` = ``profiled`` − every kind
    (not below 0)."""
    return {"profiled": wall_s, **split, "rest": max(0.0, wall_s - sum(split.values()))}


def profile_table(result: dict, markdown: bool = False) -> str:
    """Per algorithm: the profiled window's ms per update and the ms of each kind of work, with its share."""
    head = ["algorithm", "profiled ms/update", *(f"{k} ms (%)" for k in KINDS)]
    rows = []
    for r in result["rows"]:
        split = r.get("profile")
        if split is None:
            continue
        wall = split["profiled"]
        rows.append([r["name"], f"{wall * 1e3:.2f}", *(f"{split[k] * 1e3:.2f} ({100 * split[k] / wall:.0f}%)"
                                                       for k in KINDS)])
    title = ("where the time goes (torch.profiler, one profiled window per algorithm after the timed rounds; rest = "
             "Python, dispatch, allocation)")
    return aligned_table(title, head, rows, markdown)

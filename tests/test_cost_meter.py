"""The cost meter's bookkeeping (harness/cost.py): FLOP counting helpers, wall time by phase on a fake clock,
the summary's statistics, checkpoints, and the CUDA timing path (with fake CUDA events, no GPU needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import harness.cost as cost
from harness.cost import PHASES, CostMeter, NullMeter, flop_counter


class Clock:
    """Stands in for time.perf_counter_ns: advanced by hand."""

    def __init__(self):
        self.ns = 1_000

    def __call__(self):
        return self.ns

    def tick(self, ns):
        self.ns += ns


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(cost.time, "perf_counter_ns", c)
    return c


# ------------------------------------------------------------------ FLOP counting helpers
def test_numel_of_shapes_and_lists_of_shapes():
    assert cost._numel(None) == 0
    assert cost._numel([2, 3]) == 6 and cost._numel((4,)) == 4 and cost._numel(torch.Size([2, 3, 5])) == 30
    assert cost._numel(()) == 1  # a scalar
    assert cost._numel([[2, 3], (4,), torch.Size([5])]) == 6 + 4 + 5  # an op with several outputs
    assert cost._numel(7) == 0 and cost._numel("x") == 0  # not a shape


def test_elementwise_counts_outputs_and_reductions_count_the_largest_input():
    assert cost._elementwise([2, 3], [2, 3], out_shape=[2, 3]) == 6
    assert cost._elementwise([2, 3], out_shape=None) == 0
    assert cost._reduction([2, 3], [4], 1, out_shape=[]) == 6
    assert cost._reduction(2.0, out_shape=[3]) == 0  # no input shape: nothing counted


def test_flop_counter_counts_elementwise_work_only_when_asked(capsys):
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    counts = {}
    for kind, counter in (("default", flop_counter()), ("on", flop_counter(True)), ("off", flop_counter(False))):
        with counter:
            c = a @ b  # 2·8·16·4 = 1024
            c = torch.tanh(c) + 1  # 32 + 32 elementwise
            c.sum()  # 32 (a reduction: its input)
        counts[kind] = counter.get_total_flops()
    assert counts == {"default": 1024 + 96, "on": 1024 + 96, "off": 1024}
    assert capsys.readouterr().out == ""  # display=False: no table printed


def test_svd_with_unknown_outputs_counts_the_values_only_path():
    from harness.cost import svd_flops

    assert cost._svd([30, 20], out_shape=None) == svd_flops(30, 20, compute_uv=False)
    assert cost._svd([2, 30, 20], out_shape=[]) == 2 * svd_flops(30, 20, compute_uv=False)
    assert cost._svd([30, 20], out_shape=[[30, 20], [20], [20, 20]]) == svd_flops(30, 20)


# ------------------------------------------------------------------ pre-training
def test_pretraining_counts_every_flop_of_its_window_and_accumulates(clock):
    meter = CostMeter(elementwise=False)
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with meter.pretraining():
        a @ b  # 2·4·8·2 = 128, outside every phase
        with meter.phase("forward"):
            torch.tanh(a @ b)  # 128; tanh is elementwise, not counted with elementwise=False
    assert meter.pretrain_flops == 256.0 and isinstance(meter.pretrain_flops, float)
    with meter.pretraining():  # a second window adds to the first
        a @ b
    assert meter.pretrain_flops == 384.0
    assert meter.kind_flops == {} and meter.updates_seen == 0  # pre-training is not an update
    counted = CostMeter(elementwise=True)
    with counted.pretraining():
        torch.tanh(a @ b)  # 128 + 8
    assert counted.pretrain_flops == 136.0


def test_cumulative_flops_add_the_pretraining_to_feedback_only(clock):
    meter = CostMeter(elementwise=False)
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with meter.pretraining():
        a @ b
    for _ in range(3):
        with meter.update():
            with meter.phase("forward"):
                a @ b
            with meter.phase("feedback"):
                a @ b
                a @ b
    assert meter.pretrain_flops == 128.0
    assert meter.cumulative_flops() == {"forward": 3 * 128.0, "credit": 0.0, "feedback": 3 * 256.0 + 128.0}


# ------------------------------------------------------------------ wall time by phase
def test_wall_time_by_phase_on_a_fake_clock(clock):
    meter = CostMeter(warmup=0, elementwise=False)
    with meter.update(count_flops=False):
        clock.tick(7)  # outside every phase: in the update's time, no phase's
        with meter.phase("forward"):
            clock.tick(10)
            with meter.phase("feedback"):  # nested: the innermost phase gets the time
                clock.tick(5)
            clock.tick(3)
        with meter.phase("credit"):
            clock.tick(20)
        with meter.phase("forward"):  # a phase entered twice adds up
            clock.tick(1)
    assert meter.step_ns == {"update": [46]}
    assert meter.phase_ns == {"update": {"forward": [14], "credit": [20], "feedback": [5]}}
    with meter.update(count_flops=False):
        with meter.phase("credit"):
            clock.tick(4)
    assert meter.step_ns == {"update": [46, 4]}
    assert meter.phase_ns == {"update": {"forward": [14, 0], "credit": [20, 4], "feedback": [5, 0]}}
    s = meter.summary()
    assert s["seconds_per_update"] == pytest.approx(25e-9)
    # abs=0: pytest's default absolute tolerance (1e-12) would swallow any error in nanosecond-sized values
    assert s["seconds_per_update_by_phase"] == pytest.approx({"forward": 7e-9, "credit": 12e-9, "feedback": 2.5e-9},
                                                             rel=1e-12, abs=0)


def test_warmup_and_flop_counted_updates_are_not_timed(clock):
    meter = CostMeter()  # five warm-up updates by default; the first update of a kind is counted
    for i in range(8):
        with meter.update("a" if i != 6 else "b"), meter.phase("forward"):
            clock.tick(100 + i)
    assert meter.updates_seen == 8 and meter.kind_updates == {"a": 7, "b": 1}
    assert meter.step_ns == {"a": [105, 107]} and meter.phase_ns["a"]["forward"] == [105, 107]
    assert set(meter.kind_flops) == {"a", "b"}


def test_flops_outside_phases_and_phase_time_do_not_leak_between_updates(clock):
    meter = CostMeter(warmup=0)
    a = torch.randn(4, 4)
    with meter.update("x"):
        a @ a  # not attributed
        with meter.phase("credit"):
            a @ a
            clock.tick(3)
    with meter.update("y"):
        with meter.phase("credit"):
            a @ a
        a @ a
    assert meter.kind_flops == {"x": {"forward": 0, "credit": 128, "feedback": 0},
                                "y": {"forward": 0, "credit": 128, "feedback": 0}}
    assert meter.step_ns == {}
    with meter.update("x"):
        with meter.phase("feedback"):
            clock.tick(2)
    assert meter.phase_ns == {"x": {"forward": [0], "credit": [0], "feedback": [2]}}
    assert meter.cumulative_flops() == {"forward": 0.0, "credit": 3 * 128.0, "feedback": 0.0}


def test_unknown_phase_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"^unknown phase 'sleep'; valid: forward, credit, feedback$"):
        with CostMeter().phase("sleep"):
            pass
    with NullMeter().phase("anything"):  # outside training, phases cost nothing and are not checked
        pass


# ------------------------------------------------------------------ summary and checkpoints
def test_summary_statistics():
    meter = CostMeter(mix={"wake": 0.8, "sleep": 0.2})
    meter.step_ns = {"wake": [int(v) for v in (4e9, 1e9, 3e9, 2e9)], "sleep": [int(10e9)]}
    meter.phase_ns = {"wake": {"forward": [1, 2, 3, 4], "credit": [10, 20, 30, 40], "feedback": [0, 0, 0, 0]},
                      "sleep": {"forward": [5], "credit": [50], "feedback": [7]}}
    meter.kind_flops = {"wake": {"forward": 10, "credit": 20, "feedback": 0},
                        "sleep": {"forward": 10, "credit": 20, "feedback": 50}}
    s = meter.summary()
    assert s["flops_per_update"] == pytest.approx({"total": 40.0, "forward": 10.0, "credit": 20.0, "feedback": 10.0})
    ns = [4e9, 1e9, 3e9, 2e9, 10e9]
    assert s["seconds_per_update"] == pytest.approx(0.8 * 2.5 + 0.2 * 10.0, rel=1e-12)
    assert s["seconds_per_update_median"] == 3.0
    assert s["seconds_per_update_p10"] == pytest.approx(np.percentile(ns, 10) / 1e9, rel=1e-15)
    assert s["seconds_per_update_p90"] == pytest.approx(np.percentile(ns, 90) / 1e9, rel=1e-15)
    assert s["seconds_per_update_p10"] < 2.0 < 7.0 < s["seconds_per_update_p90"]  # not min/max, not swapped
    assert s["timed_updates"] == 5 and s["update_mix"] == {"wake": 0.8, "sleep": 0.2}
    assert s["seconds_per_update_by_phase"] == pytest.approx({"forward": 0.8 * 2.5e-9 + 0.2 * 5e-9,
                                                              "credit": 0.8 * 25e-9 + 0.2 * 50e-9,
                                                              "feedback": 0.2 * 7e-9}, rel=1e-12, abs=0)


def test_summary_before_any_timed_update():
    s = CostMeter().summary()
    assert math.isnan(s["seconds_per_update"]) and s["flops_per_update"] == {}
    assert s["timed_updates"] == 0 and "seconds_per_update_by_phase" not in s and s["peak_memory_bytes"] >= 0


def test_state_dict_round_trip_resumes_the_statistics(clock):
    meter = CostMeter(warmup=1)
    a = torch.randn(4, 4)
    for i in range(4):
        with meter.update(), meter.phase("credit"):
            a @ a
            clock.tick(10 * (i + 1))
    state = meter.state_dict()
    assert {k: v for k, v in state.items() if k != "peak_memory_bytes"} == {
        "updates_seen": 4, "kind_updates": {"update": 4},
        "kind_flops": {"update": {"forward": 0, "credit": 128, "feedback": 0}},
        "step_ns": {"update": [20, 30, 40]},
        "phase_ns": {"update": {"forward": [0, 0, 0], "credit": [20, 30, 40], "feedback": [0, 0, 0]}},
        "interlude_flops": None, "interlude_ns": []}
    resumed = CostMeter(warmup=1)
    resumed.load_state_dict(state)
    with meter.update(), meter.phase("credit"):
        clock.tick(5)
    assert state["step_ns"] == {"update": [20, 30, 40]} and resumed.step_ns == {"update": [20, 30, 40]}  # copies
    with resumed.update(), resumed.phase("credit"):
        clock.tick(5)
    drop = ("peak_memory_bytes",)
    assert {k: v for k, v in resumed.state_dict().items() if k not in drop} == \
           {k: v for k, v in meter.state_dict().items() if k not in drop}
    summary, other = meter.summary(), resumed.summary()
    assert {k: v for k, v in summary.items() if k not in drop} == {k: v for k, v in other.items() if k not in drop}


# ------------------------------------------------------------------ CUDA timing, with fake events
class FakeEvent:
    clock_ms = 0.0

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.t = None

    def record(self, stream):
        assert stream == ("stream of", torch.device("cuda", 1))  # the trial's device's stream, not the current one
        FakeEvent.clock_ms += 1.5
        self.t = FakeEvent.clock_ms

    def elapsed_time(self, end):
        return end.t - self.t


def test_cuda_updates_are_timed_with_events_and_peak_memory_from_the_allocator(monkeypatch):
    """On a GPU (here ``cuda:1``, faked): CUDA events on the trial's device's stream, resolved by synchronising that
    device; no host-clock phase times (they would see kernel launches only); peak memory is the allocator's peak
    over what was allocated when the trial started."""
    synced, resets = [], []
    cuda1 = torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: ("stream of", device))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: synced.append(device))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: resets.append(device))
    allocated = iter([23_456, 99_999_999])  # what the trial starts with, then anything later
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: next(allocated) if device == cuda1 else -1)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 123_456 if device == cuda1 else -1)
    FakeEvent.clock_ms = 0.0
    meter = CostMeter("cuda:1", warmup=2)
    assert meter.device == cuda1 and meter.cuda and resets == [cuda1]
    for i in range(5):
        with meter.update(count_flops=(i == 2)), meter.phase("credit"):
            pass
    assert meter.step_ns == {} and len(meter._cuda_events) == 2  # resolved lazily: no sync per update
    s = meter.summary()
    assert synced == [cuda1] and meter._cuda_events == []
    assert meter.step_ns == {"update": [1_500_000, 1_500_000]}  # 1.5 ms between start and end events, in ns
    assert s["seconds_per_update"] == pytest.approx(1.5e-3) and s["timed_updates"] == 2
    assert "seconds_per_update_by_phase" not in s and meter.phase_ns == {}
    assert s["peak_memory_bytes"] == 100_000
    with meter.between_epochs():  # timed on the trial's device too
        pass
    assert synced == [cuda1, cuda1] and len(meter.interlude_ns) == 1
    with meter.update(count_flops=False):
        pass
    assert meter.state_dict()["step_ns"] == {"update": [1_500_000] * 3}  # a checkpoint resolves pending events
    assert not CostMeter("cpu").cuda and not CostMeter().cuda and PHASES == ("forward", "credit", "feedback")


# ------------------------------------------------------------------ amortisation over the mix
def test_mix_weights_are_shares_of_their_sum_and_kinds_of_weight_zero_are_ignored():
    meter = CostMeter(mix={"wake": 3.0, "sleep": 1.0, "never": 0.0})  # shares 3/4, 1/4; "never" does not run
    meter.kind_flops = {"wake": {"forward": 8, "credit": 4, "feedback": 0},
                        "sleep": {"forward": 8, "credit": 4, "feedback": 40}}
    meter.step_ns = {"wake": [2_000_000_000], "sleep": [6_000_000_000]}
    s = meter.summary()
    assert s["flops_per_update"] == {"total": 22.0, "forward": 8.0, "credit": 4.0, "feedback": 10.0}
    assert s["seconds_per_update"] == pytest.approx(0.75 * 2.0 + 0.25 * 6.0, rel=1e-12)


def test_cumulative_flops_are_nan_when_a_kind_that_ran_was_never_counted():
    meter = CostMeter(elementwise=False)
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    for kind, count in (("wake", None), ("wake", None), ("sleep", False)):
        with meter.update(kind, count_flops=count), meter.phase("credit"):
            a @ b
    got = meter.cumulative_flops()
    assert all(math.isnan(v) for v in got.values())
    meter.kind_updates = {"wake": 2}
    assert meter.cumulative_flops() == {"forward": 0.0, "credit": 2 * 2 * 4 * 8 * 2, "feedback": 0.0}


# ------------------------------------------------------------------ decompositions
def test_batched_and_values_only_svd_and_batched_pinv_get_the_lapack_count():
    from harness.cost import svd_flops

    aten = torch.ops.aten
    cases = [
        (lambda: torch.linalg.svd(torch.randn(3, 30, 20), full_matrices=False), 3 * svd_flops(30, 20)),
        # values only: U and V come back empty (0 elements)
        (lambda: aten._linalg_svd(torch.randn(30, 20), False, False), svd_flops(30, 20, compute_uv=False)),
        (lambda: aten._linalg_svd(torch.randn(2, 20, 30), False, False), 2 * svd_flops(20, 30, compute_uv=False)),
        # torch.linalg.svdvals under a dispatch mode (the counter is one) takes the path that computes U and
        # V too: what runs while counting is a full SVD, and that is what is counted
        (lambda: torch.linalg.svdvals(torch.randn(30, 20)), svd_flops(30, 20)),
        (lambda: torch.linalg.svd(torch.randn(1, 1)), svd_flops(1, 1)),  # a 1×1 U still means U was computed
        (lambda: torch.linalg.pinv(torch.randn(4, 30, 20)), 4 * (svd_flops(30, 20) + 20 * 20 + 2 * 30 * 20 * 20)),
        (lambda: torch.linalg.pinv(torch.randn(20, 30)), svd_flops(20, 30) + 30 * 20 + 2 * 20 * 30 * 20),
    ]
    for run, want in cases:
        with flop_counter(elementwise=False) as c:
            run()
        assert c.get_total_flops() == want


# ------------------------------------------------------------------ peak memory (CPU, from /proc)
def test_cpu_peak_memory_is_the_rise_of_the_high_water_mark_over_the_start(monkeypatch):
    status = {"VmRSS": 1_000, "VmHWM": 1_000}
    monkeypatch.setattr(cost, "_rss_kib", lambda field: status[field])
    watch = cost.MemoryWatch(torch.device("cpu"))
    assert watch.start_kib == 1_000 and watch.peak_bytes() == 0
    status["VmHWM"] = 3_500
    assert watch.peak_bytes() == 2_500 * 1024
    watch.carried = 4_000_000  # a resumed trial keeps the larger peak of its earlier part
    assert watch.peak_bytes() == 4_000_000
    watch.carried, status["VmHWM"] = None, 900  # a high-water mark below the start (reset elsewhere): 0, not < 0
    assert watch.peak_bytes() == 0
    status["VmHWM"] = None  # no /proc field: no figure
    assert watch.peak_bytes() is None
    watch.start_kib, status["VmHWM"] = None, 3_500
    assert watch.peak_bytes() is None


def test_cpu_peak_memory_is_not_reported_where_the_high_water_mark_cannot_be_reset(monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(cost, "open", no_proc, raising=False)
    watch = cost.MemoryWatch(torch.device("cpu"))
    assert watch.start_kib is None and watch.peak_bytes() is None


def test_between_epochs_work_is_feedback_counted_once_timed_always_and_amortised(clock):
    """Two epochs of 3 updates (credit: one 4×4 matmul = 128 FLOPs, 10 ns each after warm-up), each followed by
    feedback-only work of one 8×8 matmul (1024 FLOPs, whatever phase it marks) taking 60 and 90 ns."""
    meter = CostMeter(warmup=0, elementwise=False)
    a, b = torch.randn(4, 4), torch.randn(8, 8)
    durations = iter([60, 90])
    for _ in range(2):
        for _ in range(3):
            with meter.update(), meter.phase("credit"):
                a @ a
                clock.tick(10)
        with meter.between_epochs(), meter.phase("credit"):
            b @ b
            clock.tick(next(durations))
    assert meter.interlude_flops == {"forward": 0, "credit": 0, "feedback": 1024}
    assert meter.interlude_ns == [60, 90]
    # per update: the first update was counted (not timed); the 5 timed ones took 10 ns; 2·1024 / 6 updates
    assert meter.flops_by_phase == pytest.approx({"forward": 0, "credit": 128, "feedback": 2 * 1024 / 6}, rel=1e-12)
    assert meter.cumulative_flops() == {"forward": 0, "credit": 6 * 128, "feedback": 2 * 1024}
    s = meter.summary()
    assert s["flops_per_update"]["total"] == pytest.approx(128 + 2 * 1024 / 6, rel=1e-12)
    # (abs=0: pytest's default absolute tolerance, 1e-12, is larger than these nanoseconds)
    assert s["seconds_per_update"] == pytest.approx(10e-9 + 150e-9 / 6, rel=1e-12, abs=0)
    assert s["seconds_per_update_median"] == pytest.approx(10e-9)  # the median is of updates alone
    assert s["seconds_per_update_by_phase"]["feedback"] == pytest.approx(150e-9 / 6, rel=1e-12, abs=0)
    assert s["seconds_per_update_by_phase"]["credit"] == pytest.approx(10e-9, rel=1e-12, abs=0)  # no interlude there
    assert s["between_epochs"] == {"calls": 2, "flops_each": 1024, "seconds_mean": pytest.approx(75e-9, rel=1e-12, abs=0)}
    resumed = CostMeter(warmup=0, elementwise=False)
    resumed.load_state_dict(meter.state_dict())
    assert resumed.summary() == {**s, "peak_memory_bytes": resumed.summary()["peak_memory_bytes"]}
    old = {k: v for k, v in meter.state_dict().items() if not k.startswith("interlude")}
    legacy = CostMeter()
    legacy.load_state_dict(old)  # a checkpoint from before between-epochs work
    assert legacy.interlude_flops is None and legacy.interlude_ns == []


def test_between_epochs_is_counted_on_its_first_call_only_elementwise_included_from_the_first_update(clock):
    """The interlude's FLOPs are its first call's (a later call, here doing more, is timed but not counted again),
    its elementwise work is counted when the meter counts elementwise work, and its share is amortised from the
    very first update on."""
    meter = CostMeter(warmup=0, elementwise=True)
    a = torch.randn(4, 4)
    with meter.update(), meter.phase("forward"):
        a.mul_(1.0)  # 16 FLOPs
    with meter.between_epochs():
        a.add_(1.0)  # 16 FLOPs, elementwise
        clock.tick(30)
    assert meter.flops_by_phase == {"forward": 16, "credit": 0, "feedback": 16}  # 1 update so far
    with meter.between_epochs():
        a.add_(1.0)
        a.add_(1.0)  # more work than the first call: not counted again
        clock.tick(50)
    assert meter.interlude_flops == {"forward": 0, "credit": 0, "feedback": 16}
    assert meter.flops_by_phase["feedback"] == 2 * 16 and meter.interlude_ns == [30, 50]

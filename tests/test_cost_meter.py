"""The cost meter's bookkeeping (harness/cost.py): FLOP counting helpers, wall time by phase on a fake clock,
the summary's statistics, checkpoints, and the CUDA timing path (with fake CUDA events, no GPU needed)."""

from __future__ import annotations

import math
import resource

import numpy as np
import pytest
import torch

import harness.cost as cost
from harness.cost import PHASES, CostMeter, NullMeter, flop_counter, peak_memory_bytes


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


# ------------------------------------------------------------------ wall time by phase
def test_wall_time_by_phase_on_a_fake_clock(clock):
    meter = CostMeter(warmup=0, elementwise=False)
    with meter.update():
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
    assert meter.step_ns == [46]
    assert {p: v for p, v in meter.phase_ns.items()} == {"forward": [14], "credit": [20], "feedback": [5]}
    with meter.update():
        with meter.phase("credit"):
            clock.tick(4)
    assert meter.step_ns == [46, 4] and meter.phase_ns == {"forward": [14, 0], "credit": [20, 4], "feedback": [5, 0]}


def test_warmup_and_flop_counted_updates_are_not_timed(clock):
    meter = CostMeter()  # five warm-up updates by default
    for i in range(8):
        with meter.update(count_flops=(i == 6)), meter.phase("forward"):
            clock.tick(100 + i)
    assert meter.updates_seen == 8
    assert meter.step_ns == [105, 107] and meter.phase_ns["forward"] == [105, 107]


def test_flops_outside_phases_and_phase_time_do_not_leak_between_updates(clock):
    meter = CostMeter(warmup=0)
    a = torch.randn(4, 4)
    with meter.update(count_flops=True):
        a @ a  # not attributed
        with meter.phase("credit"):
            a @ a
            clock.tick(3)
    with meter.update(count_flops=True):
        with meter.phase("credit"):
            a @ a
        a @ a
    meter.close_flop_window()
    assert meter.flops_by_phase == {"forward": 0, "credit": 128, "feedback": 0}
    assert meter.step_ns == [] and meter.counting_done
    with meter.update():
        with meter.phase("feedback"):
            clock.tick(2)
    assert meter.phase_ns == {"forward": [0], "credit": [0], "feedback": [2]}


def test_close_flop_window_without_counted_updates_keeps_nothing():
    meter = CostMeter()
    meter.close_flop_window()
    assert meter.flops_by_phase is None and not meter.counting_done
    assert meter.summary()["flops_per_update"] == {}


def test_unknown_phase_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"^unknown phase 'sleep'; valid: forward, credit, feedback$"):
        with CostMeter().phase("sleep"):
            pass
    with NullMeter().phase("anything"):  # outside training, phases cost nothing and are not checked
        pass


# ------------------------------------------------------------------ summary and checkpoints
def test_summary_statistics():
    meter = CostMeter()
    ns = [4e9, 1e9, 3e9, 2e9, 10e9]
    meter.step_ns = [int(v) for v in ns]
    meter.phase_ns = {"forward": [1, 2, 3, 4, 5], "credit": [10, 20, 30, 40, 50], "feedback": [0, 0, 7, 0, 0]}
    meter.flops_by_phase = {"forward": 10.0, "credit": 20.0, "feedback": 5.5}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    s = meter.summary()
    assert s["flops_per_update"] == {"total": 35.5, "forward": 10.0, "credit": 20.0, "feedback": 5.5}
    assert s["seconds_per_update"] == 3.0 and s["seconds_per_update_mean"] == 4.0
    assert s["seconds_per_update_p10"] == pytest.approx(np.percentile(ns, 10) / 1e9, rel=1e-15)
    assert s["seconds_per_update_p90"] == pytest.approx(np.percentile(ns, 90) / 1e9, rel=1e-15)
    assert s["seconds_per_update_p10"] < 2.0 < 7.0 < s["seconds_per_update_p90"]  # not min/max, not swapped
    assert s["timed_updates"] == 5
    assert s["seconds_per_update_by_phase"] == {"forward": 3e-9, "credit": 3e-8, "feedback": 0.0}
    assert before <= s["peak_memory_bytes"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_summary_before_any_timed_update():
    s = CostMeter().summary()
    assert math.isnan(s["seconds_per_update"]) and s["flops_per_update"] == {}
    assert "timed_updates" not in s and "seconds_per_update_by_phase" not in s and s["peak_memory_bytes"] > 0


def test_state_dict_round_trip_resumes_the_statistics(clock):
    meter = CostMeter(warmup=1)
    a = torch.randn(4, 4)
    for i in range(4):
        with meter.update(count_flops=(i == 0)), meter.phase("credit"):
            a @ a
            clock.tick(10 * (i + 1))
    meter.close_flop_window()
    state = meter.state_dict()
    assert state == {"updates_seen": 4, "step_ns": [20, 30, 40], "flops_by_phase": meter.flops_by_phase,
                     "phase_ns": {"forward": [0, 0, 0], "credit": [20, 30, 40], "feedback": [0, 0, 0]}}
    resumed = CostMeter(warmup=1)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    with meter.update(), meter.phase("credit"):
        clock.tick(5)
    assert state["step_ns"] == [20, 30, 40] and resumed.step_ns == [20, 30, 40]  # copies, not shared lists
    assert resumed.phase_ns["credit"] == [20, 30, 40]
    with resumed.update(), resumed.phase("credit"):
        clock.tick(5)
    assert resumed.state_dict() == meter.state_dict()
    summary, other = meter.summary(), resumed.summary()
    assert {k: v for k, v in summary.items() if k != "peak_memory_bytes"} == \
           {k: v for k, v in other.items() if k != "peak_memory_bytes"}


# ------------------------------------------------------------------ CUDA timing, with fake events
class FakeEvent:
    clock_ms = 0.0

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.t = None

    def record(self):
        FakeEvent.clock_ms += 1.5
        self.t = FakeEvent.clock_ms

    def elapsed_time(self, end):
        return end.t - self.t


def test_cuda_updates_are_timed_with_events_and_peak_memory_from_the_allocator(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: synced.append(1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 123_456 if device.type == "cuda" else -1)
    FakeEvent.clock_ms = 0.0
    meter = CostMeter("cuda", warmup=2)
    assert meter.device == torch.device("cuda") and meter.cuda
    for i in range(5):
        with meter.update(count_flops=(i == 2)):
            pass
    assert meter.step_ns == [] and len(meter._cuda_events) == 2  # resolved lazily: no sync per update
    s = meter.summary()
    assert synced and meter._cuda_events == []
    assert meter.step_ns == [1_500_000, 1_500_000]  # 1.5 ms between start and end events, in ns
    assert s["seconds_per_update"] == 1.5e-3 and s["timed_updates"] == 2
    assert s["peak_memory_bytes"] == 123_456 == peak_memory_bytes(torch.device("cuda"))
    with meter.update():
        pass
    assert meter.state_dict()["step_ns"] == [1_500_000] * 3  # a checkpoint resolves pending events too
    assert not CostMeter("cpu").cuda and not CostMeter().cuda and PHASES == ("forward", "credit", "feedback")

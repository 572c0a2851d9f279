"""The cost meter's FLOP counts against analytic counts, and phase attribution."""

import pytest
import torch

from harness.cost import CostMeter
from harness.networks import build_network
from harness.registry import get_algorithm

DIMS = [64, 96, 48, 10]  # mlp-2x?: 64 → 96 → 48 → 10 built below by hand-sized spec
N = 64


def mlp():
    net = build_network("mlp-2x96-tanh", (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    # make the second hidden layer 48 wide to have unequal shapes
    from harness.networks import Identity, Linear, Tanh, init_weights

    net.layers[1] = Linear(96, 48, Tanh())
    net.layers[2] = Linear(48, 10, Identity())
    init_weights(net, "glorot", torch.Generator().manual_seed(0))
    return net


def analytic():
    pairs = list(zip(DIMS[:-1], DIMS[1:], strict=True))
    forward = sum(2 * N * a * b for a, b in pairs)
    weight_grads = sum(2 * N * a * b for a, b in pairs)
    input_grads = sum(2 * N * a * b for a, b in pairs[1:])  # no signal below the first layer
    return {"forward": forward, "credit": weight_grads + input_grads, "feedback": 0}


def counted(name, elementwise):
    net = mlp()
    meter = CostMeter(elementwise=elementwise)
    algo = get_algorithm(name)(net, meter=meter)
    x, y = torch.randn(N, 1, 8, 8), torch.randint(0, 10, (N,))
    with meter.update(count_flops=True):
        algo.step(x, y)
    meter.close_flop_window()
    return meter.flops_by_phase


@pytest.mark.parametrize("name", ["bp", "fa"])
def test_matmul_flops_equal_the_analytic_count_by_phase(name):
    assert counted(name, elementwise=False) == analytic()


@pytest.mark.parametrize("name", ["bp", "fa"])
def test_total_flops_within_5_percent_of_analytic(name):
    got, want = counted(name, elementwise=True), analytic()
    total, total_want = sum(got.values()), sum(want.values())
    assert total >= total_want  # elementwise work only adds
    assert abs(total - total_want) / total_want < 0.05
    for phase in ("forward", "credit"):
        assert abs(got[phase] - want[phase]) / want[phase] < 0.05


def test_phases_nest_and_window_averages():
    meter = CostMeter(elementwise=True)
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    u, v = torch.randn(32), torch.randn(20)
    for k in range(2):
        with meter.update(count_flops=True):
            with meter.phase("forward"):
                a @ b  # 2·8·16·4 = 1024
                with meter.phase("feedback"):
                    if k == 0:
                        u[:, None] * v[None, :]  # outer product via broadcasting: 640 elementwise
            a @ b  # outside every phase: not attributed
    meter.close_flop_window()
    assert meter.flops_by_phase == {"forward": 1024, "credit": 0, "feedback": 320}


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown phase"):
        with CostMeter().phase("sleep"):
            pass


def test_timing_excludes_warmup_and_counted_updates():
    meter = CostMeter(warmup=2)
    for i in range(6):
        with meter.update(count_flops=(i == 3)), meter.phase("forward"):
            torch.randn(50, 50) @ torch.randn(50, 50)
    s = meter.summary()
    assert s["timed_updates"] == 3 and s["seconds_per_update"] > 0
    assert s["flops_per_update"]["total"] == 2 * 50 ** 3


def test_in_place_elementwise_work_is_counted():
    meter = CostMeter()
    a = torch.randn(10, 20)
    with meter.update(count_flops=True), meter.phase("feedback"):
        a.mul_(2)
        a.add_(1)
        a.lerp_(torch.zeros(10, 20), 0.5)
    meter.close_flop_window()
    assert meter.flops_by_phase["feedback"] == 3 * 200

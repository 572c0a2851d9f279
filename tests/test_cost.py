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
    with meter.update():
        algo.step(x, y)
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
    meter = CostMeter(elementwise=True, mix={"plain": 0.75, "sleep": 0.25})
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    u, v = torch.randn(32), torch.randn(20)
    for kind in ("plain", "plain", "sleep", "plain"):
        with meter.update(kind):
            with meter.phase("forward"):
                a @ b  # 2·8·16·4 = 1024
                with meter.phase("feedback"):
                    if kind == "sleep":
                        u[:, None] * v[None, :]  # outer product via broadcasting: 640 elementwise
            a @ b  # outside every phase: not attributed
    assert meter.kind_flops == {"plain": {"forward": 1024, "credit": 0, "feedback": 0},
                                "sleep": {"forward": 1024, "credit": 0, "feedback": 640}}
    assert meter.flops_by_phase == {"forward": 1024, "credit": 0, "feedback": 160}  # 640 · 1/4
    assert meter.cumulative_flops() == {"forward": 4 * 1024, "credit": 0, "feedback": 640}


def test_per_update_cost_is_not_reported_before_every_kind_ran():
    meter = CostMeter(mix={"wake": 0.99, "sleep": 0.01}, warmup=0)
    for _ in range(3):
        with meter.update("wake"), meter.phase("forward"):
            torch.randn(20, 20) @ torch.randn(20, 20)
    s = meter.summary()
    assert meter.flops_by_phase is None and s["flops_per_update"] == {}
    assert s["seconds_per_update"] != s["seconds_per_update"]  # NaN: no sleep timed yet
    assert meter.cumulative_flops()["forward"] == 3 * 2 * 20 ** 3


def test_amortised_time_weights_each_kind_by_its_share():
    meter = CostMeter(mix={"wake": 0.9, "sleep": 0.1}, warmup=0)
    meter.kind_flops = {k: {"forward": 0, "credit": 0, "feedback": 0} for k in ("wake", "sleep")}
    meter.step_ns = {"wake": [1000, 3000], "sleep": [50000]}
    s = meter.summary()
    assert s["seconds_per_update"] == pytest.approx((0.9 * 2000 + 0.1 * 50000) / 1e9)
    assert s["seconds_per_update_median"] == pytest.approx(3000 / 1e9)


def test_matrix_vector_products_are_counted():
    from harness.cost import flop_counter

    a, v = torch.randn(30, 20), torch.randn(20)
    with flop_counter(elementwise=False) as c:
        a @ v
        v @ v
    assert c.get_total_flops() == 2 * 30 * 20 + 2 * 20


def test_svd_and_pinv_get_the_lapack_count():
    from harness.cost import flop_counter, svd_flops

    assert svd_flops(30, 20) == 14 * 30 * 20 ** 2 + 8 * 20 ** 3 == svd_flops(20, 30)
    assert svd_flops(30, 20, compute_uv=False) == int(4 * 30 * 400 - 4 * 8000 / 3)
    w = torch.randn(30, 20)
    with flop_counter(elementwise=False) as c:
        torch.linalg.svd(w, full_matrices=False)
    assert c.get_total_flops() == svd_flops(30, 20)
    with flop_counter(elementwise=False) as c:
        torch.linalg.pinv(w)
    assert c.get_total_flops() == svd_flops(30, 20) + 20 * 20 + 2 * 30 * 20 * 20


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown phase"):
        with CostMeter().phase("sleep"):
            pass


def test_timing_excludes_warmup_and_counted_updates():
    meter = CostMeter(warmup=2)
    for i in range(6):
        with meter.update(count_flops=(i == 3) or None), meter.phase("forward"):
            torch.randn(50, 50) @ torch.randn(50, 50)
    s = meter.summary()  # update 0 (first of its kind) and 3 counted; 0, 1 warm-up; 2, 4, 5 timed
    assert s["timed_updates"] == 3 and s["seconds_per_update"] > 0
    assert s["flops_per_update"]["total"] == 2 * 50 ** 3


def test_in_place_elementwise_work_is_counted():
    meter = CostMeter()
    a = torch.randn(10, 20)
    with meter.update(), meter.phase("feedback"):
        a.mul_(2)
        a.add_(1)
        a.lerp_(torch.zeros(10, 20), 0.5)
    assert meter.flops_by_phase["feedback"] == 3 * 200


@pytest.mark.parametrize("make", [
    lambda p, fe: torch.optim.Adam(p, lr=1e-3, weight_decay=0.1, foreach=fe),
    lambda p, fe: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=0.1, foreach=fe),
], ids=["adam", "sgd-momentum"])
def test_grouped_optimizer_work_is_counted_as_the_per_tensor_loop(make):
    """Optimizers with ``foreach=True`` (the trainer's, tp's and ddtp's feedback Adam) run grouped ``_foreach_*``
    ops; they count exactly what the per-tensor loop counts, and that is not nothing."""
    counts = {}
    for foreach in (False, True):
        params = [torch.randn(7, 5, requires_grad=True), torch.randn(3, requires_grad=True)]
        opt = make(params, foreach)
        for step in range(2):  # the second step: momentum buffers exist
            for q in params:
                q.grad = torch.ones_like(q)
            meter = CostMeter()
            with meter.update(), meter.phase("feedback"):
                opt.step()
        counts[foreach] = meter.flops_by_phase["feedback"]
    assert counts[True] == counts[False] >= 3 * 38


def test_peak_memory_is_the_trials_own():
    """A trial's peak is what it adds over the process at its start, not the process's lifetime peak."""
    first = CostMeter()
    big = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
    assert first.summary()["peak_memory_bytes"] >= 60 * 2 ** 20
    # a later trial in the same (reused) process; `big` stays alive so that `small` needs fresh pages (freed
    # memory the allocator keeps resident would be reused without raising the high-water mark)
    second = CostMeter()
    small = torch.ones(16 * 2 ** 20 // 4)
    peak = second.summary()["peak_memory_bytes"]
    assert 12 * 2 ** 20 <= peak < 48 * 2 ** 20  # the 16 MiB it added, not the 80 MiB the process holds
    del small, big
    state = second.state_dict()
    resumed = CostMeter()
    resumed.load_state_dict(state)
    assert resumed.summary()["peak_memory_bytes"] >= 0.9 * peak  # carried across a resume (RSS counters are batched)


def test_max_pooling_is_counted_per_input_element():
    """A max-pool is a reduction (one FLOP per input element), routing its gradient back one FLOP per
    element of its input; with or without the indices, in the forward pass and in autograd's backward."""
    import torch.nn.functional as F

    from harness.cost import flop_counter

    z = torch.randn(2, 3, 7, 6, requires_grad=True)  # 252 elements; floor pooling drops a row
    with flop_counter() as c, torch.no_grad():
        F.max_pool2d(z, 2)
        F.max_pool2d(z, 2, return_indices=True)
    assert c.get_total_flops() == 2 * 252
    y = F.max_pool2d(z, 2)
    g = torch.ones_like(y)
    with flop_counter() as c:
        y.backward(g)
    assert c.get_total_flops() == 252


def test_grouped_reductions_and_a_scalar_first_grouped_op_are_counted_as_their_loops():
    """``clip_grad_norm_`` (grouped norms on CPU too) and ``_foreach_pow(scalar, tensors)`` (the list second)."""
    from harness.cost import flop_counter

    counts = {}
    for foreach in (False, True):
        params = [torch.randn(7, 5, requires_grad=True), torch.randn(3, requires_grad=True)]
        for q in params:
            q.grad = torch.ones_like(q)
        with flop_counter() as c:
            torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=foreach)
        counts[foreach] = c.get_total_flops()
    assert counts[True] == counts[False] >= 2 * 38
    ts = [torch.randn(7, 5), torch.randn(3)]
    with flop_counter() as c:
        torch._foreach_pow(2.0, ts)
        torch._foreach_max(ts)
    assert c.get_total_flops() == 2 * 38


def test_grouped_count_of_empty_lists_is_zero():
    from harness import cost

    assert cost._grouped([], 1.0) == 0 and cost._grouped(2.0, 3) == 0  # nothing to count
    assert cost._grouped(2.0, [[3, 4], (5,)], [[7]], out_shape=None) == 17  # the first list of shapes

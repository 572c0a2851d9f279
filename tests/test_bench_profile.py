"""``creditbench bench --profile``: each operation's self time in exactly one kind of work, checked against an explicit
walk of a real profile; the rows, table and JSON it adds to the bench."""

import json

import pytest

from harness.bench import BARE, BenchConfig, run_bench
from harness.cli import main

CFG = dict(network="mlp-1x16-tanh", dataset="digits", batch_size=16, updates=12, rounds=2, threads=1)


@pytest.mark.parametrize("name, kind", [
    ("aten::mm", "matmul"), ("aten::addmm", "matmul"), ("aten::bmm", "matmul"), ("aten::baddbmm", "matmul"),
    ("aten::addbmm", "matmul"), ("aten::mv", "matmul"), ("aten::addmv", "matmul"), ("aten::dot", "matmul"),
    ("aten::vdot", "matmul"), ("aten::_linalg_svd", "matmul"), ("aten::linalg_svd", "matmul"),
    ("aten::_linalg_eigh", "matmul"), ("aten::linalg_lstsq", "matmul"), ("aten::linalg_solve", "matmul"),
    ("aten::_linalg_solve_ex", "matmul"), ("aten::mkldnn_convolution", "matmul"), ("aten::addmv_", "matmul"),
    ("aten::addmm_", "matmul"), ("aten::_addmm_activation", "matmul"), ("aten::addr", "matmul"),
    ("aten::linalg_inv_ex", "matmul"), ("aten::linalg_cholesky_ex", "matmul"), ("aten::linalg_qr", "matmul"),
    ("aten::_log_softmax_backward_data", "transcendental"), ("aten::_softmax_backward_data", "transcendental"),
    ("aten::convolution_backward", "matmul"),
    ("aten::tanh", "transcendental"), ("aten::tanh_", "transcendental"), ("aten::atanh", "transcendental"),
    ("aten::exp", "transcendental"), ("aten::exp_", "transcendental"), ("aten::log", "transcendental"),
    ("aten::sigmoid", "transcendental"), ("aten::pow", "transcendental"), ("aten::_log_softmax", "transcendental"),
    ("aten::_softmax", "transcendental"), ("aten::log1p", "transcendental"), ("aten::expm1", "transcendental"),
    ("aten::normal_", "random"), ("aten::uniform_", "random"), ("aten::random_", "random"), ("aten::randn", "random"),
    ("aten::rand", "random"), ("aten::randint", "random"), ("aten::randperm", "random"),
    ("aten::bernoulli_", "random"), ("aten::bernoulli", "random"), ("aten::multinomial", "random"),
    ("aten::exponential_", "random"),
    ("aten::tanh_backward", "other ops"), ("aten::mul", "other ops"), ("aten::sqrt", "other ops"),
    ("aten::copy_", "other ops"), ("aten::index", "other ops"), ("aten::t", "other ops"),
    ("Optimizer.step#Adam.step", None), ("mm", None),
])
def test_profile_kinds_of_operations(name, kind):
    from harness.bench_profile import op_kind

    assert op_kind(name) == kind


def test_profile_split_counts_each_operations_self_time_once():
    """On a real profile: every aten operation's self time in exactly one kind; those inside an optimizer's step in
    ``optimizer`` whatever they are (walked up explicitly here), the rest by name."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from harness.bench_profile import split_events

    w = torch.randn(64, 64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-3, foreach=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            with torch.no_grad():
                h = torch.tanh(torch.randn(32, 64) @ w)
                w.grad = h.t() @ h
            opt.step()
    events = [e for e in prof.events() if e.name.startswith("aten::")]

    def under_step(e):
        while e.cpu_parent is not None:
            e = e.cpu_parent
            if e.name == "Optimizer.step#Adam.step":
                return True
        return False

    want = {"matmul": 0.0, "transcendental": 0.0, "random": 0.0, "optimizer": 0.0, "other ops": 0.0}
    for e in events:
        kind = ("optimizer" if under_step(e) else "matmul" if e.name == "aten::mm" else "transcendental"
                if e.name == "aten::tanh" else "random" if e.name in ("aten::randn", "aten::normal_") else "other ops")
        want[kind] += e.self_cpu_time_total / 1e6
    got = split_events(prof.events())
    assert got == pytest.approx(want, rel=1e-9, abs=0)
    assert min(got[k] for k in ("matmul", "transcendental", "random", "optimizer")) > 0


def test_bench_profile_rows_table_and_json(capsys):
    from harness.bench_profile import KINDS, with_rest

    out = run_bench(BenchConfig(algos=["tp"], profile=True, **{**CFG, "rounds": 1, "updates": 4}))
    rows = {r["name"]: r for r in out["rows"]}
    for name in ("bp", "tp"):
        p = rows[name]["profile"]
        assert list(p) == ["profiled", *KINDS] and p["rest"] >= 0 and p["profiled"] > 0
        kinds = sum(p[k] for k in KINDS if k != "rest")
        assert p["rest"] == pytest.approx(max(0.0, p["profiled"] - kinds), abs=1e-12)
    assert rows["bp"]["profile"]["random"] == 0 < rows["tp"]["profile"]["random"]  # tp draws its inverse's noise
    assert rows["bp"]["profile"]["optimizer"] > 0 and "profile" not in rows[BARE]
    assert with_rest({"matmul": 2.0, "random": 1.0}, 5.0) == {"profiled": 5.0, "matmul": 2.0, "random": 1.0, "rest": 2.0}
    assert with_rest({"matmul": 6.0}, 5.0) == {"profiled": 5.0, "matmul": 6.0, "rest": 0.0}
    from harness.bench import bench_text

    text = bench_text(out).splitlines()
    assert text[-3].startswith("algorithm  profiled ms/update  matmul ms (%)") and text[-2].startswith("bp ")
    assert text[-1].startswith("tp ") and "where the time goes" in bench_text(out)
    assert "where the time goes" not in bench_text({**out, "rows": [{k: v for k, v in r.items() if k != "profile"}
                                                                     for r in out["rows"]]})
    assert main(["bench", "--dataset", "digits", "--network", "mlp-1x8-tanh", "--updates", "2", "--rounds", "1",
                 "--batch-size", "8", "--threads", "1", "--profile", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["rows"][0]["profile"]) == {"profiled", *KINDS}
    assert main(["bench", "--dataset", "digits", "--profile", "--scaling", "x.png"]) == 2
    assert "--profile" in capsys.readouterr().err


def _event(name, cpu_us, device_us=0.0, parent=None):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, self_cpu_time_total=cpu_us, self_device_time_total=device_us, cpu_parent=parent)


def test_profile_split_on_cuda_uses_the_kernels_device_time():
    from harness.bench_profile import split_events

    step = _event("Optimizer.step#Adam.step", 50.0)
    events = [_event("aten::mm", 10.0, 400.0), _event("aten::tanh", 2.0, 30.0), _event("aten::normal_", 1.0, 20.0),
              _event("aten::mul_", 3.0, 7.0, parent=_event("aten::lerp_", 0.0, 0.0, parent=step)),
              _event("aten::mm", 6.0, 11.0, parent=step),  # a product inside an optimizer step is the optimizer's
              _event("aten::add", 4.0, 5.0), step, _event("cudaLaunchKernel", 9.0, 0.0)]
    want = {"matmul": 400e-6, "transcendental": 30e-6, "random": 20e-6, "optimizer": 18e-6, "other ops": 5e-6}
    assert split_events(events, cuda=True) == pytest.approx(want, rel=1e-12, abs=0)
    assert split_events(events) == pytest.approx(
        {"matmul": 10e-6, "transcendental": 2e-6, "random": 1e-6, "optimizer": 9e-6, "other ops": 4e-6}, rel=1e-12, abs=0)


class _Trainer:
    """Stands in for a trainer: each update sleeps 4 ms (Python time: ``rest``) and multiplies two matrices."""

    def __init__(self, device="cpu"):
        import torch

        self.device = torch.device(device)
        self.a = torch.randn(64, 64)

    def train_batches(self, perm, n):
        import time

        for _ in range(n):
            time.sleep(0.004)
            self.a @ self.a


def test_profile_window_is_per_update_of_its_own_wall_time():
    from harness.bench_profile import KINDS, profile_window

    trainer = _Trainer()
    trainer.train_batches(None, 2)  # the first products of a process set up the BLAS
    split = profile_window(trainer, None, 5)
    assert 0.004 <= split["profiled"] < 0.05  # per update, not per window (that would be ≥ 5 × 4 ms · 5)
    assert 0 < split["matmul"] < split["profiled"] - 0.0036 and split["rest"] >= 0.0036  # the sleep is rest
    assert split["profiled"] == pytest.approx(sum(split[k] for k in KINDS), rel=1e-12)


def test_profile_window_on_cuda_records_kernels_and_waits_for_the_device(monkeypatch):
    import torch
    import torch.profiler

    from harness.bench_profile import profile_window

    seen, synced = {}, []

    class FakeProfile:
        def __init__(self, activities):
            seen["activities"] = activities

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def events(self):
            return [_event("aten::mm", 5.0, 3000.0)]

    monkeypatch.setattr(torch.profiler, "profile", FakeProfile)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: synced.append(device))
    trainer = _Trainer("cuda:1")
    split = profile_window(trainer, None, 3)
    assert seen["activities"] == [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    assert synced == [torch.device("cuda", 1)] and split["matmul"] == pytest.approx(1e-3, rel=1e-12, abs=0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: pytest.fail("no sync on CPU"))
    profile_window(_Trainer(), None, 1)
    assert seen["activities"] == [torch.profiler.ProfilerActivity.CPU]


def test_profile_table_text_and_markdown():
    from harness.bench_profile import profile_table

    split = {"profiled": 0.004, "matmul": 0.002, "transcendental": 0.0005, "random": 0.0, "optimizer": 0.001,
             "other ops": 0.0002, "rest": 0.0003}
    result = {"rows": [{"name": "bp", "mean_s": 0.003, "profile": split}, {"name": BARE, "mean_s": 0.003},
                       {"name": "fa", "mean_s": 0.003, "profile": {**split, "profiled": 0.008, "matmul": 0.006}}]}
    title = ("where the time goes (torch.profiler, one profiled window per algorithm after the timed rounds; rest = "
             "Python, dispatch, allocation)")
    md = profile_table(result, markdown=True).splitlines()
    assert md[:2] == [title, ""]
    assert md[2] == ("| algorithm | profiled ms/update | matmul ms (%) | transcendental ms (%) | random ms (%) | "
                     "optimizer ms (%) | other ops ms (%) | rest ms (%) |")
    assert md[4] == "| bp | 4.00 | 2.00 (50%) | 0.50 (12%) | 0.00 (0%) | 1.00 (25%) | 0.20 (5%) | 0.30 (8%) |"
    assert md[5] == "| fa | 8.00 | 6.00 (75%) | 0.50 (6%) | 0.00 (0%) | 1.00 (12%) | 0.20 (2%) | 0.30 (4%) |"
    assert len(md) == 6  # the bare loop has no profile
    text = profile_table(result).splitlines()
    assert text[0] == title and text[2].split() == ["algorithm", "profiled", "ms/update", "matmul", "ms", "(%)",
                                                     "transcendental", "ms", "(%)", "random", "ms", "(%)", "optimizer",
                                                     "ms", "(%)", "other", "ops", "ms", "(%)", "rest", "ms", "(%)"]
    assert text[3].split()[:4] == ["bp", "4.00", "2.00", "(50%)"] and not text[3].startswith("|")

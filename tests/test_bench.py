"""``creditbench bench``: what it times and counts, checked against the cost meter and explicit arithmetic."""

import json
import math

import pytest

from harness.bench import BARE, BenchConfig, run_bench, schedule_period, table_text, time_trainer, make_trainer
from harness.cli import main
from harness.datasets import load_dataset
from harness.errors import CreditbenchError

CFG = dict(network="mlp-1x16-tanh", dataset="digits", batch_size=16, updates=12, rounds=2, threads=1)


@pytest.fixture(scope="module")
def result():
    return run_bench(BenchConfig(algos=["fa", "rfl"], sets={"schedule": "sleep_wake", "sleep_every": "5"}, **CFG))


def test_rows_ratios_and_floors(result):
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["bp", "fa", "rfl", BARE]  # the baseline first, the bare loop last
    bp, fa, rfl = rows["bp"], rows["fa"], rows["rfl"]
    assert bp["flops_ratio"] == 1 and bp["time_ratio"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    assert fa["flops"] == pytest.approx(bp["flops"], rel=0.01)  # fa's backward pass has bp's shapes
    for r in (bp, fa, rfl):
        assert r["flops"] == pytest.approx(sum(r["flops_by_phase"].values()))
        assert r["gflops_per_s"] == pytest.approx(r["flops"] / r["mean_s"] / 1e9)
        assert r["overhead"] == pytest.approx(r["time_ratio"]["median"] / r["flops_ratio"])
        assert r["mean_s"] > 0 and r["median_s"] > 0 and r["rounds"] == 2
    assert rfl["updates"] == 15  # 12 raised to whole sleep–wake periods of 5 (the amortised mean)
    assert rfl["flops_by_phase"]["feedback"] > 0 and bp["flops_by_phase"]["feedback"] == 0
    per_round = [r["mean_s"] / b["mean_s"] for r, b in zip(
        [x for x in result["records"] if x["name"] == "fa"], [x for x in result["records"] if x["name"] == "bp"])]
    assert fa["time_ratio"]["min"] == min(per_round) and fa["time_ratio"]["max"] == max(per_round)
    assert result["matmul_gflops"]["median"] > 0 and result["machine"]["threads"] == 1


def test_flops_are_the_meters_amortised_count():
    """The bench's FLOPs of rfl under sleep–wake are the meter's mix: (S−1)/S wake + 1/S sleep updates."""
    data = load_dataset("digits")
    cfg = BenchConfig(algos=["rfl"], sets={"schedule": "sleep_wake", "sleep_every": "4"}, **CFG)
    trainer = make_trainer("rfl", cfg, data)
    assert schedule_period(trainer) == 4
    out = time_trainer(trainer, 6)
    assert out["updates"] == 8
    kinds = trainer.meter.kind_flops
    for p, f in out["flops"].items():
        assert f == pytest.approx(0.75 * kinds["wake"][p] + 0.25 * kinds["sleep"][p])
    assert kinds["sleep"]["feedback"] > kinds["wake"]["feedback"]


def test_table_and_markdown(result):
    text = table_text(result)
    assert text.splitlines()[0].startswith("digits, mlp-1x16-tanh, batch 16, cpu")
    assert "matmul floor for this network's products" in text and BARE in text
    md = table_text(result, markdown=True).splitlines()
    assert md[2].startswith("| algorithm |") and md[3] == "|" + "---|" * 8 and len(md) == 4 + 4


def test_cli_json_and_bad_input(capsys):
    assert main(["bench", "--algo", "bp", "--dataset", "digits", "--network", "mlp-1x8-tanh", "--updates", "3",
                 "--rounds", "1", "--batch-size", "8", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in out["rows"]] == ["bp", BARE] and math.isfinite(out["rows"][0]["mean_s"])
    assert main(["bench", "--algo", "nope", "--dataset", "digits"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["bench", "--algo", "fa", "--dataset", "digits", "--set", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "feedback_scale" in err and err.count("\n") == 1
    with pytest.raises(CreditbenchError, match="--updates must be ≥ 1"):
        run_bench(BenchConfig(algos=["bp"], **{**CFG, "updates": 0}))


def test_scaling_runs_every_width_and_depth_and_draws_the_figure(tmp_path):
    from harness.bench import MATMUL, run_scaling, scaling_figure, scaling_table

    cfg = BenchConfig(algos=["fa"], **{**CFG, "rounds": 1, "updates": 3})
    s = run_scaling(cfg, widths=[8, 16], depths=[1, 2])
    nets = [r["network"] for r in s["runs"] if r["name"] == "bp"]
    assert nets == ["mlp-1x8-tanh", "mlp-2x8-tanh", "mlp-1x16-tanh", "mlp-2x16-tanh"]
    bp = {r["network"]: r["flops"] for r in s["runs"] if r["name"] == "bp"}
    # one more 8 → 8 layer at batch 16: three 16×8×8 products (forward, input and weight gradients) and a few
    # elementwise passes over its 16×8 outputs (bias, tanh, tanh's derivative)
    extra = bp["mlp-2x8-tanh"] - bp["mlp-1x8-tanh"]
    assert 3 * 2 * 16 * 8 * 8 < extra <= 3 * 2 * 16 * 8 * 8 + 4 * 16 * 8
    assert len([r for r in s["runs"] if r["name"] == MATMUL]) == 4
    scaling_figure(s, tmp_path / "scaling.png")
    assert all((tmp_path / f"scaling.{f}").stat().st_size > 0 for f in ("png", "svg", "pdf"))
    assert scaling_table(s).count("\n") == 2 + 8


def test_readme_block_is_replaced_between_its_markers_only(tmp_path, capsys):
    from harness.bench import README_BEGIN, README_END, with_readme_block

    text = f"# t\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n"
    assert with_readme_block(text, "| new |\n") == f"# t\nbefore\n{README_BEGIN}\n| new |\n{README_END}\nafter\n"
    for bad in ("no markers", f"{README_END}\n{README_BEGIN}", text + README_BEGIN):
        with pytest.raises(CreditbenchError, match="markers"):
            with_readme_block(bad, "x")
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert main(["bench", "--dataset", "digits", "--network", "mlp-1x8-tanh", "--updates", "2", "--rounds", "1",
                 "--batch-size", "8", "--threads", "1", "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers here\n" and "markers" in capsys.readouterr().err
    readme.write_text(text)
    assert main(["bench", "--dataset", "digits", "--network", "mlp-1x8-tanh", "--updates", "2", "--rounds", "1",
                 "--batch-size", "8", "--threads", "1", "--readme", str(readme)]) == 0
    new = readme.read_text()
    assert new.startswith(f"# t\nbefore\n{README_BEGIN}\ndigits, mlp-1x8-tanh, batch 8, cpu") and new.endswith(
        f"{README_END}\nafter\n") and "| bp |" in new


def test_the_readme_has_the_bench_block():
    from pathlib import Path

    from harness.bench import README_BEGIN, README_END

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1


# ------------------------------------------------------------------------------------------ --profile
@pytest.mark.parametrize("name, kind", [
    ("aten::mm", "matmul"), ("aten::addmm", "matmul"), ("aten::bmm", "matmul"), ("aten::baddbmm", "matmul"),
    ("aten::addbmm", "matmul"), ("aten::mv", "matmul"), ("aten::addmv", "matmul"), ("aten::dot", "matmul"),
    ("aten::vdot", "matmul"), ("aten::_linalg_svd", "matmul"), ("aten::linalg_svd", "matmul"),
    ("aten::_linalg_eigh", "matmul"), ("aten::linalg_lstsq", "matmul"), ("aten::linalg_solve", "matmul"),
    ("aten::_linalg_solve_ex", "matmul"), ("aten::mkldnn_convolution", "matmul"),
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
    ("aten::copy_", "other ops"), ("aten::index", "other ops"), ("aten::_log_softmax_backward_data", "other ops"),
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

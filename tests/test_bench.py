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


"""The comparison report, from real tiny two-phase runs (tests/report_fixtures.py)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_fixtures import build_all  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.errors import ConfigError, ResultsError  # noqa: E402
from harness.report import APPENDIX_FIGURES, FIGURES, SECTIONS, build_report  # noqa: E402
from harness.report_data import load_results, newest_results_dir  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("report-results"))


@pytest.fixture(scope="session")
def main_report(dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-main")
    return build_report([dirs["main"]], out), out


def copy_dir(src: Path, dst: Path, edit_trials=None, edit_env=None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("figures", "tables", "report.md"))
    if edit_trials is not None:
        t = pd.read_csv(dst / "trials.csv")
        t = edit_trials(t)
        t.to_csv(dst / "trials.csv", index=False)
        e = pd.read_csv(dst / "epochs.csv")
        e[e["trial_id"].isin(t["trial_id"])].to_csv(dst / "epochs.csv", index=False)
    if edit_env is not None:
        env = json.loads((dst / "env.json").read_text())
        (dst / "env.json").write_text(json.dumps(edit_env(env)))
    return dst


def welch_by_hand(a, b, confidence=0.95):
    """Welch–Satterthwaite t-interval of mean(a) − mean(b) and its two-sided p, written out."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    d = a.mean() - b.mean()
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return d - half, d + half, 2 * stats.t.sf(abs(d) / se, df)


def holm_by_loop(pvalues):
    """Holm's step-down adjustment: sort, multiply the k-th smallest by (m − k), keep it monotone, cap at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------- full report
def test_report_has_every_section_figure_and_table(dirs, main_report):
    result, out = main_report
    text = (out / "report.md").read_text()
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
    key = "digits_mlp-1x16-tanh"
    for name in FIGURES + APPENDIX_FIGURES:
        png = out / "figures" / f"{name}_{key}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000, name
        assert (out / "figures" / f"{name}_{key}.svg").read_text().lstrip().startswith("<?xml"), name
        assert (out / "figures" / f"{name}_{key}.pdf").read_bytes()[:5] == b"%PDF-", name
        assert f"](figures/{name}_{key}.png)" in text
    for name in ("summary", "hyperparameters", "protocol", "failures", "plausibility", f"summary_{key}"):
        assert (out / "tables" / f"{name}.csv").is_file()
    tex = (out / "tables" / f"summary_{key}.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "p (Holm)" in tex
    assert "$\\pm$" in tex and "±" not in tex and "×" not in tex and "95\\% CI" in tex
    for algo in ("bp", "fa", "fa\\_probe"):
        assert f"\n{algo} & 3/3 & " in tex
    # provenance: spec, env facts and the dataset fingerprint
    env = json.loads((dirs["main"] / "env.json").read_text())
    assert env["dataset"]["fingerprints"]["digits"] in text
    assert "```yaml" in text and "search_space" in text
    assert "No trial diverged or failed." in text
    assert "Resolution: 360 test examples: 1 example = 0.28 pp." in text


def test_summary_equals_independent_pandas_aggregation(dirs, main_report):
    _, out = main_report
    summary = pd.read_csv(out / "tables" / "summary.csv")
    trials = pd.read_csv(dirs["main"] / "trials.csv")
    epochs = pd.read_csv(dirs["main"] / "epochs.csv")
    final = trials[trials["phase"] == "final"]
    bp = final[final["algo"] == "bp"]
    target = 0.95 * bp["test_acc"].mean()
    assert set(summary["algo"]) == {"bp", "fa", "fa_probe"}
    for algo, g in final.groupby("algo"):
        row = summary[summary["algo"] == algo].iloc[0]
        acc = g["test_acc"].dropna()
        n = len(acc)
        half = stats.t.ppf(0.975, n - 1) * acc.std(ddof=1) / math.sqrt(n)
        assert row["n"] == n == 3
        assert row["test_acc_mean"] == pytest.approx(acc.mean(), abs=1e-12)
        assert row["test_acc_std"] == pytest.approx(acc.std(ddof=1), abs=1e-12)
        assert row["test_acc_ci_low"] == pytest.approx(acc.mean() - half, abs=1e-12)
        assert row["test_acc_ci_high"] == pytest.approx(acc.mean() + half, abs=1e-12)
        assert row["best_val_acc_mean"] == pytest.approx(g["best_val_acc"].mean(), abs=1e-12)
        assert row["best_epoch_mean"] == pytest.approx(g["best_epoch"].mean(), abs=1e-12)
        assert row["diverged"] == (g["status"] == "diverged").sum()
        assert row["failed"] == (g["status"] == "failed").sum()
        assert row["flops_ratio"] == pytest.approx(g["flops_per_update"].mean() / bp["flops_per_update"].mean())
        assert row["time_ratio"] == pytest.approx(g["seconds_per_update"].mean() / bp["seconds_per_update"].mean())
        assert row["target_acc"] == pytest.approx(target)
        # updates / FLOPs to target, from epochs.csv validation accuracy
        e = epochs[epochs["trial_id"].isin(g["trial_id"])]
        first = e[e["val_acc"] >= target].sort_values("epoch").groupby("trial_id").first()
        assert row["reached_target"] == len(first)
        if len(first):
            assert row["updates_to_target_mean"] == pytest.approx(first["updates"].mean())
            assert row["flops_to_target_mean"] == pytest.approx(first["flops_total"].mean())
        if algo != "bp":
            lo, hi, p = welch_by_hand(acc.to_numpy(), bp["test_acc"].to_numpy())
            assert row["diff_test_acc"] == pytest.approx(acc.mean() - bp["test_acc"].mean(), abs=1e-12)
            assert row["diff_p_value"] == pytest.approx(p, rel=1e-6)
            assert row["diff_ci_low"] == pytest.approx(lo, abs=1e-9)
            assert row["diff_ci_high"] == pytest.approx(hi, abs=1e-9)
        # robustness: search configurations within 1 and 5 pp of the algorithm's best
        search = trials[(trials["phase"] == "search") & (trials["algo"] == algo)]
        gap = 100 * (search["best_val_acc"] - search["best_val_acc"].max())
        assert row["search_configs"] == len(search) == 3
        assert row["within_1pp"] == pytest.approx((gap >= -1).mean()) and row["within_5pp"] == pytest.approx((gap >= -5).mean())
    # Holm across the table's comparisons, by an explicit loop
    others = summary[summary["algo"] != "bp"]
    adjusted = holm_by_loop(list(others["diff_p_value"]))
    assert list(others["diff_p_holm"]) == pytest.approx(adjusted, rel=1e-12)
    assert list(others["diff_significant"].astype(bool)) == [p < 0.05 for p in adjusted]


def test_hyperparameter_table_shows_selected_config_and_space(dirs, main_report):
    _, out = main_report
    hp = pd.read_csv(out / "tables" / "hyperparameters.csv")
    trials = pd.read_csv(dirs["main"] / "trials.csv")
    fa_final = trials[(trials["algo"] == "fa") & (trials["phase"] == "final")].iloc[0]
    row = hp[(hp["algo"] == "fa") & (hp["hyperparameter"] == "feedback_scale")].iloc[0]
    assert float(row["selected"]) == pytest.approx(fa_final["hp.feedback_scale"], rel=1e-2)
    assert row["search_space"] == "loguniform[0.1, 10]"
    assert row["space_from"].startswith("spec.yaml")
    assert set(hp.loc[hp["algo"] == "bp", "hyperparameter"]) == {"lr"}


# ---------------------------------------------------------------------------- edge cases
def test_diverged_trials_are_counted_and_listed(dirs, tmp_path):
    result = build_report([dirs["diverged"]], tmp_path, figures=False)
    trials = pd.read_csv(dirs["diverged"] / "trials.csv")
    bad = trials[trials["status"].isin(["diverged", "failed"])]
    assert len(bad) >= 2 and (bad["phase"] == "final").any()
    s = result["summary"].set_index("algo")
    final = trials[trials["phase"] == "final"]
    for algo in ("bp", "fa"):
        assert s.loc[algo, "diverged"] == ((final["algo"] == algo) & (final["status"] == "diverged")).sum()
    failures = pd.read_csv(tmp_path / "tables" / "failures.csv")
    assert len(failures) == len(bad)
    assert set(failures["status"]) <= {"diverged", "failed"}
    text = (tmp_path / "report.md").read_text()
    assert "diverged in final" in text and "lr=2" in text


def test_single_seed_has_no_ci_and_says_so(dirs, tmp_path):
    one = copy_dir(dirs["main"], tmp_path / "one",
                   edit_trials=lambda t: t[(t["phase"] == "search") | (t["seed"] == 0)])
    result = build_report([one], tmp_path / "out", figures=False)
    s = result["summary"]
    assert (s["n"] == 1).all()
    assert s[["test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "diff_ci_low", "diff_p_value"]].isna().all().all()
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Single seed for bp, fa, fa_probe: no standard deviation, no confidence interval" in text
    assert "n/a (n<2)" in text


def test_missing_diagnostics_are_reported_not_drawn(dirs, tmp_path):
    fa = copy_dir(dirs["only_fa"], tmp_path / "fa")  # fa's one diagnostic (∠(B_l, W_l)) removed
    epochs = pd.read_csv(fa / "epochs.csv")
    assert any(c.startswith("angle_b_w_l") for c in epochs)
    epochs.drop(columns=[c for c in epochs if c.startswith("angle_b_w_l")]).to_csv(fa / "epochs.csv", index=False)
    result = build_report([dirs["only_bp"], fa], tmp_path)
    names = {p.name.split("_digits")[0] for p in result["figures"]}
    assert "diagnostics" not in names and {"learning_curves", "alignment", "sensitivity"} <= names
    text = (tmp_path / "report.md").read_text()
    assert "not drawn — no algorithm diagnostics recorded" in text


def test_combined_directories_equal_the_single_run(dirs, main_report, tmp_path):
    _, out = main_report
    combined = build_report([dirs["only_bp"], dirs["only_fa"], dirs["only_fa_probe"]], tmp_path,
                            figures=False)["summary"]
    single = pd.read_csv(out / "tables" / "summary.csv")
    cols = ["test_acc_mean", "test_acc_std", "best_val_acc_mean", "updates_to_target_mean", "flops_ratio",
            "diff_p_value"]
    pd.testing.assert_frame_equal(combined.set_index("algo")[cols].sort_index(),
                                  single.set_index("algo")[cols].sort_index(), check_dtype=False)


def test_algorithm_missing_from_some_directories(dirs, tmp_path):
    """main has bp/fa/fa_probe on tanh, diverged has bp/fa on linear; fa alone has no reference."""
    result = build_report([dirs["main"], dirs["diverged"]], tmp_path / "a", figures=False)
    s = result["summary"]
    assert set(s.loc[s["network"] == "mlp-1x16-linear", "algo"]) == {"bp", "fa"}
    text = (tmp_path / "a" / "report.md").read_text()
    assert "### digits / mlp-1x16-linear" in text and "Not run on this dataset/network: fa_probe." in text
    result = build_report([dirs["only_fa"], dirs["only_fa_probe"]], tmp_path / "b", figures=False)
    assert result["summary"][["flops_ratio", "diff_test_acc", "target_acc"]].isna().all().all()
    assert "bp (the reference) has no final-phase trials here" in (tmp_path / "b" / "report.md").read_text()
    # an absolute target still works without the reference
    result = build_report([dirs["only_fa"], dirs["only_fa_probe"]], tmp_path / "c", target="0.5", figures=False)
    assert (result["summary"]["target_acc"] == 0.5).all() and (result["summary"]["reached_target"] > 0).any()


def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_incompatible_protocol_is_refused(dirs, tmp_path):
    other = copy_dir(dirs["only_fa"], tmp_path / "bs64",
                     edit_trials=lambda t: t.assign(**{"hp.batch_size": 64}))
    with pytest.raises(ResultsError) as exc:
        load_results([dirs["only_bp"], other])
    msg = one_line_error(exc)
    assert "batch_size differs" in msg and "report them separately" in msg


def test_different_dataset_fingerprints_are_refused(dirs, tmp_path):
    def edit(env):
        env["dataset"]["fingerprints"]["digits"] = "0" * 16
        return env

    other = copy_dir(dirs["only_fa"], tmp_path / "fp", edit_env=edit)
    with pytest.raises(ResultsError) as exc:
        load_results([dirs["only_bp"], other])
    assert "fingerprint" in one_line_error(exc)


def test_duplicate_runs_and_versions_are_refused(dirs, tmp_path):
    with pytest.raises(ResultsError) as exc:
        load_results([dirs["main"], dirs["only_bp"]])
    assert "final-phase seed" in one_line_error(exc)
    v2 = copy_dir(dirs["only_fa"], tmp_path / "v2", edit_trials=lambda t: t.assign(algo_version=2))
    with pytest.raises(ResultsError) as exc:
        load_results([dirs["only_bp"], dirs["only_fa_probe"], v2, dirs["main"]])
    assert "several versions" in one_line_error(exc)


def test_missing_and_empty_directories_give_clear_errors(dirs, tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        load_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="holds no trials.csv"):
        load_results([tmp_path / "empty"])
    (tmp_path / "header").mkdir()
    pd.read_csv(dirs["main"] / "trials.csv").head(0).to_csv(tmp_path / "header" / "trials.csv", index=False)
    with pytest.raises(ResultsError, match="has no trials"):
        load_results([tmp_path / "header"])
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "trials.csv").write_text("")
    with pytest.raises(ResultsError, match="has no trials"):
        load_results([tmp_path / "blank"])
    with pytest.raises(ResultsError, match="no results directory with a trials.csv"):
        newest_results_dir(tmp_path / "empty")
    with pytest.raises(ResultsError, match="--out"):
        build_report([dirs["only_bp"], dirs["only_fa"]])
    with pytest.raises(ConfigError, match="--target"):
        build_report([dirs["only_bp"]], tmp_path / "x", target="lots")


def test_cli_report_and_newest_default(dirs, tmp_path, capsys, monkeypatch):
    root = tmp_path / "results"
    old = copy_dir(dirs["only_bp"], root / "sweep" / "old")
    new = copy_dir(dirs["only_fa"], root / "sweep" / "new")
    import os

    os.utime(old / "trials.csv", (1, 1))
    assert newest_results_dir(root) == new
    assert main(["report", "--results-root", str(root), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "digits / mlp-1x16-tanh" in printed and "| fa | 3/3 |" in printed
    assert not (new / "figures").exists() or not list((new / "figures").iterdir())
    assert (new / "report.md").is_file() and not (old / "report.md").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: results directory") and "does not exist" in err[0]
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(new), "--out", "combined", "--target", "0.5", "--target-metric", "test_acc",
                 "--no-figures"]) == 0
    s = pd.read_csv(tmp_path / "combined" / "tables" / "summary.csv")
    assert (s["target_metric"] == "test_acc").all() and (s["target_acc"] == 0.5).all()


def test_epoch_table_consistency(dirs):
    """The fixture itself: epochs.csv belongs to trials.csv and ends at each trial's epoch count."""
    t = pd.read_csv(dirs["main"] / "trials.csv")
    e = pd.read_csv(dirs["main"] / "epochs.csv")
    last = e.groupby("trial_id")["epoch"].max()
    assert (last.reindex(t["trial_id"]).to_numpy() == t["epochs"].to_numpy()).all()
    assert np.isfinite(e["flops_total"]).all()


def test_different_package_versions_are_flagged(dirs, tmp_path):
    same = (tmp_path / "same")
    build_report([dirs["only_bp"], dirs["only_fa"]], same, figures=False)
    assert "different package versions" not in (same / "report.md").read_text()
    older = copy_dir(dirs["only_fa"], tmp_path / "older",
                     edit_env=lambda env: {**env, "versions": {**env["versions"], "torch": "2.13.0", "numpy": "1.0"}})
    build_report([dirs["only_bp"], older], tmp_path / "mixed", figures=False)
    text = (tmp_path / "mixed" / "report.md").read_text()
    torch_version = json.loads((dirs["only_bp"] / "env.json").read_text())["versions"]["torch"]
    warning = next(line for line in text.splitlines() if "different package versions" in line)
    assert warning.startswith("> **Warning") and f"torch {torch_version} (`only_bp`) vs 2.13.0 (`older`)" in warning
    assert "numpy" in warning and "ray" not in warning


# ---------------------------------------------------------------------------- the baseline is one setting
def test_every_table_follows_the_baseline(dirs, tmp_path):
    """--baseline (formerly --reference) orders every table; the protocol table used to keep bp first."""
    build_report([dirs["main"]], tmp_path, figures=False, baseline="fa")
    for name in ("summary", "hyperparameters"):
        assert pd.read_csv(tmp_path / "tables" / f"{name}.csv")["algo"].iloc[0] == "fa", name
    protocol = pd.read_csv(tmp_path / "tables" / "protocol.csv")
    assert list(protocol["algorithms"]) == ["fa, bp, fa_probe"] * len(protocol)
    assert (pd.read_csv(tmp_path / "tables" / "summary.csv")["reference"] == "fa").all()


def test_diagnostic_labels_come_from_the_results_not_the_algorithms(dirs, tmp_path):
    from harness.report_data import diagnostic_labels

    plain = load_results([dirs["main"]])
    assert diagnostic_labels(plain) == {}  # nothing declared: the report shows the column names
    copy = copy_dir(dirs["main"], tmp_path / "declared")
    declared = {"fa_probe": {"diagnostics": {"contraction": {"label": "ρ", "unit": "ratio"},
                                             "pinv_residual": {"label": "residual", "unit": "dimensionless"}}}}
    (copy / "algorithms.json").write_text(json.dumps(declared))
    labels = diagnostic_labels(load_results([copy]))
    assert list(labels) == ["contraction", "pinv_residual"] and labels["contraction"] == {"label": "ρ", "unit": "ratio"}
    from harness.report_figures import diagnostic_columns

    assert diagnostic_columns(load_results([copy]).epochs, labels)[:2] == ["contraction", "pinv_residual"]
    (copy / "algorithms.json").write_text("[1, 2]")
    with pytest.raises(ResultsError) as exc:
        load_results([copy])
    assert "algorithms.json" in one_line_error(exc)


@pytest.mark.parametrize("entry", [{"type": "loguniform", "low": 1e-4, "high": 1e-2},
                                   {"kind": "loguniform", "lower": 1e-4, "upper": 1e-2},
                                   {"kind": "choice", "categories": [1, 2]}, {"grid_search": [1, 2]}, [1, 2]])
def test_search_spaces_in_spellings_the_harness_never_writes_are_refused(dirs, tmp_path, entry):
    copy = copy_dir(dirs["only_bp"], tmp_path / "spelled")
    spec = yaml.safe_load((copy / "spec.yaml").read_text())
    spec["search_spaces"]["bp"]["lr"] = entry
    (copy / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ResultsError) as exc:
        build_report([copy], tmp_path / "out", figures=False)
    assert "search_spaces.bp.lr" in one_line_error(exc) and "kind: loguniform" in one_line_error(exc)


def test_declared_search_spaces_come_from_algorithms_json_without_a_spec(dirs, tmp_path):
    from harness.report_data import search_space

    copy = copy_dir(dirs["only_fa"], tmp_path / "nospec")
    (copy / "spec.yaml").unlink()
    (copy / "algorithms.json").write_text(json.dumps({"fa": {"diagnostics": {},
                                                            "search_space": {"feedback_scale": {"kind": "choice",
                                                                                                "values": [1, 2]}}}}))
    results = load_results([copy])
    space, origin = search_space(results, "fa", [results.sources[0].label])
    assert origin == "declared defaults (algorithms.json)"
    assert space["feedback_scale"] == {"kind": "choice", "values": [1, 2]} and "lr" in space


def test_the_table_a_finished_sweep_prints():
    from harness.report_tables import stage_table_text

    trials = pd.DataFrame([{"phase": "search", "algo": "bp", "status": "ok", "test_acc": 0.5, "epochs": 3}]
                          + [{"phase": "final", "algo": a, "status": st, "test_acc": acc, "epochs": 4}
                             for a, st, acc in (("fa", "ok", 0.9), ("fa", "diverged", 0.8), ("bp", "ok", 0.95))])
    text = stage_table_text(trials)
    assert text.startswith("\nfinal phase: test accuracy at the best validation epoch\n")
    lines = text.splitlines()
    assert lines[3].split() == ["bp", "1", "1", "0.9500", "±", "-", "4.0"]
    assert lines[4].split() == ["fa", "2", "1", "0.8500", "±", "0.0707", "4.0"]
    assert stage_table_text(trials.iloc[0:0]) == ""
    long = stage_table_text(trials.assign(algo=trials["algo"].replace({"fa": "ddtp-linear-long"}))).splitlines()
    assert len({ln.index(" ± ") for ln in long[3:]}) == 1  # columns stay aligned under a long name


# ---------------------------------------------------------------------------- issue 17: tables, published, HTML
def test_updates_to_target_is_undefined_without_the_reference(dirs, tmp_path):
    result = build_report([dirs["only_fa"]], tmp_path, figures=False)
    s = result["summary"]
    assert s["reached_target"].isna().all() and s["target_acc"].isna().all()
    text = (tmp_path / "report.md").read_text()
    assert "undefined (no reference)" in text and "(0/3)" not in text


def test_plausibility_table_comes_from_the_trials(dirs, main_report):
    _, out = main_report
    table = pd.read_csv(out / "tables" / "plausibility.csv")
    trials = pd.read_csv(dirs["main"] / "trials.csv")
    assert list(table["algo"]) == ["bp", "fa", "fa_probe"]
    for r in table.itertuples():
        t = trials[trials["algo"] == r.algo]
        assert str(r.weight_transport) == str(t["plausibility.weight_transport"].iloc[0])
        assert r.notes == t["plausibility.notes"].iloc[0] and r.phases == t["plausibility.phases"].iloc[0]
        assert r.configurations.startswith(str(t["config_id"].nunique()))
    text = (out / "report.md").read_text()
    section = text.split("\n## Plausibility\n")[1].split("\n## ")[0]
    assert section.count("\n|---") == 1 and "### digits / mlp-1x16-tanh" in section


def test_constant_columns_are_stated_once(main_report):
    _, out = main_report
    text = (out / "report.md").read_text()
    hp = text.split("\n## Hyperparameters\n")[1].split("\n## ")[0]
    header = next(line for line in hp.splitlines() if line.startswith("| algo |"))
    assert "dataset" not in header and "network" not in header and "selected_from" not in header
    assert "In every row — " in hp and "selected_from: final phase" in hp


def published_csv(path: Path, rows) -> Path:
    from harness.report_published import COLUMNS

    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def test_published_results_show_beside_matching_measurements(dirs, tmp_path):
    csv = published_csv(tmp_path / "pub.csv", [
        ("fa", "FA", "digits", "mlp-1x16-tanh", 88.8, "test", "toy protocol", "Someone et al. 2020 (Venue) Table 9"),
        ("bp", "BP", "digits", "mlp-2x16-tanh", 77.7, "test", "other network", "Other et al. 2021"),
        ("bp", "BP", "mnist", "mlp-1x16-tanh", 66.6, "test", "other dataset", "Other et al. 2022")])
    result = build_report([dirs["main"]], tmp_path / "out", published=csv)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "88.80 (Someone et al. 2020)" in text and "77.7" not in text and "66.6" not in text
    summary_rows = [line for line in text.splitlines() if line.startswith("| bp | 3/3 |") or line.startswith("| fa | 3/3 |")]
    assert "| — |" in summary_rows[0] and "88.80 (Someone et al. 2020)" in summary_rows[1]
    tex = (tmp_path / "out" / "tables" / "summary_digits_mlp-1x16-tanh.tex").read_text()
    assert "published" in tex and "88.80 (Someone et al. 2020)" in tex
    assert any(p.name.startswith("final_acc") for p in result["figures"])
    bad = published_csv(tmp_path / "bad.csv", [("fa", "FA", "digits", "mlp-1x16-tanh", 188.0, "test", "", "x")])
    with pytest.raises(ResultsError) as exc:
        build_report([dirs["main"]], tmp_path / "bad", published=bad, figures=False)
    assert "not a percentage" in one_line_error(exc)


def test_shipped_published_table_is_valid_and_cited():
    from harness.report_published import load_published

    table = load_published()
    assert len(table) >= 30 and table["source"].str.len().gt(10).all()
    assert table["accuracy"].between(0, 100).all()
    assert {"Bartunov et al. 2018", "Kao & Hariharan 2024", "BioTorch benchmarks"} <= {
        s.split(" (")[0] for s in table["source"]}
    # Bartunov et al. 2018 Table 1 gives bp's MNIST test error as 1.48%
    row = table[(table["algo"] == "bp") & (table["dataset"] == "mnist") & (table["network"] == "mlp-5x256-tanh")]
    assert row["accuracy"].tolist() == [pytest.approx(98.52)]


def test_html_report_is_self_contained_and_complete(main_report):
    import base64
    import re

    result, out = main_report
    page = result["html"].read_text()
    for section in SECTIONS:
        assert f'<h2 id="{section.lower()}">{section}</h2>' in page
    key = "digits_mlp-1x16-tanh"
    figures = dict(re.findall(r'data-figure="([a-z_]+)"><figcaption>.*?</figcaption><img alt="[^"]*" '
                              r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page))
    assert set(figures) == set(FIGURES + APPENDIX_FIGURES)
    for name, data in figures.items():
        assert base64.b64decode(data) == (out / "figures" / f"{name}_{key}.svg").read_bytes()
    tables = re.findall(r'<table[^>]*class="sortable" data-table="([^"]+)"', page)
    for name in ("summary", "plausibility", "hyperparameters", "protocol"):
        assert any(t.startswith(name) for t in tables), (name, tables)
    assert page.count("<script>") == 1 and "sortable" in page.split("<script>")[1]
    assert not re.search(r"(https?:)?//[a-z]", page.replace("<!DOCTYPE html>", ""))  # nothing fetched
    assert "<link" not in page and " src=\"http" not in page
    # the same content as report.md: every markdown table row's first cell appears in the page
    md = (out / "report.md").read_text()
    assert md.count("\n|---") == len(tables)
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            first = line.split(" | ")[0][2:].strip(" |").replace("\\|", "|")
            assert f">{first}<" in page or first.startswith("`"), first


def test_html_escapes_every_string_from_the_results(dirs, tmp_path):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    copy = copy_dir(dirs["main"], tmp_path / "evil", edit_env=lambda env: {**env, "device": evil})
    t = pd.read_csv(copy / "trials.csv")
    t["plausibility.notes"] = t["plausibility.notes"] + " [x](javascript:alert(3)) **" + evil + "**"
    t.to_csv(copy / "trials.csv", index=False)
    result = build_report([copy], tmp_path / "out", figures=False)
    page = result["html"].read_text()
    assert "<script>alert" not in page and "<img src=x" not in page and 'href="javascript' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1


def test_cli_refuses_a_missing_published_table(dirs, tmp_path, capsys):
    assert main(["report", str(dirs["only_bp"]), "--out", str(tmp_path / "o"), "--no-figures",
                 "--published", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv: no such file" in err[0] and "'none'" in err[0]
    assert main(["report", str(dirs["only_bp"]), "--out", str(tmp_path / "o"), "--no-figures",
                 "--published", "none"]) == 0
    assert (tmp_path / "o" / "report.html").is_file()


def test_alignment_leaves_out_the_output_layer(dirs, tmp_path):
    from harness.report_figures import alignment, palette

    e = load_results([dirs["main"]]).epochs
    only_output = e.drop(columns=[c for c in e.columns if c.startswith("angle_l") and c != "angle_l2"])
    path, why = alignment(only_output, palette(e["algo"]), "bp", "digits", "mlp-1x16-tanh", tmp_path / "a.png")
    assert path is None and why == "no hidden-layer alignment angles recorded"
    path, _ = alignment(e, palette(e["algo"]), "bp", "digits", "mlp-1x16-tanh", tmp_path / "b.png")
    svg = (tmp_path / "b.svg").read_text()
    assert "hidden layer 1" in svg and "hidden layer 2" not in svg
    deeper = e.assign(angle_l3=e["angle_l2"])  # two hidden layers: one panel each, titled by its layer
    alignment(deeper, palette(e["algo"]), "bp", "digits", "mlp-2x16-tanh", tmp_path / "c.png")
    svg = (tmp_path / "c.svg").read_text()
    assert svg.count("hidden layer 1") == 1 and svg.count("hidden layer 2") == 1 and "hidden layer 3" not in svg


def test_published_rows_name_registered_algorithms():
    """A published row's ``algo`` is an algorithm id the harness knows (or empty), else it never matches a run."""
    from harness.registry import algorithm_names
    from harness.report_published import load_published

    algos = set(load_published()["algo"].fillna("")) - {""}
    assert algos <= set(algorithm_names()), algos - set(algorithm_names())


def test_provenance_states_the_concurrency_wall_times_were_measured_under():
    from types import SimpleNamespace

    from harness.report import concurrency_line

    src = lambda res, cpus: SimpleNamespace(spec={"resources": res}, env={"ray": {"cluster_resources": {"CPU": cpus}}})
    assert concurrency_line(src({"cpus_per_trial": 1.0, "max_concurrent": None}, 2.0)) == (
        "Concurrency: up to 2 trial(s) at once on 2 CPU(s), 1 CPU and 1 thread(s) per trial; wall times per "
        "update were measured under that load.")
    assert concurrency_line(src({"cpus_per_trial": 2.0, "max_concurrent": None}, 8.0)).startswith(
        "Concurrency: up to 4 trial(s) at once on 8 CPU(s), 2 CPU and 2 thread(s)")
    assert "up to 1 trial(s)" in concurrency_line(src({"cpus_per_trial": 1.0, "max_concurrent": 1}, 16.0))
    assert concurrency_line(SimpleNamespace(spec=None, env=None)) is None

"""The report's statistics and table rules, each pinned against an independent computation."""

from __future__ import annotations

import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_report import holm_by_loop, welch_by_hand  # noqa: E402

from harness.report_stats import decimals_for, holm, mean_std_ci, welch  # noqa: E402


def test_holm_equals_the_explicit_loop():
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 11):
        p = list(rng.uniform(0, 0.2, m))
        assert list(holm(p)) == pytest.approx(holm_by_loop(p), rel=1e-12)
    # the example: p = 0.049 among 11 comparisons is not significant after Holm
    p = [0.049, 0.83, 0.57, 0.88, 0.2, 0.82, 0.38, 1.0, 0.47, 0.42, 0.45]
    assert holm(p)[0] == pytest.approx(min(1.0, 11 * 0.049)) and holm(p)[0] > 0.05
    # NaN (no test possible) is neither adjusted nor counted
    out = holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1]) and list(out[[0, 2]]) == pytest.approx(holm_by_loop([0.01, 0.04]))


def test_welch_interval_equals_the_hand_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.95, 0.01, 5), rng.normal(0.94, 0.03, 4)
    lo, hi, p = welch_by_hand(a, b)
    w = welch(a, b)
    assert w["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)
    assert w["p"] == pytest.approx(p, rel=1e-9)
    assert math.isnan(welch(a[:1], b)["p"]) and math.isnan(welch([0.5, 0.5], [0.5, 0.5])["ci_low"])


def test_mean_std_ci_equals_the_t_interval():
    from scipy import stats

    x = [0.91, 0.93, 0.90, 0.95]
    r = mean_std_ci(x + [math.nan])
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2
    assert r["n"] == 4 and r["mean"] == pytest.approx(np.mean(x)) and r["std"] == pytest.approx(np.std(x, ddof=1))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((np.mean(x) - half, np.mean(x) + half), rel=1e-12)
    assert math.isnan(mean_std_ci([0.9])["ci_low"])


@pytest.mark.parametrize("n_test,digits", [(360, 1), (1000, 1), (10000, 2), (60000, 3), (50, 0), (None, 2)])
def test_decimals_follow_the_test_set_resolution(n_test, digits):
    assert decimals_for(n_test) == digits
    if n_test:  # the last printed digit is no coarser than one example, and the next one finer
        assert 10 ** -digits <= 100 / n_test < 10 ** -(digits - 1)


def _summary(sig_best: bool) -> pd.DataFrame:
    base = {"dataset": "d", "network": "n", "reference": "base", "trials": 3, "n": 3, "diverged": 0, "failed": 0,
            "n_test": 360.0, "test_acc_std": 0.01, "test_acc_ci_low": 0.9, "test_acc_ci_high": 0.99,
            "best_val_acc_mean": 0.95, "best_val_acc_std": 0.01, "best_epoch_mean": 3.0, "target_acc": 0.9,
            "target_metric": "val_acc", "reached_target": 3, "updates_to_target_mean": 100.0,
            "flops_to_target_mean": 1e6, "flops_per_update": 1e4, "flops_ratio": 1.0, "time_ratio": 1.0,
            "search_configs": 3, "within_1pp": 1 / 3, "within_5pp": 1.0}
    rows = [{**base, "algo": "base", "test_acc_mean": 0.94, "diff_test_acc": math.nan, "diff_ci_low": math.nan,
             "diff_ci_high": math.nan, "diff_p_value": math.nan, "diff_p_holm": math.nan, "diff_significant": None},
            {**base, "algo": "new", "test_acc_mean": 0.96, "diff_test_acc": 0.02, "diff_ci_low": 0.01,
             "diff_ci_high": 0.03, "diff_p_value": 0.01, "diff_p_holm": 0.01 if sig_best else 0.2,
             "diff_significant": sig_best}]
    return pd.DataFrame(rows)


def test_latex_bolds_the_best_only_when_significantly_better():
    from harness.report_tables import summary_latex

    assert "\\textbf" not in summary_latex(_summary(False), "d", "n")
    tex = summary_latex(_summary(True), "d", "n")
    assert tex.count("\\textbf{") == 1 and "\\textbf{96.0 $\\pm$ 1.0}" in tex
    assert "\\toprule" in tex and "p (Holm)" in tex and "[90.0, 99.0]" in tex


def test_markdown_is_written_by_the_styler_and_escapes_pipes():
    from harness.report_tables import markdown_table

    text = markdown_table(pd.DataFrame({"a|b": ["x|y", "z"], "c": [1.5, 2.0]}))
    assert text.splitlines() == ["| a\\|b | c |", "|---|---|", "| x\\|y | 1.5 |", "| z | 2 |"]


def test_colours_follow_the_name_not_the_company():
    from harness.report_figures import COLOURS, colour_slot, palette

    assert colour_slot("bp") == zlib.crc32(b"bp") % len(COLOURS)
    alone = palette(["bp"])["bp"]
    assert palette(["bp", "fa", "rfl"])["bp"] == alone == COLOURS[colour_slot("bp")]
    # two names on one slot: the later name (sorted) takes the next free slot, the other keeps its own
    a, b = "a", next(n for n in (f"x{i}" for i in range(1000)) if colour_slot(n) == colour_slot("a"))
    both = palette([b, a])
    assert both[a] == COLOURS[colour_slot(a)] and both[b] == COLOURS[(colour_slot(a) + 1) % len(COLOURS)]
    # more names than colours: every colour once with solid lines, then again dashed, so no two curves look alike
    names = [f"algo{i}" for i in range(len(COLOURS) + 6)]
    many = palette(names)
    styles = {(many[n], many.ls[n]) for n in names}
    assert len(styles) == len(names)
    assert sorted(many.ls.values()).count("-") == len(COLOURS) and set(many.ls.values()) == {"-", "--"}
    from harness.report_figures import point_marker

    assert {(many[n], point_marker(many, n)) for n in names} == {(many[n], "o" if many.ls[n] == "-" else "s")
                                                                 for n in names} and len(styles) == len(names)


def test_curves_carry_a_stopped_seed_forward():
    from harness.report_figures import mean_band

    e = pd.DataFrame({"source": "s", "trial_id": ["a"] * 3 + ["b"] * 2, "epoch": [1, 2, 3, 1, 2],
                      "val_acc": [0.5, 0.7, 0.9, 0.5, 0.6]})
    b = mean_band(e, "epoch", "val_acc").set_index("epoch")
    assert list(b["count"]) == [2, 2, 2]  # b stopped after epoch 2 and still counts at epoch 3
    assert b.loc[3, "mean"] == pytest.approx((0.9 + 0.6) / 2)  # not 0.9: no survivorship jump


def test_diagnostic_panels_leave_out_constant_series_and_group_layers():
    from harness.report_figures import diagnostic_panels

    e = pd.DataFrame({"algo": ["x"] * 3 + ["y"] * 3, "epoch": [1, 2, 3] * 2,
                      "res_l2": [1.0, 0.5, 0.2, np.nan, np.nan, np.nan], "res_l3": [2.0, 1.0, 0.5] + [np.nan] * 3,
                      "flat": [3.0, 3.0, 3.0, 1.0, 2.0, 3.0]})
    assert diagnostic_panels(e, ["res_l2", "res_l3", "flat"], "x") == [("x", "res", ["res_l2", "res_l3"]),
                                                                     ("y", "flat", ["flat"])]

"""The report's tables: summary, difference to the baseline, hyperparameters, protocol, failures.

* The summary uses final-phase trials only. Accuracy statistics (:mod:`harness.report_stats`) are over
  every final-phase trial with a finite test accuracy at its best-validation epoch (``ok``, ``stopped``
  and ``diverged`` trials that had a best epoch before diverging: what early stopping would have kept);
  trials without one (failed, or diverged before any finite validation) are counted, never averaged.
* Difference to the baseline algorithm (``--baseline``, default :data:`harness.schema.DEFAULT_BASELINE`):
  Welch's test, p-values Holm-adjusted across the table; significant when the adjusted p < 0.05.
* Updates / FLOPs to target: per trial, the first epoch whose accuracy (validation by default)
  reaches the target, from ``epochs.csv``; averaged over the trials that reach it. Undefined (not
  "not reached") when the target is relative and the baseline is absent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.errors import ConfigError
from harness.report_data import GROUP, Results, search_space
from harness.report_stats import ALPHA, CONFIDENCE, decimals_for, holm, mean_std_ci, welch  # noqa: F401
from harness.schema import COST_PHASES, DEFAULT_BASELINE, FAILED_STATUSES, SWEEP_STAGES, TRIAL_STATUSES


# ---------------------------------------------------------------------------- target
def parse_target(text: str) -> tuple[str, float]:
    """``95%`` → ("relative", 0.95) of the baseline's mean test accuracy; ``0.9`` → ("absolute", 0.9)."""
    text = str(text).strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100
            if not 0 < value <= 1:  # more than the baseline's mean accuracy is not a target it reaches
                raise ValueError
            return "relative", value
        value = float(text)
        if not 0 < value <= 1:
            raise ValueError
        return "absolute", value
    except ValueError:
        raise ConfigError(f"--target '{text}' is not valid; use a percentage in (0, 100]% of the reference's mean "
                          "test accuracy (e.g. 95%) or an absolute accuracy in (0, 1] (e.g. 0.9)") from None


def first_reaching(epochs: pd.DataFrame, metric: str, target: float) -> pd.DataFrame:
    """Per trial: updates and FLOPs at the first epoch whose ``metric`` ≥ target (trials that reach it)."""
    if epochs.empty or not math.isfinite(target):
        return pd.DataFrame(columns=["source", "trial_id", "epoch", "updates", "flops"])
    e = epochs.copy()
    if "flops_total" not in e.columns:
        e["flops_total"] = sum(e.get(f"flops_{p}", 0) for p in COST_PHASES)
    hit = e[e[metric] >= target].sort_values("epoch").groupby(["source", "trial_id"], as_index=False).first()
    return hit[["source", "trial_id", "epoch", "updates", "flops_total"]].rename(columns={"flops_total": "flops"})


def _num(frame: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(frame[col], errors="coerce") if col in frame.columns else pd.Series(np.nan, index=frame.index)


def algo_order(algos, baseline: str) -> list[str]:
    """The baseline first, then the others in alphabetical order."""
    algos = sorted(set(algos))
    return ([baseline] if baseline in algos else []) + [a for a in algos if a != baseline]


# ---------------------------------------------------------------------------- summary
def _seconds(frame: pd.DataFrame) -> pd.Series:
    """Wall time per update: the amortised mean (rare work such as sleep phases included)."""
    return _num(frame, "seconds_per_update")


def summary_table(results: Results, *, baseline: str = DEFAULT_BASELINE, target: str = "95%",
                  target_metric: str = "val_acc") -> pd.DataFrame:
    """One row per dataset × network × algorithm (final phase)."""
    if target_metric not in ("val_acc", "test_acc"):
        raise ConfigError(f"--target-metric '{target_metric}' is not valid; valid: val_acc, test_acc")
    mode, value = parse_target(target)
    rows = []
    trials, epochs = results.trials, results.epochs
    for (dataset, network), group in trials.groupby(GROUP):
        final = group[group["phase"] == "final"]
        if final.empty:
            continue
        ref = final[final["algo"] == baseline]
        ref_acc = _num(ref, "test_acc")
        ref_mean = ref_acc.mean() if ref_acc.notna().any() else math.nan
        target_acc = value * ref_mean if mode == "relative" else value
        ref_flops = _num(ref, "flops_per_update").mean()
        ref_time = _seconds(ref).mean()
        group_epochs = epochs[(epochs["dataset"] == dataset) & (epochs["network"] == network)] if not epochs.empty else epochs
        hits = first_reaching(group_epochs[group_epochs["phase"] == "final"] if not group_epochs.empty else group_epochs,
                              target_metric, target_acc)
        n_test = _num(group, "n_test").dropna()
        start = len(rows)
        for algo in algo_order(final["algo"], baseline):
            sub = final[final["algo"] == algo]
            acc = _num(sub, "test_acc")
            used = sub[acc.notna() & np.isfinite(acc)]
            t = mean_std_ci(_num(used, "test_acc"))
            v = mean_std_ci(_num(used, "best_val_acc"))
            be = mean_std_ci(_num(used, "best_epoch"))
            status = sub["status"].value_counts()
            h = hits.merge(sub[["source", "trial_id"]], on=["source", "trial_id"], how="inner")
            defined = math.isfinite(target_acc)  # a relative target without the baseline is undefined
            flops = _num(sub, "flops_per_update").mean()
            secs = _seconds(sub).mean()
            d = welch(_num(used, "test_acc"), ref_acc) if algo != baseline else {
                "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
            row = {
                "dataset": dataset, "network": network, "algo": algo,
                "algo_version": sub["algo_version"].iloc[0] if "algo_version" in sub else None,
                "config_id": sub["config_id"].iloc[0] if "config_id" in sub else None,
                "trials": len(sub), "n": t["n"],
                **{s: int(status.get(s, 0)) for s in TRIAL_STATUSES},
                "n_test": float(n_test.iloc[0]) if len(n_test) else math.nan,
                "test_acc_mean": t["mean"], "test_acc_std": t["std"],
                "test_acc_ci_low": t["ci_low"], "test_acc_ci_high": t["ci_high"],
                "best_val_acc_mean": v["mean"], "best_val_acc_std": v["std"],
                "best_epoch_mean": be["mean"], "best_epoch_std": be["std"],
                "epochs_mean": _num(sub, "epochs").mean(),
                "target_acc": target_acc, "target_metric": target_metric,
                "reached_target": len(h) if defined else math.nan,
                "updates_to_target_mean": h["updates"].mean() if len(h) else math.nan,
                "flops_to_target_mean": h["flops"].mean() if len(h) else math.nan,
                "flops_per_update": flops,
                **{f"flops_per_update_{p}": _num(sub, f"flops_per_update_{p}").mean() for p in COST_PHASES},
                "seconds_per_update": secs,
                "reference": baseline,  # the column keeps its name (summary.csv)
                "flops_ratio": flops / ref_flops if ref_flops and math.isfinite(ref_flops) else math.nan,
                "time_ratio": secs / ref_time if ref_time and math.isfinite(ref_time) else math.nan,
                "diff_test_acc": d["diff"], "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"],
                "diff_p_value": d["p"],
            }
            rows.append(row)
        # one family of comparisons per table: Holm across this dataset × network's algorithms
        adjusted = holm([r["diff_p_value"] for r in rows[start:]])
        for r, p in zip(rows[start:], adjusted):
            r["diff_p_holm"] = p
            r["diff_significant"] = bool(p < ALPHA) if math.isfinite(p) else None
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.merge(robustness_shares(trials), on=[*GROUP, "algo"], how="left")


# ---------------------------------------------------------------------------- robustness
def robustness_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Search phase, one row per configuration: its best validation accuracy in pp below the best
    configuration of the same algorithm (−inf when it diverged or failed without a valid epoch)."""
    search = trials[trials["phase"] == "search"]
    if search.empty:
        return pd.DataFrame(columns=["dataset", "network", "algo", "config_id", "gap"])
    key = "config_id" if "config_id" in search else "trial_id"
    per = search.assign(v=_num(search, "best_val_acc")).groupby([*GROUP, "algo", key], as_index=False)["v"].mean()
    best = per.groupby([*GROUP, "algo"])["v"].transform("max")
    per["gap"] = (100 * (per["v"] - best)).fillna(-np.inf)
    return per.rename(columns={key: "config_id"})[["dataset", "network", "algo", "config_id", "gap"]]


def robustness_shares(trials: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × network × algorithm: search configurations and the share within 1 and 5 pp of the best."""
    r = robustness_frame(trials)
    if r.empty:
        return pd.DataFrame(columns=[*GROUP, "algo", "search_configs", "within_1pp", "within_5pp"])
    return r.groupby([*GROUP, "algo"]).agg(
        search_configs=("gap", "size"), within_1pp=("gap", lambda g: float((g >= -1).mean())),
        within_5pp=("gap", lambda g: float((g >= -5).mean()))).reset_index()


# ---------------------------------------------------------------------------- hyperparameters
def fmt_value(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


def fmt_space(space: dict | None) -> str:
    if not space:
        return "fixed"
    if "values" in space and space["kind"] == "choice":
        return "choice{" + ", ".join(fmt_value(v) for v in space["values"]) + "}"
    if "low" in space:
        return f"{space['kind']}[{fmt_value(space['low'])}, {fmt_value(space['high'])}]"
    return space["kind"]


def hyperparameter_table(results: Results, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """Per dataset × network × algorithm × searched hyperparameter: selected value, search space, source.

    The selected value is the final-phase configuration; an algorithm without a final phase shows
    its best search trial (by validation accuracy), marked as such.
    """
    rows = []
    trials = results.trials
    for (dataset, network), group in trials.groupby(GROUP):
        for algo in algo_order(group["algo"], baseline):
            sub = group[group["algo"] == algo]
            space, origin = search_space(results, algo, sorted(sub["source"].unique()))
            final = sub[sub["phase"] == "final"]
            search = sub[sub["phase"] == "search"]
            if not final.empty:
                chosen, how = final.iloc[0], "final phase"
            else:
                ranked = search.assign(_v=_num(search, "best_val_acc")).sort_values("_v", ascending=False)
                chosen, how = ranked.iloc[0], "best search trial (no final phase)"
            varied = {c[3:] for c in search.columns if c.startswith("hp.")
                      and search[c].dropna().astype(str).nunique() > 1}
            names = [n for n in space] + sorted(varied - set(space))
            for name in names:
                col = f"hp.{name}"
                rows.append({
                    "dataset": dataset, "network": network, "algo": algo, "hyperparameter": name,
                    "selected": fmt_value(chosen[col]) if col in chosen.index else "—",
                    "search_space": fmt_space(space.get(name)) if name in space else "varied (space not recorded)",
                    "search_trials": int(search[col].notna().sum()) if col in search.columns else 0,
                    "distinct_values_tried": int(search[col].dropna().astype(str).nunique()) if col in search.columns else 0,
                    "selected_from": how, "space_from": origin,
                })
    return pd.DataFrame(rows)


def protocol_table(results: Results, searched: dict, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """The shared (not searched) training settings per dataset × network × phase."""
    from harness.hparams import TrainConfig

    rows = []
    for (dataset, network), group in results.trials.groupby(GROUP):
        for stage in SWEEP_STAGES:
            sub = group[group["phase"] == stage]
            if sub.empty:
                continue
            row = {"dataset": dataset, "network": network, "phase": stage, "trials": len(sub),
                   "algorithms": ", ".join(algo_order(sub["algo"], baseline)),
                   "seeds": ", ".join(str(s) for s in sorted(sub["seed"].unique()))}
            for name in TrainConfig.model_fields:
                col = f"hp.{name}"
                if name in searched.get((dataset, network), set()) or col not in sub.columns:
                    continue
                values = sub[col].dropna().astype(str).unique()
                row[name] = values[0] if len(values) == 1 else "/".join(sorted(values))
            rows.append(row)
    return pd.DataFrame(rows)


def plausibility_table(results: Results, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """One row per dataset × network × algorithm configuration that was run, from each trial's recorded
    plausibility (``plausibility.*`` columns); configurations that record the same are merged."""
    from harness.schema import PLAUSIBILITY_PREFIX

    t = results.trials
    cols = [c for c in t.columns if c.startswith(PLAUSIBILITY_PREFIX)]
    if not cols:
        return pd.DataFrame()
    rows = []
    key = "config_id" if "config_id" in t else "trial_id"
    for (dataset, network), group in t.groupby(GROUP):
        for algo in algo_order(group["algo"], baseline):
            sub = group[group["algo"] == algo]
            record = sub[cols].astype(str).replace({"nan": "not recorded"})
            for values, same in sub.groupby([record[c] for c in cols], sort=False):
                final = same.loc[same["phase"] == "final", key].astype(str).unique()
                rows.append({"dataset": dataset, "network": network, "algo": algo,
                             "configurations": f"{same[key].nunique()}" + (f" (final: {', '.join(final)})"
                                                                           if len(final) else ""),
                             **{c[len(PLAUSIBILITY_PREFIX):]: v for c, v in zip(cols, values)}})
    frame = pd.DataFrame(rows)
    order = ["dataset", "network", "algo", "configurations", "weight_transport", "transport", "local", "phases",
             "feedback_learning", "notes"]
    return frame[[c for c in order if c in frame] + [c for c in frame if c not in order]]


def constant_columns(frame: pd.DataFrame, keep=()) -> dict:
    """Columns (other than ``keep``) with one value in every row: name → that value (as text)."""
    if len(frame) < 2:
        return {}
    out = {}
    for c in frame.columns:
        values = frame[c].map(lambda v: fmt_value(v) if not isinstance(v, str) else v).unique()
        if c not in keep and len(values) == 1:
            out[c] = values[0]
    return out


def protocol_display(protocol: pd.DataFrame) -> pd.DataFrame:
    """One dataset × network's protocol as setting → value, phases told apart only where they differ."""
    if protocol.empty:
        return pd.DataFrame(columns=["setting", "value"])
    rows = []
    for col in [c for c in protocol.columns if c not in ("dataset", "network", "phase")]:
        values = {ph: (v if isinstance(v, str) else fmt_value(v)) for ph, v in zip(protocol["phase"], protocol[col])}
        if len(set(values.values())) == 1:
            rows.append({"setting": col, "value": next(iter(values.values()))})
        else:
            rows.append({"setting": col, "value": "; ".join(f"{ph}: {v}" for ph, v in values.items())})
    return pd.DataFrame(rows)


def failure_table(results: Results, searched: dict) -> pd.DataFrame:
    """Every trial that diverged or failed (both phases), with its configuration."""
    t = results.trials
    bad = t[t["status"].isin(FAILED_STATUSES)]
    rows = []
    for _, r in bad.sort_values(["dataset", "network", "phase", "algo", "seed"]).iterrows():
        names = sorted(searched.get((r["dataset"], r["network"]), set()))
        config = ", ".join(f"{n}={fmt_value(r[f'hp.{n}'])}" for n in names
                           if f"hp.{n}" in r.index and not pd.isna(r[f"hp.{n}"]))
        rows.append({"dataset": r["dataset"], "network": r["network"], "source": r["source"], "phase": r["phase"],
                     "algo": r["algo"], "config_id": r.get("config_id"), "seed": r["seed"], "status": r["status"],
                     "stop_reason": r.get("stop_reason"), "epochs": r.get("epochs"),
                     "best_val_acc": r.get("best_val_acc"), "config": config})
    return pd.DataFrame(rows, columns=["dataset", "network", "source", "phase", "algo", "config_id", "seed", "status",
                                       "stop_reason", "epochs", "best_val_acc", "config"])


# ---------------------------------------------------------------------------- formatting
def pct(x, digits: int = 2) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def eng(x) -> str:
    """1.23e+06 → 1.23M (FLOPs, updates)."""
    if x is None or not np.isfinite(x):
        return "—"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def ratio(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.2f}×"


def _acc(mean, std, d: int) -> str:
    return pct(mean, d) + (f" ± {pct(std, d)}" if np.isfinite(std) else "")


def _p(p) -> str:
    return "—" if p is None or not np.isfinite(p) else (f"{p:.2g}" if p >= 0.001 else "<0.001")


def _diff(r, d: int) -> str:
    """Δ with its CI in percentage points, at the test set's resolution."""
    if r.algo == r.reference:
        return "(reference)"
    if not np.isfinite(r.diff_test_acc):
        return "n/a (no reference)"
    text = f"{100 * r.diff_test_acc:+.{d}f}"
    return text + (f" [{100 * r.diff_ci_low:+.{d}f}, {100 * r.diff_ci_high:+.{d}f}]" if np.isfinite(r.diff_ci_low)
                   else " (no CI: n<2 or no variance)")


def _to_target(r) -> str:
    if not np.isfinite(r.reached_target):
        return "undefined (no reference)"
    return f"{eng(r.updates_to_target_mean)} ({int(r.reached_target)}/{int(r.trials)})"


def _robust(r) -> str:
    n = r.get("search_configs")
    if n is None or not np.isfinite(n):
        return "— (no search phase)"
    return f"{pct(r.within_1pp, 0)}% / {pct(r.within_5pp, 0)}% of {int(n)}"


def resolution_text(summary: pd.DataFrame) -> str:
    """'360 test images: 1 image = 0.28 pp' for one table (or that the size is not recorded)."""
    n = summary["n_test"].dropna() if "n_test" in summary else pd.Series(dtype=float)
    if n.empty:
        return "test-set size not recorded: accuracies shown to 2 decimals"
    return f"{int(n.iloc[0])} test examples: 1 example = {100 / n.iloc[0]:.2g} pp"


def summary_display(summary: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """The summary as strings for one dataset × network (markdown/HTML), at the test set's resolution;
    ``published``: matching published results (:mod:`harness.report_published`), shown beside."""
    rows = []
    for _, r in summary.iterrows():
        d = decimals_for(r.get("n_test"))
        # accuracies live in [0, 1]: the displayed interval is clipped there (the CSV keeps the raw bounds)
        ci = (f"[{pct(max(r.test_acc_ci_low, 0.0), d)}, {pct(min(r.test_acc_ci_high, 1.0), d)}]"
              if np.isfinite(r.test_acc_ci_low) else "n/a (n<2)")
        ep = "—" if not np.isfinite(r.best_epoch_mean) else f"{r.best_epoch_mean:.1f}"
        row = {"algorithm": r.algo, "n": f"{int(r.n)}/{int(r.trials)}", "test acc. % (mean ± std)":
               _acc(r.test_acc_mean, r.test_acc_std, d), "95% CI": ci}
        if published is not None and not published.empty:
            from harness.report_published import published_cell

            row["published %"] = published_cell(published, r.algo)
        sig = r.diff_significant
        row.update({
            "best val. %": _acc(r.best_val_acc_mean, r.best_val_acc_std, d), "epochs to best val.": ep,
            "updates to target": _to_target(r), "FLOPs to target": eng(r.flops_to_target_mean),
            "FLOPs/update": eng(r.flops_per_update), f"FLOPs/update ×{r.reference}": ratio(r.flops_ratio),
            f"time/update ×{r.reference}": ratio(r.time_ratio),
            "diverged / failed": f"{int(r.diverged)} / {int(r.failed)}",
            "search configs within 1 / 5 pp of best": _robust(r),
            f"Δ vs {r.reference} (pp) [95% CI]": _diff(r, d),
            "p (Welch)": _p(r.diff_p_value), "p (Holm)": _p(r.diff_p_holm),
            "significant": "—" if sig is None or (isinstance(sig, float) and not np.isfinite(sig))
            else ("yes" if sig else "no"),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def _cell_text(v) -> str:
    return (fmt_value(v) if not isinstance(v, str) else v).replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table, written by pandas' Styler (``to_string`` with a pipe delimiter)."""
    if frame.empty:
        return "_(none)_\n"

    def md(v) -> str:
        return _cell_text(v).replace("|", "\\|")

    styler = frame.style.hide(axis="index").format(md).format_index(md, axis=1)
    lines = ["| " + line + " |" for line in styler.to_string(delimiter=" | ").rstrip("\n").split("\n")]
    return "\n".join([lines[0], "|" + "|".join("---" for _ in frame.columns) + "|", *lines[1:]]) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_SYMBOLS = {"±": r"$\pm$", "×": r"$\times$", "—": "--", "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$",
                "≥": r"$\geq$", "≤": r"$\leq$", "∠": r"$\angle$"}


def tex_escape(s) -> str:
    return "".join(_TEX_ESCAPE.get(ch) or _TEX_SYMBOLS.get(ch, ch) for ch in str(s))


def latex_table(frame: pd.DataFrame, caption: str = "", label: str = "", bold: pd.DataFrame | None = None) -> str:
    """A booktabs table written by pandas' Styler (``to_latex``); cells escaped, ``bold`` cells in \\textbf."""
    if frame.empty:
        columns = list(frame.columns) or ["(none)"]
        frame = pd.DataFrame({c: ["(none)" if i == 0 else ""] for i, c in enumerate(columns)})
    styler = frame.style.hide(axis="index").format(lambda v: tex_escape(_cell_text(v)))
    styler = styler.format_index(lambda v: tex_escape(v), axis=1)
    if bold is not None:
        styler = styler.apply(lambda _: bold.map(lambda b: "textbf:--rwrap;" if b else ""), axis=None)
    tex = styler.to_latex(hrules=True, caption=tex_escape(caption) if caption else None, label=label or None,
                          column_format="l" * len(frame.columns), position="t", position_float="centering")
    return "% requires \\usepackage{booktabs}\n" + tex


def _significantly_best(summary: pd.DataFrame) -> list[bool]:
    """The row with the best mean test accuracy, when it is significantly better (Holm-adjusted Welch)
    than the baseline, or is the baseline and every other row is significantly worse; else nothing."""
    acc = pd.to_numeric(summary["test_acc_mean"], errors="coerce")
    mask = [False] * len(summary)
    if not acc.notna().any():
        return mask
    i = int(np.nanargmax(acc.to_numpy()))
    best = summary.iloc[i]
    others = summary.drop(summary.index[i])
    if best.algo != best.reference:
        ok = bool(best.diff_significant) and best.diff_test_acc > 0
    else:
        ok = len(others) > 0 and all(bool(o.diff_significant) and o.diff_test_acc < 0 for o in others.itertuples())
    mask[i] = ok
    return mask


def summary_latex(summary: pd.DataFrame, dataset: str, network: str, published: pd.DataFrame | None = None) -> str:
    """Paper-ready summary for one dataset × network: CIs, Holm-adjusted p, the best accuracy in bold
    only when it is significantly better."""
    disp = summary_display(summary, published)
    ref = summary["reference"].iloc[0]
    keep = ["algorithm", "n", "test acc. % (mean ± std)", "95% CI"] + (["published %"] if "published %" in disp else [])
    keep += ["updates to target", f"FLOPs/update ×{ref}", f"time/update ×{ref}", f"Δ vs {ref} (pp) [95% CI]",
             "p (Holm)", "diverged / failed"]
    frame = disp[keep]
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    bold["test acc. % (mean ± std)"] = _significantly_best(summary)
    target = summary["target_acc"].iloc[0]
    caption = (f"{dataset}, {network}: test accuracy at the best-validation epoch, mean ± std and 95% CI over n seeds "
               f"(final phase; {resolution_text(summary)}). Updates to reach {pct(target)}% "
               f"{summary['target_metric'].iloc[0].replace('_acc', '')} accuracy. Δ vs {ref}: Welch 95% CI; "
               f"p Holm-adjusted over the table. Bold: best accuracy, only when significantly better "
               f"(adjusted p < {ALPHA:.2f}).")
    return latex_table(frame, caption=caption, label=f"tab:summary-{dataset}-{network}", bold=bold)


def stage_table_text(trials: pd.DataFrame) -> str:
    """The short table a finished sweep prints: per algorithm, mean ± std of test accuracy (at the best
    validation epoch) over the final stage's seeds (the search stage's trials without a final stage)."""
    if trials.empty:
        return ""
    stage = "final" if (trials["phase"] == "final").any() else "search"
    f = trials[trials["phase"] == stage]
    w = max(len("algorithm"), *(len(str(a)) for a in f["algo"]))  # the longest name sets the column
    lines = [f"\n{stage} phase: test accuracy at the best validation epoch",
             f"{'algorithm':<{w}} {'n':>3} {'ok':>3} {'test acc mean ± std':>22} {'epochs':>7}"]
    for algo, g in f.groupby("algo", sort=True):
        acc = pd.to_numeric(g["test_acc"], errors="coerce")
        std = acc.std(ddof=1) if acc.count() > 1 else float("nan")
        spread = f"{std:<7.4f}" if math.isfinite(std) else f"{'-':<7}"
        lines.append(f"{algo:<{w}} {len(g):>3} {(g['status'] == 'ok').sum():>3} {acc.mean():>12.4f} ± {spread} "
                     f"{pd.to_numeric(g['epochs']).mean():>7.1f}")
    return "\n".join(lines) + "\n"

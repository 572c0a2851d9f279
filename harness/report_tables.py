"""The report's tables: summary, difference to the baseline, hyperparameters, protocol, failures.

Statistics (stated in the report too):

* The summary uses final-phase trials only. Accuracy statistics are over every final-phase trial
  with a finite test accuracy at its best-validation epoch (``ok``, ``stopped`` and ``diverged``
  trials that had a best epoch before diverging: what early stopping would have kept); trials
  without one (failed, or diverged before any finite validation) are counted, never averaged.
* mean ± sample standard deviation (ddof = 1); 95% CI = mean ± t(0.975, n−1)·std/√n; n = 1 gives
  no std and no CI.
* Difference to the baseline algorithm (``--baseline``, default :data:`harness.schema.DEFAULT_BASELINE`): Welch's t-test and Welch–Satterthwaite 95% CI of
  (mean test accuracy − baseline mean); significant when p < 0.05.
* Updates / FLOPs to target: per trial, the first epoch whose accuracy (validation by default)
  reaches the target, from ``epochs.csv``; averaged over the trials that reach it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import ConfigError
from harness.report_data import GROUP, Results, search_space
from harness.schema import COST_PHASES, DEFAULT_BASELINE, FAILED_STATUSES, SWEEP_STAGES, TRIAL_STATUSES

CONFIDENCE = 0.95


# ---------------------------------------------------------------------------- statistics
def mean_std_ci(values) -> dict:
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan, "std": math.nan, "ci_low": math.nan,
           "ci_high": math.nan}
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
        out.update(std=std, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def welch(a, b) -> dict:
    """Difference of means a − b with Welch's 95% CI and two-sided p-value (NaN when n < 2 in either)."""
    a = np.asarray([v for v in a if np.isfinite(v)], dtype=float)
    b = np.asarray([v for v in b if np.isfinite(v)], dtype=float)
    out = {"diff": float(a.mean() - b.mean()) if a.size and b.size else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if a.size < 2 or b.size < 2:
        return out
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return out
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    out.update(ci_low=out["diff"] - half, ci_high=out["diff"] + half, p=p)
    return out


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
        for algo in algo_order(final["algo"], baseline):
            sub = final[final["algo"] == algo]
            acc = _num(sub, "test_acc")
            used = sub[acc.notna() & np.isfinite(acc)]
            t = mean_std_ci(_num(used, "test_acc"))
            v = mean_std_ci(_num(used, "best_val_acc"))
            be = mean_std_ci(_num(used, "best_epoch"))
            status = sub["status"].value_counts()
            h = hits.merge(sub[["source", "trial_id"]], on=["source", "trial_id"], how="inner")
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
                "test_acc_mean": t["mean"], "test_acc_std": t["std"],
                "test_acc_ci_low": t["ci_low"], "test_acc_ci_high": t["ci_high"],
                "best_val_acc_mean": v["mean"], "best_val_acc_std": v["std"],
                "best_epoch_mean": be["mean"], "best_epoch_std": be["std"],
                "epochs_mean": _num(sub, "epochs").mean(),
                "target_acc": target_acc, "target_metric": target_metric,
                "reached_target": len(h),
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
                "diff_significant": (bool(d["p"] < 1 - CONFIDENCE) if math.isfinite(d["p"]) else None),
            }
            rows.append(row)
    return pd.DataFrame(rows)


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


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings for one dataset × network (markdown/LaTeX)."""
    rows = []
    for _, r in summary.iterrows():
        # accuracies live in [0, 1]: the displayed interval is clipped there (the CSV keeps the raw bounds)
        ci = (f"[{pct(max(r.test_acc_ci_low, 0.0))}, {pct(min(r.test_acc_ci_high, 1.0))}]"
              if np.isfinite(r.test_acc_ci_low) else "n/a (n<2)")
        acc = pct(r.test_acc_mean) + (f" ± {pct(r.test_acc_std)}" if np.isfinite(r.test_acc_std) else "")
        val = pct(r.best_val_acc_mean) + (f" ± {pct(r.best_val_acc_std)}" if np.isfinite(r.best_val_acc_std) else "")
        ep = "—" if not np.isfinite(r.best_epoch_mean) else f"{r.best_epoch_mean:.1f}"
        if r.algo == r.reference:
            diff = "(reference)"
        elif not np.isfinite(r.diff_test_acc):
            diff = "n/a (no reference)"
        elif not np.isfinite(r.diff_ci_low):
            diff = f"{100 * r.diff_test_acc:+.2f} (no CI: n<2 or zero variance)"
        else:
            sig = "yes" if r.diff_significant else "no"
            diff = (f"{100 * r.diff_test_acc:+.2f} [{100 * r.diff_ci_low:+.2f}, {100 * r.diff_ci_high:+.2f}], "
                    f"p={r.diff_p_value:.3g}, significant: {sig}")
        reached = f"{int(r.reached_target)}/{int(r.trials)}"
        rows.append({
            "algorithm": r.algo, "n": f"{int(r.n)}/{int(r.trials)}", "test acc. % (mean ± std)": acc,
            "95% CI": ci, "best val. %": val, "epochs to best val.": ep,
            "updates to target": f"{eng(r.updates_to_target_mean)} ({reached})",
            "FLOPs to target": eng(r.flops_to_target_mean),
            "FLOPs/update": eng(r.flops_per_update), f"FLOPs/update ×{r.reference}": ratio(r.flops_ratio),
            f"time/update ×{r.reference}": ratio(r.time_ratio),
            "diverged / failed": f"{int(r.diverged)} / {int(r.failed)}",
            f"Δ test acc. vs {r.reference} (pp) [95% CI]": diff,
        })
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(none)_\n"
    cols = [str(c) for c in frame.columns]

    def cell(v):
        s = fmt_value(v) if not isinstance(v, str) else v
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


_TEX_SYMBOLS = {"±": r"$\pm$", "×": r"$\times$", "—": "--", "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$",
                "≥": r"$\geq$", "≤": r"$\leq$"}


def tex_escape(s) -> str:
    return "".join(_TEX_ESCAPE.get(ch) or _TEX_SYMBOLS.get(ch, ch) for ch in str(s))


def latex_table(header: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None,
                caption: str = "", label: str = "", align: str | None = None) -> str:
    """A booktabs table; cells are escaped, bold cells wrapped in \\textbf."""
    align = align or "l" + "r" * (len(header) - 1)
    out = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering"]
    if caption:
        out.append(r"\caption{" + tex_escape(caption) + "}")
    if label:
        out.append(r"\label{" + label + "}")
    out += [r"\begin{tabular}{" + align + "}", r"\toprule", " & ".join(tex_escape(h) for h in header) + r" \\",
            r"\midrule"]
    for i, row in enumerate(rows):
        cells = []
        for j, c in enumerate(row):
            text = tex_escape(c)
            cells.append(r"\textbf{" + text + "}" if bold and bold[i][j] else text)
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def _best_mask(values: pd.Series, higher: bool) -> list[bool]:
    v = pd.to_numeric(values, errors="coerce")
    if not v.notna().any():
        return [False] * len(v)
    best = v.max() if higher else v.min()
    if np.isclose(v.dropna(), best).all():
        return [False] * len(v)  # a tie across every row singles nothing out
    return [bool(np.isfinite(x) and np.isclose(x, best)) for x in v]


def summary_latex(summary: pd.DataFrame, dataset: str, network: str) -> str:
    """Paper-ready summary for one dataset × network: best per column in bold."""
    ref = summary["reference"].iloc[0]
    header = ["Algorithm", "n", "Test acc. (%)", "Best val. (%)", "Epochs", "Updates to target",
              f"FLOPs/update (×{ref})", f"Time/update (×{ref})", f"Δ vs {ref} (pp)", "Div./fail."]
    rows, masks = [], []
    cols = {
        2: _best_mask(summary["test_acc_mean"], True), 3: _best_mask(summary["best_val_acc_mean"], True),
        4: _best_mask(summary["best_epoch_mean"], False), 5: _best_mask(summary["updates_to_target_mean"], False),
        6: _best_mask(summary["flops_ratio"], False), 7: _best_mask(summary["time_ratio"], False),
    }
    for i, (_, r) in enumerate(summary.iterrows()):
        acc = pct(r.test_acc_mean) + (f" ± {pct(r.test_acc_std)}" if np.isfinite(r.test_acc_std) else "")
        val = pct(r.best_val_acc_mean) + (f" ± {pct(r.best_val_acc_std)}" if np.isfinite(r.best_val_acc_std) else "")
        ep = "—" if not np.isfinite(r.best_epoch_mean) else (
            f"{r.best_epoch_mean:.1f}" + (f" ± {r.best_epoch_std:.1f}" if np.isfinite(r.best_epoch_std) else ""))
        if r.algo == ref or not np.isfinite(r.diff_test_acc):
            diff = "—"
        else:
            diff = f"{100 * r.diff_test_acc:+.2f}" + ("*" if r.diff_significant else "")
        rows.append([r.algo, str(int(r.n)), acc, val, ep, eng(r.updates_to_target_mean), ratio(r.flops_ratio),
                     ratio(r.time_ratio), diff, f"{int(r.diverged)}/{int(r.failed)}"])
        masks.append([cols.get(j, [False] * len(summary))[i] for j in range(len(header))])
    target = summary["target_acc"].iloc[0]
    caption = (f"{dataset}, {network}: test accuracy at the best-validation epoch, mean ± std over n seeds "
               f"(final phase). Updates to reach {pct(target)}% {summary['target_metric'].iloc[0].replace('_acc', '')} "
               f"accuracy. * Welch p < 0.05 vs {ref}. Best per column in bold.")
    label = f"tab:summary-{dataset}-{network}"
    return latex_table(header, rows, masks, caption=caption, label=label)


def stage_table_text(trials: pd.DataFrame) -> str:
    """The short table a finished sweep prints: per algorithm, mean ± std of test accuracy (at the best
    validation epoch) over the final stage's seeds (the search stage's trials without a final stage)."""
    if trials.empty:
        return ""
    stage = "final" if (trials["phase"] == "final").any() else "search"
    f = trials[trials["phase"] == stage]
    lines = [f"\n{stage} phase: test accuracy at the best validation epoch",
             f"{'algorithm':<10} {'n':>3} {'ok':>3} {'test acc mean ± std':>22} {'epochs':>7}"]
    for algo, g in f.groupby("algo", sort=True):
        acc = pd.to_numeric(g["test_acc"], errors="coerce")
        std = acc.std(ddof=1) if acc.count() > 1 else float("nan")
        spread = f"{std:<7.4f}" if math.isfinite(std) else f"{'-':<7}"
        lines.append(f"{algo:<10} {len(g):>3} {(g['status'] == 'ok').sum():>3} {acc.mean():>12.4f} ± {spread} "
                     f"{pd.to_numeric(g['epochs']).mean():>7.1f}")
    return "\n".join(lines) + "\n"

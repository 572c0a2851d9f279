"""The report's figures (matplotlib Agg + seaborn): one set per dataset × network.

Every algorithm keeps one colour (seaborn's colour-blind palette, the baseline first) in every
figure. Curves over seeds are mean lines with a 95% t-interval band where ≥ 2 seeds have that
epoch. Each function returns the written path, or None with the reason the figure was skipped.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from harness.report_tables import CONFIDENCE, algo_order  # noqa: E402
from harness.schema import ANGLE_PREFIX, COST_PHASES, EPOCH_KEYS, EPOCH_METRICS, FAILED_STATUSES  # noqa: E402

# columns every epochs.csv row has (the trainer's metrics, the trial's keys, and what the loader adds);
# the others, except angles, are the algorithms' diagnostics
BASE_EPOCH_COLUMNS = set(EPOCH_KEYS) | set(EPOCH_METRICS) | {"source", "dataset", "network"}


def palette(algos: list[str]) -> dict[str, tuple]:
    colours = sns.color_palette("colorblind", n_colors=max(10, len(algos)))
    return {a: colours[i % len(colours)] for i, a in enumerate(algos)}


def _style():
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def slug(*parts: str) -> str:
    return "_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(p)) for p in parts)


def mean_band(frame: pd.DataFrame, x: str, y: str, bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Per x: mean of y over trials, n, and the 95% t-interval (NaN where n < 2), clipped to ``bounds``
    (the quantity's valid range: accuracies in [0, 1], angles in [0, 180])."""
    g = frame[[x, y]].replace([np.inf, -np.inf], np.nan).dropna().groupby(x)[y]
    out = g.agg(["mean", "std", "count"]).reset_index()
    t = np.array([stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) if n >= 2 else np.nan for n in out["count"]])
    half = t * out["std"] / np.sqrt(out["count"])
    out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    if bounds is not None:
        out["low"], out["high"] = out["low"].clip(*bounds), out["high"].clip(*bounds)
    return out


def _save(fig, path: Path) -> Path:
    """Write the figure atomically (a temporary sibling renamed into place): an interrupted report
    never leaves a half-written PNG where a good one was."""
    from harness import store

    try:
        store.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=130, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _figure_legend(fig, ax) -> None:
    """One legend for a multi-panel figure, right of the panels (panels share algorithms and colours)."""
    seen = {}
    for a in fig.axes:
        for h, lab in zip(*a.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), title="algorithm", fontsize=8, loc="upper left",
                   bbox_to_anchor=(1.0, 0.92))


def _title(ax_or_fig, dataset, network, what):
    text = f"{what} — {dataset}, {network}"
    if hasattr(ax_or_fig, "suptitle"):
        ax_or_fig.suptitle(text)
    else:
        ax_or_fig.set_title(text)


def _tight(fig) -> None:
    """tight_layout that keeps room for the figure title above the top row of panels."""
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))


def _final(epochs: pd.DataFrame) -> pd.DataFrame:
    return epochs[epochs["phase"] == "final"] if not epochs.empty else epochs


def validation_curve(epochs, colours, baseline, dataset, network, out: Path):
    e = _final(epochs)
    if e.empty or "val_acc" not in e:
        return None, "no final-phase epochs"
    _style()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algo in algo_order(e["algo"], baseline):
        b = mean_band(e[e["algo"] == algo], "epoch", "val_acc", (0, 1))
        n = e[e["algo"] == algo]["trial_id"].nunique()
        ax.plot(b["epoch"], 100 * b["mean"], marker="o", ms=3, color=colours[algo], label=f"{algo} (n={n})")
        ax.fill_between(b["epoch"], 100 * b["low"], 100 * b["high"], color=colours[algo], alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(title="algorithm (seeds)", fontsize=8)
    _title(ax, dataset, network, "Validation accuracy, mean and 95% CI over seeds")
    return _save(fig, out), None


def accuracy_vs_flops(epochs, colours, baseline, dataset, network, out: Path):
    e = _final(epochs)
    if e.empty or "test_acc" not in e:
        return None, "no final-phase epochs"
    e = e.copy()
    if "flops_total" not in e:
        e["flops_total"] = sum(e.get(f"flops_{p}", 0) for p in COST_PHASES)
    e = e[np.isfinite(e["flops_total"]) & (e["flops_total"] > 0)]
    if e.empty:
        return None, "no FLOP counts recorded"
    _style()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algo in algo_order(e["algo"], baseline):
        sub = e[e["algo"] == algo]
        # seeds share shapes, so cumulative FLOPs per epoch agree across seeds: average per epoch
        f = sub.groupby("epoch")["flops_total"].mean()
        b = mean_band(sub, "epoch", "test_acc", (0, 1)).set_index("epoch")
        x = f.reindex(b.index)
        ax.plot(x, 100 * b["mean"], marker="o", ms=3, color=colours[algo], label=algo)
        ax.fill_between(x, 100 * b["low"], 100 * b["high"], color=colours[algo], alpha=0.2, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative training FLOPs (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(title="algorithm", fontsize=8)
    _title(ax, dataset, network, "Test accuracy vs compute")
    return _save(fig, out), None


def cost_by_phase(summary: pd.DataFrame, colours, dataset, network, out: Path):
    cols = [f"flops_per_update_{p}" for p in COST_PHASES]
    if summary.empty or not all(c in summary for c in cols) or not summary[cols].notna().any().any():
        return None, "no per-phase FLOP counts"
    _style()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(summary) + 2), 4.2))
    phase_colours = sns.color_palette("Greys", n_colors=len(COST_PHASES) + 1)[1:]
    hatches = ("", "//", "..")
    bottom = np.zeros(len(summary))
    x = np.arange(len(summary))
    for p, c, h in zip(COST_PHASES, phase_colours, hatches):
        v = summary[f"flops_per_update_{p}"].fillna(0).to_numpy(dtype=float)
        ax.bar(x, v, bottom=bottom, color=c, hatch=h, edgecolor="black", linewidth=0.6, label=p)
        bottom += v
    ax.set_xticks(x, summary["algo"])
    for tick, algo in zip(ax.get_xticklabels(), summary["algo"]):
        tick.set_color(colours[algo])
        tick.set_fontweight("bold")
    ax.set_ylim(0, 1.1 * bottom.max() if bottom.max() > 0 else 1)
    ax.set_ylabel("FLOPs per update")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.set_xlabel("algorithm")
    ax.legend(title="phase", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _title(ax, dataset, network, "Cost per update by phase")
    return _save(fig, out), None


def _finish_panels(fig, axes, used: int, dataset, network, what: str, out: Path):
    """Hide the unused panels, title the figure, lay it out, add the legend and save it."""
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    _title(fig, dataset, network, what)
    _tight(fig)
    _figure_legend(fig, axes.flat[0])
    return _save(fig, out), None


def _epoch_bands(ax, e, col, colours, baseline, clip=None) -> None:
    """One line per algorithm: the mean of ``col`` over seeds per epoch, with its CI band."""
    for algo in algo_order(e["algo"], baseline):
        b = mean_band(e[e["algo"] == algo], "epoch", col, clip)
        if b.empty:
            continue
        ax.plot(b["epoch"], b["mean"], marker="o", ms=3, color=colours[algo], label=algo)
        ax.fill_between(b["epoch"], b["low"], b["high"], color=colours[algo], alpha=0.2, lw=0)


def alignment(epochs, colours, baseline, dataset, network, out: Path):
    e = _final(epochs)
    layers = sorted((c for c in e.columns if c.startswith("angle_l") and e[c].notna().any()),
                    key=lambda c: int(c[len("angle_l"):]) if c[len("angle_l"):].isdigit() else 0)
    if e.empty or not layers:
        return None, "no alignment angles recorded"
    _style()
    ncol = min(len(layers), 3)
    nrow = math.ceil(len(layers) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False, sharey=True)
    for ax, col in zip(axes.flat, layers):
        _epoch_bands(ax, e, col, colours, baseline, (0, 180))
        ax.set_ylim(-3, 183)
        ax.set_yticks(range(0, 181, 30))
        ax.set_title(f"layer {col[len('angle_l'):]}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("angle to bp gradient (degrees)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _finish_panels(fig, axes, len(layers), dataset, network,
                          "Alignment of the update with the bp gradient (probe batch)", out)


def diagnostic_columns(epochs: pd.DataFrame, labels: dict | None = None) -> list[str]:
    """The diagnostics to plot: those the algorithms declared (``labels``, in their order), then the rest."""
    cols = [c for c in epochs.columns if c not in BASE_EPOCH_COLUMNS and not c.startswith(ANGLE_PREFIX)
            and pd.api.types.is_numeric_dtype(epochs[c]) and epochs[c].notna().any()]
    known = [c for c in (labels or {}) if c in cols]
    return known + sorted(c for c in cols if c not in known)


def diagnostics(epochs, colours, baseline, dataset, network, out: Path, labels: dict | None = None):
    """``labels``: column → {"label", "unit"}, as the algorithms declared them (``algorithms.json``)."""
    labels = labels or {}
    e = _final(epochs)
    cols = diagnostic_columns(e, labels) if not e.empty else []
    if not cols:
        return None, "no algorithm diagnostics recorded"
    _style()
    ncol = min(len(cols), 2)
    nrow = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow), squeeze=False)
    for ax, col in zip(axes.flat, cols):
        _epoch_bands(ax, e, col, colours, baseline)
        values = e[col].replace([np.inf, -np.inf], np.nan).dropna()
        if (values > 0).all() and values.max() / values.min() > 100:
            ax.set_yscale("log")
        declared = labels.get(col, {})
        ax.set_title(declared.get("label", col), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{col} ({declared.get('unit') or ('degrees' if col.startswith('angle') else 'dimensionless')})")
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _finish_panels(fig, axes, len(cols), dataset, network, "Algorithm diagnostics on the probe batch", out)


def sensitivity(trials, spaces: dict, colours, baseline, dataset, network, out: Path):
    """Search phase: best validation accuracy of each trial vs each hyperparameter that varied.

    One row per algorithm, training hyperparameters first; the configuration carried into the final
    phase is starred; diverged/failed trials are crosses (at 0 when they have no accuracy).
    """
    from harness.hparams import TrainConfig

    search = trials[trials["phase"] == "search"]
    final_ids = set(trials.loc[trials["phase"] == "final", "config_id"].astype(str)) if "config_id" in trials else set()
    rows = []
    for algo in algo_order(search["algo"], baseline):
        sub = search[search["algo"] == algo]
        names = [c[3:] for c in sub.columns if c.startswith("hp.") and sub[c].dropna().astype(str).nunique() > 1]
        names.sort(key=lambda n: (n not in TrainConfig.model_fields, n))
        if names:
            rows.append((algo, sub, names))
    if not rows:
        return None, "no hyperparameter varied in a search phase"
    _style()
    ncol = max(len(names) for _, _, names in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(4.0 * ncol, 3.3 * len(rows)), squeeze=False, sharey=True)
    for r, (algo, sub, names) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(names):
                ax.set_visible(False)
                continue
            _sensitivity_panel(ax, algo, names[c], sub, spaces.get(algo, {}).get(names[c]) or {}, colours[algo],
                               final_ids)
    handles = [plt.Line2D([], [], marker="o", ls="", color="grey", markeredgecolor="black", label="search trial"),
               plt.Line2D([], [], marker="*", ls="", color="grey", markeredgecolor="black", ms=12,
                          label="selected for final phase"),
               plt.Line2D([], [], marker="x", ls="", color="black", label="diverged / failed")]
    _title(fig, dataset, network, "Search-phase sensitivity (one point per trial)")
    _tight(fig)
    fig.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.92))
    return _save(fig, out), None


def _sensitivity_panel(ax, algo, name, sub, space, colour, final_ids):
    from matplotlib.ticker import NullFormatter

    n_all = len(sub)
    sub = sub[sub[f"hp.{name}"].notna()]  # a knob is recorded only in the trials where it acts
    raw = sub[f"hp.{name}"]
    x = pd.to_numeric(raw, errors="coerce")
    y = 100 * pd.to_numeric(sub["best_val_acc"], errors="coerce")
    bad = sub["status"].isin(FAILED_STATUSES).to_numpy()
    chosen = sub["config_id"].astype(str).isin(final_ids).to_numpy() if "config_id" in sub else np.zeros(len(sub), bool)
    categorical = x.isna().all()
    if categorical:
        cats = sorted(raw.astype(str).unique())
        x = raw.astype(str).map({v: i for i, v in enumerate(cats)})
        ax.set_xticks(range(len(cats)), cats)
    ok = ~bad & y.notna().to_numpy()
    ax.scatter(x[ok & ~chosen], y[ok & ~chosen], color=colour, s=30, edgecolor="black", linewidth=0.4)
    ax.scatter(x[ok & chosen], y[ok & chosen], color=colour, marker="*", s=170, edgecolor="black", linewidth=0.6,
               zorder=3)
    if bad.any():
        ax.scatter(x[bad], y.where(y.notna(), 0)[bad], marker="x", color="black", s=40)
    log = not categorical and (space.get("kind") in ("loguniform", "qloguniform")
                               or (not space and (x > 0).all() and x.max() / x.min() >= 100))
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if not categorical and "low" in space and "high" in space:
        lo, hi = float(space["low"]), float(space["high"])
        lo, hi = min(lo, x.min()), max(hi, x.max())
        pad = (hi / lo) ** 0.05 if log and lo > 0 else None
        ax.set_xlim((lo / pad, hi * pad) if pad else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
    where = f"searched: {space['kind']}" if space else "searched"
    if len(sub) < n_all:
        where += f"; acts in {len(sub)} of {n_all} trials"
    ax.set_xlabel(f"{name} ({where}" + (", log scale)" if log else ")"))
    ax.set_ylabel("best validation accuracy (%)")
    ax.set_title(algo, color=colour, fontweight="bold")

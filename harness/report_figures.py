"""The report's figures (matplotlib Agg + seaborn): one set per dataset × network, each written as
PNG, SVG and PDF.

Colours: every algorithm has one colour in every figure of every report, chosen by its name
(:func:`palette`). Curves over seeds: a trial that stopped early keeps its last value in the later
epochs (last observation carried forward), so the mean never jumps when a seed drops out; the band
is the 95% t-interval over seeds. Each function returns the written PNG path, or None with the
reason the figure was skipped.
"""

from __future__ import annotations

import math
import re
import textwrap
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from harness.report_stats import CONFIDENCE  # noqa: E402
from harness.report_tables import algo_order, fmt_value, robustness_frame  # noqa: E402
from harness.schema import ANGLE_PREFIX, COST_PHASES, EPOCH_KEYS, EPOCH_METRICS, FAILED_STATUSES  # noqa: E402

# columns every epochs.csv row has (the trainer's metrics, the trial's keys, and what the loader adds);
# the others, except angles, are the algorithms' diagnostics
BASE_EPOCH_COLUMNS = set(EPOCH_KEYS) | set(EPOCH_METRICS) | {"source", "dataset", "network"}
FORMATS = ("png", "svg", "pdf")
# 14 distinguishable colours that read on white (Trubetskoy's list of distinct colours without its pale
# ones, and a mustard in place of its yellow)
COLOURS = tuple(matplotlib.colors.to_rgb(c) for c in (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#469990", "#9a6324", "#800000",
    "#808000", "#000075", "#a9a9a9", "#c49a00"))
LINESTYLES = ("-", "--", ":", "-.")


def colour_slot(name: str) -> int:
    """An algorithm's preferred colour: a fixed hash of its name (the same in every report)."""
    return zlib.crc32(name.encode("utf-8")) % len(COLOURS)


class Palette(dict):
    """name → colour, and ``ls``: name → line style (solid unless the name had to share a colour)."""

    ls: dict[str, str]


def palette(algos) -> Palette:
    """name → colour: each name's hashed slot; two names of one report that share a slot are told apart
    by giving the later name (in sorted order) the next free slot. Past len(COLOURS) names, colours are
    reused in the same way with the next line style (dashed, dotted, dash-dot), so no two curves look alike."""
    taken, out = set(), Palette()
    out.ls = {}
    for name in sorted(set(algos)):
        h = colour_slot(name)
        free = [(c, ls) for ls in range(len(LINESTYLES)) for c in ((h + k) % len(COLOURS) for k in range(len(COLOURS)))
                if (c, ls) not in taken]
        c, ls = free[0] if free else (h, 0)
        taken.add((c, ls))
        out[name], out.ls[name] = COLOURS[c], LINESTYLES[ls]
    return out


def linestyle(colours, algo: str) -> str:
    return getattr(colours, "ls", {}).get(algo, "-")


def point_marker(colours, algo: str) -> str:
    """The marker of an algorithm's points where lines are not drawn: a circle, or for a name that shares its
    colour (dashed, dotted, dash-dot lines) a square, triangle or diamond."""
    return "os^D"[LINESTYLES.index(linestyle(colours, algo))]


def _style():
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def slug(*parts: str) -> str:
    return "_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(p)) for p in parts)


def carried_forward(frame: pd.DataFrame, y: str, x: str = "epoch") -> pd.DataFrame:
    """trial × x table of ``y``, every trial extended to the group's last x with its last value."""
    e = frame[["source", "trial_id", x, y]].replace([np.inf, -np.inf], np.nan)
    wide = e.pivot_table(index=x, columns=["source", "trial_id"], values=y, aggfunc="last", dropna=False)
    return wide.sort_index().ffill()


def mean_band(frame: pd.DataFrame, x: str, y: str, bounds: tuple[float, float] | None = None,
              carry: bool = True) -> pd.DataFrame:
    """Per x: mean of y over trials, n, and the 95% t-interval (NaN where n < 2), clipped to ``bounds``
    (the quantity's valid range). ``carry``: trials that ended early keep their last value."""
    if carry and {"source", "trial_id"} <= set(frame.columns):
        wide = carried_forward(frame, y, x)
        out = pd.DataFrame({x: wide.index, "mean": wide.mean(axis=1).to_numpy(),
                            "std": wide.std(axis=1, ddof=1).to_numpy(), "count": wide.notna().sum(axis=1).to_numpy()})
        out = out[out["count"] > 0].reset_index(drop=True)
    else:
        g = frame[[x, y]].replace([np.inf, -np.inf], np.nan).dropna().groupby(x)[y]
        out = g.agg(["mean", "std", "count"]).reset_index()
    t = np.array([stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) if n >= 2 else np.nan for n in out["count"]])
    half = t * out["std"] / np.sqrt(out["count"])
    out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    if bounds is not None:
        out["low"], out["high"] = out["low"].clip(*bounds), out["high"].clip(*bounds)
    return out


def _save(fig, path: Path) -> Path:
    """Write the figure as PNG, SVG and PDF, each atomically (a temporary sibling renamed into place)."""
    from harness import store

    try:
        for fmt in FORMATS:
            target = Path(path).with_suffix(f".{fmt}")
            meta = {"Date": None} if fmt in ("svg", "pdf") else None
            store.write_atomic(target, lambda f, fmt=fmt, meta=meta: fig.savefig(
                f, format=fmt, dpi=130, bbox_inches="tight", metadata=meta))
    finally:
        plt.close(fig)
    return Path(path).with_suffix(".png")


def _figure_legend(fig, title: str = "algorithm") -> None:
    """One legend for a multi-panel figure, right of the panels (panels share algorithms and colours)."""
    seen = {}
    for a in fig.axes:
        for h, lab in zip(*a.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), title=title, fontsize=8, loc="upper left",
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


def _grid(n: int, ncol: int, w: float, h: float, **kw):
    ncol = max(1, min(n, ncol))
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol, h * nrow), squeeze=False, **kw)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


# ---------------------------------------------------------------------------- curves
def learning_curves(epochs, colours, baseline, dataset, network, out: Path):
    """Validation accuracy vs epoch: the whole range, and a second panel zoomed on the top few points."""
    e = _final(epochs)
    if e.empty or "val_acc" not in e:
        return None, "no final-phase epochs"
    _style()
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    bands, finals = {}, []
    for algo in algo_order(e["algo"], baseline):
        b = mean_band(e[e["algo"] == algo], "epoch", "val_acc", (0, 1))
        if b.empty:
            continue
        bands[algo] = b
        finals.append(100 * b["mean"].iloc[-1])
    for ax, alpha in ((full, 0.18), (zoom, 0.07)):
        for algo, b in bands.items():
            n = int(b["count"].max())
            ax.plot(b["epoch"], 100 * b["mean"], marker="o", ms=2.5, color=colours[algo], ls=linestyle(colours, algo),
                    label=f"{algo} (n={n})")
            ax.fill_between(b["epoch"], 100 * b["low"], 100 * b["high"], color=colours[algo], alpha=alpha, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    values = pd.concat([100 * b["mean"] for b in bands.values()]) if bands else pd.Series([0.0, 100.0])
    lo, hi = float(values.min()), float(values.max())
    full.set_ylim(max(0, lo - 0.05 * (hi - lo + 1)), min(100, hi + 0.05 * (hi - lo + 1)))
    top = max(finals) if finals else hi
    # zoom: from a little below the weakest final mean that is within 10 pp of the best, to the top
    near = [f for f in finals if f >= top - 10] or [top]
    zlo = max(0, min(near) - max(0.5, 0.25 * (top - min(near))))
    zhi = min(100, hi + 0.3)
    zoom.set_ylim(zlo, zhi)
    first = min(int(b.loc[100 * b["mean"] >= zlo, "epoch"].min()) for b in bands.values()
                if (100 * b["mean"] >= zlo).any()) if bands else 1
    zoom.set_xlim(left=max(0.5, first - 0.5))
    full.set_ylabel("validation accuracy (%)")
    full.set_title("all epochs", fontsize=10)
    zoom.set_title(f"zoom: {zlo:.1f}–{zhi:.1f}%", fontsize=10)
    _title(fig, dataset, network, "Validation accuracy, mean and 95% CI over seeds (stopped seeds carried forward)")
    _tight(fig)
    _figure_legend(fig, "algorithm (seeds)")
    return _save(fig, out), None


def _accuracy_vs(epochs, colours, baseline, dataset, network, out: Path, x_col: str, x_label: str, what: str):
    """Test accuracy (carried forward) vs a cumulative cost per epoch (its mean over the seeds that ran)."""
    e = _final(epochs)
    if e.empty or "test_acc" not in e:
        return None, "no final-phase epochs"
    e = e.copy()
    if x_col == "flops_total" and "flops_total" not in e:
        e["flops_total"] = sum(e.get(f"flops_{p}", 0) for p in COST_PHASES)
    if x_col not in e:
        return None, f"no {x_col} recorded"
    e = e[np.isfinite(e[x_col]) & (e[x_col] > 0)]
    if e.empty:
        return None, f"no {x_col} recorded"
    _style()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for algo in algo_order(e["algo"], baseline):
        sub = e[e["algo"] == algo]
        b = mean_band(sub, "epoch", "test_acc", (0, 1)).set_index("epoch")
        # after a seed stops, its cost stops too: carry it forward like its accuracy
        x = carried_forward(sub, x_col).mean(axis=1).reindex(b.index)
        ax.plot(x, 100 * b["mean"], marker="o", ms=2.5, color=colours[algo], ls=linestyle(colours, algo), label=algo)
        ax.fill_between(x, 100 * b["low"], 100 * b["high"], color=colours[algo], alpha=0.18, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(title="algorithm", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _title(ax, dataset, network, what)
    return _save(fig, out), None


def accuracy_vs_flops(epochs, colours, baseline, dataset, network, out: Path):
    return _accuracy_vs(epochs, colours, baseline, dataset, network, out, "flops_total",
                        "cumulative training FLOPs (log scale)", "Test accuracy vs compute")


def accuracy_vs_time(epochs, colours, baseline, dataset, network, out: Path):
    return _accuracy_vs(epochs, colours, baseline, dataset, network, out, "wall_time_s",
                        "cumulative training wall time, s (log scale; this machine, its load)",
                        "Test accuracy vs wall time")


# ---------------------------------------------------------------------------- per seed
def final_accuracy(trials, summary, colours, baseline, dataset, network, out: Path, published=None):
    """Per-seed test accuracy (best-validation epoch) per algorithm, with the mean and its 95% CI;
    published values (same dataset and network) as open diamonds."""
    final = trials[(trials["phase"] == "final")]
    acc = pd.to_numeric(final["test_acc"], errors="coerce")
    final = final[np.isfinite(acc)].assign(acc=100 * acc[np.isfinite(acc)])
    if final.empty or summary.empty:
        return None, "no final-phase test accuracies"
    _style()
    order = [a for a in algo_order(final["algo"], baseline)]
    fig, ax = plt.subplots(figsize=(7.2, 0.5 * len(order) + 1.6))
    sns.stripplot(data=final, x="acc", y="algo", hue="algo", order=order, palette=colours, jitter=0.15, size=5,
                  alpha=0.75, edgecolor="black", linewidth=0.4, legend=False, ax=ax)
    s = summary.set_index("algo")
    for i, algo in enumerate(order):
        if algo not in s.index:
            continue
        r = s.loc[algo]
        m = 100 * r["test_acc_mean"]
        if np.isfinite(r["test_acc_ci_low"]):
            ax.errorbar(m, i, xerr=[[m - 100 * r["test_acc_ci_low"]], [100 * r["test_acc_ci_high"] - m]], fmt="none",
                        ecolor="black", elinewidth=1.2, capsize=4, zorder=4)
        ax.plot([m, m], [i - 0.3, i + 0.3], color="black", lw=2, zorder=5)
        if published is not None and not published.empty:
            for v in published.loc[published["algo"] == algo, "accuracy"]:
                ax.plot(v, i, marker="D", mfc="none", mec="black", ms=7, zorder=6)
    handles = [plt.Line2D([], [], marker="o", ls="", color="grey", markeredgecolor="black", label="one seed"),
               plt.Line2D([], [], color="black", lw=2, marker="|", ms=10, label="mean, 95% CI")]
    if published is not None and not published.empty and published["algo"].isin(order).any():
        handles.append(plt.Line2D([], [], marker="D", ls="", mfc="none", mec="black", label="published"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xlabel("test accuracy at the best-validation epoch (%)")
    ax.set_ylabel("")
    _title(ax, dataset, network, "Final test accuracy per seed")
    return _save(fig, out), None


# ---------------------------------------------------------------------------- robustness
def robustness(trials, colours, baseline, dataset, network, out: Path):
    """ECDF of each configuration's gap to its algorithm's best search configuration."""
    r = robustness_frame(trials)
    counts = r.groupby("algo").size() if not r.empty else pd.Series(dtype=int)
    if r.empty or (counts < 2).all():
        return None, "fewer than two search configurations per algorithm"
    _style()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    finite = r.loc[np.isfinite(r["gap"]), "gap"]
    right = 1.15 * max(6.0, -float(finite.min()) if len(finite) else 6.0)
    for algo in algo_order(r["algo"], baseline):
        g = np.sort(r.loc[r["algo"] == algo, "gap"].to_numpy())[::-1]  # from the best down
        if g.size < 2:
            continue
        share = np.arange(1, g.size + 1) / g.size
        x = np.where(np.isfinite(g), -g, np.inf)
        keep = np.isfinite(x)
        x, share = np.append(x[keep], right), np.append(share[keep], share[keep][-1] if keep.any() else 0)
        ax.step(x, share, where="post", color=colours[algo], ls=linestyle(colours, algo), lw=1.8,
                label=f"{algo} ({g.size} configs" + (f", {int((~keep).sum())} diverged)" if (~keep).any() else ")"))
    for v in (1, 5):
        ax.axvline(v, color="grey", ls="--", lw=0.8)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, right)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("validation accuracy below the algorithm's best configuration (pp, symlog)")
    ax.set_ylabel("share of search configurations")
    ax.legend(title="algorithm", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _title(ax, dataset, network, "Robustness to hyperparameters (search phase)")
    return _save(fig, out), None


def sensitivity(trials, spaces: dict, colours, baseline, dataset, network, out: Path):
    """Appendix: best validation accuracy of every search trial vs each knob that varied, one panel per
    knob (algorithms overlaid); choice knobs on a categorical axis; diverged/failed trials as crosses."""
    search = trials[trials["phase"] == "search"]
    knobs: dict[str, list[str]] = {}
    for algo in algo_order(search["algo"], baseline):
        sub = search[search["algo"] == algo]
        for c in sub.columns:
            if c.startswith("hp.") and sub[c].dropna().astype(str).nunique() > 1:
                knobs.setdefault(c[3:], []).append(algo)
    if not knobs:
        return None, "no hyperparameter varied in a search phase"
    _style()
    names = sorted(knobs)
    fig, axes = _grid(len(names), 4, 3.6, 3.0, sharey=True)
    final_ids = set(trials.loc[trials["phase"] == "final", "config_id"].astype(str)) if "config_id" in trials else set()
    for ax, name in zip(axes.flat, names):
        spec = next((spaces.get(a, {}).get(name) for a in knobs[name] if spaces.get(a, {}).get(name)), None) or {}
        _sensitivity_panel(ax, name, search, knobs[name], spec, colours, final_ids)
    for ax in axes[:, 0]:
        ax.set_ylabel("best validation accuracy (%)")
    handles = [plt.Line2D([], [], marker="*", ls="", color="grey", markeredgecolor="black", ms=11,
                          label="selected for final phase"),
               plt.Line2D([], [], marker="x", ls="", color="black", label="diverged / failed (at 0)")]
    _title(fig, dataset, network, "Search-phase sensitivity per hyperparameter (one point per trial)")
    _tight(fig)
    _figure_legend(fig)
    fig.legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(1.0, 0.05))
    return _save(fig, out), None


def _sensitivity_panel(ax, name, search, algos, space, colours, final_ids):
    from matplotlib.ticker import NullFormatter

    col = f"hp.{name}"
    sub = search[search["algo"].isin(algos) & search[col].notna()]
    raw = sub[col]
    numeric = pd.to_numeric(raw, errors="coerce")
    categorical = space.get("kind") == "choice" or numeric.isna().any()
    if categorical:
        text = raw.map(lambda v: fmt_value(v) if isinstance(v, float) else str(v))
        num = pd.to_numeric(pd.Series(text.unique()), errors="coerce")
        cats = [v for _, v in sorted(zip(num.fillna(np.inf), text.unique()))]
        x = text.map({v: i for i, v in enumerate(cats)}).astype(float)
        x = x + np.random.default_rng(0).uniform(-0.12, 0.12, len(x))
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    else:
        x = numeric
    y = 100 * pd.to_numeric(sub["best_val_acc"], errors="coerce")
    bad = sub["status"].isin(FAILED_STATUSES).to_numpy() | y.isna().to_numpy()
    chosen = sub["config_id"].astype(str).isin(final_ids).to_numpy() if "config_id" in sub else np.zeros(len(sub), bool)
    for algo in algos:
        m = (sub["algo"] == algo).to_numpy()
        ax.scatter(x[m & ~bad & ~chosen], y[m & ~bad & ~chosen], color=colours[algo], s=22, edgecolor="black",
                   marker=point_marker(colours, algo), linewidth=0.3, label=algo)
        ax.scatter(x[m & ~bad & chosen], y[m & ~bad & chosen], color=colours[algo], marker="*", s=130,
                   edgecolor="black", linewidth=0.5, zorder=3)
    if bad.any():
        ax.scatter(x[bad], np.zeros(bad.sum()), marker="x", color="black", s=30)
    log = not categorical and (space.get("kind") in ("loguniform", "qloguniform")
                               or (not space and (x > 0).all() and x.max() / x.min() >= 100))
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(name + (" (log)" if log else " (category)" if categorical else ""))
    ax.set_title(f"{name}: {len(algos)} algorithm(s)", fontsize=9)


# ---------------------------------------------------------------------------- alignment
def _layer(col: str) -> int:
    tail = col[len(ANGLE_PREFIX):]
    return int(tail) if tail.isdigit() else 0


def alignment(epochs, colours, baseline, dataset, network, out: Path, transport: dict | None = None):
    """Angle of each hidden layer's update to the bp gradient (the output layer's is 0° for every
    rule and is left out); series identically 0° are named in the panel instead of drawn.
    ``transport``: algorithm → what it reads of W (``plausibility.transport``), shown in the legend."""
    e = _final(epochs)
    layers = sorted((c for c in e.columns if c.startswith(ANGLE_PREFIX) and c[len(ANGLE_PREFIX):].isdigit()
                     and e[c].notna().any()), key=_layer) if not e.empty else []
    hidden = layers[:-1]
    if not hidden:
        return None, "no hidden-layer alignment angles recorded"
    transport = transport or {}
    _style()
    fig, axes = _grid(len(hidden), 3, 4.2, 3.3, sharey=True)
    highest = 0.0
    for ax, col in zip(axes.flat, hidden):
        exact = []
        for algo in algo_order(e["algo"], baseline):
            sub = e[e["algo"] == algo]
            if sub[col].notna().sum() == 0:
                continue
            if float(sub[col].abs().max()) < 0.5:
                exact.append(algo)
                continue
            b = mean_band(sub, "epoch", col, (0, 180))
            kind = transport.get(algo, "none")
            label = algo + (f" (reads W: {kind})" if kind not in ("none", "", None) else "")
            ax.plot(b["epoch"], b["mean"], marker="o", ms=2.5, color=colours[algo], ls=linestyle(colours, algo),
                    label=label)
            ax.fill_between(b["epoch"], b["low"], b["high"], color=colours[algo], alpha=0.18, lw=0)
            highest = max(highest, float(b["mean"].max()))
        if exact:
            ax.text(0.02, 0.97, "≈0° (exact gradient): " + ", ".join(exact), transform=ax.transAxes, fontsize=7,
                    va="top", wrap=True, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    top = 90 if highest <= 90 else 180  # 0-90°, unless an update points away from the gradient on average
    for ax, col in zip(axes.flat, hidden):
        ax.set_ylim(0, top)
        ax.set_yticks(range(0, top + 1, 15 if top == 90 else 30))
        ax.set_title(f"hidden layer {_layer(col)}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("angle to bp gradient (°)")
    _title(fig, dataset, network, "Alignment of hidden-layer updates with the bp gradient (probe batch)")
    _tight(fig)
    _figure_legend(fig)
    return _save(fig, out), None


# ---------------------------------------------------------------------------- diagnostics
_PER_LAYER = re.compile(r"^(.*)_l(\d+)$")


def diagnostic_columns(epochs: pd.DataFrame, labels: dict | None = None) -> list[str]:
    """The diagnostics to plot: those the algorithms declared (``labels``, in their order), then the rest."""
    cols = [c for c in epochs.columns if c not in BASE_EPOCH_COLUMNS and not c.startswith(ANGLE_PREFIX)
            and pd.api.types.is_numeric_dtype(epochs[c]) and epochs[c].notna().any()]
    known = [c for c in (labels or {}) if c in cols]
    return known + sorted(c for c in cols if c not in known)


def diagnostic_panels(e: pd.DataFrame, cols: list[str], baseline: str) -> list[tuple[str, str, list[str]]]:
    """(algorithm, stem, columns) for each algorithm's non-constant diagnostics; per-layer columns
    (``name_l<i>``) share one panel."""
    panels = []
    for algo in algo_order(e["algo"], baseline):
        sub = e[e["algo"] == algo]
        stems: dict[str, list[str]] = {}
        for c in cols:
            v = pd.to_numeric(sub[c], errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
            if v.empty or np.allclose(v, v.iloc[0], rtol=1e-9, atol=0):
                continue  # absent or constant for this algorithm
            m = _PER_LAYER.match(c)
            stems.setdefault(m.group(1) if m else c, []).append(c)
        panels += [(algo, stem, sorted(cs, key=lambda c: int(_PER_LAYER.match(c).group(2)) if _PER_LAYER.match(c) else 0))
                   for stem, cs in stems.items()]
    return panels


def diagnostics(epochs, colours, baseline, dataset, network, out: Path, labels: dict | None = None):
    """``labels``: column → {"label", "unit"}, as the algorithms declared them (``algorithms.json``)."""
    labels = labels or {}
    e = _final(epochs)
    cols = diagnostic_columns(e, labels) if not e.empty else []
    panels = diagnostic_panels(e, cols, baseline) if cols else []
    if not panels:
        return None, "no algorithm diagnostic varies" if cols else "no algorithm diagnostics recorded"
    _style()
    fig, axes = _grid(len(panels), 4, 4.1, 3.2)
    for ax, (algo, stem, group) in zip(axes.flat, panels):
        for i, col in enumerate(group):  # layers of one series: the algorithm's colour, one line style each
            b = mean_band(e[e["algo"] == algo], "epoch", col)
            m = _PER_LAYER.match(col)
            ax.plot(b["epoch"], b["mean"], ls=LINESTYLES[i % len(LINESTYLES)], marker="os^dv"[i % 5], ms=2.5,
                    color=colours[algo], label=f"layer {m.group(2)}" if m and len(group) > 1 else None)
            ax.fill_between(b["epoch"], b["low"], b["high"], color=colours[algo], alpha=0.12, lw=0)
        values = pd.concat([e.loc[e["algo"] == algo, c] for c in group]).replace([np.inf, -np.inf], np.nan).dropna()
        if (values > 0).all() and values.max() / values.min() > 100:
            ax.set_yscale("log")
        declared = labels.get(group[0], {})
        unit = declared.get("unit") or ("degrees" if stem.startswith("angle") else "dimensionless")
        ax.set_title(textwrap.fill(f"{algo}: {declared.get('label', stem)}", 48), fontsize=8.5)
        ax.set_ylabel(f"{stem} ({unit})", fontsize=8)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(group) > 1:
            ax.legend(fontsize=6, ncol=2)
    _title(fig, dataset, network, "Algorithm diagnostics on the probe batch (non-constant series only)")
    _tight(fig)
    return _save(fig, out), None


# ---------------------------------------------------------------------------- cost
def cost_by_phase(summary: pd.DataFrame, colours, dataset, network, out: Path, notes: dict | None = None):
    """FLOPs per update in MFLOPs, stacked by phase; each bar labelled with the configuration behind it
    (``notes``: algorithm → its selected algorithm hyperparameters)."""
    cols = [f"flops_per_update_{p}" for p in COST_PHASES]
    if summary.empty or not all(c in summary for c in cols) or not summary[cols].notna().any().any():
        return None, "no per-phase FLOP counts"
    notes = notes or {}
    _style()
    s = summary.iloc[::-1]  # the baseline on top
    fig, ax = plt.subplots(figsize=(8.4, 0.55 * len(s) + 1.6))
    phase_colours = sns.color_palette("Greys", n_colors=len(COST_PHASES) + 1)[1:]
    left = np.zeros(len(s))
    y = np.arange(len(s))
    for p, c, h in zip(COST_PHASES, phase_colours, ("", "//", "..")):
        v = s[f"flops_per_update_{p}"].fillna(0).to_numpy(dtype=float) / 1e6
        ax.barh(y, v, left=left, color=c, hatch=h, edgecolor="black", linewidth=0.6, label=p)
        left += v
    labels = [a + (f"\n{notes[a]}" if notes.get(a) else "") for a in s["algo"]]
    ax.set_yticks(y, labels, fontsize=7)
    for tick, algo in zip(ax.get_yticklabels(), s["algo"]):
        tick.set_color(colours[algo])
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {total:.3g}", va="center", fontsize=7)
    ax.set_xlim(0, 1.15 * left.max() if left.max() > 0 else 1)
    ax.set_xlabel("MFLOPs per update (averaged over a schedule period)")
    ax.legend(title="phase", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _title(ax, dataset, network, "Cost per update by phase")
    return _save(fig, out), None

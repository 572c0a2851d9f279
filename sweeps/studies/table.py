"""Tables of a study run by sweeps/studies/run.sh (reads only summary.json and epochs.csv).

usage: .venv/bin/python sweeps/studies/table.py [results/studies/rfl-issue10] [--reference bp-s0]
Prints, per trial: test accuracy (best-validation epoch), best validation accuracy, FLOPs per update
(total, feedback) and as a ratio to the reference trial, feedback iterations per update, and the last
epoch's rfl diagnostics (max pseudoinverse residual, contraction) with the per-layer angle of the
update to bp at epochs 1 and last; then, for rfl trials, the last epoch's per-layer angles of Q_l to
W_l⁺ and to W_lᵀ (layers 2 .. L); then updates and FLOPs to reach the fa trials' mean best validation
accuracy; and per algorithm, the mean ± std over seeds of test accuracy. Wall time is not taken from these trials (they may share the machine): sweeps/studies/timing.py
measures it as interleaved ratios.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd


def load(root: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "summary.json").exists() and (d / "epochs.csv").exists():
            out[d.name] = (json.loads((d / "summary.json").read_text()), pd.read_csv(d / "epochs.csv"))
    return out


def _per_layer(row: pd.Series, prefix: str) -> str:
    """``prefix<l>`` columns of one epoch row, in layer order, as a/b/c (degrees, rounded)."""
    n = len(prefix)
    cols = sorted((c for c in row.index if c.startswith(prefix) and c[n:].isdigit()), key=lambda c: int(c[n:]))
    return "/".join(f"{row[c]:.0f}" for c in cols if isinstance(row[c], float) and math.isfinite(row[c]))


def _angles(row: pd.Series) -> str:
    return _per_layer(row, "angle_l")


def feedback_table(trials) -> pd.DataFrame:
    rows = []
    for name, (s, ep) in trials.items():
        last = ep.iloc[-1]
        if "angle_q_pinv_l2" in last.index:
            rows.append({"trial": name, "∠Q,W⁺ l=2..L": _per_layer(last, "angle_q_pinv_l"),
                         "∠Q,Wᵀ l=2..L": _per_layer(last, "angle_q_wt_l"),
                         "residual l=2..L": "/".join(f"{last[f'pinv_residual_l{j}']:.3f}"
                                                     for j in range(2, 100) if f"pinv_residual_l{j}" in last.index),
                         "feedback age": last.get("feedback_age", float("nan"))})
    return pd.DataFrame(rows)


def trial_table(trials, reference: str) -> pd.DataFrame:
    ref = trials[reference][0]
    rows = []
    for name, (s, ep) in trials.items():
        flops = s.get("flops_per_update") or {}
        last, first = ep.iloc[-1], ep.iloc[0]
        rows.append({
            "trial": name, "epochs": s["epochs"], "status": s["status"], "test_acc": s["test_acc"],
            "best_val": s["best_val_acc"], "last_val": last["val_acc"],
            "flops/upd (M)": flops.get("total", float("nan")) / 1e6,
            "x bp flops": flops.get("total", float("nan")) / ref["flops_per_update"]["total"],
            "feedback (M)": flops.get("feedback", float("nan")) / 1e6,
            "fb iters/upd": last.get("feedback_iters_per_update", float("nan")),
            "pinv res": last.get("pinv_residual", float("nan")), "ρ": last.get("contraction", float("nan")),
            "∠bp ep1": _angles(first), "∠bp last": _angles(last),
        })
    return pd.DataFrame(rows)


def configuration(name: str) -> str:
    """A trial's configuration: its name without the trailing ``-s<seed>`` (``dfa-lr3e-4-s2`` → ``dfa-lr3e-4``)."""
    stem, _, seed = name.rpartition("-s")
    return stem if stem and seed.isdigit() else name


def by_algorithm(trials, reference: str) -> pd.DataFrame:
    """Per configuration (the trial name less its seed, so two learning rates of one algorithm stay
    apart): seeds, diverged runs, test accuracy mean ± sample std over the runs that did not diverge,
    epochs run, FLOPs per update and its ratio to the reference trial's."""
    ref = trials[reference][0]["flops_per_update"]["total"]
    rows = {}
    for name, (s, _) in trials.items():
        rows.setdefault(configuration(name), []).append(s)
    out = []
    for algo, runs in rows.items():
        acc = pd.Series([r["test_acc"] for r in runs if r["status"] == "ok"], dtype=float)
        flops = pd.Series([r["flops_per_update"]["total"] for r in runs])
        out.append({"algorithm": algo, "seeds": len(runs), "diverged": sum(r["status"] == "diverged" for r in runs),
                    "test acc mean": acc.mean(),
                    "± std": acc.std(ddof=1) if len(acc) > 1 else float("nan"),
                    "epochs": "/".join(str(r["epochs"]) for r in runs),
                    "flops/upd (M)": flops.mean() / 1e6, "x ref flops": flops.mean() / ref})
    return pd.DataFrame(out)


def to_target(trials, target: float) -> pd.DataFrame:
    rows = []
    for name, (s, ep) in trials.items():
        hit = ep[ep["val_acc"] >= target]
        first = hit.iloc[0] if len(hit) else None
        rows.append({"trial": name, "target val": target,
                     "updates": int(first["updates"]) if first is not None else None,
                     "GFLOPs": first["flops_total"] / 1e9 if first is not None else None})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="results/studies/rfl-issue10")
    ap.add_argument("--reference", default="bp-s0")
    args = ap.parse_args()
    trials = load(Path(args.root))
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(trial_table(trials, args.reference).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    print(by_algorithm(trials, args.reference).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    feedback = feedback_table(trials)
    if len(feedback):
        print(feedback.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    fa = [s["best_val_acc"] for n, (s, _) in trials.items() if n.startswith("fa-") and s["best_val_acc"] is not None]
    if fa:
        print()
        print(to_target(trials, sum(fa) / len(fa)).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()

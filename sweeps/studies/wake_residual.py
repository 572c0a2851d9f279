"""How stale the feedback gets within a sleep–wake period: rfl's pseudoinverse residual at the end of
every wake phase (just before each sleep) and just after the sleep, over a whole trial.

usage: .venv/bin/python sweeps/studies/wake_residual.py NAME [NAME ...] [--list sweeps/studies/rfl-issue10.txt]
                                                        [--out results/studies/rfl-issue10-wake]
Each NAME is a line of the study list (run the same way as sweeps/studies/run.sh: Fashion-MNIST,
mlp-5x256-tanh, 10 epochs, one thread). The trial is trained by the harness's Trainer; the study only
reads ``pinv_residuals()`` (max over layers of ‖Q_l(W_lW_lᵀ + λI) − W_lᵀ‖_F / ‖W_lᵀ‖_F) around each
sleep, which uses no random numbers, so the trial's accuracy equals the study run's (checked and
printed). Writes NAME.json (every sleep: update index, residual before and after) and prints, per
trial, the median / max of the residual at the end of the wake phases after the first epoch, and the
median right after a sleep. The FLOP and time figures of these runs include the measurement: take
them from the study runs, not from here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from harness.hparams import parse_assignments, split_overrides
from harness.registry import get_algorithm
from harness.store import write_json
from harness.train import Trainer
from timing import read_list  # this directory's study-list reader (run as a script: it is on sys.path)


def run(name: str, algo: str, seed: int, sets: dict[str, str], out: Path, data: tuple[str, str, int]) -> dict:
    assignments = [f"{k}={v}" for k, v in sets.items()]
    train, params = split_overrides(parse_assignments(assignments), get_algorithm(algo).Params, algo)
    if params.get("schedule") != "sleep_wake":
        raise SystemExit(f"error: study line '{name}' is not a sleep_wake configuration")
    dataset, network, epochs = data
    cfg = {"algo": algo, "dataset": dataset, "network": network, "seed": seed,
           "train": {**train, "epochs": epochs}, "params": params, "threads": 1}
    trainer = Trainer(cfg)
    rfl, sleeps = trainer.algo, []
    original = rfl.feedback_phase

    def observed_phase(iters: int) -> None:
        before = max(rfl.pinv_residuals().values())
        original(iters)
        sleeps.append({"update": rfl.updates, "before": before, "after": max(rfl.pinv_residuals().values())})

    rfl.feedback_phase = observed_phase
    summary = trainer.run(out / name, log=open(os.devnull, "w"))
    updates_per_epoch = summary["updates"] / summary["epochs"]
    later = [s["before"] for s in sleeps if s["update"] >= updates_per_epoch]
    row = {"trial": name, "test_acc": summary["test_acc"], "sleeps": len(sleeps),
           "wake_end_median": statistics.median(later), "wake_end_max": max(later),
           "after_sleep_median": statistics.median(s["after"] for s in sleeps if s["update"] >= updates_per_epoch)}
    write_json(out / f"{name}.json", {**row, "every_sleep": sleeps})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--list", default="sweeps/studies/rfl-issue10.txt")
    ap.add_argument("--out", default="results/studies/rfl-issue10-wake")
    ap.add_argument("--study", default="results/studies/rfl-issue10", help="the study runs, for the accuracy check")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--network", default="mlp-5x256-tanh")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines, out = read_list(Path(args.list)), Path(args.out)
    unknown = [n for n in args.names if n not in lines]
    if unknown:
        raise SystemExit(f"error: not in {args.list}: {', '.join(unknown)}; valid: {', '.join(lines)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        done = out / f"{name}.json"
        row = json.loads(done.read_text()) if done.exists() else run(name, *lines[name], out,
                                                                       (args.dataset, args.network, args.epochs))
        ref = Path(args.study) / name / "summary.json"
        same = json.loads(ref.read_text())["test_acc"] == row["test_acc"] if ref.exists() else None
        print(f"{name:14s} test {row['test_acc']:.4f} (same as the study run: {same})  sleeps {row['sleeps']:5d}  "
              f"residual at the end of a wake phase: median {row['wake_end_median']:.4f} max "
              f"{row['wake_end_max']:.4f}; after a sleep: median {row['after_sleep_median']:.4f}", flush=True)


if __name__ == "__main__":
    main()

"""Sweep throughput: the same trials one at a time and two at once on this machine (issue 18's target ≥ 1.6×).

usage: .venv/bin/python sweeps/studies/concurrency.py [--algo bp,fa,dtp,rfl] [--epochs 2] [--trials 2]
           [--dataset fashion-mnist] [--network mlp-5x256-tanh] [--results results/studies/concurrency]

Runs ``creditbench sweep --search-only`` twice with the same plan: ``--max-concurrent 1`` (with
``cpus_per_trial: auto`` each trial gets every CPU as threads) and ``--max-concurrent N`` (N = the CPUs, one
thread each), timing each whole command. Prints both wall times, their ratio, and checks that every trial's
FLOPs per update are identical between the two runs (accuracies may differ in the last bits: the thread
count differs, and is recorded in each trial's config).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def sweep(args, concurrent: int, name: str) -> tuple[float, Path]:
    cmd = [sys.executable, "-m", "harness.cli", "sweep", "--search-only", "--dataset", args.dataset,
           "--network", args.network, "--algo", args.algo, "--trials", str(args.trials), "--epochs", str(args.epochs),
           "--max-concurrent", str(concurrent), "--num-cpus", str(args.cpus), "--results", str(args.results),
           "--name", name]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds, Path(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="bp,fa,dtp,rfl")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--network", default="mlp-5x256-tanh")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--results", type=Path, default=Path("results/studies/concurrency"))
    args = ap.parse_args()
    one, dir_one = sweep(args, 1, "one-at-a-time")
    many, dir_many = sweep(args, args.cpus, f"{args.cpus}-at-once")
    a, b = (pd.read_csv(d / "trials.csv").set_index("trial_id").sort_index() for d in (dir_one, dir_many))
    flops = [c for c in a.columns if c.startswith("flops_per_update")]
    same = a[flops].equals(b[flops])
    print(f"{len(a)} trials ({args.algo}; {args.trials} configurations, {args.epochs} epochs; {args.dataset}, "
          f"{args.network}) on {args.cpus} CPUs")
    print(f"one at a time ({a['threads'].iloc[0] if 'threads' in a else '?'} threads each): {one:.1f} s  ({dir_one})")
    print(f"{args.cpus} at once ({b['threads'].iloc[0] if 'threads' in b else '?'} thread(s) each): {many:.1f} s  "
          f"({dir_many})")
    print(f"speed-up: {one / many:.2f}x; FLOPs per update identical in every trial: {same}")


if __name__ == "__main__":
    main()

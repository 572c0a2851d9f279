"""FLOPs per update of study configurations, by phase, as ratios to a reference (no training run).

usage: .venv/bin/python sweeps/studies/flops.py sweeps/studies/lenet-issue14.txt [--only a,b,...]
           [--reference bp-s0] [--updates 8]

Each configuration is a line of the study list (as sweeps/studies/run.sh and timing.py read it);
its trainer is built on Fashion-MNIST with the list's network, runs ``--updates`` updates, and its
cost meter's ``flops_per_update`` (amortised over the update kinds, as in every trial summary) is
printed. FLOPs depend on shapes only, so a few updates give the trial's count; use this when the
counting rules changed after a study ran (the summaries hold the count of the code they ran).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from harness.datasets import load_dataset

from timing import DATASET, list_network, read_list, selected, timed_window, trainer_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("list", type=Path)
    ap.add_argument("--only", help="comma-separated trial names (default: every line with seed 0)")
    ap.add_argument("--reference", default="bp-s0")
    ap.add_argument("--updates", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = read_list(args.list)
    names = selected(rows, args.only, args.reference)
    data, network = load_dataset(DATASET), list_network(args.list)
    flops = {}
    for name in names:
        trainer = trainer_for(rows[name], data, network)
        timed_window(trainer, args.updates)
        flops[name] = trainer.meter.summary()["flops_per_update"]
    ref = flops[args.reference]["total"]
    print(f"{'trial':>18} {'total (M)':>10} {'forward':>9} {'credit':>9} {'feedback':>9} {'x ' + args.reference:>10}")
    for name, f in flops.items():
        print(f"{name:>18} {f['total'] / 1e6:10.2f} {f['forward'] / 1e6:9.2f} {f['credit'] / 1e6:9.2f} "
              f"{f['feedback'] / 1e6:9.2f} {f['total'] / ref:10.3f}")


if __name__ == "__main__":
    main()

"""Wall time per update of study configurations as ratios to a reference, interleaved in one process.

usage: .venv/bin/python sweeps/studies/timing.py [sweeps/studies/rfl-issue10.txt] [--only a,b,...]
           [--reference bp-s0] [--rounds 3] [--updates 400] [--out timing.csv]

Each configuration is a line of the study list (same algorithm, seed and --set values as
sweeps/studies/run.sh uses, training and algorithm knobs alike; Fashion-MNIST, the list's network from
its '#% NETWORK EPOCHS' line, default mlp-5x256-tanh). The dataset is loaded once;
every round builds each configuration's trainer afresh and times it as ``creditbench bench`` does
(``harness.bench.time_trainer``: warm-up, then a window of whole periods of `--updates` updates or more,
so a sleep–wake window holds exactly updates/S sleeps: the amortised mean, sleeps included).
Configurations run one after another within a round, so machine load hits all of them alike; the
figure is the median over rounds of each round's ratio to the reference, with the range.
Single-threaded (torch.set_num_threads(1)), as each trial of a sweep. Each round also times
``bare-pytorch-bp``: a plain PyTorch loop (nn.Sequential of the same shape, the reference's optimizer,
learning rate, weight decay and batch size, F.cross_entropy, loss.backward()) on the same tensors, the
yardstick for the harness's own overhead.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pandas as pd
import torch

from harness.bench import BenchConfig, bare_bp_seconds, make_trainer, time_trainer
from harness.datasets import load_dataset
from harness.errors import CreditbenchError
from harness.hparams import TrainConfig, split_overrides
from harness.network_presets import resolve_spec
from harness.registry import get_algorithm
from harness.train import Trainer

DATASET, NETWORK, EPOCHS = "fashion-mnist", "mlp-5x256-tanh", 10


def list_network(path: Path) -> str:
    """The network of a study list: its '#% NETWORK EPOCHS' line (as sweeps/studies/run.sh reads it)."""
    for line in path.read_text().splitlines():
        if line.startswith("#% "):
            return line.split()[1]
    return NETWORK


def read_list(path: Path) -> dict[str, tuple[str, int, dict[str, str]]]:
    rows = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, algo, seed, *sets = line.split()
        rows[name] = (algo, int(seed), dict(kv.split("=", 1) for kv in sets))
    return rows


def selected(rows: dict, only: str | None, reference: str) -> list[str]:
    """The trial names to measure: ``only`` (comma-separated) or every seed-0 line, the reference first if
    missing; unknown names end the run with a one-line error."""
    names = only.split(",") if only else [n for n, (_, seed, _) in rows.items() if seed == 0]
    if reference not in names:
        names.insert(0, reference)
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise SystemExit(f"error: unknown trial(s) {', '.join(unknown)}; the list has {', '.join(rows)}")
    return names


def trainer_for(row: tuple[str, int, dict[str, str]], data, network: str) -> Trainer:
    """A fresh trainer of one list line (algorithm, seed, --set values), its pre-training done, as the bench builds
    it (one thread, as each trial of a sweep)."""
    algo, seed, sets = row
    batch = int(sets.get("batch_size", TrainConfig.model_fields["batch_size"].default))
    cfg = BenchConfig(algos=[algo], network=network, dataset=DATASET, batch_size=batch, threads=1)
    return make_trainer(algo, cfg, data, seed=seed, sets={"epochs": str(EPOCHS), **sets})


BARE = "bare-pytorch-bp"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("list", nargs="?", default="sweeps/studies/rfl-issue10.txt", type=Path)
    ap.add_argument("--only", help="comma-separated trial names (default: every line with seed 0)")
    ap.add_argument("--reference", default="bp-s0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--out", type=Path, help="also write the per-round times as CSV")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = read_list(args.list)
    names = selected(rows, args.only, args.reference)
    for name in names:  # every line's knobs checked before anything is timed
        algo, _, sets = rows[name]
        split_overrides(sets, get_algorithm(algo).Params, algo)
    data = load_dataset(DATASET)
    network = list_network(args.list)
    spec = resolve_spec(network)
    ref_algo, _, ref_sets = rows[args.reference]
    ref_train = TrainConfig.build(split_overrides(ref_sets, get_algorithm(ref_algo).Params, ref_algo)[0])
    records = []
    names.append(BARE)
    for r in range(args.rounds):
        for name in names:
            if name == BARE:
                records.append({"round": r, "trial": name, "updates": args.updates,
                                "s_per_update": bare_bp_seconds(data, args.updates, spec, ref_train,
                                                                ref_train.batch_size)})
                print(f"round {r} {name:>18}: {records[-1]['s_per_update'] * 1e3:8.2f} ms/update", flush=True)
                continue
            timed = time_trainer(trainer_for(rows[name], data, network), args.updates)
            records.append({"round": r, "trial": name, "updates": timed["updates"], "s_per_update": timed["mean_s"]})
            print(f"round {r} {name:>18}: {timed['mean_s'] * 1e3:8.2f} ms/update over {timed['updates']}", flush=True)
    df = pd.DataFrame(records)
    if args.out:
        df.to_csv(args.out, index=False)
    ref = df[df.trial == args.reference].set_index("round").s_per_update
    print(f"\n{'trial':>18} {'ms/update':>10} {'x ' + args.reference + ' (median, range)':>30}")
    for name in names:
        t = df[df.trial == name].set_index("round").s_per_update
        ratios = (t / ref).tolist()
        print(f"{name:>18} {statistics.median(t) * 1e3:10.2f} "
              f"{statistics.median(ratios):12.2f} ({min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    try:
        main()
    except CreditbenchError as exc:  # a bad list line or knob: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None

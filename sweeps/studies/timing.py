"""Wall time per update of study configurations as ratios to a reference, interleaved in one process.

usage: .venv/bin/python sweeps/studies/timing.py [sweeps/studies/rfl-issue10.txt] [--only a,b,...]
           [--reference bp-s0] [--rounds 3] [--updates 400] [--out timing.csv]

Each configuration is a line of the study list (same algorithm, seed and --set values as
sweeps/studies/run.sh uses, training and algorithm knobs alike; Fashion-MNIST, the list's network from
its '#% NETWORK EPOCHS' line, default mlp-5x256-tanh). The dataset is loaded once;
every round builds each configuration's trainer afresh, runs one untimed update, then times a
window of whole periods: `--updates` updates, raised to a multiple of `sleep_every` for sleep–wake
configurations, so the window holds exactly updates/S sleeps (the amortised mean, sleeps included).
Configurations run one after another within a round, so machine load hits all of them alike; the
figure is the median over rounds of each round's ratio to the reference, with the range.
Single-threaded (torch.set_num_threads(1)), as each trial of a sweep. Each round also times
``bare-pytorch-bp``: a plain PyTorch loop (nn.Sequential of the same shape, the reference's optimizer,
learning rate, weight decay and batch size, F.cross_entropy, loss.backward()) on the same tensors, the
yardstick for the harness's own overhead.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from harness.bench import bare_bp_seconds
from harness.datasets import load_dataset
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
    """A fresh trainer of one list line (algorithm, seed, --set values), its pre-training done."""
    algo, seed, sets = row
    train, params = split_overrides(sets, get_algorithm(algo).Params, algo)
    trainer = Trainer({"algo": algo, "dataset": DATASET, "network": network, "seed": seed, "threads": 1,
                       "train": {"epochs": EPOCHS, **train}, "params": params}, data=data)
    trainer._pretrain()
    return trainer


def timed_window(trainer: Trainer, n: int) -> float:
    """Mean wall seconds per update over n updates (batching, the algorithm's step, the optimiser)."""
    data, bs, meter, algo, opt = trainer.data, trainer.tc.batch_size, trainer.meter, trainer.algo, trainer.optimizer
    perm = torch.randint(len(data.y_train), ((n + 1) * bs,), generator=trainer.data_gen)

    def update(i: int) -> None:
        x, y = data.train_batch(perm[i * bs:(i + 1) * bs], trainer.data_gen)
        with meter.update(algo.update_kind()):
            algo.step(x, y)
            opt.step()

    update(0)  # the first update (after the pretrain sleep), untimed
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        update(i)
    return (time.perf_counter() - t0) / n


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
            trainer, sets = trainer_for(rows[name], data, network), rows[name][2]
            period = int(sets.get("sleep_every", 1)) if sets.get("schedule") == "sleep_wake" else 1
            n = math.ceil(args.updates / period) * period
            records.append({"round": r, "trial": name, "updates": n, "s_per_update": timed_window(trainer, n)})
            print(f"round {r} {name:>18}: {records[-1]['s_per_update'] * 1e3:8.2f} ms/update over {n}", flush=True)
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
    main()

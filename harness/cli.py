"""The ``creditbench`` command: list, train, sweep, report."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import CreditbenchError

RESULTS = Path("results")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _print_params(params, indent: str) -> None:
    for row in params.describe():
        bounds = f", {row['bounds']}" if row["bounds"] else ""
        search = f"  search={row['search']}" if row["search"] else ""
        print(f"{indent}{row['name']} = {row['default']!r} ({row['type']}{bounds}): {row['doc']}{search}")


def cmd_list(args) -> int:
    from harness.hparams import TrainConfig
    from harness.registry import ALGORITHMS, DATASETS, NETWORKS, algorithm_origin, describe_origin, load_plugins

    load_plugins()
    print("algorithms:")
    for name in ALGORITHMS:
        cls = ALGORITHMS.get(name)
        caps = cls.capabilities.to_dict()
        print(f"  {name} (v{cls.version}): {cls.description}")
        print(f"      reference: {cls.reference}")
        print(f"      code: {describe_origin(algorithm_origin(cls))}")
        print(f"      capabilities: layers={','.join(caps['layers'])} activations={caps['activations'] if isinstance(caps['activations'], str) else ','.join(caps['activations'])}"
              f" needs_invertible={caps['needs_invertible']}")
        _print_params(cls.Params, "      ")
    print("training hyperparameters (shared by every algorithm):")
    _print_params(TrainConfig, "  ")
    print("datasets:")
    for name in DATASETS:
        spec = DATASETS.get(name)
        print(f"  {name}: {spec.description}; input {spec.input_shape}, {spec.num_classes} classes, default network {spec.default_network}")
    print("networks (or any mlp-<depth>x<width>-<activation>, activation in tanh, leaky-relu, relu, linear):")
    for name in NETWORKS:
        print(f"  {name}: {NETWORKS.get(name).description}")
    return 0


def cmd_train(args) -> int:
    from harness.hparams import TrainConfig, parse_assignments, split_overrides
    from harness.registry import get_algorithm
    from harness.store import check_writable, to_json
    from harness.train import Trainer, resolve_device

    resolve_device(args.device)  # before any data is loaded
    check_writable(Path(args.out) if args.out else RESULTS / "train", "--out")
    algo_cls = get_algorithm(args.algo)
    train, params = split_overrides(parse_assignments(args.set), algo_cls.Params, args.algo)
    if args.epochs is not None:
        train["epochs"] = args.epochs
    TrainConfig.build(train, owner="training")
    cfg = {"algo": args.algo, "dataset": args.dataset, "network": args.network, "seed": args.seed,
           "train": train, "params": params, "data_dir": args.data_dir, "device": args.device,
           "threads": args.threads}
    trainer = Trainer(cfg)
    out = Path(args.out) if args.out else RESULTS / "train" / (
        f"{args.algo}-{args.dataset}-{trainer.cfg.network}-seed{args.seed}-{utc_stamp()}")
    summary = trainer.run(out)
    print(f"run directory: {out}", file=sys.stderr)
    print(to_json(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="creditbench", description="Benchmark credit-assignment algorithms.")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list algorithms, datasets and networks").set_defaults(func=cmd_list)

    t = sub.add_parser("train", help="run one trial")
    t.add_argument("--algo", required=True, help="algorithm id (see `creditbench list`)")
    t.add_argument("--dataset", default="digits")
    t.add_argument("--network", default=None, help="preset or mlp-<depth>x<width>-<activation> (default: dataset's)")
    t.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="training or algorithm hyperparameter")
    t.add_argument("--out", default=None, help="run directory (resumes if it holds a checkpoint)")
    t.add_argument("--data-dir", default=None, help="dataset folder (default: $CREDITBENCH_DATA_DIR or ~/.cache/creditbench)")
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1, as each trial of a sweep with one CPU per trial)")
    t.set_defaults(func=cmd_train)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


_EXTRA_COMMANDS: list = []


def _register_report(sub) -> None:
    from harness.report import add_parser

    add_parser(sub)


_EXTRA_COMMANDS.append(_register_report)

def _sweep_command(sub) -> None:
    from harness.sweep import add_sweep_parser

    add_sweep_parser(sub)


_EXTRA_COMMANDS.append(_sweep_command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CreditbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

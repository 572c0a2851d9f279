"""The ``creditbench`` command: list, train, sweep, report, new-algorithm. All argument parsing is here.

``list``, ``train`` and ``new-algorithm`` never import the sweep and report modules (Ray, pandas,
SciPy, matplotlib): the parser registers ``sweep`` and ``report`` only when one of them, or the
top-level ``--help``, is asked for, and imports their modules only when the command runs.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from pathlib import Path

from harness.errors import ConfigError, CreditbenchError

RESULTS = Path("results")


# ------------------------------------------------------------------------------------- parser
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the help already states it; flags (whose
    default is "off") and positional arguments are left as they are."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is argparse.SUPPRESS or action.required \
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text
        shown = "none" if action.default is None else "%(default)s"
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class Parser(argparse.ArgumentParser):
    """One-line ``error: …`` (exit status 2, as every other bad input) instead of argparse's usage dump."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


class DeviceChoices:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: argparse accepts any container as ``choices``."""

    shown = ("auto", "cpu", "cuda", "cuda:N")
    pattern = re.compile(r"auto|cpu|cuda(:\d+)?")

    def __contains__(self, value) -> bool:
        return isinstance(value, str) and self.pattern.fullmatch(value) is not None

    def __iter__(self):
        return iter(self.shown)


def dataset_names() -> list[str]:
    from harness.datasets import DATASETS

    return DATASETS.names()


def registered_dataset(name: str) -> str:
    """argparse ``type``: a registered dataset id, else the registry's error with its "did you mean"."""
    from harness.datasets import DATASETS

    DATASETS.get(name)
    return name


def algorithm_names() -> list[str]:
    from harness.registry import algorithm_names as names

    return names()


def registered_algorithm(name: str) -> str:
    """argparse ``type``: a registered algorithm id, else the registry's error with its "did you mean"."""
    from harness.registry import algorithm_names as names
    from harness.registry import get_algorithm

    if name not in names():
        get_algorithm(name)  # raises the registry's error
    return name


# ------------------------------------------------------------------------------------- list
def _matches(name: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def cmd_list(args) -> int:
    """Algorithms from their specs (``registry.algorithm_spec``: no plugin imported while the registry's
    index is current), datasets and networks from their own tables: no torch is imported."""
    from harness.datasets import DATASETS
    from harness.hparams import TrainConfig
    from harness.network_presets import ACTIVATION_NAMES, NETWORKS
    from harness.listing import algorithm_lines, params_lines, table_lines
    from harness.registry import algorithm_names, algorithm_spec

    patterns = args.patterns
    all_algos = algorithm_names()
    algos = [n for n in all_algos if _matches(n, patterns)]
    datasets = [n for n in DATASETS.names() if _matches(n, patterns)]
    networks = [n for n in NETWORKS.names() if _matches(n, patterns)]
    training = not patterns or any(fnmatch.fnmatchcase("training", p) for p in patterns)
    if patterns and not (algos or datasets or networks or training):
        from harness.errors import UnknownNameError

        raise UnknownNameError("algorithm, dataset or network (pattern)", " ".join(patterns),
                               all_algos + DATASETS.names() + NETWORKS.names())
    specs = [algorithm_spec(n) for n in algos]
    if args.json:
        import json

        payload = {
            "algorithms": specs,
            "training": TrainConfig.describe() if training else [],
            "datasets": [{"name": n, **_dataset_dict(DATASETS.get(n))} for n in datasets],
            "networks": [{"name": n, "description": NETWORKS.get(n).description} for n in networks],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return 0
    lines: list[str] = []
    if algos:
        lines.append("algorithms:")
    for name, spec in zip(algos, specs):
        lines += algorithm_lines(name, spec) + [""]
    if training:
        lines.append("training hyperparameters (shared by every algorithm):")
        lines += params_lines(TrainConfig.describe(), "  ")
        lines.append("")
    if datasets:
        lines.append("datasets:")
        rows = [["dataset", "input", "classes", "default network", "description"]]
        for n in datasets:
            d = _dataset_dict(DATASETS.get(n))
            rows.append([n, "x".join(map(str, d["input_shape"])), str(d["num_classes"]), d["default_network"],
                         d["description"]])
        lines += table_lines(rows, "  ") + [""]
    if networks:
        lines.append(f"networks (or any mlp-<depth>x<width>-<activation>, activation in {', '.join(ACTIVATION_NAMES)}):")
        lines += table_lines([["network", "description"]] + [[n, NETWORKS.get(n).description] for n in networks], "  ")
    print("\n".join(lines).rstrip())
    return 0


def _dataset_dict(spec) -> dict:
    return {"description": spec.description, "input_shape": list(spec.input_shape), "num_classes": spec.num_classes,
            "default_network": spec.default_network}


def cmd_new_algorithm(args) -> int:
    from harness.scaffold import new_algorithm

    algo_path, test_path = new_algorithm(args.name, Path(args.dir), Path(args.tests_dir))
    print(f"wrote {algo_path}\nwrote {test_path}\n"
          f"next: put your rule where {algo_path.name} says TODO, replace the oracle in {test_path.name}, then\n"
          f"  python -m pytest -q {test_path} tests/test_algorithms_contract.py -k {args.name}\n"
          f"  creditbench train --algo {args.name} --dataset digits\n"
          "(docs/plugins.md explains the network API and the contract)")
    return 0


def cmd_bench(args) -> int:
    import os

    from harness.bench import BenchConfig, bench_text, run_bench
    from harness.errors import ConfigError
    from harness.hparams import TrainConfig, parse_assignments
    from harness.registry import algorithm_names, get_algorithm
    from harness.store import to_json

    algos = algorithm_names() if args.algo == "all" else [a.strip() for a in args.algo.split(",") if a.strip()]
    sets = parse_assignments(args.set)
    knobs = set(TrainConfig.model_fields) | {k for a in algos for k in get_algorithm(a).Params.model_fields}
    unknown = sorted(set(sets) - knobs)
    if unknown:
        raise ConfigError(f"--set {', '.join(unknown)}: not a knob of these algorithms or of training; "
                          f"valid: {', '.join(sorted(knobs))}")
    cfg = BenchConfig(algos=algos, network=args.network, dataset=args.dataset, batch_size=args.batch_size,
                      updates=args.updates, rounds=args.rounds, device=args.device,
                      threads=args.threads or os.cpu_count() or 1, sets=sets, profile=args.profile)
    if args.scaling and args.profile:
        raise ConfigError("--profile splits one network's bench; it does not apply to --scaling")
    if args.scaling:
        from harness.bench import run_scaling, scaling_figure, scaling_table

        def ints(text: str, flag: str) -> list[int]:
            try:
                values = [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                values = []
            if not values or min(values) < 1:
                raise ConfigError(f"{flag} must be a comma list of positive integers, got '{text}'")
            return values

        scaling = run_scaling(cfg, ints(args.widths, "--widths"), ints(args.depths, "--depths"), log=sys.stderr)
        scaling_figure(scaling, args.scaling)
        print(to_json(scaling) if args.json else scaling_table(scaling), end="" if not args.json else "\n")
        return 0
    if args.readme:
        from harness.bench import with_readme_block

        readme = Path(args.readme)
        with_readme_block(readme.read_text(), "")  # the markers are checked before the run
    result = run_bench(cfg, log=sys.stderr)
    if args.readme:
        from harness.store import write_text

        write_text(readme, with_readme_block(readme.read_text(), bench_text(result, markdown=True)))
    print(to_json(result) if args.json else bench_text(result, markdown=args.markdown), end="" if not args.json else "\n")
    return 0


def cmd_train(args) -> int:
    from harness.hparams import TrainConfig, parse_assignments, split_overrides
    from harness.provenance import utc_stamp
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``command`` in LIGHT_COMMANDS, the heavy subcommands are left out."""
    from harness.scaffold import ALGORITHMS_DIR, TESTS_DIR

    p = Parser(prog="creditbench", description="Benchmark credit-assignment algorithms.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("list", help="list algorithms, training hyperparameters, datasets and networks",
                        description="List what is registered. PATTERN filters by id (shell wildcards: 'r*', "
                                    "'mlp-*'; 'training' selects the shared training hyperparameters).")
    ls.add_argument("patterns", nargs="*", metavar="PATTERN", help="ids or wildcard patterns (default: everything)")
    ls.add_argument("--json", action="store_true", help="one JSON object (algorithm specs, hyperparameters, ...)")
    ls.set_defaults(func=cmd_list)

    t = sub.add_parser("train", help="run one trial")
    t.add_argument("--algo", required=True, type=registered_algorithm, choices=algorithm_names(),
                   help="algorithm id (see `creditbench list`)")
    t.add_argument("--dataset", default="digits", type=registered_dataset, choices=dataset_names(), help="dataset")
    t.add_argument("--network", default=None, help="preset or mlp-<depth>x<width>-<activation> (default: dataset's)")
    t.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default: the training hyperparameter epochs, 100)")
    t.add_argument("--seed", type=int, default=0, help="trial seed: initialisation, data order, the algorithm's noise")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="training or algorithm hyperparameter (default: none; see `creditbench list`)")
    t.add_argument("--out", default=None, help="run directory, resumed if it holds a checkpoint "
                                               "(default: results/train/<algo>-<dataset>-<network>-seed<seed>-<UTC time>)")
    t.add_argument("--data-dir", default=None, help="dataset folder (default: $CREDITBENCH_DATA_DIR or ~/.cache/creditbench)")
    t.add_argument("--device", default="auto", choices=DeviceChoices(), help="auto: CUDA when present")
    t.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (as each trial of a sweep with one CPU per trial)")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("bench", help="time and count FLOPs of algorithms' updates on one network, in one process",
                       description="Interleaved rounds of every algorithm's training path on the same data, with a "
                                   "bare PyTorch bp loop and the machine's matmul throughput as floors; "
                                   "see docs/performance.md.")
    b.add_argument("--algo", default="bp", help=f"algorithm ids, comma-separated, or 'all' (bp, the baseline, is "
                                               f"always run; default: bp)")
    b.add_argument("--network", default="mlp-5x256-tanh",
                   help="preset or mlp-<depth>x<width>-<activation> (default: mlp-5x256-tanh)")
    b.add_argument("--dataset", default="fashion-mnist", type=registered_dataset, choices=dataset_names(),
                   help="dataset (default: fashion-mnist)")
    b.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    b.add_argument("--updates", type=int, default=200, help="timed updates per algorithm and round (raised to whole "
                                                            "schedule periods; default: 200)")
    b.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    b.add_argument("--device", default="cpu", choices=DeviceChoices(), help="auto: CUDA when present (default: cpu)")
    b.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: every core)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="training or algorithm hyperparameter, applied to each algorithm that has it (default: none)")
    b.add_argument("--profile", action="store_true",
                   help="also split each algorithm's time per update by kind of work (matmul, transcendental, random, "
                        "optimizer, other ops, rest) with torch.profiler")
    b.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    b.add_argument("--markdown", action="store_true", help="the table as markdown (the README's performance section)")
    b.add_argument("--readme", metavar="FILE", default=None,
                   help="also write the markdown table into FILE between its bench markers (README.md: `make bench`; "
                        "default: none)")
    b.add_argument("--scaling", metavar="FIGURE", default=None,
                   help="instead: the bench over --widths × --depths of MLPs with --network's activation; writes a "
                        "log–log figure FIGURE (.png, with .svg and .pdf) and prints a markdown table (default: none)")
    b.add_argument("--widths", default="256,1024", help="MLP widths for --scaling (default: 256,1024)")
    b.add_argument("--depths", default="2,4,8", help="MLP depths for --scaling (default: 2,4,8)")
    b.set_defaults(func=cmd_bench)

    n = sub.add_parser("new-algorithm", help="write a skeleton algorithm plugin and its oracle test",
                       description="Write algorithms/NAME.py (bp's rule written out, with TODOs where your rule "
                                   "goes) and tests/test_NAME.py (its update equals an oracle); see docs/plugins.md.")
    n.add_argument("name", metavar="NAME", help="algorithm id and module name (letters, digits, '_')")
    n.add_argument("--dir", default=str(ALGORITHMS_DIR), help="where to write NAME.py (default: algorithms/ of this checkout)")
    n.add_argument("--tests-dir", default=str(TESTS_DIR), help="where to write test_NAME.py (default: tests/ of this checkout)")
    n.set_defaults(func=cmd_new_algorithm)

    for name, register in _EXTRA_COMMANDS.items():
        if command is None or command == name or command not in LIGHT_COMMANDS:
            register(sub)
    return p


# ------------------------------------------------------------------------------------- sweep
def _int_or_empty(value: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{value}'") from None


def add_sweep_parser(sub) -> None:
    from harness.spec import ALL

    s = sub.add_parser("sweep", help="run a Ray Tune sweep (search phase, then final phase over seeds)",
                       description="Run a sweep spec (sweeps/*.yaml); the last line printed is the results directory.")
    s.add_argument("--spec", default=None, help="spec file or name in sweeps/ (default: the spec matching "
                                                "--dataset, else sweeps/default.yaml)")
    s.add_argument("--algo", default=None, help=f"algorithm id, comma list, or '{ALL}' (default: the spec's list)")
    s.add_argument("--dataset", default=None, type=registered_dataset, choices=dataset_names(),
                   help="dataset (default: the spec's)")
    s.add_argument("--network", default=None, help="preset or mlp-<depth>x<width>-<activation> (default: the spec's)")
    s.add_argument("--seeds", type=_int_or_empty, default=None, help="number of final-phase seeds (default: the spec's)")
    s.add_argument("--trials", type=_int_or_empty, default=None,
                   help="search configurations per algorithm (default: the spec's)")
    s.add_argument("--epochs", type=_int_or_empty, default=None,
                   help="maximum epochs (final; caps search) (default: the spec's)")
    s.add_argument("--address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS or a local Ray)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="hyperparameter held fixed for every algorithm (e.g. with --final-only) (default: none)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--search-only", action="store_true", help="only the search phase")
    mode.add_argument("--final-only", action="store_true",
                      help="only the final phase, with the spec's fixed values and --set (no search)")
    s.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted sweep in DIR (default: a new sweep)")
    s.add_argument("--results", default="results", help="parent folder of the results directory")
    s.add_argument("--data-dir", default=None, help="dataset folder (default: $CREDITBENCH_DATA_DIR or ~/.cache/creditbench)")
    s.add_argument("--num-cpus", type=_int_or_empty, default=None, help="CPUs of the local Ray instance (default: the spec's, else every CPU)")
    s.add_argument("--max-concurrent", type=_int_or_empty, default=None, help="trials running at once (default: the spec's)")
    s.add_argument("--name", default=None, help="results directory prefix (default: the spec's name)")
    s.set_defaults(func=cmd_sweep)


# what --resume cannot honour: the plan (algorithms, configurations, seeds, budgets) is fixed in DIR and
# Ray Tune restores each stage's trials with the configuration they were planned with
RESUME_FIXED = {"spec": "--spec", "algo": "--algo", "dataset": "--dataset", "network": "--network",
                "seeds": "--seeds", "trials": "--trials", "epochs": "--epochs", "set": "--set",
                "search_only": "--search-only", "final_only": "--final-only", "data_dir": "--data-dir",
                "max_concurrent": "--max-concurrent", "name": "--name"}


def check_resume_options(args) -> None:
    """Refuse (one line) options that ``--resume`` would otherwise silently ignore."""
    given = [flag for key, flag in RESUME_FIXED.items() if getattr(args, key, None) not in (None, False, [], "")]
    if args.results != "results":
        given.append("--results")
    if given:
        raise ConfigError(f"--resume {args.resume} continues the sweep exactly as planned in its plan.json and "
                          f"spec.yaml; {', '.join(given)} cannot change it (start a new sweep instead); "
                          "with --resume only --address and --num-cpus apply")


def cmd_sweep(args) -> int:
    from harness.hparams import parse_assignments
    from harness.planning import SweepOptions
    from harness.sweep import new_sweep, resume_sweep

    argv = sys.argv[:]
    if args.resume:
        check_resume_options(args)
        out_dir, code = resume_sweep(Path(args.resume), address=args.address, num_cpus=args.num_cpus, argv=argv,
                                     on_finished=_print_stage_table)
    else:
        opts = SweepOptions(
            spec=args.spec or None, algo=args.algo or None, dataset=args.dataset or None,
            network=args.network or None, seeds=args.seeds, trials=args.trials, epochs=args.epochs,
            address=args.address or None, search_only=args.search_only, final_only=args.final_only,
            sets=parse_assignments(args.set), results_root=Path(args.results), data_dir=args.data_dir,
            num_cpus=args.num_cpus, max_concurrent=args.max_concurrent, name=args.name)
        out_dir, code = new_sweep(opts, argv=argv, on_finished=_print_stage_table)
    print(out_dir)
    return code


def _print_stage_table(out_dir: Path) -> None:
    """The short table a finished sweep ends with (stderr): test accuracy per algorithm."""
    import pandas as pd

    from harness.report_tables import stage_table_text
    from harness.schema import TRIALS_CSV

    text = stage_table_text(pd.read_csv(out_dir / TRIALS_CSV))
    if text:
        print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- report
def add_report_parser(sub) -> None:
    from harness.schema import DEFAULT_BASELINE

    r = sub.add_parser("report", help="tables and figures from one or more sweep results directories")
    r.add_argument("dirs", nargs="*", metavar="DIR",
                   help="results directories (default: the newest under results/ with a trials.csv)")
    r.add_argument("--out", default=None, help="where to write report.md, figures/, tables/ "
                                               "(default: the results directory; required with several)")
    r.add_argument("--target", default="95%",
                   help="accuracy target for updates/FLOPs-to-target: a percentage of the baseline's mean test "
                        "accuracy (e.g. 95%%, the default) or an absolute accuracy (e.g. 0.9)")
    r.add_argument("--target-metric", default="val_acc", choices=("val_acc", "test_acc"),
                   help="which epochs.csv curve must reach the target (default: val_acc)")
    r.add_argument("--baseline", "--reference", dest="baseline", default=DEFAULT_BASELINE,
                   help="algorithm the ratios and differences are taken against (--reference: the former name)")
    r.add_argument("--no-figures", action="store_true", help="write the tables, report.md and report.html without "
                                                             "figures (faster)")
    r.add_argument("--published", default=None, metavar="CSV|none",
                   help="published results shown beside measured ones (default: the table shipped with creditbench, "
                        "harness/published.csv; 'none': show none)")
    r.add_argument("--allow-incomplete", action="store_true",
                   help="report damaged or incomplete results (missing planned trials, truncated tables, "
                        "non-numeric cells) with the damage listed at the top, instead of refusing them")
    r.add_argument("--results-root", default="results",
                   help="where to look for the newest results directory when no DIR is given (default: results)")
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    import shlex

    from harness.report import ReportOptions, build_report
    from harness.report_data import newest_results_dir
    from harness.report_published import PUBLISHED_CSV
    from harness.report_tables import markdown_table, summary_display

    dirs = args.dirs or [newest_results_dir(Path(args.results_root))]
    command = "creditbench report " + " ".join(shlex.quote(str(a)) for a in sys.argv[2:]) if len(sys.argv) > 1 else None
    published = {None: PUBLISHED_CSV, "none": None}.get(args.published, args.published)
    opts = ReportOptions(baseline=args.baseline, target=args.target, target_metric=args.target_metric,
                         command=command, figures=not args.no_figures, allow_incomplete=args.allow_incomplete,
                         published=published)
    out = build_report(dirs, args.out, opts)
    for problem in out["problems"]:
        print(f"warning: incomplete or damaged results: {problem}", file=sys.stderr)
    summary = out["summary"]
    for (dataset, network), s in (summary.groupby(["dataset", "network"]) if not summary.empty else []):
        print(f"\n{dataset} / {network}")
        print(markdown_table(summary_display(s)))
    print("figures:")
    for p in out["figures"]:
        print(f"  {p}")
    print(f"report: {out['report']} · {out['html']}", file=sys.stderr)
    return 0


# registered only when used: their parsers list datasets and read sweep spec names
_EXTRA_COMMANDS = {"report": add_report_parser, "sweep": add_sweep_parser}
LIGHT_COMMANDS = ("list", "train", "new-algorithm", "bench")


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(_command(argv)).parse_args(argv)
        return args.func(args)
    except CreditbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `creditbench list | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

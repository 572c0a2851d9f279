"""``creditbench bench``: wall time and FLOPs per update of algorithms on one network, in one process.

Every algorithm runs the training path itself (:meth:`harness.train.Trainer.train_batches`: batching, the
algorithm's step inside the cost meter, the optimizer), on the same data tensors, rounds interleaved:

    for each round: for each algorithm: a fresh trainer (same seed), its pre-training, warm-up updates
    (the meter's untimed warm-up and one FLOP-counted update of every kind), then a timed window.

* **mean** seconds per update: the window's wall time / its updates. The window holds whole schedule periods
  (rfl's sleep–wake: a multiple of ``sleep_every``), so sleeps and inner loops are amortised as in a trial.
* **median**: of the window's single updates, as the cost meter times them (CUDA events on a GPU).
* **FLOPs per update by phase**: the meter's count (amortised over the update mix; pre-training and between-epoch
  work are not in the window and not in these figures); **GFLOP/s** = FLOPs / mean time.
* ratios to the baseline (bp) per round; the table gives the median over rounds and the range.
* two floors, timed in the same rounds: a **bare PyTorch loop** of bp (``torch.nn`` layers of the same shapes, the
  same optimizer, ``F.cross_entropy``, ``loss.backward()``) on the same tensors, and the **matmul throughput** of
  the machine for the network's products (forward, input gradient and weight gradient of every linear layer at
  this batch size; convolutional layers as their own forward and backward), in GFLOP/s.

CPU threads: ``threads`` (default: every core), set for the whole run and recorded. On CUDA the data are moved to
the device once; the window is closed by one synchronisation.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from harness.datasets import load_dataset
from harness.errors import ConfigError
from harness.hparams import TrainConfig, split_overrides
from harness.listing import aligned_table
from harness.network_presets import CNNSpec, resolve_spec
from harness.registry import get_algorithm
from harness.schema import COST_PHASES
from harness.train import Trainer, resolve_device

BARE = "bare-pytorch-bp"
MATMUL = "matmul-floor"


@dataclass
class BenchConfig:
    algos: list[str]
    network: str = "mlp-5x256-tanh"
    dataset: str = "fashion-mnist"
    batch_size: int = 128
    updates: int = 200
    rounds: int = 3
    device: str = "cpu"
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    baseline: str = "bp"
    profile: bool = False  # also split each algorithm's time by kind of work (harness.bench_profile)
    sets: dict[str, str] = field(default_factory=dict)  # training and algorithm knobs, applied where they act

    def check(self) -> None:
        for name, value, low in (("--updates", self.updates, 1), ("--rounds", self.rounds, 1),
                                 ("--batch-size", self.batch_size, 1), ("--threads", self.threads, 1)):
            if value < low:
                raise ConfigError(f"{name} must be ≥ {low}, got {value}")


# ------------------------------------------------------------------------------------------ trainers
def make_trainer(algo: str, cfg: BenchConfig, data, seed: int = 0, sets: dict | None = None) -> Trainer:
    """A fresh trainer of ``algo`` on the bench's network and data, its pre-training done. ``sets``: training and
    algorithm knobs (``--set``), each given to the algorithm only where it is one of its knobs."""
    params_cls = get_algorithm(algo).Params
    given = dict(cfg.sets if sets is None else sets)
    own = {k: v for k, v in given.items() if k in params_cls.model_fields or k in TrainConfig.model_fields}
    train, params = split_overrides(own, params_cls, algo)
    trainer = Trainer({"algo": algo, "dataset": cfg.dataset, "network": cfg.network, "seed": seed,
                       "device": str(data.x_train.device), "threads": cfg.threads,
                       "train": {**train, "batch_size": cfg.batch_size}, "params": params}, data=data)
    trainer._pretrain()
    return trainer


def schedule_period(trainer: Trainer) -> int:
    """Updates in one period of the algorithm's update mix (1 unless some kind is rarer, e.g. a sleep every S)."""
    weights = [w for w in trainer.algo.update_mix().values() if w > 0]
    return max(1, round(sum(weights) / min(weights)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(trainer: Trainer, updates: int) -> tuple[torch.Tensor, int]:
    """The meter's warm-up and one FLOP-counted update of every kind, in whole periods; returns the example indices
    of a window of at least ``updates`` updates in whole periods, and its length."""
    period = schedule_period(trainer)
    n = math.ceil(updates / period) * period
    warm = math.ceil((trainer.meter.warmup + 1) / period) * period + period  # every kind counted, then timed once
    n_train, bs = len(trainer.data.y_train), trainer.tc.batch_size
    perm = torch.randint(n_train, ((warm + n) * bs,), generator=trainer.data_gen, device=trainer.device)
    trainer.train_batches(perm[:warm * bs], warm)
    return perm[warm * bs:], n


def time_trainer(trainer: Trainer, updates: int) -> dict:
    """Warm up, then time a window of whole periods: mean and median seconds per update, FLOPs by phase."""
    window_perm, n = warm_up(trainer, updates)
    trainer.meter.summary()  # resolves CUDA timings so far
    before = {k: len(v) for k, v in trainer.meter.step_ns.items()}
    _sync(trainer.device)
    t0 = time.perf_counter()
    trainer.train_batches(window_perm, n)
    _sync(trainer.device)
    seconds = (time.perf_counter() - t0) / n
    trainer.meter.summary()
    window = [t for k, v in trainer.meter.step_ns.items() for t in v[before.get(k, 0):]]
    flops = trainer.meter.flops_by_phase or {}
    return {"updates": n, "mean_s": seconds, "median_s": statistics.median(window) / 1e9 if window else math.nan,
            "flops": {p: float(flops.get(p, math.nan)) for p in COST_PHASES}}


# ------------------------------------------------------------------------------------------ floors
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "leaky-relu": torch.nn.LeakyReLU,
               "linear": torch.nn.Identity}


def bare_network(spec, data) -> torch.nn.Sequential:
    """The network of ``spec`` (an MLP or CNN preset) as torch.nn modules, no harness code."""
    act = ACTIVATIONS[spec.activation]
    layers: list[torch.nn.Module] = []
    if isinstance(spec, CNNSpec):
        c = data.x_train.shape[1]
        for conv in spec.convs:
            layers += [torch.nn.Conv2d(c, conv.channels, conv.kernel, conv.stride, conv.padding), act()]
            layers += [torch.nn.MaxPool2d(conv.pool)] if conv.pool > 1 else []
            c = conv.channels
        hidden = spec.hidden
    else:
        hidden = (spec.width,) * spec.depth
    layers.append(torch.nn.Flatten())
    for width in hidden:
        layers += [torch.nn.LazyLinear(width), act()]
    net = torch.nn.Sequential(*layers, torch.nn.LazyLinear(data.num_classes)).to(data.x_train.device)
    net(data.x_train[:2])  # materialise the lazy layers
    return net


def bare_optimizer(net: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                           momentum=train.momentum if train.optimizer == "momentum" else 0.0)


def bare_bp_seconds(data, updates: int, spec, train: TrainConfig, batch: int) -> float:
    """Mean wall seconds per update of a bare PyTorch bp loop (no harness code), after 10 warm-up updates."""
    torch.manual_seed(0)
    net = bare_network(spec, data)
    opt = bare_optimizer(net, train)
    perm = torch.randint(len(data.y_train), ((updates + 10) * batch,), device=data.x_train.device)

    def update(i: int) -> None:
        idx = perm[i * batch:(i + 1) * batch]
        loss = torch.nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(10):
        update(i)
    _sync(data.x_train.device)
    t0 = time.perf_counter()
    for i in range(10, updates + 10):
        update(i)
    _sync(data.x_train.device)
    return (time.perf_counter() - t0) / updates


def matmul_gflops(data, spec, batch: int, repeats: int = 20) -> float:
    """The machine's throughput on the network's own products, GFLOP/s: for every linear layer (in → out) the
    forward B×in·in×out, the input gradient B×out·out×in (not for the first layer) and the weight gradient
    out×B·B×in; convolutional layers by their forward and backward through autograd (FLOPs from the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = bare_network(spec, data)
    device = data.x_train.device
    x = data.x_train[:batch]
    h = x
    work: list = []  # callables, each one product or one conv forward+backward
    first = True
    for module in net:
        if isinstance(module, torch.nn.Linear):
            a = h.flatten(1).detach().clone()
            w = module.weight.detach().clone()
            d = torch.randn(batch, w.shape[0], device=device)
            work.append(lambda a=a, w=w: a @ w.t())
            if not first:
                work.append(lambda d=d, w=w: d @ w)
            work.append(lambda d=d, a=a: d.t() @ a)
            first = False
        elif isinstance(module, torch.nn.Conv2d):
            a = h.detach().clone().requires_grad_(not first)
            conv = module

            def conv_step(a=a, conv=conv):
                out = conv(a)
                out.backward(torch.ones_like(out))
            work.append(conv_step)
            first = False
        h = module(h).detach()
    counter = FlopCounterMode(display=False)
    with counter:
        for f in work:
            f()
    flops = counter.get_total_flops()
    for f in work:  # warm-up
        f()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for f in work:
            f()
    _sync(device)
    return flops * repeats / (time.perf_counter() - t0) / 1e9


# ------------------------------------------------------------------------------------------ the run
def run_bench(cfg: BenchConfig, log=None) -> dict:
    """Interleaved rounds over ``cfg.algos`` (the baseline first), the bare loop and the matmul floor."""
    cfg.check()
    algos = [cfg.baseline] + [a for a in dict.fromkeys(cfg.algos) if a != cfg.baseline]
    for a in algos:
        get_algorithm(a)  # unknown names: one line naming the valid ones
    spec = resolve_spec(cfg.network)
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        data = load_dataset(cfg.dataset, device=device)
        base_train = TrainConfig.build({k: v for k, v in cfg.sets.items() if k in TrainConfig.model_fields})
        records: list[dict] = []
        for r in range(cfg.rounds):
            for algo in algos:
                trainer = make_trainer(algo, cfg, data)
                rec = {"round": r, "name": algo, **time_trainer(trainer, cfg.updates)}
                records.append(rec)
                if log:
                    print(f"round {r} {algo:>16}: {rec['mean_s'] * 1e3:8.2f} ms/update (median "
                          f"{rec['median_s'] * 1e3:.2f}) over {rec['updates']}", file=log, flush=True)
            bare = bare_bp_seconds(data, cfg.updates, spec, base_train, cfg.batch_size)
            records.append({"round": r, "name": BARE, "updates": cfg.updates, "mean_s": bare, "median_s": math.nan,
                            "flops": {}})
            records.append({"round": r, "name": MATMUL, "gflops": matmul_gflops(data, spec, cfg.batch_size)})
            if log:
                print(f"round {r} {BARE:>16}: {bare * 1e3:8.2f} ms/update; matmul floor "
                      f"{records[-1]['gflops']:.1f} GFLOP/s", file=log, flush=True)
        profiles = {algo: profile_algorithm(algo, cfg, data, log) for algo in algos} if cfg.profile else {}
    finally:
        torch.set_num_threads(threads)
    result = summarise(cfg, algos, records)
    for row in result["rows"]:
        if row["name"] in profiles:
            row["profile"] = profiles[row["name"]]
    return result


def profile_algorithm(algo: str, cfg: BenchConfig, data, log=None) -> dict[str, float]:
    """Seconds per update by kind of work (:mod:`harness.bench_profile`): a fresh trainer, the same warm-up, one
    profiled window of ``cfg.updates`` updates (whole periods). On CUDA the window is closed by a synchronisation."""
    from harness.bench_profile import profile_window

    trainer = make_trainer(algo, cfg, data)
    perm, n = warm_up(trainer, cfg.updates)
    _sync(trainer.device)
    split = profile_window(trainer, perm, n)
    if log:
        print(f"profile {algo:>16}: " + ", ".join(f"{k} {s * 1e3:.2f}" for k, s in split.items()) + " ms/update",
              file=log, flush=True)
    return split


def _range(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(cfg: BenchConfig, algos: list[str], records: list[dict]) -> dict:
    """Per algorithm (and the bare loop): medians over rounds, and per-round ratios to the baseline."""
    from harness.provenance import cpu_model

    by = lambda name: [r for r in records if r["name"] == name]
    base = {r["round"]: r for r in by(cfg.baseline)}
    rows = []
    for name in [*algos, BARE]:
        recs = by(name)
        mean = [r["mean_s"] for r in recs]
        row = {"name": name, "rounds": len(recs), "updates": recs[0]["updates"],
               "mean_s": statistics.median(mean), "median_s": statistics.median([r["median_s"] for r in recs]),
               "time_ratio": _range([r["mean_s"] / base[r["round"]]["mean_s"] for r in recs])}
        if name != BARE:
            flops = recs[0]["flops"]
            total = sum(flops.values())
            base_flops = sum(base[0]["flops"].values())
            row.update(flops_by_phase=flops, flops=total, gflops_per_s=total / row["mean_s"] / 1e9,
                       flops_ratio=total / base_flops)
            row["overhead"] = row["time_ratio"]["median"] / row["flops_ratio"]
        rows.append(row)
    floor = [r["gflops"] for r in records if r["name"] == MATMUL]
    return {"config": asdict(cfg), "machine": {"cpu": cpu_model(), "threads": cfg.threads,
                                               "device": str(resolve_device(cfg.device)),
                                               "torch": torch.__version__},
            "rows": rows, "matmul_gflops": _range(floor), "records": records}


def table_text(result: dict, markdown: bool = False) -> str:
    """The bench as a table: one row per algorithm, then the bare loop and the matmul floor."""
    cfg, m = result["config"], result["machine"]
    head = ["algorithm", "ms/update (mean)", "median", "MFLOPs/update (forward/credit/feedback)", "GFLOP/s",
            f"× {cfg['baseline']} time (range)", f"× {cfg['baseline']} FLOPs", "time ratio / FLOP ratio"]
    rows = []
    for r in result["rows"]:
        t = r["time_ratio"]
        ratio = f"{t['median']:.2f} ({t['min']:.2f}–{t['max']:.2f})"
        if r["name"] == BARE:
            rows.append([r["name"], f"{r['mean_s'] * 1e3:.2f}", "–", "–", "–", ratio, "–", "–"])
            continue
        f = r["flops_by_phase"]
        phases = "/".join(f"{f[p] / 1e6:.1f}" for p in COST_PHASES)
        rows.append([r["name"], f"{r['mean_s'] * 1e3:.2f}", f"{r['median_s'] * 1e3:.2f}",
                     f"{r['flops'] / 1e6:.1f} ({phases})", f"{r['gflops_per_s']:.1f}", ratio,
                     f"{r['flops_ratio']:.2f}", f"{r['overhead']:.2f}"])
    mm = result["matmul_gflops"]
    title = (f"{cfg['dataset']}, {cfg['network']}, batch {cfg['batch_size']}, {m['device']} ({m['cpu']}), "
             f"{m['threads']} thread(s), torch {m['torch']}; {cfg['rounds']} interleaved rounds of "
             f"{cfg['updates']} updates; matmul floor for this network's products: {mm['median']:.1f} GFLOP/s "
             f"({mm['min']:.1f}–{mm['max']:.1f})")
    return aligned_table(title, head, rows, markdown)


def bench_text(result: dict, markdown: bool = False) -> str:
    """The table, and where the time goes when the bench was profiled."""
    if not any("profile" in r for r in result["rows"]):
        return table_text(result, markdown)
    from harness.bench_profile import profile_table

    return table_text(result, markdown) + "\n" + profile_table(result, markdown)


# ------------------------------------------------------------------------------------------ scaling
def run_scaling(cfg: BenchConfig, widths: list[int], depths: list[int], log=None) -> dict:
    """The bench on every ``mlp-<depth>x<width>-<activation>`` (the activation of ``cfg.network``): per network and
    algorithm, FLOPs and time per update (medians over rounds)."""
    activation = resolve_spec(cfg.network).activation
    runs = []
    for width in widths:
        for depth in depths:
            network = f"mlp-{depth}x{width}-{activation}"
            if log:
                print(f"--- {network}", file=log, flush=True)
            result = run_bench(BenchConfig(**{**asdict(cfg), "network": network}), log=log)
            for row in result["rows"]:
                if row["name"] != BARE:
                    runs.append({"network": network, "width": width, "depth": depth, "name": row["name"],
                                 "flops": row["flops"], "mean_s": row["mean_s"],
                                 "flops_ratio": row["flops_ratio"], "time_ratio": row["time_ratio"]["median"]})
            runs.append({"network": network, "width": width, "depth": depth, "name": MATMUL,
                         "gflops": result["matmul_gflops"]["median"]})
    return {"config": asdict(cfg), "machine": result["machine"], "widths": widths, "depths": depths, "runs": runs}


def scaling_figure(scaling: dict, path) -> None:
    """Log–log: time per update against FLOPs per update, one line per algorithm through the networks (ordered by
    bp's FLOPs), and both against the network, with the matmul floor's slope for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report_figures import linestyle, palette

    runs = [r for r in scaling["runs"] if r["name"] != MATMUL]
    names = list(dict.fromkeys(r["name"] for r in runs))
    colours = palette(names)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    size = {r["network"]: r["flops"] for r in runs if r["name"] == names[0]}  # the baseline's FLOPs: network size
    for name in names:
        rs = sorted((r for r in runs if r["name"] == name), key=lambda r: size[r["network"]])
        style = dict(marker="o", ms=3.5, color=colours[name], ls=linestyle(colours, name), label=name)
        axes[0].plot([size[r["network"]] for r in rs], [r["flops"] for r in rs], **style)
        rs = sorted(rs, key=lambda r: r["flops"])
        axes[1].plot([r["flops"] for r in rs], [r["mean_s"] * 1e3 for r in rs], **style)
    axes[0].set(xscale="log", yscale="log", xlabel=f"{names[0]}'s FLOPs per update (network size)",
                ylabel="FLOPs per update", title="Counted work")
    axes[1].set(xscale="log", yscale="log", xlabel="FLOPs per update", ylabel="ms per update (mean)",
                title="Time against counted work")
    floor = [r for r in scaling["runs"] if r["name"] == MATMUL]
    if floor:
        gflops = statistics.median(r["gflops"] for r in floor)
        lo, hi = min(r["flops"] for r in runs), max(r["flops"] for r in runs)
        axes[1].plot([lo, hi], [lo / gflops / 1e6, hi / gflops / 1e6], color="black", ls=":", lw=1,
                     label=f"matmul floor ({gflops:.0f} GFLOP/s)")
    from matplotlib.ticker import NullFormatter

    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    cfg, m = scaling["config"], scaling["machine"]
    fig.suptitle(f"Scaling over widths {scaling['widths']} × depths {scaling['depths']} — {cfg['dataset']}, "
                 f"batch {cfg['batch_size']}, {m['device']} ({m['cpu']}), {m['threads']} thread(s)", fontsize=10)
    fig.tight_layout()
    for fmt in ("png", "svg", "pdf"):
        fig.savefig(str(path).rsplit(".", 1)[0] + "." + fmt, dpi=130, bbox_inches="tight")
    plt.close(fig)


def scaling_table(scaling: dict) -> str:
    """Markdown: per network, each algorithm's FLOPs and mean time per update, and its ratios to the baseline."""
    base = scaling["config"]["baseline"]
    lines = [f"| network | algorithm | MFLOPs/update | ms/update | × {base} FLOPs | × {base} time |",
             "|---|---|---|---|---|---|"]
    for r in scaling["runs"]:
        if r["name"] != MATMUL:
            lines.append(f"| {r['network']} | {r['name']} | {r['flops'] / 1e6:.1f} | {r['mean_s'] * 1e3:.2f} | "
                         f"{r['flops_ratio']:.2f} | {r['time_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ README
README_BEGIN = "<!-- creditbench bench: begin (generated by `make bench`; edits are overwritten) -->"
README_END = "<!-- creditbench bench: end -->"


def with_readme_block(text: str, block: str) -> str:
    """``text`` with the part between the bench markers replaced by ``block``; refused when the markers are not
    there exactly once each, in order (nothing is written then)."""
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or text.index(README_BEGIN) > text.index(README_END):
        raise ConfigError(f"the README must hold the markers '{README_BEGIN}' and '{README_END}' once each, in order")
    head, rest = text.split(README_BEGIN)
    _, tail = rest.split(README_END)
    return f"{head}{README_BEGIN}\n{block.rstrip()}\n{README_END}{tail}"

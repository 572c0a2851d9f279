"""``creditbench report``: results directories → ``report.md``, ``report.html``, ``figures/*.{png,svg,pdf}``,
``tables/*.csv|tex``.

One or more sweep results directories (the :mod:`harness.schema` format) are loaded and checked
for a common protocol (:mod:`harness.report_data`), summarised (:mod:`harness.report_tables`,
statistics in :mod:`harness.report_stats`) and plotted (:mod:`harness.report_figures`) per dataset ×
network. The report is a list of blocks (:mod:`harness.report_doc`) rendered as markdown and as one
self-contained HTML page (:mod:`harness.report_html`). It is written into the (single) results
directory, or ``--out``. The report only reads results (and the published numbers of
:mod:`harness.report_published`): it imports no algorithm code and names no algorithm (the baseline
is :attr:`ReportOptions.baseline`, default :data:`harness.schema.DEFAULT_BASELINE`). Its command
line is :mod:`harness.cli`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness import store
from harness.report_data import (GROUP, Results, diagnostic_labels, load_results, search_space, searched_names,
                                 version_differences)
from harness.report_doc import Alert, Details, Figure, Heading, Items, Para, Table, render_markdown
from harness.report_published import PUBLISHED_CSV, load_published, matching
from harness.report_stats import ALPHA, CONFIDENCE
from harness.report_tables import (
    algo_order, constant_columns, failure_table, hyperparameter_table, latex_table, pct, plausibility_table,
    protocol_display, protocol_table, resolution_text, summary_display, summary_latex, summary_table, parse_target,
)
from harness.schema import DEFAULT_BASELINE, PLAUSIBILITY_PREFIX

SECTIONS = ("Summary", "Plausibility", "Hyperparameters", "Figures", "Failures", "Appendix", "Provenance")
FIGURES = ("learning_curves", "final_acc", "acc_vs_flops", "acc_vs_time", "robustness", "cost_by_phase",
           "alignment", "diagnostics")
APPENDIX_FIGURES = ("sensitivity",)
FIGURE_CAPTIONS = {
    "learning_curves": "Validation accuracy vs epoch (final phase; mean and 95% CI over seeds, a stopped seed "
                       "keeps its last value; right: zoom on the top)",
    "final_acc": "Test accuracy per seed at the best-validation epoch, with the mean and its 95% CI "
                 "(open diamonds: published values for this dataset and network)",
    "acc_vs_flops": "Test accuracy vs cumulative training FLOPs (final phase)",
    "acc_vs_time": "Test accuracy vs cumulative training wall time (final phase; depends on the machine and its load)",
    "robustness": "Robustness: share of search configurations within x pp of the algorithm's best (ECDF)",
    "cost_by_phase": "MFLOPs per update by phase (forward / credit / feedback), with the configuration behind each bar",
    "alignment": "Angle between each hidden layer's update and the bp gradient vs epoch (output layer left out: "
                 "0° for every rule)",
    "diagnostics": "Algorithm diagnostics vs epoch (non-constant series; labels and units as each algorithm "
                   "declares them)",
    "sensitivity": "Appendix: search-phase best validation accuracy vs each hyperparameter that varied",
}


@dataclass(frozen=True)
class ReportOptions:
    """What a report is asked for (``creditbench report`` options)."""

    baseline: str = DEFAULT_BASELINE  # the algorithm ratios, differences and the relative target refer to
    target: str = "95%"  # a percentage of the baseline's mean test accuracy, or an absolute accuracy
    target_metric: str = "val_acc"
    command: str | None = None  # the command line, for the provenance section
    figures: bool = True
    allow_incomplete: bool = False
    published: Path | str | None = PUBLISHED_CSV  # published results shown beside measured ones (None: none)


@dataclass
class Group:
    """One dataset × network: its trials, summary rows, matching published rows and figures."""

    trials: pd.DataFrame
    summary: pd.DataFrame
    published: pd.DataFrame
    figures: dict  # figure name → PNG path


@dataclass
class ReportInputs:
    """Everything the report's blocks are made of: the results, the tables and figures made of them."""

    results: Results
    out: Path
    summary: pd.DataFrame
    hparams: pd.DataFrame
    protocol: pd.DataFrame
    failures: pd.DataFrame
    plausibility: pd.DataFrame
    groups: dict  # (dataset, network) → Group
    skipped: dict  # (dataset, network, figure name) → why it was not drawn
    searched: dict  # (dataset, network) → searched hyperparameter names
    opts: ReportOptions = field(default_factory=ReportOptions)


def build_report(dirs: list[Path | str], out: Path | str | None = None, opts: ReportOptions | None = None,
                 **options) -> dict:
    """Write the report; return {"report": path, "html": path, "figures": [...], "tables": [...], "summary": frame}.

    ``options`` are :class:`ReportOptions` fields, applied on top of ``opts``."""
    from harness.report_html import render_html

    opts = replace(opts or ReportOptions(), **options)
    baseline = opts.baseline
    parse_target(opts.target)  # fail before any work on a bad --target
    if out is not None or (len(dirs) == 1 and Path(dirs[0]).is_dir()):  # an output location we cannot write is refused before reading
        store.check_writable(Path(out) if out is not None else Path(dirs[0]), "--out" if out is not None else "report in")
    published = load_published(opts.published)
    results = load_results(list(dirs), allow_incomplete=opts.allow_incomplete)
    check_baseline(baseline, results)
    if out is None:
        if len(results.sources) > 1:
            from harness.errors import ResultsError

            raise ResultsError("several results directories are combined: name where the report goes with --out DIR")
        out = results.sources[0].path
    out = Path(out)
    if opts.figures:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    searched = {key: searched_names(results, g) for key, g in results.trials.groupby(GROUP)}
    summary = summary_table(results, baseline=baseline, target=opts.target, target_metric=opts.target_metric)
    hparams = hyperparameter_table(results, baseline)
    protocol = protocol_table(results, searched, baseline)
    failures = failure_table(results, searched)
    plausibility = plausibility_table(results, baseline)

    tables, figures, skipped = [], [], {}

    def write_table(name, frame, tex=None):
        store.write_csv(out / "tables" / f"{name}.csv", frame)
        tables.append(out / "tables" / f"{name}.csv")
        if tex is not None:
            store.write_text(out / "tables" / f"{name}.tex", tex)
            tables.append(out / "tables" / f"{name}.tex")

    write_table("summary", summary)
    write_table("hyperparameters", hparams, latex_table(hparams.drop(columns=["space_from"], errors="ignore"),
                                                        "Selected hyperparameters and search spaces", "tab:hparams"))
    write_table("protocol", protocol, latex_table(protocol, "Shared training protocol", "tab:protocol"))
    write_table("failures", failures, latex_table(failures, "Diverged and failed trials", "tab:failures"))
    write_table("plausibility", plausibility, latex_table(plausibility, "Plausibility of the configurations run "
                                                          "(as each trial recorded it)", "tab:plausibility"))

    groups = {}
    for dataset, network in results.groups():
        groups[(dataset, network)] = _group(results, summary, matching(published, dataset, network), dataset, network,
                                            out, opts, write_table, figures, skipped)

    inputs = ReportInputs(results, out, summary, hparams, protocol, failures, plausibility, groups, skipped, searched,
                          opts)
    blocks = report_blocks(inputs)
    store.write_text(out / "report.md", render_markdown(blocks, out))
    store.write_text(out / "report.html", render_html(blocks, "creditbench comparison report"))
    return {"report": out / "report.md", "html": out / "report.html", "figures": figures, "tables": tables,
            "summary": summary, "skipped": skipped, "problems": list(results.problems)}


def _config_notes(trials: pd.DataFrame) -> dict[str, str]:
    """algorithm → its final configuration's id and algorithm hyperparameters (training ones left out)."""
    from harness.hparams import TrainConfig
    from harness.report_tables import fmt_value

    notes = {}
    final = trials[trials["phase"] == "final"]
    for algo, sub in final.groupby("algo"):
        r = sub.iloc[0]
        hps = [f"{c[3:]}={fmt_value(r[c])}" for c in sub.columns
               if c.startswith("hp.") and c[3:] not in TrainConfig.model_fields and pd.notna(r[c])]
        text = ", ".join(hps[:4]) + (", …" if len(hps) > 4 else "")
        notes[algo] = f"{r.get('config_id', '')}" + (f": {text}" if text else "")
    return notes


def _group(results: Results, summary, published, dataset: str, network: str, out: Path, opts: ReportOptions,
           write_table, figures: list, skipped: dict) -> Group:
    """One dataset × network: its summary table and figures."""
    from harness import report_figures as figs

    baseline = opts.baseline
    key = figs.slug(dataset, network)
    trials = results.trials[(results.trials["dataset"] == dataset) & (results.trials["network"] == network)]
    epochs = results.epochs
    if not epochs.empty:
        epochs = epochs[(epochs["dataset"] == dataset) & (epochs["network"] == network)]
    s = summary[(summary["dataset"] == dataset) & (summary["network"] == network)] if not summary.empty else summary
    if not s.empty:
        write_table(f"summary_{key}", s, summary_latex(s, dataset, network, published))
    made = {}
    if not opts.figures:
        for name in FIGURES + APPENDIX_FIGURES:
            skipped[(dataset, network, name)] = "figures disabled (--no-figures)"
        return Group(trials, s, published, made)
    colours = figs.palette(trials["algo"])
    labels = diagnostic_labels(results)
    spaces = {a: search_space(results, a, sorted(trials.loc[trials["algo"] == a, "source"].unique()))[0]
              for a in trials["algo"].unique()}
    transport_col = f"{PLAUSIBILITY_PREFIX}transport"
    transport = (trials[trials["phase"] == "final"].groupby("algo")[transport_col].first().astype(str).to_dict()
                 if transport_col in trials else {})
    args = (colours, baseline, dataset, network)
    jobs = {
        "learning_curves": lambda p: figs.learning_curves(epochs, *args, p),
        "final_acc": lambda p: figs.final_accuracy(trials, s, *args, p, published),
        "acc_vs_flops": lambda p: figs.accuracy_vs_flops(epochs, *args, p),
        "acc_vs_time": lambda p: figs.accuracy_vs_time(epochs, *args, p),
        "robustness": lambda p: figs.robustness(trials, *args, p),
        "cost_by_phase": lambda p: figs.cost_by_phase(s, colours, dataset, network, p, _config_notes(trials)),
        "alignment": lambda p: figs.alignment(epochs, *args, p, transport),
        "diagnostics": lambda p: figs.diagnostics(epochs, *args, p, labels),
        "sensitivity": lambda p: figs.sensitivity(trials, spaces, *args, p),
    }
    needs_epochs = ("learning_curves", "acc_vs_flops", "acc_vs_time", "alignment", "diagnostics")
    for name, job in jobs.items():
        if epochs.empty and name in needs_epochs:
            path, why = None, "no epochs.csv"
        else:
            path, why = job(out / "figures" / f"{name}_{key}.png")
        if path is not None:
            figures.append(path)
            made[name] = path
        else:
            skipped[(dataset, network, name)] = why
    return Group(trials, s, published, made)


def check_baseline(baseline: str, results: Results) -> None:
    """``--baseline`` names an algorithm of these results (or a registered one, whose absence the
    report notes); anything else, e.g. a typo, is refused before anything is written."""
    from harness.errors import UnknownNameError
    from harness.registry import algorithm_names

    present = sorted(set(results.trials["algo"]))
    if baseline in present:
        return
    try:
        registered = algorithm_names()
    except Exception:  # noqa: BLE001  a broken plugin: only the results' own algorithms count
        registered = []
    if baseline not in registered:
        raise UnknownNameError("baseline algorithm (--baseline)", baseline, present)


# ---------------------------------------------------------------------------- blocks
def report_blocks(inputs: ReportInputs) -> list:
    """The whole report: header, then one function per section (:data:`SECTIONS`)."""
    blocks = _header(inputs)
    for section in (_summary_section, _plausibility_section, _hyperparameters_section, _figures_section,
                    _failures_section, _appendix_section, _provenance_section):
        blocks += section(inputs)
    return blocks


def _section(title: str) -> Heading:
    return Heading(2, title, title.lower())


def _target_text(inputs: ReportInputs) -> str:
    mode, value = parse_target(inputs.opts.target)
    return (f"{pct(value, 0)}% of {inputs.opts.baseline}'s mean test accuracy" if mode == "relative"
            else f"{pct(value)}% accuracy")


def _header(inputs: ReportInputs) -> list:
    results, baseline = inputs.results, inputs.opts.baseline
    metric_word = "validation" if inputs.opts.target_metric == "val_acc" else "test"
    blocks = [Heading(1, "creditbench comparison report"),
              Para(f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
                   f"{len(results.sources)} results director{'y' if len(results.sources) == 1 else 'ies'}: "
                   + ", ".join(f"`{s.label}`" for s in results.sources) + ".")]
    if results.problems:
        blocks.append(Alert(f"**Warning: these results are incomplete or damaged** ({len(results.problems)} "
                            "problem(s), reported with `--allow-incomplete`): the numbers below use only the rows "
                            "that could be read and may change when the results are complete.", list(results.problems)))
    versions = version_differences(results)
    if versions:
        blocks.append(Alert(f"**Warning: these results were produced with different package versions** "
                            f"({'; '.join(versions)}): differences between them may come from the software, not "
                            "the algorithms."))
    blocks.append(Para("Contents: " + " · ".join(f"[{s}](#{s.lower()})" for s in SECTIONS)))
    blocks.append(Para(
        "**How to read this.** Final-phase trials only (the best search configuration trained over several seeds). "
        "Test accuracy is taken at each trial's best-validation epoch (the test set never selects anything); "
        f"mean ± sample std over seeds and a {int(CONFIDENCE * 100)}% t-interval (no interval with a single seed), "
        "printed to the resolution of the test set (one example's share; stated per table). "
        "Trials without a finite test accuracy (failed, or diverged before any valid epoch) are counted, not averaged; "
        "a trial that diverged after a valid epoch contributes its best-validation epoch, as early stopping would keep it. "
        f"Target for updates/FLOPs: {_target_text(inputs)}, reached on the {metric_word} accuracy curve (`epochs.csv`); "
        "'updates to target' is the mean over the trials that reached it (reached/total in brackets), and undefined "
        "when the target is relative and the reference is absent. "
        f"Costs are per update (FLOPs averaged over a schedule period, wall time the mean over timed updates, "
        f"so rare sleep phases are amortised), as ratios to {baseline}. Δ vs {baseline}: difference of mean test "
        f"accuracies in percentage points with Welch's {int(CONFIDENCE * 100)}% CI (scipy); the p-values of one table "
        f"are Holm-adjusted together (every algorithm is compared with the same reference), and a difference is "
        f"significant when its adjusted p < {ALPHA:.2f}. Robustness: the share of an algorithm's search "
        "configurations whose validation accuracy is within 1 and 5 points of its best. "
        "Wall time depends on the machine and its load; FLOPs do not."))
    return blocks


def _summary_section(inputs: ReportInputs) -> list:
    results, baseline = inputs.results, inputs.opts.baseline
    blocks = [_section("Summary")]
    for (dataset, network), g in inputs.groups.items():
        blocks.append(Heading(3, f"{dataset} / {network}"))
        algos = algo_order(g.trials["algo"], baseline)
        s = g.summary
        if s.empty:
            blocks.append(Para("_No final-phase trials: only the search phase is shown below._"))
            continue
        blocks.append(Para(f"Resolution: {resolution_text(s)}."))
        blocks.append(Table(summary_display(s, g.published), f"summary {dataset} {network}"))
        notes = []
        if baseline not in set(s["algo"]):
            notes.append(f"{baseline} (the reference) has no final-phase trials here: ratios, differences and the "
                         "relative target are not available (use --baseline or an absolute --target).")
        single = [r.algo for r in s.itertuples() if r.n == 1]
        if single:
            notes.append(f"Single seed for {', '.join(single)}: no standard deviation, no confidence interval and no "
                         "significance test.")
        missing_final = [a for a in algos if a not in set(s["algo"])]
        if missing_final:
            notes.append(f"No final phase for {', '.join(missing_final)} (search phase only).")
        absent = sorted(set(results.trials["algo"]) - set(algos))
        if absent:
            notes.append(f"Not run on this dataset/network: {', '.join(absent)}.")
        t = s["target_acc"].iloc[0]
        notes.append(f"Target accuracy: {pct(t)}% ({_target_text(inputs)})." if pd.notna(t)
                     else "Target accuracy: undefined (relative to an absent reference).")
        blocks.append(Items(notes))
        if not g.published.empty:
            blocks.append(Para("Published results for this dataset and network (`harness/published.csv`; protocols "
                               "differ from this run's, so they are a plausibility check, not a test):"))
            blocks.append(Table(g.published.drop(columns=["dataset", "network"]), f"published {dataset} {network}"))
        slug = _slug(dataset, network)
        blocks.append(Para(f"LaTeX: [`tables/summary_{slug}.tex`](tables/summary_{slug}.tex)"
                           " · all numbers: [`tables/summary.csv`](tables/summary.csv)"))
    return blocks


def _stated_once(frame: pd.DataFrame, keep=("algo", "algorithm")) -> tuple[pd.DataFrame, str]:
    """The frame without the columns that are constant across its rows, and a sentence stating them."""
    const = constant_columns(frame, keep)
    text = "; ".join(f"{k}: {v}" for k, v in const.items())
    return frame.drop(columns=list(const)), (f"In every row — {text}." if text else "")


def _per_group(frame: pd.DataFrame, name: str) -> list:
    """One table per dataset × network (dataset and network in the heading, constant columns stated once)."""
    blocks = []
    if frame.empty:
        return [Para("_(none)_")]
    for (dataset, network), sub in frame.groupby(list(GROUP), sort=False):
        blocks.append(Heading(3, f"{dataset} / {network}"))
        table, text = _stated_once(sub.drop(columns=list(GROUP)).reset_index(drop=True))
        blocks.append(Table(table, f"{name} {dataset} {network}"))
        if text:
            blocks.append(Para(text))
    return blocks


def _plausibility_section(inputs: ReportInputs) -> list:
    blocks = [_section("Plausibility"),
              Para("What each configuration that ran does, as its trials recorded it (never written by hand): "
                   "`weight_transport` (any credit or feedback computation reads W), `transport` (what it reads: "
                   "values, sign, or a copy at initialisation), `local` (each update uses pre/post-synaptic "
                   "quantities and a broadcast signal only), `phases` (single, two, sleep_wake), "
                   "`feedback_learning`, and the algorithm's one-line note. "
                   "LaTeX: [`tables/plausibility.tex`](tables/plausibility.tex).")]
    if inputs.plausibility.empty:
        return blocks + [Para("_No plausibility recorded in these results (trials.csv has no plausibility.* "
                              "columns)._")]
    return blocks + _per_group(inputs.plausibility, "plausibility")


def _hyperparameters_section(inputs: ReportInputs) -> list:
    blocks = [_section("Hyperparameters"),
              Para("Selected configuration of each algorithm and the space it was searched in "
                   "(`space_from`: the sweep's spec.yaml when it lists one, else the plugin's declared defaults).")]
    blocks += _per_group(inputs.hparams, "hyperparameters") if not inputs.hparams.empty else [
        Para("_No searched hyperparameters._")]
    blocks.append(Para("Shared protocol (training settings that are not searched, identical for every algorithm; "
                       "phases told apart only where they differ):"))
    if inputs.protocol.empty:
        return blocks + [Para("_(none)_")]
    for (dataset, network), sub in inputs.protocol.groupby(list(GROUP), sort=False):
        blocks += [Heading(3, f"Protocol: {dataset} / {network}"),
                   Table(protocol_display(sub), f"protocol {dataset} {network}")]
    return blocks


def _figure_blocks(inputs: ReportInputs, names) -> list:
    blocks = []
    for (dataset, network), g in inputs.groups.items():
        blocks.append(Heading(3, f"{dataset} / {network}"))
        missing = []
        for name in names:
            if name in g.figures:
                blocks.append(Figure(name, FIGURE_CAPTIONS[name], g.figures[name]))
            else:
                missing.append(f"_{FIGURE_CAPTIONS[name]}: not drawn — {inputs.skipped.get((dataset, network, name))}._")
        if missing:
            blocks.append(Items(missing))
    return blocks


def _figures_section(inputs: ReportInputs) -> list:
    return [_section("Figures"), Para("Each figure is also in `figures/` as SVG and PDF beside the PNG.")] + \
        _figure_blocks(inputs, FIGURES)


def _appendix_section(inputs: ReportInputs) -> list:
    return [_section("Appendix")] + _figure_blocks(inputs, APPENDIX_FIGURES)


def _failures_section(inputs: ReportInputs) -> list:
    results, failures = inputs.results, inputs.failures
    blocks = [_section("Failures")]
    if failures.empty:
        blocks.append(Para("No trial diverged or failed."))
    else:
        counts = failures.groupby(["phase", "status"]).size()
        blocks.append(Para("Every diverged or failed trial, both phases: "
                           + ", ".join(f"{n} {st} in {ph}" for (ph, st), n in counts.items()) + "."))
        blocks += _per_group(failures, "failures")
    stopped = results.trials[results.trials["status"] == "stopped"]
    if not stopped.empty:
        blocks.append(Para(f"{len(stopped)} trial(s) were stopped early by the scheduler (status `stopped`)."))
    return blocks


def _provenance_section(inputs: ReportInputs) -> list:
    from harness.provenance import git_commit

    results, baseline, command = inputs.results, inputs.opts.baseline, inputs.opts.command
    versions = version_differences(results)
    git = git_commit()
    items = [f"Report written by creditbench at commit `{git.get('commit') or 'unknown'}`"
             + (" (uncommitted changes)" if git.get("dirty") else "") + "."]
    if command:
        items.append(f"Command: `{command}`")
    items.append("Dataset fingerprints: " + ", ".join(f"{k} `{v}`" for k, v in sorted(results.fingerprints.items()))
                 if results.fingerprints else "Dataset fingerprints: not recorded in env.json.")
    if versions:
        items.append("Package versions **differ** between directories: " + "; ".join(versions) + ".")
    blocks = [_section("Provenance"), Items(items)]
    for src in results.sources:
        t = results.trials[results.trials["source"] == src.label]
        items = [f"Path: `{src.path}`",
                 f"Trials: {len(t)} ({', '.join(f'{n} {p}' for p, n in t['phase'].value_counts().sort_index().items())}); "
                 f"algorithms: {', '.join(algo_order(t['algo'], baseline))}; "
                 f"datasets/networks: {', '.join(sorted(set(t['dataset'] + ' / ' + t['network'])))}"]
        if "algo_version" in t:
            algo_versions = t.groupby("algo")["algo_version"].first()
            items.append("Algorithm versions: " + ", ".join(f"{a} v{v}" for a, v in algo_versions.items()))
        concurrency = concurrency_line(src)
        if concurrency:
            items.append(concurrency)
        blocks += [Heading(3, f"`{src.label}`"), Items(items + _env_lines(src.env))]
        for name, text in (("spec.yaml", src.spec_text), ("env.json", src.env_text)):
            if text is None:
                blocks.append(Para(f"_{name}: not present._"))
            else:
                blocks.append(Details(name, "yaml" if name.endswith("yaml") else "json", text))
    return blocks


def concurrency_line(src) -> str | None:
    """How many trials shared the machine while wall times were measured (spec.yaml's resources and the Ray
    cluster's CPUs in env.json): time per update is measured under that load, not alone."""
    res = src.spec.get("resources") if isinstance(src.spec, dict) else None
    ray = src.env.get("ray") if isinstance(src.env, dict) else None
    cpus = ((ray or {}).get("cluster_resources") or {}).get("CPU") or (res or {}).get("num_cpus")
    if not res or not cpus:
        return None
    per_trial = float(res.get("cpus_per_trial") or 1)
    at_once = int(cpus // per_trial) if per_trial <= cpus else 1
    if res.get("max_concurrent"):
        at_once = min(at_once, int(res["max_concurrent"]))
    threads = max(1, int(per_trial))
    return (f"Concurrency: up to {at_once} trial(s) at once on {cpus:g} CPU(s), {per_trial:g} CPU and {threads} "
            f"thread(s) per trial; wall times per update were measured under that load.")


def _slug(dataset, network):
    from harness.report_figures import slug

    return slug(dataset, network)


def _env_lines(env) -> list[str]:
    """Key facts from env.json (as the sweep writes it: ``git.commit``, ``git.dirty``, ``device``,
    ``processor``, ``versions``)."""
    if not isinstance(env, dict):
        return ["Environment: " + ("env.json not present" if env is None else "env.json unparsable (shown raw)")]
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    out = [f"Commit: `{git.get('commit') or 'not recorded'}`" + (" (uncommitted changes)" if git.get("dirty") else "")]
    device, cpu = env.get("device"), env.get("cpu_model") or env.get("processor")
    out.append(f"Device: {device or 'not recorded'}" + (f" ({cpu})" if cpu else ""))
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else None
    if versions:
        out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    return out

"""``creditbench report``: results directories → ``report.md``, ``figures/*.png``, ``tables/*.csv|tex``.

One or more sweep results directories (the :mod:`harness.schema` format) are loaded and checked
for a common protocol (:mod:`harness.report_data`), summarised (:mod:`harness.report_tables`) and
plotted (:mod:`harness.report_figures`) per dataset × network. The report is written into the
(single) results directory, or ``--out``. The report only reads results: it imports no algorithm
code (what an algorithm declares for it, e.g. its diagnostics' labels, comes from ``algorithms.json``)
and names no algorithm (the baseline is :attr:`ReportOptions.baseline`, default
:data:`harness.schema.DEFAULT_BASELINE`). Its command line is :mod:`harness.cli`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness import store
from harness.schema import DEFAULT_BASELINE
from harness.report_data import (GROUP, Results, diagnostic_labels, load_results, search_space, searched_names,
                                 version_differences)
from harness.report_tables import (
    CONFIDENCE, algo_order, failure_table, hyperparameter_table, markdown_table, pct, protocol_table,
    summary_display, summary_latex, summary_table, latex_table, parse_target,
)

SECTIONS = ("Summary", "Hyperparameters", "Figures", "Failures", "Provenance")
FIGURES = ("val_acc", "acc_vs_flops", "cost_by_phase", "alignment", "diagnostics", "sensitivity")
FIGURE_CAPTIONS = {
    "val_acc": "Validation accuracy vs epoch (final phase; mean, 95% CI band over seeds)",
    "acc_vs_flops": "Test accuracy vs cumulative training FLOPs (final phase)",
    "cost_by_phase": "FLOPs per update by phase (forward / credit / feedback)",
    "alignment": "Angle between each layer's update and the bp gradient vs epoch",
    "diagnostics": "Algorithm diagnostics vs epoch (labels and units as each algorithm declares them)",
    "sensitivity": "Search-phase sensitivity: best validation accuracy vs each searched hyperparameter",
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


@dataclass
class ReportInputs:
    """Everything :func:`render_markdown` writes about: the results, the tables and figures made of them."""

    results: Results
    out: Path
    summary: pd.DataFrame
    hparams: pd.DataFrame
    protocol: pd.DataFrame
    failures: pd.DataFrame
    sections: dict  # (dataset, network) → (trials, summary rows, {figure name: path})
    skipped: dict  # (dataset, network, figure name) → why it was not drawn
    searched: dict  # (dataset, network) → searched hyperparameter names
    opts: ReportOptions = field(default_factory=ReportOptions)


def build_report(dirs: list[Path | str], out: Path | str | None = None, opts: ReportOptions | None = None,
                 **options) -> dict:
    """Write the report; return {"report": path, "figures": [...], "tables": [...], "summary": frame}.

    ``options`` are :class:`ReportOptions` fields, applied on top of ``opts``."""
    from harness import report_figures as figs

    opts = replace(opts or ReportOptions(), **options)
    baseline = opts.baseline
    parse_target(opts.target)  # fail before any work on a bad --target
    if out is not None or (len(dirs) == 1 and Path(dirs[0]).is_dir()):  # an output location we cannot write is refused before reading
        store.check_writable(Path(out) if out is not None else Path(dirs[0]), "--out" if out is not None else "report in")
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
    colours = figs.palette(algo_order(results.trials["algo"], baseline))
    labels = diagnostic_labels(results)

    tables, figures, skipped = [], [], {}

    def write_table(name, frame, tex=None):
        store.write_csv(out / "tables" / f"{name}.csv", frame)
        tables.append(out / "tables" / f"{name}.csv")
        if tex is not None:
            store.write_text(out / "tables" / f"{name}.tex", tex)
            tables.append(out / "tables" / f"{name}.tex")

    write_table("summary", summary)
    write_table("hyperparameters", hparams, _frame_latex(hparams.drop(columns=["space_from"], errors="ignore"),
                                                         "Selected hyperparameters and search spaces", "tab:hparams"))
    write_table("protocol", protocol, _frame_latex(protocol, "Shared training protocol", "tab:protocol"))
    write_table("failures", failures, _frame_latex(failures, "Diverged and failed trials", "tab:failures"))

    sections = {}
    for dataset, network in results.groups():
        sections[(dataset, network)] = _group(results, summary, dataset, network, out, opts, write_table,
                                              colours, labels, figures, skipped)

    text = render_markdown(ReportInputs(results, out, summary, hparams, protocol, failures, sections, skipped,
                                        searched, opts))
    store.write_text(out / "report.md", text)
    return {"report": out / "report.md", "figures": figures, "tables": tables, "summary": summary,
            "skipped": skipped, "problems": list(results.problems)}


def _group(results: Results, summary, dataset: str, network: str, out: Path, opts: ReportOptions, write_table,
           colours: dict, labels: dict, figures: list, skipped: dict):
    """One dataset × network: its summary table and figures; return (trials, summary rows, figures made)."""
    from harness import report_figures as figs

    baseline = opts.baseline
    key = figs.slug(dataset, network)
    trials = results.trials[(results.trials["dataset"] == dataset) & (results.trials["network"] == network)]
    epochs = results.epochs
    if not epochs.empty:
        epochs = epochs[(epochs["dataset"] == dataset) & (epochs["network"] == network)]
    s = summary[(summary["dataset"] == dataset) & (summary["network"] == network)] if not summary.empty else summary
    if not s.empty:
        write_table(f"summary_{key}", s, summary_latex(s, dataset, network))
    spaces = {a: search_space(results, a, sorted(trials.loc[trials["algo"] == a, "source"].unique()))[0]
              for a in trials["algo"].unique()}
    made = {}
    jobs = {
        "val_acc": lambda p: figs.validation_curve(epochs, colours, baseline, dataset, network, p),
        "acc_vs_flops": lambda p: figs.accuracy_vs_flops(epochs, colours, baseline, dataset, network, p),
        "cost_by_phase": lambda p: figs.cost_by_phase(s, colours, dataset, network, p),
        "alignment": lambda p: figs.alignment(epochs, colours, baseline, dataset, network, p),
        "diagnostics": lambda p: figs.diagnostics(epochs, colours, baseline, dataset, network, p, labels),
        "sensitivity": lambda p: figs.sensitivity(trials, spaces, colours, baseline, dataset, network, p),
    }
    for name, job in jobs.items():
        if not opts.figures:
            path, why = None, "figures disabled (--no-figures)"
        elif epochs.empty and name not in ("cost_by_phase", "sensitivity"):
            path, why = None, "no epochs.csv"
        else:
            path, why = job(out / "figures" / f"{name}_{key}.png")
        if path is not None:
            figures.append(path)
            made[name] = path
        else:
            skipped[(dataset, network, name)] = why
    return trials, s, made


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


def _frame_latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    from harness.report_tables import fmt_value

    header = [str(c) for c in frame.columns]
    rows = [[v if isinstance(v, str) else fmt_value(v) for v in r] for r in frame.itertuples(index=False)]
    if not rows:
        rows = [["(none)"] + [""] * (len(header) - 1)] if header else []
    return latex_table(header or ["(none)"], rows, caption=caption, label=label, align="l" * max(1, len(header)))


# ---------------------------------------------------------------------------- markdown
def _rel(path: Path, out: Path) -> str:
    return Path(path).relative_to(out).as_posix()


def render_markdown(inputs: ReportInputs) -> str:
    """``report.md``: header, then one function per section (:data:`SECTIONS`)."""
    lines = _header(inputs)
    for section in (_summary_section, _hyperparameters_section, _figures_section, _failures_section,
                    _provenance_section):
        lines += section(inputs)
    return "\n".join(lines).rstrip() + "\n"


def _target_text(inputs: ReportInputs) -> str:
    mode, value = parse_target(inputs.opts.target)
    return (f"{pct(value, 0)}% of {inputs.opts.baseline}'s mean test accuracy" if mode == "relative"
            else f"{pct(value)}% accuracy")


def _header(inputs: ReportInputs) -> list[str]:
    results, baseline = inputs.results, inputs.opts.baseline
    metric_word = "validation" if inputs.opts.target_metric == "val_acc" else "test"
    target_text = _target_text(inputs)
    lines = ["# creditbench comparison report", ""]
    lines += [f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
              f"{len(results.sources)} results director{'y' if len(results.sources) == 1 else 'ies'}: "
              + ", ".join(f"`{s.label}`" for s in results.sources) + ".", ""]
    if results.problems:
        lines += [f"> **Warning: these results are incomplete or damaged** ({len(results.problems)} problem(s), "
                  "reported with `--allow-incomplete`): the numbers below use only the rows that could be read "
                  "and may change when the results are complete.", ">"]
        lines += [f"> - {problem}" for problem in results.problems] + [""]
    versions = version_differences(results)
    if versions:
        lines += [f"> **Warning: these results were produced with different package versions** ({'; '.join(versions)}): "
                  "differences between them may come from the software, not the algorithms.", ""]
    lines += ["Contents: " + " · ".join(f"[{s}](#{s.lower()})" for s in SECTIONS), ""]
    lines += [
        "**How to read this.** Final-phase trials only (the best search configuration trained over several seeds). "
        "Test accuracy is taken at each trial's best-validation epoch (the test set never selects anything); "
        f"mean ± sample std over seeds and a {int(CONFIDENCE * 100)}% t-interval (no interval with a single seed). "
        "Trials without a finite test accuracy (failed, or diverged before any valid epoch) are counted, not averaged; "
        "a trial that diverged after a valid epoch contributes its best-validation epoch, as early stopping would keep it. "
        f"Target for updates/FLOPs: {target_text}, reached on the {metric_word} accuracy curve (`epochs.csv`); "
        "'updates to target' is the mean over the trials that reached it (reached/total in brackets). "
        f"Costs are per update (FLOPs averaged over a schedule period, wall time the mean over timed updates, "
        f"so rare sleep phases are amortised), as ratios to {baseline}. Δ vs {baseline}: difference of mean test accuracies in "
        f"percentage points, Welch {int(CONFIDENCE * 100)}% CI, significant when p < {1 - CONFIDENCE:.2f}. "
        "Wall time depends on the machine and its load; FLOPs do not.", ""]
    return lines


def _summary_section(inputs: ReportInputs) -> list[str]:
    results, sections, baseline = inputs.results, inputs.sections, inputs.opts.baseline
    target_text = _target_text(inputs)
    lines: list[str] = []
    lines += ["## Summary", ""]
    for (dataset, network), (trials, s, made) in sections.items():
        lines += [f"### {dataset} / {network}", ""]
        algos = algo_order(trials["algo"], baseline)
        missing_final = [a for a in algos if a not in set(s["algo"] if not s.empty else [])]
        if s.empty:
            lines += ["_No final-phase trials: only the search phase is shown below._", ""]
            continue
        lines.append(markdown_table(summary_display(s)))
        notes = []
        if baseline not in set(s["algo"]):
            notes.append(f"{baseline} (the reference) has no final-phase trials here: ratios, differences and the "
                         "relative target are not available (use --baseline or an absolute --target).")
        single = [r.algo for r in s.itertuples() if r.n == 1]
        if single:
            notes.append(f"Single seed for {', '.join(single)}: no standard deviation, no confidence interval and no "
                         "significance test.")
        if missing_final:
            notes.append(f"No final phase for {', '.join(missing_final)} (search phase only).")
        absent = sorted(set(results.trials["algo"]) - set(algos))
        if absent:
            notes.append(f"Not run on this dataset/network: {', '.join(absent)}.")
        t = s["target_acc"].iloc[0]
        notes.append(f"Target accuracy: {pct(t)}% ({target_text})." if pd.notna(t)
                     else "Target accuracy: not available.")
        lines += [f"- {n}" for n in notes] + [""]
        lines += [f"LaTeX: [`tables/summary_{_slug(dataset, network)}.tex`](tables/summary_{_slug(dataset, network)}.tex)"
                  " · all numbers: [`tables/summary.csv`](tables/summary.csv)", ""]
    return lines


def _hyperparameters_section(inputs: ReportInputs) -> list[str]:
    hparams, protocol = inputs.hparams, inputs.protocol
    lines: list[str] = []
    lines += ["## Hyperparameters", ""]
    lines += ["Selected configuration of each algorithm and the space it was searched in "
              "(`space_from`: the sweep's spec.yaml when it lists one, else the plugin's declared defaults).", ""]
    if not hparams.empty:
        lines.append(markdown_table(hparams))
    else:
        lines += ["_No searched hyperparameters._", ""]
    lines += ["Shared protocol (training settings that are not searched, identical for every algorithm):", ""]
    lines.append(markdown_table(protocol))
    return lines


def _figures_section(inputs: ReportInputs) -> list[str]:
    out, sections, skipped = inputs.out, inputs.sections, inputs.skipped
    lines: list[str] = []
    lines += ["## Figures", ""]
    for (dataset, network), (trials, s, made) in sections.items():
        lines += [f"### {dataset} / {network}", ""]
        for name in FIGURES:
            if name in made:
                lines += [f"**{FIGURE_CAPTIONS[name]}**", "", f"![{FIGURE_CAPTIONS[name]}]({_rel(made[name], out)})", ""]
            else:
                lines += [f"- _{FIGURE_CAPTIONS[name]}: not drawn — {skipped.get((dataset, network, name))}._", ""]
    return lines


def _failures_section(inputs: ReportInputs) -> list[str]:
    results, failures = inputs.results, inputs.failures
    lines: list[str] = []
    lines += ["## Failures", ""]
    if failures.empty:
        lines += ["No trial diverged or failed.", ""]
    else:
        counts = failures.groupby(["phase", "status"]).size()
        lines += ["Every diverged or failed trial, both phases: "
                  + ", ".join(f"{n} {st} in {ph}" for (ph, st), n in counts.items()) + ".", ""]
        lines.append(markdown_table(failures))
    stopped = results.trials[results.trials["status"] == "stopped"]
    if not stopped.empty:
        lines += [f"{len(stopped)} trial(s) were stopped early by the scheduler (status `stopped`).", ""]
    return lines


def _provenance_section(inputs: ReportInputs) -> list[str]:
    from harness.provenance import git_commit

    results, baseline, command = inputs.results, inputs.opts.baseline, inputs.opts.command
    versions = version_differences(results)
    lines: list[str] = []
    lines += ["## Provenance", ""]
    git = git_commit()
    lines += [f"- Report written by creditbench at commit `{git.get('commit') or 'unknown'}`"
              + (" (uncommitted changes)" if git.get("dirty") else "") + "."]
    if command:
        lines.append(f"- Command: `{command}`")
    if results.fingerprints:
        lines.append("- Dataset fingerprints: " + ", ".join(f"{k} `{v}`" for k, v in sorted(results.fingerprints.items())))
    else:
        lines.append("- Dataset fingerprints: not recorded in env.json.")
    if versions:
        lines.append("- Package versions **differ** between directories: " + "; ".join(versions) + ".")
    lines.append("")
    for src in results.sources:
        t = results.trials[results.trials["source"] == src.label]
        lines += [f"### `{src.label}`", "", f"- Path: `{src.path}`",
                  f"- Trials: {len(t)} ({', '.join(f'{n} {p}' for p, n in t['phase'].value_counts().sort_index().items())}); "
                  f"algorithms: {', '.join(algo_order(t['algo'], baseline))}; "
                  f"datasets/networks: {', '.join(sorted(set(t['dataset'] + ' / ' + t['network'])))}"]
        if "algo_version" in t:
            versions = t.groupby("algo")["algo_version"].first()
            lines.append("- Algorithm versions: " + ", ".join(f"{a} v{v}" for a, v in versions.items()))
        lines += _env_lines(src.env)
        lines.append("")
        for name, text in (("spec.yaml", src.spec_text), ("env.json", src.env_text)):
            if text is None:
                lines += [f"_{name}: not present._", ""]
            else:
                lang = "yaml" if name.endswith("yaml") else "json"
                lines += ["<details>", f"<summary>{name}</summary>", "", f"```{lang}", text.rstrip(), "```", "",
                          "</details>", ""]
    return lines


def _slug(dataset, network):
    from harness.report_figures import slug

    return slug(dataset, network)


def _env_lines(env) -> list[str]:
    """Key facts from env.json (as the sweep writes it: ``git.commit``, ``git.dirty``, ``device``,
    ``processor``, ``versions``)."""
    if not isinstance(env, dict):
        return ["- Environment: " + ("env.json not present" if env is None else "env.json unparsable (shown raw)")]
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    out = [f"- Commit: `{git.get('commit') or 'not recorded'}`" + (" (uncommitted changes)" if git.get("dirty") else "")]
    device, cpu = env.get("device"), env.get("cpu_model") or env.get("processor")
    out.append(f"- Device: {device or 'not recorded'}" + (f" ({cpu})" if cpu else ""))
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else None
    if versions:
        out.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    return out

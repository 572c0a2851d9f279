"""Reading results directories for the report: loading, combining, and the protocol check.

Several directories (e.g. one sweep per algorithm) are combined only when they measured the
same thing: per dataset × network and phase, every training hyperparameter that is not
searched (optimizer, batch size, epoch budget, patience, min_delta, …) must agree, each
algorithm must have one version and one final configuration, no final-phase seed may appear
twice, and dataset fingerprints recorded in ``env.json`` must agree. ``spec.yaml`` and
``env.json`` are read defensively (their inner schema is the sweep's): they are shown in the
provenance section and mined for search spaces and fingerprints when they hold them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from harness.errors import CreditbenchError, ResultsError
from harness.hparams import TrainConfig
from harness.schema import (ALGORITHMS_JSON, ENV_JSON, EPOCH_NUMERIC, EPOCHS_CSV, NUMERIC_PREFIXES, PLAN_JSON,
                            REQUIRED_TRIAL_COLUMNS, SPEC_YAML, SWEEP_STAGES, TRIAL_NUMERIC, TRIAL_STATUSES, TRIALS_CSV,
                            trial_id)

INCOMPLETE_HINT = "repair or re-run it, or report what is there with --allow-incomplete"
GROUP = ["dataset", "network"]
SPACE_KINDS = {"loguniform": ("kind", "low", "high"), "uniform": ("kind", "low", "high"),
               "randint": ("kind", "low", "high"), "choice": ("kind", "values")}  # as spec.Dist writes them


@dataclass
class Source:
    """One results directory and what it holds besides the tables."""

    path: Path
    label: str
    spec: object = None  # parsed spec.yaml (dict) or its raw text when unparsable; None when absent
    spec_text: str | None = None
    env: object = None  # parsed env.json or raw text; None when absent
    env_text: str | None = None
    algorithms: dict = field(default_factory=dict)  # algorithms.json: what each algorithm declares for the report


@dataclass
class Results:
    sources: list[Source]
    trials: pd.DataFrame  # every trial; column ``source`` is the Source label
    epochs: pd.DataFrame  # every trial-epoch; column ``source``
    fingerprints: dict = field(default_factory=dict)  # dataset -> fingerprint (from env.json)
    problems: list = field(default_factory=list)  # damage found and accepted with --allow-incomplete

    def groups(self) -> list[tuple[str, str]]:
        keys = self.trials[GROUP].drop_duplicates().sort_values(GROUP)
        return [tuple(r) for r in keys.itertuples(index=False)]


def newest_results_dir(root: Path = Path("results")) -> Path:
    """The results directory under ``root`` whose ``trials.csv`` was written last."""
    found = sorted(Path(root).glob("**/trials.csv"), key=lambda p: p.stat().st_mtime) if Path(root).is_dir() else []
    if not found:
        raise ResultsError(f"no results directory with a trials.csv under {root}/; run `make sweep` first "
                           "or name one: creditbench report DIR")
    return found[-1].parent


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read {what}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def _read_checked(path: Path, what: str, numeric: tuple, problems: list) -> pd.DataFrame:
    """A table, cross-checked as it is read: every row has the header's number of fields, the file
    ends with a complete line, and numeric columns hold numbers. Each problem is appended to
    ``problems`` as a one-line message naming the file and row (line); bad rows are dropped and bad
    cells become missing, so that what remains is exactly what the file says."""
    import csv
    import io

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read {what}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not text.strip():
        return pd.DataFrame()
    records, lines = [], []  # each record and the line it starts on
    try:
        reader = csv.reader(io.StringIO(text), strict=True)
        start = 1
        for record in reader:
            records.append(record)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ResultsError(f"{path}: cannot read {what}: {exc} (line {start})") from None
    header, rows, at = records[0], records[1:], lines[1:]
    keep, good_lines = [], []
    for i, (row, line) in enumerate(zip(rows, at)):
        if not row:
            continue
        if len(row) != len(header):
            problems.append(f"{path}: row {i + 1} (line {line}) has {len(row)} fields, the header {len(header)}: "
                            "truncated or damaged")
        elif i == len(rows) - 1 and not text.endswith("\n"):
            problems.append(f"{path}: row {i + 1} (line {line}) is cut off (no end of line): truncated file")
        else:
            keep.append(row)
            good_lines.append(line)
    out = io.StringIO()
    csv.writer(out).writerows([header, *keep])
    frame = pd.read_csv(io.StringIO(out.getvalue()))
    raw = pd.read_csv(io.StringIO(out.getvalue()), dtype=str, keep_default_na=False)
    for col in frame.columns:
        if not (col in numeric or str(col).startswith(NUMERIC_PREFIXES)) or pd.api.types.is_numeric_dtype(frame[col]):
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & (raw[col].str.strip() != "") & ~raw[col].str.strip().str.lower().isin(["nan", "none"])
        for idx in frame.index[bad]:
            problems.append(f"{path}: row {idx + 1} (line {good_lines[idx]}), column {col}: "
                            f"{raw.at[idx, col][:40]!r} is not a number")
        frame[col] = values
    return frame


def _planned_ids(p: Path, problems: list) -> list[str] | None:
    """The trial ids ``plan.json`` (with ``spec.yaml``'s seeds) says the sweep runs; None without a plan."""
    try:
        plan = json.loads((p / PLAN_JSON).read_text())
        seeds = yaml.safe_load((p / SPEC_YAML).read_text())["seeds"]
        mode, configs, selected = plan["mode"], plan["configs"], plan["selected"]
        ids = []
        if mode in ("both", "search"):
            ids += [trial_id("search", c["config_id"], seeds[0]) for a in plan["algorithms"] for c in configs[a]]
        if mode == "both" and not selected:
            problems.append(f"{p / PLAN_JSON}: the final phase has not run (no configuration selected yet)")
        elif mode in ("both", "final"):
            ids += [trial_id("final", selected.get(a, configs[a][0]["config_id"]), s) for a in plan["algorithms"]
                    for s in seeds]
        return ids
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, yaml.YAMLError) as exc:
        problems.append(f"{p / PLAN_JSON}: cannot tell which trials were planned ({type(exc).__name__})")
        return None


def cross_check(p: Path, trials: pd.DataFrame, epochs: pd.DataFrame | None, problems: list) -> None:
    """What the tables say against each other and against plan.json: every planned trial once, and
    as many epochs.csv rows (1..n) per trial as trials.csv's ``epochs``."""
    ids = trials["trial_id"].astype(str)
    planned = _planned_ids(p, problems)
    if planned is not None:
        missing = [t for t in planned if t not in set(ids)]
        extra = sorted(set(ids) - set(planned))
        if missing:
            problems.append(f"{p / 'trials.csv'}: {len(missing)} of {len(planned)} planned trials are missing "
                            f"(first: {missing[0]}): the sweep is unfinished or the file truncated")
        if extra:
            problems.append(f"{p / 'trials.csv'}: trial {extra[0]} is not in plan.json")
    dup = ids[ids.duplicated()]
    if not dup.empty:
        problems.append(f"{p / 'trials.csv'}: trial {dup.iloc[0]} appears more than once")
    if epochs is None or "epochs" not in trials.columns:
        return
    counts = epochs.groupby(epochs["trial_id"].astype(str))["epoch"].apply(
        lambda e: sorted(pd.to_numeric(e, errors="coerce").dropna().astype(int))) if not epochs.empty else {}
    for i, row in trials.iterrows():
        n = pd.to_numeric(row["epochs"], errors="coerce")
        if pd.isna(n):
            continue
        got = counts.get(str(row["trial_id"]), []) if len(counts) else []
        if list(got) != list(range(1, int(n) + 1)):
            problems.append(f"{p / 'epochs.csv'}: trial {row['trial_id']} (trials.csv row {i + 1}) has "
                            f"{len(got)} epoch rows, trials.csv says {int(n)} epochs: truncated or damaged")


def _read_optional(path: Path, parse) -> tuple[object, str | None]:
    if not path.is_file():
        return None, None
    text = path.read_text(errors="replace")
    try:
        return parse(text), text
    except (yaml.YAMLError, json.JSONDecodeError, ValueError):
        return text, text  # shown raw in the provenance section


def _labels(paths: list[Path]) -> list[str]:
    """Short unique labels for directories: their names, with parents added where names clash."""
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth >= max(len(p.parts) for p in paths):
            return labels
        depth += 1


def load_results(dirs: list[Path | str], *, allow_incomplete: bool = False) -> Results:
    """Load and check results directories. Damage or incompleteness (see :func:`cross_check`) is a
    one-line ResultsError naming the file and row, unless ``allow_incomplete``: then it is kept in
    ``Results.problems`` for the report to show, and only what the files really say is used."""
    if not dirs:
        raise ResultsError("no results directory given; name one or more: creditbench report DIR [DIR ...]")
    paths = [Path(d).expanduser().resolve() for d in dirs]
    seen = set()
    for p, given in zip(paths, dirs):
        if p in seen:
            raise ResultsError(f"results directory {given} is named twice")
        seen.add(p)
        if not p.exists():
            raise ResultsError(f"results directory {given} does not exist")
        if not p.is_dir():
            raise ResultsError(f"{given} is not a directory; expected a results directory with trials.csv")
        if not (p / "trials.csv").is_file():
            raise ResultsError(f"{given} holds no trials.csv: not a results directory (or the sweep wrote nothing yet)")
    sources, trial_frames, epoch_frames, problems = [], [], [], []
    for p, label in zip(paths, _labels(paths)):
        found: list[str] = []
        trials = _read_checked(p / TRIALS_CSV, TRIALS_CSV, TRIAL_NUMERIC, found)
        if trials.empty:
            raise ResultsError(f"{p / 'trials.csv'} has no trials")
        missing = [c for c in REQUIRED_TRIAL_COLUMNS if c not in trials.columns]
        if missing:
            raise ResultsError(f"{p / 'trials.csv'} lacks column(s) {', '.join(missing)}: not the harness.schema format")
        bad_stage = sorted(set(trials["phase"].astype(str)) - set(SWEEP_STAGES))
        if bad_stage:
            raise ResultsError(f"{p / 'trials.csv'}: unknown phase '{bad_stage[0]}'; valid: {', '.join(SWEEP_STAGES)}")
        bad_status = sorted(set(trials["status"].astype(str)) - set(TRIAL_STATUSES))
        if bad_status:
            raise ResultsError(f"{p / 'trials.csv'}: unknown status '{bad_status[0]}'; valid: "
                               f"{', '.join(TRIAL_STATUSES)}")
        has_epochs = (p / EPOCHS_CSV).is_file()
        epochs = _read_checked(p / EPOCHS_CSV, EPOCHS_CSV, EPOCH_NUMERIC, found) if has_epochs else pd.DataFrame()
        if not epochs.empty and not {"trial_id", "epoch"} <= set(epochs.columns):
            raise ResultsError(f"{p / 'epochs.csv'} lacks trial_id/epoch columns: not the harness.schema format")
        cross_check(p, trials, epochs if has_epochs else None, found)
        if found and not allow_incomplete:
            more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
            raise ResultsError(f"{found[0]}{more}; {INCOMPLETE_HINT}")
        problems += found
        spec, spec_text = _read_optional(p / SPEC_YAML, yaml.safe_load)
        env, env_text = _read_optional(p / ENV_JSON, json.loads)
        sources.append(Source(p, label, spec, spec_text, env, env_text, _read_declarations(p / ALGORITHMS_JSON)))
        trials = trials.assign(source=label)
        trial_frames.append(trials)
        if not epochs.empty:
            epochs = epochs.assign(source=label)
            if "algo" not in epochs.columns or "phase" not in epochs.columns:
                keys = trials[["trial_id", "algo", "phase", "seed"]]
                epochs = epochs.drop(columns=[c for c in ("algo", "phase", "seed") if c in epochs], errors="ignore")
                epochs = epochs.merge(keys, on="trial_id", how="left")
            epoch_frames.append(epochs)
    trials = pd.concat(trial_frames, ignore_index=True, sort=False)
    for col in ("algo", "dataset", "network", "phase", "status"):
        trials[col] = trials[col].astype(str)
    epochs = pd.concat(epoch_frames, ignore_index=True, sort=False) if epoch_frames else pd.DataFrame()
    if not epochs.empty:
        # trial ids are unique per directory, not across directories
        epochs = epochs.merge(trials[["source", "trial_id", "dataset", "network"]], on=["source", "trial_id"],
                              how="inner")
    results = Results(sources, trials, epochs, problems=problems)
    results.fingerprints = check_compatible(results)
    return results


def _read_declarations(path: Path) -> dict:
    """``algorithms.json`` (algorithm → what it declares for the report); {} when absent. A file that is
    not the sweep's is refused with one line."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    if not (isinstance(data, dict) and all(isinstance(v, dict) and isinstance(v.get("diagnostics", {}), dict)
                                           and isinstance(v.get("search_space", {}), dict) for v in data.values())):
        raise ResultsError(f"{path}: not the sweep's algorithms.json "
                           "(algorithm → {diagnostics: {...}, search_space: {...}})")
    return data


def diagnostic_labels(results: Results) -> dict[str, dict]:
    """epochs.csv column → {"label", "unit"} from what the algorithms declared (``algorithms.json``), in
    their declared order; a declared name ending in ``_l*`` covers that name's per-layer columns."""
    columns = list(results.epochs.columns) if not results.epochs.empty else []
    out: dict[str, dict] = {}
    for src in results.sources:
        for algo in sorted(src.algorithms):
            for name, entry in (src.algorithms[algo].get("diagnostics") or {}).items():
                if not isinstance(entry, dict):
                    continue
                if name.endswith("_l*"):
                    stem = name[:-1]
                    matched = sorted(c for c in columns if c.startswith(stem) and c[len(stem):].isdigit())
                else:
                    matched = [name]
                for col in matched:
                    out.setdefault(col, {k: str(v) for k, v in entry.items() if k in ("label", "unit")})
    return out


# ---------------------------------------------------------------------------- search spaces
def normalise_space(entry, where: str = "search space") -> dict | None:
    """A search-space entry as the sweep writes it in spec.yaml (``spec.Dist``: ``{kind: loguniform|uniform|
    randint, low, high}`` or ``{kind: choice, values}``) → the same dict; None for ``null`` (held fixed).
    Anything else is refused with one line."""
    if entry is None:
        return None
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind not in SPACE_KINDS or set(entry) != set(SPACE_KINDS[kind]):
        raise ResultsError(f"{where}: {entry!r} is not a search distribution as a sweep writes it "
                           "({kind: loguniform|uniform|randint, low, high} or {kind: choice, values})")
    return {k: (list(v) if k == "values" else v) for k, v in entry.items()}


def spec_search_space(spec, algo: str, where: str = "spec.yaml") -> dict | None:
    """The search space of ``algo`` in a resolved sweep spec (``search_spaces.<algo>``), if it has one."""
    block = spec.get("search_spaces") if isinstance(spec, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get(algo), dict):
        return None
    space = {}
    for name, entry in block[algo].items():
        norm = normalise_space(entry, f"{where}: search_spaces.{algo}.{name}")
        if norm is not None:
            space[str(name)] = norm
    return space or None


def search_space(results: Results, algo: str, sources: list[str]) -> tuple[dict, str]:
    """(space, where it came from) for ``algo``: the spec's when it has one, else the space the algorithm
    declared (recorded in ``algorithms.json``; for results without either, the installed plugin's)."""
    for src in results.sources:
        if src.label in sources:
            space = spec_search_space(src.spec, algo, str(src.path / SPEC_YAML))
            if space:
                return space, f"spec.yaml ({src.label})"
    for src in results.sources:
        declared = (src.algorithms.get(algo) or {}).get("search_space") if src.label in sources else None
        if isinstance(declared, dict):
            return {**TrainConfig.search_space(), **declared}, f"declared defaults ({ALGORITHMS_JSON})"
    from harness.registry import get_algorithm

    try:
        params = get_algorithm(algo).Params.search_space()
    except CreditbenchError:
        return dict(TrainConfig.search_space()), "declared defaults (training only: algorithm not installed)"
    return {**TrainConfig.search_space(), **params}, "declared defaults (Params / TrainConfig)"


def searched_names(results: Results, trials: pd.DataFrame) -> set[str]:
    """Hyperparameters searched for any algorithm in ``trials``: declared/spec spaces and what varied."""
    names = set()
    for algo, sub in trials.groupby("algo"):
        space, _ = search_space(results, algo, sorted(sub["source"].unique()))
        names |= set(space)
        search = sub[sub["phase"] == "search"]
        for col in [c for c in search.columns if c.startswith("hp.")]:
            if search[col].dropna().astype(str).nunique() > 1:
                names.add(col[3:])
    return names


# ---------------------------------------------------------------------------- compatibility
def version_differences(results: Results) -> list[str]:
    """Packages whose versions (``env.json`` ``versions``) differ between directories,
    e.g. ``torch 2.14.1 (`a`) vs 2.13.0 (`b`)``; directories that record none are not compared."""
    seen: dict[str, dict[str, list[str]]] = {}
    for src in results.sources:
        versions = src.env.get("versions") if isinstance(src.env, dict) else None
        for pkg, value in (versions.items() if isinstance(versions, dict) else ()):
            seen.setdefault(str(pkg), {}).setdefault(str(value), []).append(f"`{src.label}`")
    return [f"{pkg} " + " vs ".join(f"{v} ({', '.join(labels)})" for v, labels in by.items())
            for pkg, by in seen.items() if len(by) > 1]


def _hp_signature(row: pd.Series, cols: list[str]) -> str:
    return ", ".join(f"{c[3:]}={row[c]}" for c in cols if not (isinstance(row[c], float) and math.isnan(row[c])))


def _fingerprints(src: Source, datasets: list[str]) -> dict:
    """dataset → fingerprint, from env.json's ``dataset.fingerprints`` (as the sweep writes it)."""
    block = src.env.get("dataset") if isinstance(src.env, dict) else None
    fps = block.get("fingerprints") if isinstance(block, dict) else None
    return {str(k): v for k, v in fps.items() if isinstance(v, str)} if isinstance(fps, dict) else {}


def check_compatible(results: Results) -> dict:
    """Refuse (one-line ResultsError) results that do not measure the same thing; return fingerprints."""
    trials = results.trials
    fingerprints: dict[str, tuple[str, str]] = {}
    for src in results.sources:
        datasets = sorted(trials.loc[trials["source"] == src.label, "dataset"].unique())
        for name, fp in _fingerprints(src, datasets).items():
            if name in fingerprints and fingerprints[name][0] != fp:
                raise ResultsError(f"incompatible results: dataset {name} has fingerprint {fingerprints[name][0][:12]} in "
                                   f"{fingerprints[name][1]} but {fp[:12]} in {src.label} (different data or split); "
                                   "report them separately")
            fingerprints.setdefault(name, (fp, src.label))
    if "algo_version" in trials.columns:
        for algo, sub in trials.groupby("algo"):
            versions = sub["algo_version"].dropna().astype(str).unique()
            if len(versions) > 1:
                where = "; ".join(f"v{v} in {', '.join(sorted(sub.loc[sub['algo_version'].astype(str) == v, 'source'].unique()))}"
                                  for v in sorted(versions))
                raise ResultsError(f"incompatible results: algorithm {algo} has several versions ({where}); "
                                   "its update rule changed between them, so report them separately")
    hp_cols = [c for c in trials.columns if c.startswith("hp.")]
    for (dataset, network), group in trials.groupby(GROUP):
        searched = searched_names(results, group)
        protocol = [f"hp.{n}" for n in TrainConfig.model_fields if n not in searched and f"hp.{n}" in group.columns]
        for phase, sub in group.groupby("phase"):
            for col in protocol:
                values = sub[col].dropna().astype(str)
                if values.nunique() > 1:
                    parts = []
                    for v in sorted(values.unique()):
                        rows = sub[sub[col].astype(str) == v]
                        parts.append(f"{v} ({', '.join(sorted(set(rows['source'] + ':' + rows['algo'])))})")
                    raise ResultsError(f"incompatible protocols for {dataset} / {network} ({phase} phase): "
                                       f"{col[3:]} differs: {' vs '.join(parts)}; report them separately")
        final = group[group["phase"] == "final"]
        for algo, sub in final.groupby("algo"):
            cols = [c for c in hp_cols if sub[c].notna().any() and c[3:] not in ("epochs",)]
            configs = sub.apply(lambda r: _hp_signature(r, cols), axis=1)
            if configs.nunique() > 1:
                raise ResultsError(f"incompatible results for {dataset} / {network}: algorithm {algo} has "
                                   f"{configs.nunique()} different final configurations (in "
                                   f"{', '.join(sorted(sub['source'].unique()))}); report them separately")
            dup = sub[sub.duplicated("seed", keep=False)]
            if not dup.empty:
                seed = dup["seed"].iloc[0]
                raise ResultsError(f"duplicate results for {dataset} / {network}: final-phase seed {seed} of {algo} "
                                   f"appears {len(dup[dup['seed'] == seed])} times (in "
                                   f"{', '.join(sorted(dup['source'].unique()))}); pass each run once")
    return {k: v[0] for k, v in fingerprints.items()}

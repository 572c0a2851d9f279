"""Published results shown beside measured ones: ``harness/published.csv`` (data, with citations).

A published row is shown for a dataset × network of the report only when both names match exactly
(the same dataset and the same network preset); its ``algo`` is the harness's algorithm id, so the
match needs no knowledge of algorithms here. Protocols differ between papers and from the harness's
(the ``protocol`` and ``measured_on`` columns say how): the numbers are a plausibility check, not a
significance test.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import ResultsError

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
COLUMNS = ("algo", "method", "dataset", "network", "accuracy", "measured_on", "protocol", "source")


def load_published(path: Path | str | None = PUBLISHED_CSV) -> pd.DataFrame:
    """The published table (empty when ``path`` is None); a file without its columns is refused."""
    if path is None:
        return pd.DataFrame(columns=list(COLUMNS))
    if not Path(path).is_file():
        raise ResultsError(f"published results {path}: no such file; name a CSV with columns {', '.join(COLUMNS)}, "
                           "or 'none'")
    try:
        frame = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ResultsError(f"published results {path}: cannot be read ({type(exc).__name__})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"published results {path}: missing column(s) {', '.join(missing)}; "
                           f"expected: {', '.join(COLUMNS)}")
    frame["accuracy"] = pd.to_numeric(frame["accuracy"], errors="coerce")
    bad = frame[frame["accuracy"].isna() | ~frame["accuracy"].between(0, 100)]
    if not bad.empty:
        raise ResultsError(f"published results {path}: accuracy of {bad.iloc[0]['method']} "
                           f"({bad.iloc[0]['dataset']}) is not a percentage in [0, 100]")
    return frame[list(COLUMNS)]


def matching(published: pd.DataFrame, dataset: str, network: str) -> pd.DataFrame:
    """The published rows for exactly this dataset and network."""
    return published[(published["dataset"] == dataset) & (published["network"] == network)].reset_index(drop=True)


def short_source(source: str) -> str:
    """'Bartunov et al. 2018 (NeurIPS) Table 1' → 'Bartunov et al. 2018'."""
    return source.split(" (")[0]


def published_cell(rows: pd.DataFrame, algo: str) -> str:
    """The summary's 'published %' cell for one algorithm: each matching value with its short source."""
    hits = rows[rows["algo"] == algo]
    return "; ".join(f"{r.accuracy:.2f} ({short_source(r.source)})" for r in hits.itertuples()) or "—"

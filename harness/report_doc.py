"""The report as a list of blocks, written once and rendered twice: ``report.md`` (here) and
``report.html`` (:mod:`harness.report_html`), so that both say the same thing.

Inline text may use three markdown forms, and only these: ``**bold**``, ```code``` and
``[text](relative/link)``; the HTML renderer escapes everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None  # for level-2 sections: the id the contents line links to


@dataclass
class Para:
    text: str


@dataclass
class Items:
    items: list[str]


@dataclass
class Alert:
    text: str
    items: list[str] = field(default_factory=list)


@dataclass
class Table:
    frame: pd.DataFrame
    name: str = ""  # a short id (HTML data attribute, tests)


@dataclass
class Figure:
    name: str
    caption: str
    path: Path  # the PNG; the SVG and PDF are its siblings


@dataclass
class Details:
    summary: str
    lang: str
    text: str


Block = Heading | Para | Items | Alert | Table | Figure | Details


def render_markdown(blocks: list[Block], out: Path) -> str:
    """``report.md``: GitHub-flavoured markdown; figures as PNG links relative to ``out``."""
    from harness.report_tables import markdown_table

    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Items):
            lines += [f"- {i}" for i in b.items] + [""]
        elif isinstance(b, Alert):
            lines += [f"> {b.text}"] + ([">"] + [f"> - {i}" for i in b.items] if b.items else []) + [""]
        elif isinstance(b, Table):
            lines.append(markdown_table(b.frame))
        elif isinstance(b, Figure):
            rel = Path(b.path).relative_to(out).as_posix()
            lines += [f"**{b.caption}**", "", f"![{b.caption}]({rel})", ""]
        elif isinstance(b, Details):
            lines += ["<details>", f"<summary>{b.summary}</summary>", "", f"```{b.lang}", b.text.rstrip(), "```", "",
                      "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"

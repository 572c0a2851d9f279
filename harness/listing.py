"""Registered algorithms, their hyperparameters and the training hyperparameters as text: ``creditbench list``
and docs/algorithms.md (:mod:`harness.algorithm_reference`) print the same lines."""

from __future__ import annotations


def format_search(search: dict | None) -> str:
    """``{"kind": "loguniform", "low": 1e-4, "high": 1e-2}`` → ``loguniform(0.0001, 0.01)``."""
    if not search:
        return "-"
    if search["kind"] == "choice":
        return f"choice({', '.join(map(_value, search['values']))})"
    return f"{search['kind']}({_value(search['low'])}, {_value(search['high'])})"


def _value(v) -> str:
    """Numbers as a person writes them: 0.5, 100, 1e-4, 1e6."""
    if isinstance(v, float) and v != 0 and not (1e-3 <= abs(v) < 1e5):
        mantissa, exp = f"{v:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def format_range(row: dict) -> str:
    """The type and valid range: ``float > 0, ≤ 1000``; ``recirculation | exact``; ``int``."""
    if row["type"].startswith("one of "):
        return " | ".join(row["type"][len("one of "):].split("|"))
    symbols = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    parts = [f"{symbols[k]} {_value(v)}" for k, v in row["bounds"].items()]
    return row["type"] + (" " + ", ".join(parts) if parts else "")


def table_lines(rows: list[list[str]], indent: str) -> list[str]:
    """Rows of cells as left-aligned columns two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in rows]


def aligned_table(title: str, head: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """A title line, a blank line and the rows under ``head``: columns two spaces apart, the first left-aligned
    and the rest right-aligned, or a markdown table."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
                 for cells in (head, *rows)]
    return "\n".join([title, "", *lines]) + "\n"


def params_lines(described: list[dict], indent: str) -> list[str]:
    """Aligned columns (name, default, type and range, search space), then each one's doc and condition;
    ``described`` is ``HParams.describe()`` (as in an algorithm's spec)."""
    from harness.hparams import describe_when

    if not described:
        return [f"{indent}(no hyperparameters of its own)"]
    rows = [["hyperparameter", "default", "values", "search"]]
    rows += [[r["name"], _value(r["default"]), format_range(r), format_search(r["search"])] for r in described]
    out = []
    table = table_lines(rows, indent)
    out.append(table[0])
    for line, r in zip(table[1:], described):
        out.append(line)
        doc = r["doc"] + (f"; only when {describe_when(r['when'])}" if r["when"] else "")
        out.append(f"{indent}    {doc}")
    return out


def algorithm_lines(name: str, spec: dict, indent: str = "  ") -> list[str]:
    """One algorithm's entry in ``creditbench list`` (and in docs/algorithms.md): description, reference,
    origin, what it supports, its hyperparameters."""
    from harness.registry import describe_origin

    caps = spec["capabilities"]
    acts = caps["activations"] if isinstance(caps["activations"], str) else ", ".join(caps["activations"])
    return ([f"{indent}{name} (v{spec['version']}): {spec['description']}"]
            + table_lines([["reference:", spec["reference"]],
                      ["code:", describe_origin(spec["origin"])],
                      ["supports:", f"layers {', '.join(caps['layers'])}; activations {acts}"
                                   + ("; needs invertible activations" if caps["needs_invertible"] else "")]],
                     indent + "    ")
            + params_lines(spec["hyperparameters"], indent + "    "))

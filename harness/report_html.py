"""``report.html``: the report's blocks (:mod:`harness.report_doc`) as one self-contained page.

Figures are embedded as SVG (``data:`` URIs of the figure's ``.svg`` sibling), tables are pandas
Styler HTML made sortable by a few lines of inline JavaScript (click a header), and nothing is
fetched from a network. Every string is HTML-escaped before the three inline forms the blocks may
use (bold, code, relative links) are turned into tags, so text from a results file cannot inject markup.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from harness.report_doc import Alert, Block, Details, Figure, Heading, Items, Para, Table

# relative links only: no scheme (no "javascript:", no "http:"), nothing that leaves the report's folder
_LINK = re.compile(r"\[([^\]]+)\]\(([A-Za-z0-9_./#-]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1280px;margin:0 auto;padding:0 24px 64px;
color:#1b1b1b;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2.2em}h3{margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef1f5;cursor:pointer;white-space:nowrap}th.asc::after{content:' \\25B2'}th.desc::after{content:' \\25BC'}
tr:nth-child(even) td{background:#fafafa}
figure{margin:12px 0 28px}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-weight:600;margin-bottom:6px}
.alert{border-left:4px solid #c60;background:#fff4e5;padding:8px 14px}
code{background:#f1f1f1;padding:0 3px}pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:12px}
nav a{margin-right:12px}
"""

# sort a table by the clicked column: numbers (the first number in a cell) numerically, else as text
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
  var b=t.tBodies[0],rows=Array.from(b.rows),asc=!th.classList.contains('asc');
  t.querySelectorAll('thead th').forEach(function(h){h.classList.remove('asc','desc')});
  th.classList.add(asc?'asc':'desc');
  function key(r){var s=r.cells[i]?r.cells[i].textContent.trim():'';var m=s.match(/^[+-]?[0-9.]+(e[+-]?[0-9]+)?/i);
   return m?[0,parseFloat(m[0])]:[1,s.toLowerCase()]}
  rows.sort(function(x,y){var a=key(x),c=key(y);var r=a[0]-c[0]||(a[1]<c[1]?-1:a[1]>c[1]?1:0);return asc?r:-r});
  rows.forEach(function(r){b.appendChild(r)});});});});
"""


def inline(text: str) -> str:
    """Escape ``text``, then turn **bold**, `code` and relative [links](x) into tags."""
    out = html.escape(str(text), quote=True)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    out = _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", out)
    return _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', out)


def table_html(frame: pd.DataFrame, name: str = "") -> str:
    """A sortable table written by pandas' Styler, every cell and header escaped."""
    from harness.report_tables import fmt_value

    if frame.empty:
        return "<p><em>(none)</em></p>"
    styler = frame.style.hide(axis="index").format(lambda v: html.escape(v if isinstance(v, str) else fmt_value(v)))
    styler = styler.format_index(lambda v: html.escape(str(v)), axis=1)
    attrs = f'class="sortable" data-table="{html.escape(name, quote=True)}"'
    # exclude_styles drops Styler's random ids and CSS, and its table attributes with them: put them back
    return styler.to_html(exclude_styles=True).replace("<table>", f"<table {attrs}>", 1)


def figure_html(fig: Figure) -> str:
    svg = Path(fig.path).with_suffix(".svg")
    data = base64.b64encode(svg.read_bytes()).decode("ascii")
    caption = html.escape(fig.caption)
    return (f'<figure id="fig-{html.escape(fig.name, quote=True)}" data-figure="{html.escape(fig.name, quote=True)}">'
            f"<figcaption>{caption}</figcaption>"
            f'<img alt="{caption}" src="data:image/svg+xml;base64,{data}"></figure>')


def render_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(b.anchor, quote=True)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{inline(b.text)}</p>")
        elif isinstance(b, Items):
            body.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Alert):
            items = "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b.items) + "</ul>" if b.items else ""
            body.append(f'<div class="alert"><p>{inline(b.text)}</p>{items}</div>')
        elif isinstance(b, Table):
            body.append(table_html(b.frame, b.name))
        elif isinstance(b, Figure):
            body.append(figure_html(b))
        elif isinstance(b, Details):
            body.append(f"<details><summary>{html.escape(b.summary)}</summary>"
                        f"<pre><code>{html.escape(b.text.rstrip())}</code></pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{SORT_JS}</script>\n</body></html>\n")

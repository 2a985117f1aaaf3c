"""Self-contained HTML evaluation report: Markdown sections and PNG figures embedded as base64."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cxrtriage import DISCLAIMER, __version__

__all__ = ["markdown_to_html", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px;font-size:0.9em}
figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:0.85em;color:#555}
img{max-width:100%;border:1px solid #ddd}.disclaimer{background:#fff4e5;border:1px solid #f0b36b;padding:0.6em 1em}
"""


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    return out


def markdown_to_html(md: str) -> str:
    """Render the small Markdown subset the result writers use.

    Headings (``#``..``####``), pipe tables, ``-`` bullet lists, paragraphs,
    inline code and bold. Everything else is escaped text.

    Parameters
    ----------
    md : str

    Returns
    -------
    str
        HTML fragment.
    """
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line:
            i += 1
            continue
        m = re.match(r"^(#{1,4})\s+(.*)$", line)
        if m:
            lvl = len(m.group(1)) + 1
            out.append(f"<h{lvl}>{_inline(m.group(2))}</h{lvl}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i].strip().strip("|"))
                i += 1
            cells = [[c.strip() for c in row.split("|")] for row in block]
            body = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells[0]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</table>")
        elif line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||- )", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def write_report(
    path: str | Path, title: str, sections: Sequence[tuple[str, str]], figures: Sequence[tuple[str, str | Path]] = ()
) -> Path:
    """Write one self-contained HTML file.

    Parameters
    ----------
    path : path
        Output ``.html``.
    title : str
    sections : sequence of (heading, markdown)
    figures : sequence of (caption, png path)
        Missing files are skipped; present ones are embedded as base64 data URIs.

    Returns
    -------
    Path
    """
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='disclaimer'>{html.escape(DISCLAIMER)}</p>",
    ]
    for heading, md in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(markdown_to_html(md))
    figs = [(c, Path(p)) for c, p in figures if Path(p).is_file()]
    if figs:
        parts.append("<h2>Figures</h2>")
        for caption, p in figs:
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        f"<hr><p style='font-size:0.8em;color:#777'>cxrtriage {__version__}, generated {stamp}</p></body></html>"
    )
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

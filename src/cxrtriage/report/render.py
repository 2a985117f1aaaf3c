"""Render a draft report (:mod:`cxrtriage.report.draft`) as JSON, HTML or PDF.

HTML: a self-contained page (Jinja2 template ``report/templates/report.html``,
images embedded as ``data:`` URIs). PDF: drawn with fpdf2 (pure Python, no
browser), with the annotated image and the heatmap when given.
"""

from __future__ import annotations

import base64
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cxrtriage.report.draft import ai_result_line

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["render_json", "render_html", "render_pdf"]


def render_json(report: dict) -> bytes:
    """UTF-8 JSON bytes of the report (indented)."""
    return (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


@lru_cache(maxsize=1)
def _env() -> Environment:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("cxrtriage.report", "templates"), autoescape=select_autoescape(["html"]))


def render_html(report: dict, images: list[tuple[str, bytes]] | None = None) -> str:
    """Self-contained HTML page of the report.

    Parameters
    ----------
    report : dict
    images : list of (caption, png_bytes), optional
        Embedded as ``data:image/png;base64`` URIs.

    Returns
    -------
    str
        HTML document (text is escaped by Jinja2's autoescaping).
    """
    imgs = [(c, "data:image/png;base64," + base64.b64encode(b).decode("ascii")) for c, b in (images or [])]
    return _env().get_template("report.html").render(r=report, images=imgs)


def _latin1(s: str) -> str:
    s = (
        s.replace("\u2014", "-")
        .replace("\u2013", "-")
        .replace("\u2019", "'")
        .replace("\u2265", ">=")
        .replace("\u2264", "<=")
    )
    return s.encode("latin-1", "replace").decode("latin-1")


def _unchanged(s: str) -> str:
    return s


def _dejavu_dir() -> Path | None:
    """Folder with DejaVuSans.ttf, -Bold and -Oblique: matplotlib's bundled copy (a base dependency), else Debian's."""
    import importlib.util

    cands = []
    spec = importlib.util.find_spec("matplotlib")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        cands.append(Path(loc) / "mpl-data" / "fonts" / "ttf")
    cands.append(Path("/usr/share/fonts/truetype/dejavu"))
    for d in cands:
        if all((d / f).is_file() for f in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf")):
            return d
    return None


def render_pdf(report: dict, images: list[tuple[str, bytes]] | None = None) -> bytes:
    """PDF (A4) of the report, drawn with fpdf2.

    Text is set in DejaVu Sans (embedded, subset), so names and findings in
    any script print as typed; without the font files it falls back to
    Helvetica with non-Latin-1 characters replaced by ``?``.

    Parameters
    ----------
    report : dict
    images : list of (caption, png_bytes), optional
        Placed side by side under the text.

    Returns
    -------
    bytes
        The PDF file (starts with ``%PDF``).
    """
    from fpdf import FPDF

    r = report
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    fonts = _dejavu_dir()
    family, text_of = "Helvetica", _latin1
    if fonts is not None:
        family, text_of = "DejaVu", _unchanged
        pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
        pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
        pdf.add_font("DejaVu", "I", str(fonts / "DejaVuSans-Oblique.ttf"))
    pdf.add_page()
    pdf.set_title(text_of(r["title"]))
    w = pdf.epw

    def para(text: str, size: float = 10, style: str = "", fill: tuple[int, int, int] | None = None) -> None:
        pdf.set_font(family, style, size)
        if fill:
            pdf.set_fill_color(*fill)
        pdf.multi_cell(w, size * 0.5, text_of(text), fill=bool(fill), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1.5)

    para(r["disclaimer"], 8, "B", (255, 244, 214))
    para(r["title"], 14, "B")
    status = r["status"].upper() + (
        f" - signed by {r['signed_by']} at {r['signed_at']}"
        if r["status"] == "signed"
        else " - awaiting radiologist review"
    )
    para(f"Study {r['study_id']}, created {r['created_at']}. Status: {status}", 9)
    if r.get("flag"):
        para(r["flag"], 10, "B", (255, 227, 227))
    findings = (
        r["sections"]["findings"] or f"[{r.get('findings_placeholder') or 'To be completed by the radiologist.'}]"
    )
    for head, body in (
        ("Technique", r["sections"]["technique"]),
        ("Findings", findings),
        ("Impression", r["sections"]["impression"]),
    ):
        para(head, 11, "B")
        para(body, 10)
    para("AI results", 11, "B")
    for ai in r["ai_results"]:
        warn = not ai.get("applicable", True)
        para(ai_result_line(ai), 10, "B" if warn else "", (255, 244, 214) if warn else None)
    if images:
        n = len(images)
        side = min(85.0, (w - 5 * (n - 1)) / n)
        if pdf.get_y() + side + 10 > pdf.h - 15:
            pdf.add_page()
        y = pdf.get_y()
        for i, (caption, png) in enumerate(images):
            x = pdf.l_margin + i * (side + 5)
            pdf.image(io.BytesIO(png), x=x, y=y, w=side, h=side)
            pdf.set_xy(x, y + side + 1)
            pdf.set_font(family, "", 8)
            pdf.cell(side, 4, text_of(caption))
        pdf.set_xy(pdf.l_margin, y + side + 7)
    para(r["disclaimer"], 8, "I")
    return bytes(pdf.output())

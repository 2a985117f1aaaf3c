"""The shortcut audit as Markdown tables (model card) and a self-contained HTML page (``audit.html``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrtriage.cards.html_report import write_report
from cxrtriage.cards.tables import markdown_table
from cxrtriage.metrics.report import Estimate, MetricReport, format_estimate
from cxrtriage.models.bundle import AuditSection

__all__ = ["HOW_TO_READ", "audit_markdown", "write_audit_page"]

#: How to read the three parts of the audit (card and page).
HOW_TO_READ = [
    "**Hidden lungs**: the images scored at the saved operating point as they are, with the lung fields hidden, and "
    "with everything but the lung fields hidden. A model that reads the lungs should fall towards AUROC 0.5 with the "
    "lungs hidden and keep most of its AUROC with only the lungs visible. An AUROC well above 0.5 with the lungs "
    "hidden means the model reads markers, borders, collimation, patient size or the source of the image.",
    "**Source probe**: a logistic regression on the model's pooled features, cross-validated with patients kept "
    "within one fold, predicts which dataset an image came from. 0.5 = the features do not encode the source; "
    "near 1 = they do, and any class that comes mostly from one source can be told apart by source alone "
    "(DeGrave, Janizek & Lee, Nat. Mach. Intell. 3, 2021; Zech et al., PLoS Med. 15(11), 2018). When the sources "
    "hold different classes, the probe over all images partly measures the class; the rows for one true class "
    "compare images with the same label from different sources and measure the source alone.",
    "**Heatmap in lungs**: the share of the predicted class's activation-map mass inside the lung mask. The mask's "
    "own area is the chance level: a share near or below it means the heatmap is not concentrated on the lungs.",
    "The lung fields come from the lung segmenter named above (trained on pseudo-masks, not expert contours; dense "
    "consolidation may be left outside the mask); images it fails on are left out and counted. For a model with "
    "lung-only input (`input: lungs`) the lung step masks the images again before the network: hiding the lungs then "
    "leaves it almost nothing, and the heatmap's share in the lungs is measured on the blurred low-resolution map.",
]


def _report_rows(reports: dict[str, MetricReport]) -> list[dict[str, str]]:
    labels = {
        "original": "as they are",
        "lungs_hidden": "lung fields hidden",
        "lungs_only": "only lung fields visible",
    }
    rows = []
    for key, rep in reports.items():
        rows.append(
            {
                "set": labels.get(key, key),
                "auroc": format_estimate(rep.metrics.get("auroc")),
                "acc": format_estimate(rep.metrics.get("accuracy")),
                "msens": format_estimate(rep.metrics.get("macro_sensitivity")),
            }
        )
    return rows


def audit_markdown(section: AuditSection) -> str:
    """The audit's figures as Markdown: hidden-lungs, source-probe and heatmap tables.

    Parameters
    ----------
    section : AuditSection

    Returns
    -------
    str
        Markdown (pipe tables and bullets), no top-level heading.
    """
    rep = section.original
    auroc_name = f"AUROC ({rep.positive_class})" if rep.positive_class else "AUROC (macro one-vs-rest)"
    lines = [
        f"- Images: {section.n} from {', '.join(section.data)} (class counts {rep.class_counts}); "
        f"hidden pixels filled with the {section.fill}; 95 % percentile-bootstrap intervals ({rep.n_boot} replicates).",
        f"- Lung fields: {section.lung_mask}.",
        "",
        markdown_table(
            _report_rows({"original": rep, "lungs_hidden": section.lungs_hidden, "lungs_only": section.lungs_only}),
            [("set", "images"), ("auroc", auroc_name), ("acc", "accuracy"), ("msens", "macro sensitivity")],
        ),
        "",
    ]
    probe = section.source_probe
    if probe:

        def row(what: str, p: dict[str, Any]) -> dict[str, str]:
            counts = ", ".join(f"{k} {v}" for k, v in p.get("counts", {}).items())
            return {
                "what": f"{what} ({counts}; {p.get('n_splits')}-fold grouped CV)",
                "auroc": format_estimate(Estimate.from_dict(p.get("auroc"))),
                "acc": f"{p.get('accuracy', float('nan')):.3f}",
            }

        lines += [
            markdown_table(
                [row("all images", probe)]
                + [row(f"true class {c.replace('_', ' ')} only", p) for c, p in probe.get("within_class", {}).items()],
                [("what", "features predict the dataset"), ("auroc", "AUROC"), ("acc", "accuracy")],
            ),
            "",
        ]
    else:
        lines += ["- Source probe: not run (images from a single source).", ""]
    if section.cam_in_lung:
        lines += [
            markdown_table(
                [{"cls": c.replace("_", " "), "share": format_estimate(e)} for c, e in section.cam_in_lung.items()]
                + [{"cls": "chance level (lung-mask area)", "share": format_estimate(section.lung_area)}],
                [("cls", "true class"), ("share", "CAM mass inside the lung mask")],
            ),
            "",
        ]
    return "\n".join(lines)


def write_audit_page(summary: dict[str, Any], path: str | Path) -> Path:
    """Write ``audit.html``: the tables, how to read them, and the example panels.

    Parameters
    ----------
    summary : dict
        ``audit.json`` content: :meth:`AuditSection.to_dict` plus ``model``,
        ``examples`` (``file`` relative to the page's folder, ``label``, ``source``,
        ``cam_in_lung``, ``lung_area``), ``duplicates_dropped`` and ``cam``.
    path : path
        Output ``.html`` (example PNGs are embedded).

    Returns
    -------
    Path
    """
    section = AuditSection.from_dict({k: summary[k] for k in AuditSection.__dataclass_fields__ if k in summary})
    path = Path(path)
    model = summary.get("model", {})
    notes = [
        f"- Model: `{model.get('dir', '?')}` ({model.get('arch', '?')}, task `{model.get('task', '?')}`)",
        f"- Heatmaps: {summary.get('cam', '?')}",
        f"- Cross-dataset near-duplicates dropped: {len(summary.get('duplicates_dropped', []))}",
        f"- Command: `{section.command}`" if section.command else "",
    ]
    figures = [
        (
            f"{e['label']} ({e['source']}): original | lungs hidden | only lungs | CAM with lung outline "
            f"(CAM in lungs {e['cam_in_lung']}, lung area {e['lung_area']})",
            path.parent / e["file"],
        )
        for e in summary.get("examples", [])
    ]
    return write_report(
        path,
        f"Shortcut audit: {Path(str(model.get('dir', 'model'))).name}",
        [
            ("Results", audit_markdown(section)),
            ("How to read it", "\n".join(f"- {x}" for x in HOW_TO_READ)),
            ("Run", "\n".join(x for x in notes if x)),
        ],
        figures,
    )

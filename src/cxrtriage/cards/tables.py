"""Result tables written three ways: Markdown (for humans and docs), CSV and JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrtriage.metrics.report import MetricReport, format_estimate

__all__ = [
    "fmt",
    "markdown_table",
    "write_csv",
    "write_json",
    "report_metric_names",
    "external_rows",
    "external_markdown",
    "write_external_tables",
]


def fmt(value: object, digits: int = 3) -> str:
    """Format a cell: floats to ``digits`` decimals, ``None`` as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """GitHub Markdown table.

    Parameters
    ----------
    rows : sequence of dict
        One dict per row; values already formatted or formatted by :func:`fmt`.
    columns : sequence of (key, header)

    Returns
    -------
    str
        The table, ending with a newline.
    """
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def write_csv(rows: Sequence[dict], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV (columns: ``columns`` or the union of the keys in order)."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON (NumPy scalars converted)."""

    def default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    path = Path(path)
    path.write_text(json.dumps(obj, indent=1, default=default) + "\n")
    return path


def report_metric_names(report: MetricReport, short: bool = False) -> list[str]:
    """Headline metric names of a report, in table order.

    Parameters
    ----------
    report : MetricReport
    short : bool
        Only the three main figures (binary: AUROC, sensitivity, specificity;
        multi-class: macro AUROC, macro sensitivity, accuracy).

    Returns
    -------
    list of str
        Keys of :attr:`MetricReport.metrics` (names from :data:`cxrtriage.metrics.report.METRIC_NAMES`).
    """
    if report.is_binary:
        names = ["auroc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy"]
    else:
        names = ["auroc", "macro_sensitivity", "accuracy", "ppv", "f1"]
    return names[:3] if short else names


def _counts(report: MetricReport) -> str:
    return ", ".join(f"{c} {report.class_counts.get(c, 0)}" for c in report.classes)


def external_rows(sets: Sequence[tuple[str, str, MetricReport]]) -> list[dict[str, Any]]:
    """One flat row per scored dataset (for CSV): name, data, n, class counts, metrics with 95 % CIs.

    Parameters
    ----------
    sets : sequence of (name, data, MetricReport)
        Dataset name, its location and the model's scores on it; all reports of one task.

    Returns
    -------
    list of dict
        Keys ``dataset``, ``data``, ``n``, ``n_<class>`` per class, and per headline metric
        ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high`` (floats in [0, 1] or ``None``).
    """
    rows = []
    for name, data, rep in sets:
        row: dict[str, Any] = {"dataset": name, "data": data, "n": rep.n}
        row.update({f"n_{c}": rep.class_counts.get(c, 0) for c in rep.classes})
        for m in report_metric_names(rep):
            est = rep.metrics.get(m)
            ci = est.ci95 if est is not None and est.ci95 is not None else (None, None)
            row[m] = est.value if est is not None else None
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = ci
        rows.append(row)
    return rows


def external_markdown(sets: Sequence[tuple[str, str, MetricReport]], short: bool = False) -> str:
    """Markdown table, one row per dataset: n, class counts and headline metrics as ``value (low–high)``.

    Parameters
    ----------
    sets : sequence of (name, data, MetricReport)
    short : bool
        Three headline metrics only (:func:`report_metric_names`).

    Returns
    -------
    str
        The table (empty string when ``sets`` is empty).

    Raises
    ------
    ValueError
        The reports belong to different tasks.
    """
    if not sets:
        return ""
    tasks = {rep.task for _, _, rep in sets}
    if len(tasks) > 1:
        raise ValueError(f"external table mixes tasks {sorted(tasks)}")
    names = report_metric_names(sets[0][2], short)
    multi = not sets[0][2].is_binary
    rows = [
        {"dataset": name, "n": rep.n, "counts": _counts(rep), **{m: format_estimate(rep.metrics.get(m)) for m in names}}
        for name, _, rep in sets
    ]
    cols = [("dataset", "dataset"), ("n", "n"), ("counts", "images per class")] + [
        (m, ("macro " if multi and m in ("auroc", "ppv", "f1") else "") + m.replace("_", " ")) for m in names
    ]
    return markdown_table(rows, cols)


def write_external_tables(
    sets: Sequence[tuple[str, str, MetricReport]], out: str | Path, title: str = ""
) -> list[Path]:
    """Write ``external.md``, ``external.csv`` and ``external.json`` into ``out``.

    Parameters
    ----------
    sets : sequence of (name, data, MetricReport)
    out : path
        Existing folder.
    title : str
        First line of the Markdown file (a heading is added when given).

    Returns
    -------
    list of Path
        The three files.
    """
    out = Path(out)
    md = (
        (f"# {title}\n\n" if title else "")
        + external_markdown(sets)
        + ("\nMetrics at the model's saved temperature and operating point; 95 % percentile-bootstrap intervals.\n")
    )
    (out / "external.md").write_text(md)
    csv_path = write_csv(external_rows(sets), out / "external.csv")
    json_path = write_json(
        [
            {"dataset": n, "data": d, "n": r.n, "class_counts": r.class_counts, "report": r.to_dict()}
            for n, d, r in sets
        ],
        out / "external.json",
    )
    return [out / "external.md", csv_path, json_path]

"""Result tables written three ways: Markdown (for humans and docs), CSV and JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["fmt", "markdown_table", "write_csv", "write_json"]


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

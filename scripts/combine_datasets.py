"""Combine dataset folders into one manifest (absolute paths, a ``source`` column) for ``cxr train --data``.

``cxr train`` reads one dataset; a task drawn from several sources (``covid4``: COVID-19 Radiography Database +
rsna-lungs) trains on a combined manifest. Every row keeps its dataset's label, patient id and split, plus
``source`` (the dataset folder's name) so ``cxr evaluate --by source`` and the shortcut audit can tell sources
apart. Patient ids are prefixed with the source so two datasets never share a patient by accident.

Usage::

    python scripts/combine_datasets.py --task covid4 --out runs/covid4/manifest.csv \\
        ../shared/data/covid19-radiography ../shared/data/rsna-lungs

The manifest holds absolute paths of this machine: write it under ``runs/`` (not committed).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from cxrtriage.data.discover import DATASET_LABEL, discover
from cxrtriage.tasks import get_task


def combine(datasets: list[str], task_name: str, out: Path, exclude_where: tuple[str, ...] = ()) -> dict[str, int]:
    """Write the combined manifest of ``datasets`` for ``task_name``; return images per source."""
    task = get_task(task_name)
    rows, counts = [], {}
    for d in datasets:
        source = Path(d).resolve().name
        samples = [s for s in discover(d, task) if not any(str(s.extra.get(c) or "").strip() for c in exclude_where)]
        counts[source] = len(samples)
        for s in samples:
            rows.append(
                {
                    "path": s.path,
                    "label": s.extra.get(DATASET_LABEL) or s.label,
                    "patient_id": f"{source}:{s.patient_id}",
                    "split": s.split or "",
                    "source": source,
                    "sha256": s.extra.get("sha256", ""),
                }
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id", "split", "source", "sha256"])
        w.writeheader()
        w.writerows(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line: ``combine_datasets.py --task T --out CSV DATA...``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", help="dataset folders (with manifest.csv or ImageFolder layout)")
    p.add_argument("--task", required=True, help="task whose labels are kept (others left out)")
    p.add_argument("--out", required=True, type=Path, help="manifest CSV to write")
    p.add_argument("--exclude-where", action="append", default=[], help="leave out rows where this column is set")
    a = p.parse_args(argv)
    counts = combine(a.data, a.task, a.out, tuple(a.exclude_where))
    print(f"{a.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Find the labelled images of a dataset: an ImageFolder-style tree or a manifest.

Two layouts are understood (see the README):

* a folder whose images sit under class-named subfolders at any depth,
  ``ROOT/[SPLIT/]CLASS/image`` (Kaggle ``chest_xray``, COVID-19 Radiography
  Database, any ImageFolder layout);
* a ``manifest.csv`` with columns ``path,label`` and optional
  ``split,patient_id`` (paths relative to the manifest's folder). A folder that
  holds a ``manifest.csv`` is read through it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from cxrtriage.data.io import IMAGE_SUFFIXES
from cxrtriage.data.patients import patient_id_from_filename
from cxrtriage.tasks import TaskSpec

__all__ = ["Sample", "DatasetError", "discover", "SPLIT_NAMES", "normalise_split", "DATASET_LABEL"]

#: Key in :attr:`Sample.extra` of the label as the dataset writes it (``cxr evaluate --by dataset_label``:
#: e.g. sensitivity on ``COVID`` and on ``Viral Pneumonia`` apart, both mapped to one class of the task).
DATASET_LABEL = "dataset_label"

#: Folder / manifest split names and their canonical form.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


class DatasetError(ValueError):
    """The dataset location or manifest cannot be used (message names the file)."""


def normalise_split(name: str | None) -> str | None:
    """Map a split name (``"validation"``, ``"Train"``...) to train/val/test, else keep it lower-cased."""
    if not name:
        return None
    key = name.strip().lower()
    return SPLIT_NAMES.get(key, key) or None


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes
    ----------
    path : str
        Absolute path of the image file.
    label : str
        The class name of the task (canonical spelling from ``TaskSpec.classes``).
    target : int
        Index of ``label`` in ``TaskSpec.classes``.
    patient_id : str
        Patient identifier used for grouped splits (manifest ``patient_id``,
        else derived from the file name, else the file stem).
    split : str or None
        ``train`` / ``val`` / ``test`` (or another name from a manifest), if known.
    extra : dict
        Other manifest columns (e.g. ``sha256``, ``nih_patient_sex``), and :data:`DATASET_LABEL`: the label
        as the dataset writes it (manifest ``label`` or folder name), before the task's alias table.
    """

    path: str
    label: str
    target: int
    patient_id: str
    split: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _from_manifest(manifest: Path, task: TaskSpec) -> list[Sample]:
    root = manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = set(reader.fieldnames or [])
            missing = {"path", "label"} - cols
            if missing:
                raise DatasetError(f"{manifest}: missing column(s) {', '.join(sorted(missing))} (need path,label)")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{manifest}: cannot read manifest ({exc})") from None
    samples = []
    for row in rows:
        rel = (row.get("path") or "").strip()
        if not rel:
            continue
        extra = {k: v for k, v in row.items() if k not in ("path", "label", "split", "patient_id") and k is not None}
        extra[DATASET_LABEL] = (row.get("label") or "").strip()
        target = task.map_label(row.get("label") or "", rel, extra)
        if target is None:
            continue
        path = (root / rel).resolve()
        pid = (row.get("patient_id") or "").strip() or patient_id_from_filename(rel)
        samples.append(Sample(str(path), task.classes[target], target, pid, normalise_split(row.get("split")), extra))
    return samples


def _from_folder(root: Path, task: TaskSpec) -> list[Sample]:
    samples = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            continue
        label = rel.parts[-2]
        target = task.map_label(label, str(rel), {})
        if target is None:
            continue
        split = None
        for part in reversed(rel.parts[:-2]):
            if part.lower() in SPLIT_NAMES:
                split = SPLIT_NAMES[part.lower()]
                break
        samples.append(
            Sample(
                str(path.resolve()),
                task.classes[target],
                target,
                patient_id_from_filename(path),
                split,
                {DATASET_LABEL: label},
            )
        )
    return samples


def discover(data: str | Path, task: TaskSpec, split: str | None = None) -> list[Sample]:
    """List the labelled images of a dataset for a task.

    Parameters
    ----------
    data : str or Path
        A folder (ImageFolder layout, or holding ``manifest.csv``) or a CSV manifest.
    task : TaskSpec
        Decides which labels belong to the task and how they map to classes;
        images whose label is not part of the task are left out.
    split : str, optional
        Keep only this split (``train``, ``val``, ``test``...).

    Returns
    -------
    list of Sample
        In a stable order (manifest order, or sorted paths).

    Raises
    ------
    DatasetError
        The location does not exist, the manifest is malformed, or no image of
        the task's classes was found.
    """
    loc = Path(data)
    if not loc.exists():
        raise DatasetError(f"{loc}: dataset not found")
    if loc.is_file():
        samples = _from_manifest(loc, task)
    elif (loc / "manifest.csv").is_file():
        samples = _from_manifest(loc / "manifest.csv", task)
    else:
        samples = _from_folder(loc, task)
    if split is not None:
        wanted = normalise_split(split)
        samples = [s for s in samples if s.split == wanted]
    if not samples:
        where = f" in split {split!r}" if split else ""
        raise DatasetError(f"{loc}: no images of classes {', '.join(task.classes)}{where} for task {task.name!r}")
    return samples

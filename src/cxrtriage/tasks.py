"""Diagnostic tasks: one table entry each, one code path for all.

A task says which classes a model predicts, how dataset labels map onto them
and which classes mean "no finding" for triage. Adding a task means adding a
row to :data:`TASKS`, not new code paths.

Sources of the label conventions:

* ``pneumonia`` / ``pneumonia-type``: Kermany DS et al., "Identifying Medical
  Diagnoses and Treatable Diseases by Image-Based Deep Learning", Cell 172(5),
  2018; file names ``personN_bacteria_M`` / ``personN_virus_M`` mark the
  pneumonia type.
* ``covid``: COVID-19 Radiography Database (Chowdhury et al., IEEE Access 8,
  2020), folders ``COVID`` / ``Normal`` / ``Viral Pneumonia``.
* ``finding``: NIH ChestX-ray14 (Wang et al., CVPR 2017) "No Finding" versus any
  finding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

__all__ = ["TaskSpec", "TASKS", "get_task", "UnknownTaskError"]


class UnknownTaskError(KeyError):
    """Raised when a task name is not in :data:`TASKS`."""


def _kermany_type(label: str, path: str, extra: Mapping[str, str]) -> str | None:
    """Refine a Kermany PNEUMONIA label into ``bacterial`` or ``viral``.

    Uses the manifest column ``pneumonia_type`` when present, else the file
    name convention ``personN_bacteria_M`` / ``personN_virus_M`` (Kermany 2018).
    Returns ``None`` when the type cannot be told (the sample is then skipped).
    """
    if label != "pneumonia":
        return label
    kind = (extra.get("pneumonia_type") or "").strip().lower()
    if not kind:
        name = PurePath(path).name.lower()
        kind = "bacteria" if "bacteria" in name else "virus" if "virus" in name else ""
    return {"bacteria": "bacterial", "virus": "viral"}.get(kind)


@dataclass(frozen=True)
class TaskSpec:
    """A classification task.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"pneumonia"``.
    classes : tuple of str
        Output classes in model order (index ``i`` = logit ``i``).
    aliases : mapping str -> str
        Lower-cased dataset label -> canonical label *before* ``refine``.
        Labels not found here are matched case-insensitively against
        ``classes``; anything else is not part of the task and is skipped.
    normal_classes : tuple of str
        Classes meaning "no finding" (triage negative). Every other class is a
        finding.
    positive_class : str
        For binary tasks, the class whose probability is thresholded; for
        multi-class tasks the "finding" side is reported per class.
    refine : callable or None
        ``refine(label, path, extra_columns) -> label or None`` for labels that
        need the file name or another manifest column (``pneumonia-type``).
    description : str
        One line for help texts and model cards.
    """

    name: str
    classes: tuple[str, ...]
    normal_classes: tuple[str, ...]
    positive_class: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    refine: Callable[[str, str, Mapping[str, str]], str | None] | None = None
    description: str = ""

    @property
    def num_classes(self) -> int:
        """Number of output classes (int >= 2)."""
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        """True for two-class tasks (one threshold on ``positive_class``)."""
        return len(self.classes) == 2

    @property
    def positive_index(self) -> int:
        """Index of ``positive_class`` in ``classes``."""
        return self.classes.index(self.positive_class)

    def map_label(self, label: str, path: str = "", extra: Mapping[str, str] | None = None) -> int | None:
        """Map a dataset label to a class index.

        Parameters
        ----------
        label : str
            The label as found in a folder name or manifest (any case).
        path : str
            The image path (used by ``refine`` rules that read file names).
        extra : mapping, optional
            Other manifest columns of the row.

        Returns
        -------
        int or None
            Index into :attr:`classes`, or ``None`` when the label is not part
            of this task (such samples are skipped, not errors).
        """
        key = label.strip().lower()
        canon: str | None = self.aliases.get(key, key)
        if self.refine is not None and canon is not None:
            canon = self.refine(canon, path, extra or {})
        if canon is None:
            return None
        lowered = [c.lower() for c in self.classes]
        return lowered.index(canon.lower()) if canon.lower() in lowered else None


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            name="pneumonia",
            classes=("NORMAL", "PNEUMONIA"),
            normal_classes=("NORMAL",),
            positive_class="PNEUMONIA",
            aliases={"normal": "normal", "pneumonia": "pneumonia", "no finding": "normal"},
            description="Pneumonia vs normal (Kermany et al. 2018, pediatric CXR).",
        ),
        TaskSpec(
            name="pneumonia-type",
            classes=("normal", "bacterial", "viral"),
            normal_classes=("normal",),
            positive_class="bacterial",
            aliases={"normal": "normal", "pneumonia": "pneumonia"},
            refine=_kermany_type,
            description="Normal / bacterial / viral pneumonia (Kermany file names).",
        ),
        TaskSpec(
            name="covid",
            classes=("COVID", "Normal", "Viral_Pneumonia"),
            normal_classes=("Normal",),
            positive_class="COVID",
            aliases={"viral pneumonia": "viral_pneumonia", "covid-19": "covid"},
            description="COVID-19 / normal / viral pneumonia (COVID-19 Radiography Database).",
        ),
        TaskSpec(
            name="finding",
            classes=("no_finding", "finding"),
            normal_classes=("no_finding",),
            positive_class="finding",
            aliases={
                "normal": "no_finding",
                "0_normal": "no_finding",
                "no finding": "no_finding",
                "abnormal": "finding",
                "1_abnormal": "finding",
            },
            description='"No finding" vs finding triage (NIH ChestX-ray14).',
        ),
    ]
}


def get_task(name: str) -> TaskSpec:
    """Return the :class:`TaskSpec` registered under ``name``.

    Raises
    ------
    UnknownTaskError
        If ``name`` is not a known task; the message lists the known ones.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None

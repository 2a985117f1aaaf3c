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
* External labels of the COVID-19 Image Data Collection (Cohen et al.,
  arXiv:2003.11597; ``ieee8023-cxr``, old ``finding`` schema). Decisions:

  - ``todo`` (no label yet) and an empty label are never part of any task
    (:data:`UNLABELLED`).
  - ``pneumonia``: ``No Finding`` is NORMAL; every infectious pneumonia finding
    (bacterial, viral including ``COVID-19`` and SARS/MERS, fungal
    ``Pneumocystis``, generic ``Pneumonia``) is PNEUMONIA: an adult COVID-19
    pneumonia is a pneumonia, so the pneumonia model is expected to call it.
    ``ARDS`` alone, ``Lipoid`` and ``Aspiration`` are not infectious-pneumonia
    labels in Kermany's sense and are left out.
  - ``pneumonia-type``: bacterial species -> bacterial; viral findings (also
    COVID-19) -> viral; fungal and generic pneumonia are left out.
  - ``covid``: ``COVID-19`` and ``COVID-19, ARDS`` -> COVID; ``No Finding`` ->
    Normal; non-COVID-19 viral pneumonias (``SARS``, ``MERS``, ``Varicella``,
    ``Influenza``) -> Viral_Pneumonia. They are viral pneumonias by definition,
    although the training class of the shipped model holds only pediatric
    Kermany images: scoring them tests whether the model learnt the pathology
    or the age/source of its training images. Bacterial and fungal findings
    have no class in this task and are left out.
  - ``finding``: ``No Finding`` -> no_finding; every disease finding of the
    collection (and the 14 NIH ChestX-ray14 findings) -> finding.
* RSNA Pneumonia Detection Challenge labels (Shih et al., Radiology: AI 2019;
  ``rsna-lungs``): ``Normal`` -> no_finding; ``Lung_Opacity`` and
  ``No_Lung_Opacity_Not_Normal`` -> finding (``finding``); the COVID-19
  Radiography Database's ``COVID`` and ``Viral Pneumonia`` folders are findings
  too (its ``Normal`` is no_finding, as before).
* ``lung-opacity``: RSNA's own definition, ``Lung_Opacity`` (opacity suspicious
  for pneumonia) versus the rest (``Normal`` and ``No_Lung_Opacity_Not_Normal``).
  Out of source, every infectious pneumonia finding of ieee8023 (bacterial,
  viral, COVID-19, fungal, generic ``Pneumonia``) and the COVID-19 Radiography
  Database's ``COVID`` / ``Viral Pneumonia`` / ``Lung_Opacity`` folders map to
  lung_opacity; ``No Finding`` and ``Normal`` to no_opacity. Other findings
  (ARDS, tuberculosis, ...) are left out: they may or may not show an opacity.
* ``covid4``: the four classes of the COVID-19 Radiography Database's later
  release and of the LDC paper's model (COVID / Lung_Opacity / Viral_Pneumonia /
  Normal). ``Lung_Opacity`` is RSNA's class (``rsna-lungs``; its
  ``No_Lung_Opacity_Not_Normal`` has no class here and is left out);
  ``Viral_Pneumonia`` of the COVID-19 Radiography Database is Kermany's
  pediatric viral pneumonia. In ieee8023, COVID-19 -> COVID, non-COVID viral
  pneumonias -> Viral_Pneumonia, bacterial, fungal and generic pneumonias ->
  Lung_Opacity (an opacity suspicious for pneumonia, RSNA's definition),
  ``No Finding`` -> Normal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

__all__ = ["TaskSpec", "TASKS", "get_task", "UnknownTaskError", "UNLABELLED"]

#: Lower-cased labels that mean "not labelled" and are skipped by every task.
UNLABELLED = frozenset({"", "todo"})

#: ieee8023 COVID-19 Image Data Collection findings (old schema), lower-cased, by kind.
_BACTERIAL = (
    "streptococcus",
    "klebsiella",
    "legionella",
    "chlamydophila",
    "e.coli",
    "mycoplasma bacterial pneumonia",
    "staphylococcus",
    "nocardia",
)
_VIRAL_NON_COVID = ("sars", "mers", "mers-cov", "varicella", "influenza", "herpes pneumonia")
_COVID = ("covid-19", "covid-19, ards")
_FUNGAL = ("pneumocystis", "aspergillosis")
_OTHER_FINDINGS = ("ards", "lipoid", "aspiration", "tuberculosis")
#: The 14 NIH ChestX-ray14 finding names (Wang et al. 2017), lower-cased.
_NIH_FINDINGS = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "effusion",
    "emphysema",
    "fibrosis",
    "hernia",
    "infiltration",
    "mass",
    "nodule",
    "pleural_thickening",
    "pneumonia",
    "pneumothorax",
)


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
        if key in UNLABELLED:
            return None
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
            aliases={
                "normal": "normal",
                "pneumonia": "pneumonia",
                "no finding": "normal",
                **{k: "pneumonia" for k in _BACTERIAL + _VIRAL_NON_COVID + _COVID + _FUNGAL},
            },
            description="Pneumonia vs normal (Kermany et al. 2018, pediatric CXR).",
        ),
        TaskSpec(
            name="pneumonia-type",
            classes=("normal", "bacterial", "viral"),
            normal_classes=("normal",),
            positive_class="bacterial",
            aliases={
                "normal": "normal",
                "pneumonia": "pneumonia",
                "no finding": "normal",
                **{k: "bacterial" for k in _BACTERIAL},
                **{k: "viral" for k in _VIRAL_NON_COVID + _COVID},
            },
            refine=_kermany_type,
            description="Normal / bacterial / viral pneumonia (Kermany file names).",
        ),
        TaskSpec(
            name="covid",
            classes=("COVID", "Normal", "Viral_Pneumonia"),
            normal_classes=("Normal",),
            positive_class="COVID",
            aliases={
                "viral pneumonia": "viral_pneumonia",
                "no finding": "normal",
                **{k: "covid" for k in _COVID},
                **{k: "viral_pneumonia" for k in _VIRAL_NON_COVID},
            },
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
                "lung_opacity": "finding",
                "no_lung_opacity_not_normal": "finding",
                "covid": "finding",
                "viral pneumonia": "finding",
                "viral_pneumonia": "finding",
                **{
                    k: "finding"
                    for k in _BACTERIAL + _VIRAL_NON_COVID + _COVID + _FUNGAL + _OTHER_FINDINGS + _NIH_FINDINGS
                },
            },
            description='"No finding" vs finding triage (NIH ChestX-ray14, RSNA Pneumonia Detection Challenge).',
        ),
        TaskSpec(
            name="lung-opacity",
            classes=("no_opacity", "lung_opacity"),
            normal_classes=("no_opacity",),
            positive_class="lung_opacity",
            aliases={
                "normal": "no_opacity",
                "no finding": "no_opacity",
                "no_lung_opacity_not_normal": "no_opacity",
                "lung_opacity": "lung_opacity",
                "lung opacity": "lung_opacity",
                "pneumonia": "lung_opacity",
                "covid": "lung_opacity",
                "viral pneumonia": "lung_opacity",
                "viral_pneumonia": "lung_opacity",
                **{k: "lung_opacity" for k in _BACTERIAL + _VIRAL_NON_COVID + _COVID + _FUNGAL},
            },
            description="Lung opacity suspicious for pneumonia vs the rest (RSNA Pneumonia Detection Challenge, adults).",
        ),
        TaskSpec(
            name="covid4",
            classes=("COVID", "Lung_Opacity", "Viral_Pneumonia", "Normal"),
            normal_classes=("Normal",),
            positive_class="COVID",
            aliases={
                "covid": "covid",
                "lung_opacity": "lung_opacity",
                "lung opacity": "lung_opacity",
                "viral pneumonia": "viral_pneumonia",
                "no finding": "normal",
                "pneumonia": "lung_opacity",
                **{k: "covid" for k in _COVID},
                **{k: "viral_pneumonia" for k in _VIRAL_NON_COVID},
                **{k: "lung_opacity" for k in _BACTERIAL + _FUNGAL},
            },
            description="COVID-19 / lung opacity / viral pneumonia / normal (COVID-19 Radiography Database + RSNA).",
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

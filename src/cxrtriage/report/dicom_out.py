"""AI results as DICOM objects for the PACS: a Comprehensive SR and a Secondary Capture heatmap (highdicom).

Both are built with `highdicom <https://highdicom.readthedocs.io>`_ (no DICOM
encoding written here) from the header of the analysed image (its patient,
study and instance identifiers, needed to file the result beside it) and the
per-model results of the study.

The SR is a *Comprehensive SR* (``1.2.840.10008.5.1.4.1.1.88.33``) with a
coded content tree of its own, not TID 1500 (Measurement Report): TID 1500
describes measurements of image regions, while a classifier gives one set of
class probabilities per image. Its tree::

    CONTAINER  (18748-4, LN, "Diagnostic imaging report")
      HAS CONCEPT MOD  CODE  Language of content item and descendants = English
      CONTAINS  TEXT   (121106, DCM, "Comment") = research-use statement
      CONTAINS  IMAGE  (121112, DCM, "Source of Measurement") -> the analysed image
      CONTAINS  CONTAINER (CXR-RESULT, 99CXRTRIAGE, "AI model result")      one per applicable model
        CONTAINS TEXT  (111001, DCM, "Algorithm Name")
        CONTAINS TEXT  (111003, DCM, "Algorithm Version")
        CONTAINS TEXT  (CXR-TASK, 99CXRTRIAGE, "Task")
        CONTAINS CODE  (121071, DCM, "Finding") = (<label>, 99CXRTRIAGE)
        CONTAINS NUM   (CXR-PROB, 99CXRTRIAGE, "Probability of <class>") [no units]   one per class
        CONTAINS NUM   (CXR-THR, 99CXRTRIAGE, "Decision threshold") [no units]        binary tasks
        CONTAINS TEXT  (CXR-POS, 99CXRTRIAGE, "Positive class")                       binary tasks
        CONTAINS TEXT  (CXR-FLAG, 99CXRTRIAGE, "Triage flag")                         when known
        CONTAINS TEXT  (CXR-POPWARN, 99CXRTRIAGE, "Population warning")               when set
      CONTAINS  TEXT   (CXR-NA, 99CXRTRIAGE, "Model not applicable") = model, version, why   one per left-out model

Codes from DICOM PS3.16 (DCM), LOINC (LN) and, for the concepts neither has,
the private coding scheme ``99CXRTRIAGE`` (PS3.3 8.2: designators starting
with ``99`` are local). The algorithm name and version follow the
Algorithm Identification template (TID 4019) concept names.

Series numbers: the SR goes into series :data:`SR_SERIES_NUMBER`, the heatmap
into :data:`SC_SERIES_NUMBER`, each a new series of the image's study, whose
``SeriesDescription`` says it is AI output for research use.

UIDs are derived from the source instance UID, the study record and the kind
of object (:func:`result_uid`), so analysing and sending the same image twice
files the same objects (a PACS keeps one copy), never duplicates.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cxrtriage import DISCLAIMER, __version__

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "ModelOutput",
    "IDENTIFYING_KEYWORDS",
    "SR_SERIES_NUMBER",
    "SC_SERIES_NUMBER",
    "CODING_SCHEME",
    "MANUFACTURER",
    "result_uid",
    "source_header",
    "build_sr",
    "build_heatmap_sc",
    "read_sr_probabilities",
]

#: Private coding scheme designator of the concepts DCM and LOINC have no code for.
CODING_SCHEME = "99CXRTRIAGE"

#: ``Manufacturer`` of the produced objects.
MANUFACTURER = "cxrtriage"

#: Namespace of the name-based UUIDs behind the result UIDs (:func:`result_uid`).
_UID_NAMESPACE = uuid.UUID("6f1c3f0e-8a52-5b7e-9a43-63787274726a")

#: ``SeriesNumber`` of the SR series and of the heatmap series (new series of the image's study).
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902

#: Attributes of the received image kept (in memory, and in the outbox until sent) to file the results into the
#: same patient and study: the Patient and General Study modules' identifiers and the source instance reference.
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "SeriesInstanceUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
)


class ModelOutput(Protocol):
    """One model's result on one image, as the study store holds it (``cxrtriage.store`` ``ModelResult``)."""

    model_name: str
    model_version: str
    label: str
    probabilities: dict[str, float]
    threshold: float | None
    positive_class: str | None


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    return getattr(obj, name, default)


def result_uid(source_sop_instance_uid: str, study_id: str, kind: str) -> str:
    """A UID derived from the analysed instance, the study record and the kind of object.

    Parameters
    ----------
    source_sop_instance_uid : str
        ``SOPInstanceUID`` of the analysed image.
    study_id : str
        The study record's id.
    kind : str
        E.g. ``"sr"``, ``"sr-series"``, ``"sc"``, ``"sc-series"``.

    Returns
    -------
    str
        ``2.25.<decimal>`` UID (PS3.5 B.2) of a name-based UUID (RFC 4122 version 5, SHA-1), the same for
        the same inputs.
    """
    name = "|".join(("cxrtriage", source_sop_instance_uid, study_id, kind))
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def source_header(ds: Dataset) -> Dataset:
    """The attributes of :data:`IDENTIFYING_KEYWORDS` present in ``ds``, as a new data set (no pixels).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The received image (may hold patient identifiers).

    Returns
    -------
    pydicom.dataset.Dataset
        Only what is needed to file results beside the image; held in memory and in the outbox until sent.
    """
    from pydicom.dataset import Dataset

    out = Dataset()
    for kw in IDENTIFYING_KEYWORDS:
        if kw in ds:
            setattr(out, kw, ds[kw].value)
    return out


#: Type 2 attributes of the Patient and General Study modules: copied into the results, empty when the image has none.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyTime",
)


def _filled_header(source: Dataset) -> Dataset:
    """:func:`source_header` with the Type 2 attributes highdicom copies present (empty when missing)."""
    src = source_header(source)
    for kw in _TYPE2:
        if kw not in src:
            setattr(src, kw, "")
    return src


def _code(value: str, meaning: str, scheme: str = CODING_SCHEME) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(
        value=value[:16] if scheme == CODING_SCHEME else value, scheme_designator=scheme, meaning=meaning[:64]
    )


def _class_code(name: str) -> Any:
    # code values are SH (16 characters); class names of the tasks are short (NORMAL, PNEUMONIA, bacteria...)
    return _code(name.upper()[:16], name)


def _model_container(r: Any) -> Any:
    from highdicom.sr import (
        CodeContentItem,
        ContainerContentItem,
        ContentSequence,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )
    from pydicom.sr.codedict import codes

    contains = RelationshipTypeValues.CONTAINS
    unit = _code("1", "no units", "UCUM")
    items: list[Any] = [
        TextContentItem(_code("111001", "Algorithm Name", "DCM"), str(r.model_name)[:1000], contains),
        TextContentItem(_code("111003", "Algorithm Version", "DCM"), str(r.model_version)[:1000], contains),
    ]
    task = _attr(r, "task")
    if task:
        items.append(TextContentItem(_code("CXR-TASK", "Task"), str(task), contains))
    items.append(CodeContentItem(codes.DCM.Finding, _class_code(r.label), contains))
    for cls, p in r.probabilities.items():
        items.append(
            NumContentItem(
                _code(f"CXR-P-{cls.upper()}"[:16], f"Probability of {cls}"), float(p), unit, relationship_type=contains
            )
        )
    if r.threshold is not None:
        items.append(
            NumContentItem(_code("CXR-THR", "Decision threshold"), float(r.threshold), unit, relationship_type=contains)
        )
    if r.positive_class:
        items.append(TextContentItem(_code("CXR-POS", "Positive class"), str(r.positive_class), contains))
    flag = _attr(r, "flag")
    if flag is not None:
        text = "finding: flagged for priority review" if flag else "no finding flagged"
        items.append(TextContentItem(_code("CXR-FLAG", "Triage flag"), text, contains))
    warning = _attr(r, "population_warning")
    if warning:
        items.append(TextContentItem(_code("CXR-POPWARN", "Population warning"), str(warning)[:1000], contains))
    box = ContainerContentItem(_code("CXR-RESULT", "AI model result"), relationship_type=contains)
    box.ContentSequence = ContentSequence(items, is_root=False)
    return box


def _applicable(results: Sequence[Any]) -> list[Any]:
    return [r for r in results if _attr(r, "applicable", True) is not False]


def build_sr(
    source: Dataset,
    results: Sequence[ModelOutput],
    study_id: str,
    *,
    institution_name: str | None = None,
) -> Dataset:
    """A Comprehensive SR of the models' results on one image, in a new series of the image's study.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        Header of the analysed image (:func:`source_header`): patient and study identifiers,
        ``SeriesInstanceUID``, ``SOPClassUID``, ``SOPInstanceUID``.
    results : sequence of ModelOutput
        Per-model results (attributes ``model_name``, ``model_version``, ``label``, ``probabilities``,
        ``threshold``, ``positive_class``; optional ``task``, ``flag``, ``population_warning``, ``applicable``). Models marked
        ``applicable = False`` get no result container, only a "Model not applicable" line saying why.
    study_id : str
        The study record's id (named in the comment and part of the derived UIDs).
    institution_name : str, optional

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        A pydicom ``Dataset`` subclass, ready to ``save_as`` or C-STORE.

    Raises
    ------
    ValueError
        No applicable result, or the source header lacks a UID.
    """
    from highdicom.sr import (
        CodeContentItem,
        ComprehensiveSR,
        ContainerContentItem,
        ContentSequence,
        ImageContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )
    from pydicom.sr.codedict import codes

    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(source.get(kw, "") or ""):
            raise ValueError(f"source image header lacks {kw}: cannot reference it from the SR")
    shown = _applicable(results)
    if not shown:
        raise ValueError(f"study {study_id}: no applicable model result to report")
    contains = RelationshipTypeValues.CONTAINS
    root = ContainerContentItem(_code("18748-4", "Diagnostic imaging report", "LN"), template_id=None)
    lang = CodeContentItem(
        codes.DCM.LanguageOfContentItemAndDescendants,
        _code("en-US", "English (United States)", "RFC5646"),
        RelationshipTypeValues.HAS_CONCEPT_MOD,
    )
    comment = TextContentItem(
        _code("121106", "Comment", "DCM"),
        f"{DISCLAIMER} AI output of cxrtriage {__version__}, study record {study_id}.",
        contains,
    )
    image = ImageContentItem(
        _code("121112", "Source of Measurement", "DCM"),
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        relationship_type=contains,
    )
    skipped = [
        TextContentItem(
            _code("CXR-NA", "Model not applicable"),
            f"{r.model_name} {r.model_version}: {_attr(r, 'population_warning') or 'outside its population'}"[:1000],
            contains,
        )
        for r in results
        if r not in shown
    ]
    root.ContentSequence = ContentSequence(
        [lang, comment, image, *[_model_container(r) for r in shown], *skipped], is_root=False
    )
    src = _filled_header(source)
    sr = ComprehensiveSR(
        evidence=[src],
        content=root,
        series_instance_uid=result_uid(source.SOPInstanceUID, study_id, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(source.SOPInstanceUID, study_id, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        institution_name=institution_name,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = "AI result (cxrtriage) - research use, not a diagnosis"
    return sr


def build_heatmap_sc(
    source: Dataset,
    overlay: np.ndarray,
    study_id: str,
    heat_class: str | None = None,
) -> Dataset:
    """A Secondary Capture of the heatmap overlay, in a new series of the image's study, labelled AI output.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        Header of the analysed image (:func:`source_header`).
    overlay : numpy.ndarray
        ``uint8 (H, W, 3)`` RGB picture: the image with the class activation map (Grad-CAM family) blended on.
    study_id : str
        The study record's id (for the UIDs).
    heat_class : str, optional
        Class (and model) whose activation is shown (goes into ``ImageComments`` and ``DerivationDescription``).

    Returns
    -------
    highdicom.sc.SCImage
        Secondary Capture Image Storage (``1.2.840.10008.5.1.4.1.1.7``), RGB, 8 bits, ``BurnedInAnnotation`` NO
        (the picture holds no text), ``ImageType`` ``DERIVED\\SECONDARY``.

    Raises
    ------
    ValueError
        ``overlay`` is not ``uint8 (H, W, 3)``.
    """
    from highdicom.sc import SCImage

    if overlay.dtype != np.uint8 or overlay.ndim != 3 or overlay.shape[2] != 3:
        raise ValueError(f"heatmap overlay must be uint8 (H, W, 3), got {overlay.dtype} {overlay.shape}")
    src = _filled_header(source)
    sc = SCImage.from_ref_dataset(
        ref_dataset=src,
        pixel_array=np.ascontiguousarray(overlay),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=result_uid(source.SOPInstanceUID, study_id, "sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid(source.SOPInstanceUID, study_id, "sc"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    what = f" ({heat_class})" if heat_class else ""
    sc.SeriesDescription = "AI heatmap (cxrtriage) - research use, not a diagnosis"
    sc.ImageComments = f"Class activation map{what} overlaid by cxrtriage. {DISCLAIMER}"[:10240]
    sc.BurnedInAnnotation = "NO"
    sc.DerivationDescription = f"AI class activation map (CAM){what} overlaid on the source radiograph"[:1024]
    return sc


def read_sr_probabilities(sr: Dataset) -> list[dict[str, Any]]:
    """The per-model results held in an SR made by :func:`build_sr`, read back with highdicom.

    Parameters
    ----------
    sr : pydicom.dataset.Dataset
        The SR (e.g. fetched from the PACS).

    Returns
    -------
    list of dict
        One ``{"model_name", "model_version", "label", "probabilities": {class: float}, "threshold"}``
        per model container, in order.
    """
    from highdicom.sr import ComprehensiveSR

    doc = ComprehensiveSR.from_dataset(sr)
    out = []
    for box in doc.ContentSequence:
        if box.ValueType != "CONTAINER" or box.ConceptNameCodeSequence[0].CodeValue != "CXR-RESULT":
            continue
        r: dict[str, Any] = {"probabilities": {}, "threshold": None}
        for item in box.ContentSequence:
            code = item.ConceptNameCodeSequence[0]
            if item.ValueType == "TEXT" and code.CodeValue == "111001":
                r["model_name"] = item.TextValue
            elif item.ValueType == "TEXT" and code.CodeValue == "111003":
                r["model_version"] = item.TextValue
            elif item.ValueType == "CODE" and code.CodeValue == "121071":
                r["label"] = item.ConceptCodeSequence[0].CodeMeaning
            elif item.ValueType == "NUM":
                mv = item.MeasuredValueSequence[0]
                value = float(mv.FloatingPointValue) if "FloatingPointValue" in mv else float(mv.NumericValue)
                if code.CodeValue == "CXR-THR":
                    r["threshold"] = value
                else:
                    r["probabilities"][code.CodeMeaning.removeprefix("Probability of ")] = value
        out.append(r)
    return out

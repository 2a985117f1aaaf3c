"""Typed API responses and requests (pydantic v2); they define the OpenAPI schema at ``/docs``."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, BaseModel, Field, model_validator

from cxrtriage import DISCLAIMER
from cxrtriage.store.models import ModelResult, Study

__all__ = [
    "ErrorOut",
    "ModelInfo",
    "ReportSections",
    "AIResult",
    "ReportOut",
    "Timings",
    "StudyOut",
    "study_links",
    "result_links",
    "ModelResultOut",
    "PredictOut",
    "HealthOut",
    "SignOffIn",
    "ReaderCall",
    "ReportVersionOut",
    "ReportVersionList",
    "HeatmapOut",
    "WorklistOut",
    "WorklistItem",
    "StudyList",
    "MAX_NAME_CHARS",
    "MAX_SECTION_CHARS",
]


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer of the API."""

    error: str = Field(
        description="machine-readable code, e.g. 'unsupported_media_type', "
        "'not_a_chest_radiograph' (422: gate 1, independent of the models, says the image is not a chest "
        "radiograph; colour pictures included), 'outside_population' (422: a chest radiograph outside the "
        "population of every loaded model; when at least one model applies the study is stored and the others' "
        "results carry applicable=false and a population_warning instead)"
    )
    reason: str = Field(description="human-readable explanation")
    status: int = Field(description="HTTP status code")


class ModelInfo(BaseModel):
    """The model that serves the predictions."""

    name: str = Field(description="architecture / model folder name")
    version: str
    task: str
    classes: list[str]
    image_size: int = Field(description="input side, pixels")
    threshold: float | None = Field(description="decision threshold on positive_class (binary tasks)")
    positive_class: str
    backend: Literal["onnxruntime", "torch"]
    onnx_sha256: str | None = None
    ood_detector: dict | None = Field(None, description="Mahalanobis detector threshold and measured rates, if fitted")
    cxr_gate: dict | None = Field(
        None, description="gate 1 ('is this a chest radiograph?'): threshold and test-part refusal rates, if shipped"
    )
    population: Literal["pediatric", "adult"] | None = Field(
        None, description="population the model was validated on (gate 2 warns outside it); None: not declared"
    )
    population_gate: dict | None = Field(
        None, description="gate 2 (pediatric vs adult): threshold and test-part misrouted rates, if shipped"
    )
    disclaimer: str = DISCLAIMER


class ReportSections(BaseModel):
    technique: str
    findings: str = Field(description="empty in abnormal drafts: left for the radiologist")
    impression: str


class AIResult(BaseModel):
    """One model's result as written in the report."""

    model_name: str
    model_version: str
    task: str
    label: str
    probability: float = Field(ge=0, le=1, description="probability of the predicted label")
    probabilities: dict[str, float]
    threshold: float | None
    positive_class: str
    triage: Literal["no_finding", "finding"]
    flag: bool = Field(description="this model raised a finding")
    flag_text: str | None = Field(description="the model's abnormal-study flag text, None when it raised none")
    impression: str = Field(description="the model's own impression sentence")
    applicable: bool = Field(description="the image lies inside the population the model was validated on")
    population_warning: str | None
    heatmap_url: str | None
    cam_in_lungs: float | None = Field(None, description="share of the heatmap inside the lung fields, in [0, 1]")


class LungsOut(BaseModel):
    """The lung segmentation of a study's image (the shipped lung segmenter, ONNX Runtime)."""

    lung_fraction: float = Field(ge=0, le=1, description="share of the image inside the lung mask")
    failed: bool = Field(description="implausible mask (< 5 % or > 50 % of the image): not used")
    reason: str = Field(description="why it failed (empty when it did not)")
    components: int = Field(description="connected components kept (2 = both lungs)")
    segmenter: str = Field(description="segmenter version")


class ReaderCall(BaseModel):
    """The signing radiologist's call, recorded at sign-off."""

    label: str | None = Field(description="the radiologist's own label (the study's reference label)")
    finding: bool | None = Field(None, description="whether that label is a finding (not a normal class)")
    agrees_with_ai: bool | None = Field(None, description="agreement with the AI label, as marked by the radiologist")


class ReportOut(BaseModel):
    """Structured draft report (see :mod:`cxrtriage.report.draft`)."""

    study_id: str
    title: str
    status: Literal["draft", "signed"]
    abnormal: bool = Field(description="at least one applicable model raised a finding")
    flag: str | None = Field(description="abnormal-study flag text naming the models that raised it, None when normal")
    flagged_by: list[str] = Field(description="names of the applicable models that raised a finding")
    sections: ReportSections
    findings_placeholder: str = ""
    ai_results: list[AIResult] = Field(description="one per model, in the server's model order")
    heatmap_url: str | None = Field(description="heatmap of the first model that raised a finding")
    created_at: str
    signed_by: str | None
    signed_at: str | None
    disclaimer: str
    text: str = Field(description="plain-text rendering of the report")
    version: int | None = Field(None, description="signed version (1 = first signature, > 1 = amendments)")
    amended: bool = Field(False, description="True for an amendment of a signed report")
    reader: ReaderCall | None = Field(None, description="the radiologist's call (signed reports)")


class Timings(BaseModel):
    """Server-side time per stage of this request, milliseconds."""

    decode_ms: float = 0.0
    gates_ms: float = Field(0.0, description="gate 1 (chest radiograph?) and gate 2 (population), one feature pass")
    segment_ms: float = Field(0.0, description="lung segmentation (ONNX Runtime U-Net and post-processing)")
    inference_ms: float = Field(0.0, description="forward passes of every model")
    heatmap_ms: float = Field(0.0, description="class activation maps and OOD scores of every model")
    report_ms: float = 0.0
    store_ms: float = 0.0
    total_ms: float = 0.0


def study_links(study_id: str) -> dict[str, Any]:
    """API addresses of a study's picture, reports and page.

    Parameters
    ----------
    study_id : str

    Returns
    -------
    dict
        ``image_url``, ``lungs_url``, ``report_urls``, ``page_url``.
    """
    base = f"/api/v1/studies/{study_id}"
    return {
        "image_url": f"{base}/image.png",
        "lungs_url": f"{base}/lungs.png",
        "report_urls": {f: f"{base}/report.{f}" for f in ("json", "html", "pdf")},
        "page_url": f"/studies/{study_id}",
    }


def result_links(study_id: str, model_name: str, has_heatmap: bool) -> dict[str, Any]:
    """API addresses of one model's pictures of a study and of its model card.

    Parameters
    ----------
    study_id : str
    model_name : str
        :attr:`cxrtriage.store.ModelResult.model_name`.
    has_heatmap : bool
        Whether a class activation map is stored (else ``heatmap_url`` is None).

    Returns
    -------
    dict
        ``annotated_image_url``, ``heatmap_url``, ``card_url``.
    """
    base = f"/api/v1/studies/{study_id}"
    q = "?model=" + quote(model_name, safe="")
    return {
        "annotated_image_url": f"{base}/annotated.png{q}",
        "heatmap_url": f"{base}/heatmap.png{q}" if has_heatmap else None,
        "card_url": f"/api/v1/models/{quote(model_name, safe='')}/card",
    }


class ModelResultOut(BaseModel):
    """One model's result for a study."""

    model_name: str = Field(description="model folder name")
    model_version: str
    task: str
    backend: Literal["onnxruntime", "torch"]
    label: str = Field(description="predicted class")
    probabilities: dict[str, float] = Field(description="calibrated class probabilities")
    threshold: float | None = Field(description="operating point: decision threshold on positive_class (binary tasks)")
    positive_class: str | None
    triage: Literal["no_finding", "finding"]
    flag: bool = Field(description="this model raised a finding")
    priority: float = Field(ge=0, le=1, description="calibrated probability of a finding according to this model")
    applicable: bool = Field(description="the image lies inside the population the model was validated on (gate 2)")
    population_warning: str | None = Field(
        description="why not, when applicable is false, e.g. 'outside the validated population: pediatric model, adult image'"
    )
    heatmap_class: str | None = Field(validation_alias=AliasChoices("heatmap_class", "heat_class"))
    cam_in_lungs: float | None = Field(
        None,
        description="share of the heatmap's mass inside the lung fields (chance level: lungs.lung_fraction); "
        "None without a heatmap or a usable lung mask",
    )
    ood_score: float | None = Field(
        description="squared Mahalanobis distance of the model's pooled features (lower = more typical)"
    )
    annotated_image_url: str
    heatmap_url: str | None
    card_url: str = Field(description="the model card (Markdown)")

    @model_validator(mode="before")
    @classmethod
    def _from_result(cls, data: Any) -> Any:
        """A :class:`ModelResult` becomes its columns plus ``triage`` and the URLs; anything else passes."""
        if not isinstance(data, ModelResult):
            return data
        return {
            **data.to_dict(),
            "triage": data.triage,
            **result_links(data.study_id, data.model_name, data.cam is not None),
        }


# StudyOut is built from the stored cxrtriage.store.models.Study with StudyOut.model_validate(study):
# fields named like a column take its value, two fields read a differently named column
# (study_id <- id, dicom <- dicom_meta), ``results`` from the ModelResult rows, and only the URLs are
# computed (_from_study). (The class docstring is the OpenAPI description: kept short.)
class StudyOut(BaseModel):
    """A stored study: one image, the result of each model, the combined triage and the report."""

    study_id: str = Field(validation_alias=AliasChoices("study_id", "id"))
    received_at: str
    sha256: str = Field(
        description="SHA-256 of the decoded 8-bit pixels and their shape (the study's identity with model_set; "
        "not of the file, whose metadata may identify the patient)"
    )
    model_set: str = Field(description="key of the set of model versions that analysed the image")
    source: Literal["upload", "pacs", "stow"] = Field(description="how the image arrived")
    source_format: Literal["png", "jpeg", "dicom"]
    width: int
    height: int
    triage: Literal["no_finding", "finding"] = Field(description="'finding' when any applicable model raised one")
    priority: float = Field(
        ge=0, le=1, description="largest priority over the applicable models (worklist order; 0 when none applies)"
    )
    results: list[ModelResultOut] = Field(description="one per model, in the server's model order")
    dicom: dict | None = Field(
        validation_alias=AliasChoices("dicom", "dicom_meta"),
        description="de-identified DICOM attributes (DICOM uploads only)",
    )
    image_url: str
    lungs: LungsOut | None = Field(None, description="lung segmentation of the image (None: no segmenter ran)")
    lungs_url: str = Field(description="the image with the lung contour (PNG)")
    report: ReportOut
    report_urls: dict[str, str] = Field(description="json, html and pdf downloads")
    page_url: str
    timings: Timings = Field(description="timings of the first analysis")
    read_status: Literal["unread", "draft", "signed", "amended"] = Field(
        "unread", description="worklist status: unread, draft (opened by a radiologist), signed, amended"
    )
    reference_label: str | None = Field(None, description="the signing radiologist's label (reference standard)")
    reader_agrees: bool | None = Field(None, description="whether the radiologist agreed with the AI label")
    first_signed_at: str | None = Field(None, description="time of the first signature (ISO 8601 UTC)")
    original_url: str | None = Field(
        None, description="original 16-bit pixels of a DICOM upload (raw little-endian uint16, for window/level)"
    )
    disclaimer: str = DISCLAIMER

    @model_validator(mode="before")
    @classmethod
    def _from_study(cls, data: Any) -> Any:
        """A :class:`Study` becomes its columns, its model results and the computed URLs; anything else passes."""
        if not isinstance(data, Study):
            return data
        return {
            **data.to_dict(),
            "results": list(data.results),
            **study_links(data.id),
            "original_url": f"/api/v1/studies/{data.id}/original.u16" if data.original_file else None,
            "read_status": data.read_status or "unread",
        }


class PredictOut(StudyOut):
    """Answer of ``POST /api/v1/predict``."""

    duplicate: bool = Field(
        description="True when this exact upload was analysed before: the existing study is returned"
    )
    request_timings: Timings = Field(description="timings of this request")


class StudyList(BaseModel):
    studies: list[StudyOut]
    total: int


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    model_loaded: bool
    database: bool
    backend: str = Field(description="backend of the first model")
    models: list[str] = Field(default_factory=list, description="names of the loaded models, in order")
    studies: int
    version: str


#: Longest radiologist name of a sign-off, characters (API and page form).
MAX_NAME_CHARS = 200

#: Longest findings or impression text of a sign-off, characters (API and page form).
MAX_SECTION_CHARS = 10_000


class SignOffIn(BaseModel):
    """Radiologist sign-off of a draft report (the signer is the logged-in radiologist)."""

    radiologist: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="display name of the signing radiologist (default: the user name); stored with the user name",
    )
    findings: str | None = Field(
        None, max_length=MAX_SECTION_CHARS, description="final findings (default: keep the draft's)"
    )
    impression: str | None = Field(
        None, max_length=MAX_SECTION_CHARS, description="final impression (default: keep the draft's)"
    )
    agrees_with_ai: bool | None = Field(
        None, description="the radiologist agrees (true) or disagrees (false) with the AI label"
    )
    reader_label: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="the radiologist's own label, one of the model's classes (default: the AI label when agreeing; "
        "for two classes the other class when disagreeing); stored as the study's reference label",
    )
    amend: bool = Field(
        False,
        description="amend a signed report: a new version is stored, the signed ones are kept (409 when false "
        "and the report is signed, or true and it is not)",
    )


class ReportVersionOut(BaseModel):
    """One signed version of a report (``GET /api/v1/studies/{id}/report/versions``)."""

    version: int
    kind: Literal["sign", "amend"]
    signed_by: str
    signed_at: str
    username: str
    ai_label: str
    reader_label: str | None
    reader_finding: bool | None
    reader_agrees: bool | None
    report: ReportOut


class HeatmapOut(BaseModel):
    """One model's class activation map of a study (``GET /api/v1/studies/{id}/cam.json``)."""

    model: str
    heat_class: str | None = Field(description="class whose evidence the map shows")
    cam: list[list[float]] = Field(description="(h, w) map normalised to [0, 1], row-major")


class WorklistResult(BaseModel):
    """One model's output in a worklist row."""

    model_name: str
    label: str
    flag: bool = Field(description="the model raised a finding")
    priority: float = Field(description="this model's calibrated probability of a finding, 0-1")
    applicable: bool = Field(description="the image lies inside the population the model was validated on")


class WorklistItem(BaseModel):
    """One study in the worklist."""

    study_id: str
    received_at: str
    source: str = Field(description="upload, pacs or stow")
    source_format: str
    priority: float = Field(description="AI priority: the highest calibrated probability of a finding, 0-1")
    triage: Literal["no_finding", "finding"]
    read_status: Literal["unread", "draft", "signed", "amended"]
    reference_label: str | None
    signed_at: str | None
    results: list[WorklistResult]
    thumbnail_url: str
    page_url: str


class WorklistCounts(BaseModel):
    unread: int
    unread_flagged: int = Field(description="unread studies the AI flagged: the ones to read first")
    total: int


class WorklistOut(BaseModel):
    """A page of the worklist (``GET /api/v1/worklist``)."""

    counts: WorklistCounts
    items: list[WorklistItem]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class ReportVersionList(BaseModel):
    study_id: str
    versions: list[ReportVersionOut]

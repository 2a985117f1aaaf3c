"""What the DICOM listener (:mod:`cxrtriage.pacs`) and the DICOMweb / FHIR routes share.

The storage SOP classes accepted as chest radiographs, the DIMSE failure status
of each refusal, the per-model results of a stored study, and the DICOM
objects sent back for a received instance (SR + heatmap Secondary Capture,
queued in the outbox). Kept in ``serve`` (which never imports ``pacs``) so both
use one definition.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrtriage.report.dicom_out import build_heatmap_sc, build_sr, source_header
from cxrtriage.serve.service import ApiError, StudyService
from cxrtriage.store import Outbox, OutgoingObject, Study

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "CXR_STORAGE_SOP_CLASSES",
    "SUCCESS",
    "SOP_CLASS_NOT_SUPPORTED",
    "OUT_OF_RESOURCES",
    "CANNOT_UNDERSTAND",
    "PROCESSING_FAILURE",
    "failure_status",
    "model_results",
    "part10_bytes",
    "result_objects",
    "queue_results",
]

log = logging.getLogger(__name__)

#: Storage SOP classes of projection chest radiographs (PS3.4 B.5): CR Image Storage and the two
#: Digital X-Ray Image Storage classes. Every other SOP class is refused with 0x0122.
CXR_STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}

#: C-STORE statuses (PS3.4 B.2.3, PS3.7 C) and STOW-RS ``FailureReason`` values (PS3.18 10.5.3).
SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110


def failure_status(exc: ApiError) -> int:
    """The DIMSE failure status of a refused instance.

    Parameters
    ----------
    exc : ApiError
        The refusal of :meth:`cxrtriage.serve.service.StudyService.predict`.

    Returns
    -------
    int
        0xA700 (Out of resources) for 413 (too large) and 503 (decoders busy: retry later);
        0xC000 (Cannot understand) for 415/422 (unreadable, malformed, other modality, not a chest
        radiograph, outside the model's population) and anything else.
    """
    return OUT_OF_RESOURCES if exc.status in (413, 503) else CANNOT_UNDERSTAND


def model_results(rec: Study) -> Sequence[Any]:
    """The per-model results of a study (:attr:`cxrtriage.store.Study.results`), in display order.

    Each has ``model_name``, ``model_version``, ``task``, ``label``, ``probabilities``, ``threshold``,
    ``positive_class``, ``flag``, ``applicable`` and ``population_warning``
    (:class:`cxrtriage.report.dicom_out.ModelOutput`).
    """
    return list(rec.results)


def part10_bytes(ds: Dataset) -> bytes:
    """A data set as DICOM Part 10 file bytes (preamble, file meta, data set)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def result_objects(service: StudyService, rec: Study, source: Dataset) -> list[OutgoingObject]:
    """Build the SR and, when a model has a heatmap, the Secondary Capture for one received image.

    The SR holds every applicable model's result; the Secondary Capture shows the class activation map of
    the first applicable model that has one.

    Parameters
    ----------
    service : StudyService
        Renders the heatmap overlay (cached in the data folder, de-identified pixels only).
    rec : Study
        The stored study of the image.
    source : pydicom.dataset.Dataset
        The received image's header (identifiers kept only to file the results beside it).

    Returns
    -------
    list of OutgoingObject
        ``[sr]`` or ``[sr, sc]``, ready for :meth:`cxrtriage.store.Outbox.enqueue`.
    """
    from PIL import Image

    results = model_results(rec)
    objs = []
    sr = build_sr(source, results, rec.id)
    objs.append(OutgoingObject("sr", str(sr.SOPClassUID), str(sr.SOPInstanceUID), part10_bytes(sr), rec.id))
    heat = next((r for r in results if r.applicable and r.cam is not None), None)
    if heat is None:  # no applicable model with a class activation map: no heatmap series
        log.info("study %s has no heatmap: only the SR is sent", rec.id)
        return objs
    path = service.picture(rec, "heatmap", heat.model_name)
    with Image.open(path) as im:
        overlay = np.asarray(im.convert("RGB"))
    sc = build_heatmap_sc(source, overlay, rec.id, f"{heat.model_name}: {heat.heat_class}")
    objs.append(OutgoingObject("sc", str(sc.SOPClassUID), str(sc.SOPInstanceUID), part10_bytes(sc), rec.id))
    return objs


def queue_results(service: StudyService, rec: Study, data: bytes, destination: str) -> int:
    """Queue the SR and heatmap of a received DICOM instance for ``destination`` in the outbox.

    Parameters
    ----------
    service : StudyService
    rec : Study
        The study :meth:`StudyService.predict` stored (or found) for the instance.
    data : bytes
        The received DICOM Part 10 file (its identifiers go into the queued objects only).
    destination : str
        ``AE@host:port``.

    Returns
    -------
    int
        Objects newly queued (0 when they were queued or sent before: same derived UIDs).
    """
    import pydicom

    header = source_header(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
    return Outbox(service.store).enqueue(result_objects(service, rec, header), destination)

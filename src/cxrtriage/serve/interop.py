"""What the DICOM listener (:mod:`cxrtriage.pacs`) and the DICOMweb / FHIR routes share.

The storage SOP classes accepted as chest radiographs, the DIMSE failure status
of each refusal, and the per-model results of a stored study. Kept in
``serve`` (which never imports ``pacs``) so both use one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cxrtriage.serve.service import ApiError
from cxrtriage.store import Study

__all__ = [
    "CXR_STORAGE_SOP_CLASSES",
    "SUCCESS",
    "SOP_CLASS_NOT_SUPPORTED",
    "OUT_OF_RESOURCES",
    "CANNOT_UNDERSTAND",
    "PROCESSING_FAILURE",
    "failure_status",
    "model_results",
]

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

"""The DICOM objects sent back for one analysed image: the SR and the heatmap Secondary Capture."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import numpy as np

from cxrtriage.report.dicom_out import build_heatmap_sc, build_sr
from cxrtriage.serve.interop import model_results
from cxrtriage.serve.service import StudyService
from cxrtriage.store import OutgoingObject, Study

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["result_objects", "part10_bytes"]

log = logging.getLogger(__name__)


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

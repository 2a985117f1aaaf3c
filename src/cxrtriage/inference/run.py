"""Predict image files and write the annotated and Grad-CAM pictures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cxrtriage.data.io import ImageReadError, read_image
from cxrtriage.explain.gradcam import gradcam
from cxrtriage.explain.overlay import annotate_probabilities, heatmap_overlay
from cxrtriage.inference.predictor import Predictor

__all__ = ["predict_files"]


def predict_files(
    model_dir: str | Path | None,
    paths: Sequence[str | Path],
    out: str | Path,
    with_gradcam: bool = True,
    refuse: Callable[[np.ndarray], str | None] | None = None,
    device: str = "cpu",
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Classify image files; write ``<stem>_annotated.png`` and ``<stem>_gradcam.png``.

    Parameters
    ----------
    model_dir : path or None
        Model folder (None: the shipped model).
    paths : sequence of paths
        PNG, JPEG or DICOM files (:func:`cxrtriage.data.io.read_image`).
    out : path
        Output folder for the pictures (created).
    with_gradcam : bool
        Also compute the Grad-CAM heatmap of the predicted class.
    refuse : callable, optional
        ``uint8 (H, W)`` image -> reason to refuse it (e.g. gate 1, "not a chest radiograph") or None.
        A refused image is not classified: its result is ``{"path", "refused": reason}``.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns
    -------
    (results, errors)
        ``results``: one dict per readable image (``path``, ``label``,
        ``probabilities``, ``threshold``, ``positive_class``, ``triage``,
        ``annotated``, ``gradcam``, ``model``; or ``path`` and ``refused``), in
        input order; ``errors``: ``(path, reason)`` for unreadable files (never
        raised, so one bad file costs nothing else).
    """
    predictor = Predictor(model_dir, device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, errors = [], []
    images = []
    refused: dict[str, str] = {}
    for p in paths:
        try:
            img = read_image(p)
        except ImageReadError as exc:
            errors.append((exc.path, exc.reason))
            continue
        reason = refuse(img) if refuse is not None else None
        if reason is not None:
            refused[str(p)] = reason
            results.append({"path": str(p), "refused": reason})
        else:
            images.append((str(p), img))
    preds = predictor.predict([im for _, im in images]) if images else []
    footer = "AI draft - research use only, not a diagnosis"
    for (path, img), pred in zip(images, preds):
        stem = Path(path).stem
        ann = out / f"{stem}_annotated.png"
        annotate_probabilities(img, pred.probabilities, pred.label, footer).save(ann)
        r = {"path": path, **pred.to_dict(), "annotated": str(ann), "model": predictor.config.version}
        if with_gradcam:
            heat = gradcam(predictor.model, predictor.config.arch, predictor.preprocess(img), pred.label_index)
            cam = out / f"{stem}_gradcam.png"
            heatmap_overlay(img, heat).save(cam)
            r["gradcam"] = str(cam)
        results.append(r)
    order = {str(p): i for i, p in enumerate(paths)}
    results.sort(key=lambda r: order.get(r["path"], 0))
    return results, errors

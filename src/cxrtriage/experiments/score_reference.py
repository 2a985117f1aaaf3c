"""The validation score distribution of a model, stored in its bundle as the reference of drift monitoring.

The score is the calibrated probability of a finding, ``1 - sum P(normal classes)`` (for a binary task
the positive class's probability), on the model's recorded validation images, with the bundle's
temperature. Its histogram (:func:`cxrtriage.metrics.drift.score_histogram`) goes into the
``calibration`` section as ``val_score_histogram``; the monitoring page compares the scores of served
studies with it (PSI, KS; :mod:`cxrtriage.metrics.drift`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cxrtriage.experiments.recalibrate import validation_logits
from cxrtriage.metrics.calibration import softmax
from cxrtriage.metrics.drift import score_histogram
from cxrtriage.models.bundle import BUNDLE_JSON, ModelBundle, ModelLoadError
from cxrtriage.tasks import get_task

__all__ = ["finding_scores", "fit_score_reference"]


def finding_scores(probs: np.ndarray, classes: list[str], normal_classes: tuple[str, ...]) -> np.ndarray:
    """Probability of a finding per image: one minus the probabilities of the normal classes.

    Parameters
    ----------
    probs : float array ``(N, K)``
        Calibrated class probabilities.
    classes : list of K str
    normal_classes : tuple of str
        The task's "no finding" classes.

    Returns
    -------
    float64 array ``(N,)`` in [0, 1]
    """
    normal = [i for i, c in enumerate(classes) if c in normal_classes]
    return np.clip(1.0 - np.asarray(probs, dtype=np.float64)[:, normal].sum(axis=1), 0.0, 1.0)


def fit_score_reference(
    model_dir: str | Path, data: str | Path | None = None, n_bins: int = 20, cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """Score a model's validation images and store their finding-score histogram in its bundle.

    Parameters
    ----------
    model_dir : path
        Calibrated model folder with a recorded split.
    data : path, optional
        Where the dataset is now (default: recorded).
    n_bins : int
        Equal-width bins on [0, 1].
    cache_dir : path, optional
        Decoded-image cache.

    Returns
    -------
    dict
        The stored histogram (``edges``, ``counts``, ``n``, ``score``).

    Raises
    ------
    ModelLoadError
        No calibration section, or the model folder is incomplete.
    DatasetError
        Validation images missing.
    """
    d = Path(model_dir)
    bundle = ModelBundle.load(d)
    if bundle.calibration is None:
        raise ModelLoadError(f"{d}: not calibrated (no calibration section; run `cxr calibrate` first)")
    logits, _, _ = validation_logits(d, data, cache_dir)
    cfg = bundle.config
    probs = softmax(logits, cfg.temperature)
    scores = finding_scores(probs, list(cfg.classes), get_task(cfg.task).normal_classes)
    hist: dict[str, Any] = dict(score_histogram(scores, n_bins))
    hist["n"] = int(scores.size)
    hist["score"] = "calibrated probability of a finding (1 - P(normal classes)) on the validation images"
    # only this key of bundle.json changes (kept in its indentation), so a shipped bundle's diff is the histogram
    path = d / BUNDLE_JSON
    text = path.read_text(encoding="utf-8")
    indent = len(text.splitlines()[1]) - len(text.splitlines()[1].lstrip(" ")) if "\n" in text else 1
    sections = json.loads(text)
    sections["calibration"]["val_score_histogram"] = hist
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(sections, indent=indent or 1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    ModelBundle.load(d)  # still a valid bundle
    return hist

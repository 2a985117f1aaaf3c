"""Frozen-backbone baseline: pooled ImageNet features once, a linear head per fold.

For a backbone with ImageNet weights (``efficientnet_lite0``), the globally
average-pooled features of every image are computed once (cached on disk,
keyed by architecture, image size, preprocessing and the image list) and a
multinomial logistic-regression head (scikit-learn, L-BFGS) is fitted on the
training part of each fold. This costs one forward pass per image instead of
several training epochs, and shows how much fine-tuning adds.

Freezing a *randomly initialised* backbone measures random features, not the
architecture, so it is refused for architectures without pretrained weights.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrtriage.data.cache import default_cache_dir
from cxrtriage.inference.backend import TorchBackend, preprocessed_batches
from cxrtriage.metrics.classification import auroc
from cxrtriage.models.registry import create_model, model_entry

__all__ = ["FrozenBackboneError", "pooled_features", "fit_linear_head", "head_logits"]

log = logging.getLogger(__name__)


class FrozenBackboneError(ValueError):
    """A frozen backbone was asked for an architecture without pretrained weights."""


def pooled_features(
    arch: str,
    images: np.ndarray,
    image_size: int,
    intensity: str,
    key: str,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Globally pooled backbone features of pretrained ``arch``.

    Parameters
    ----------
    arch : str
        Registry name with ImageNet weights (``efficientnet_lite0``).
    images : uint8 array ``(N, S, S)``
    image_size : int
    intensity : str
        Preprocessing as in :func:`cxrtriage.data.transforms.preprocess`
        (mean = std = 0.5, as the Lite0 weights expect).
    key : str
        Identifies ``images`` (e.g. a hash of their paths) for the on-disk cache.
    cache_dir : path, optional
        Default: ``<decoded-image cache>/features``.
    batch_size : int

    Returns
    -------
    numpy.ndarray
        ``float32 (N, F)`` (F = 1280 for Lite0).

    Raises
    ------
    FrozenBackboneError
        ``arch`` has no pretrained weights.
    """
    if not model_entry(arch).has_pretrained:
        raise FrozenBackboneError(
            f"{arch} has no pretrained weights here: a frozen random backbone is meaningless; "
            "fine-tune it instead (drop --frozen)"
        )
    cdir = Path(cache_dir) if cache_dir else default_cache_dir() / "features"
    h = hashlib.sha1(f"v1|{arch}|{image_size}|{intensity}|{key}|{len(images)}".encode()).hexdigest()[:20]
    path = cdir / f"{arch}-{image_size}-{h}.npy"
    if path.exists():
        return np.load(path)
    backend = TorchBackend(create_model(arch, 2, pretrained=True), threads=None)
    # global average of the last feature map = the pre-logits input of the GAP + linear head
    _, feats = backend.run(preprocessed_batches(images, image_size, intensity, batch_size=batch_size), "pooled")
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        np.save(path, feats)
    except OSError as exc:  # pragma: no cover - read-only cache
        log.warning("could not cache features at %s (%s)", path, exc)
    return feats


def fit_linear_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
) -> tuple[Pipeline, float]:
    """Fit a standardised, class-balanced logistic-regression head; pick ``C`` on validation AUROC.

    Parameters
    ----------
    x_train, x_val : float arrays ``(N, F)``
    y_train, y_val : int arrays ``(N,)``
        ``y_val`` must hold at least two classes.
    cs : sequence of float
        Inverse L2 strengths tried.
    seed : int

    Returns
    -------
    (pipeline, C)
        A fitted scikit-learn pipeline (``StandardScaler`` + ``LogisticRegression``)
        and the chosen ``C``.
    """
    best: tuple[float, Pipeline, float] | None = None
    for c in cs:
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)
        )
        clf.fit(x_train, y_train)
        score = auroc(y_val, clf.predict_proba(x_val)) or 0.0
        if best is None or score > best[0]:
            best = (score, clf, c)
    if best is None:
        raise ValueError("fit_linear_head needs at least one C in cs")
    return best[1], best[2]


def head_logits(clf: Pipeline, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits ``(N, K)`` of a fitted head, such that ``softmax(logits) == predict_proba``.

    Binary logistic regression has one log-odds ``z``; it becomes ``[0, z]``.
    """
    z = np.asarray(clf.decision_function(x), dtype=np.float64)
    if z.ndim == 1:
        return np.stack([np.zeros_like(z), z], axis=1)
    return z

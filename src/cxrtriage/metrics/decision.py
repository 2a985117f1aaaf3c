"""Turning class probabilities into a label: the one decision rule."""

from __future__ import annotations

import numpy as np

from cxrtriage.config import ModelConfig

__all__ = ["decide", "decide_indices"]


def decide_indices(probs: np.ndarray, positive_index: int | None = None, threshold: float | None = None) -> np.ndarray:
    """Predicted class index per image under the decision rule.

    Two classes with a threshold: ``positive_index`` when its probability is at
    or above ``threshold``, the other class otherwise. Otherwise: the most
    probable class (arg-max; the first on ties).

    Parameters
    ----------
    probs : float array ``(N, K)``
        Class probabilities (or any scores monotone in them), rows in logit order.
    positive_index : int or None
        Thresholded class (0 or 1) for two-class tasks.
    threshold : float or None
        Operating point on the probability of ``positive_index``, in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``int64 (N,)`` class indices in ``[0, K)``.
    """
    probs = np.asarray(probs)
    if probs.ndim == 2 and probs.shape[1] == 2 and threshold is not None and positive_index in (0, 1):
        return np.where(probs[:, positive_index] >= threshold, positive_index, 1 - positive_index).astype(np.int64)
    return probs.argmax(1).astype(np.int64)


def decide(probs: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Predicted class index per image under a model's saved rule (:func:`decide_indices`).

    Binary tasks with a saved threshold: ``positive_class`` when its
    probability is at or above ``config.threshold``, the other class
    otherwise. Other tasks: the most probable class.

    Parameters
    ----------
    probs : float array ``(N, K)``
    config : ModelConfig

    Returns
    -------
    numpy.ndarray
        ``int64`` ``(N,)`` class indices.
    """
    pos = config.classes.index(config.positive_class) if config.positive_class in config.classes else None
    return decide_indices(probs, pos, config.threshold if len(config.classes) == 2 else None)

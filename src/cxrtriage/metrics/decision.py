"""Turning class probabilities into a label: the one decision rule."""

from __future__ import annotations

import numpy as np

from cxrtriage.config import ModelConfig

__all__ = ["decide"]


def decide(probs: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Predicted class index per image.

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
    probs = np.asarray(probs)
    if len(config.classes) == 2 and config.threshold is not None and config.positive_class in config.classes:
        pos = config.classes.index(config.positive_class)
        return np.where(probs[:, pos] >= config.threshold, pos, 1 - pos).astype(np.int64)
    return probs.argmax(1).astype(np.int64)

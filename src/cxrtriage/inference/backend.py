"""Raw logits of a trained model for decoded images (the input of calibration)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxrtriage.data.transforms import preprocess

__all__ = ["model_logits"]


@torch.no_grad()
def model_logits(
    model: nn.Module,
    images: np.ndarray,
    image_size: int,
    intensity: str,
    mean: float = 0.5,
    std: float = 0.5,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits of ``model`` for grayscale images, preprocessed as at inference.

    Uses :func:`cxrtriage.data.transforms.preprocess`, the same function as
    :class:`cxrtriage.inference.Predictor`, so probabilities derived from these
    logits match ``cxr predict`` for the same temperature.

    Parameters
    ----------
    model : nn.Module
        Switched to eval mode.
    images : uint8 array ``(N, H, W)``
        E.g. rows of the decoded-image cache.
    image_size : int
    intensity : str
    mean, std : float
        Preprocessing of the model's ``config.json``.
    batch_size : int

    Returns
    -------
    numpy.ndarray
        ``float64 (N, K)`` logits (before softmax and temperature).
    """
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = np.stack(
            [preprocess(np.asarray(im), image_size, intensity, mean, std) for im in images[start : start + batch_size]]
        )
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        out.append(model(xt).float().double().numpy())
    if not out:
        return np.zeros((0, 0))
    return np.concatenate(out)

"""Class activation maps in NumPy, from a feature map and the linear head.

For a network whose head is global average pooling followed by one linear
layer, the class score is ``y_c = b_c + sum_k w_ck * mean_ij A_k[i, j]``. The
class activation map (CAM) of Zhou et al., "Learning Deep Features for
Discriminative Localization", CVPR 2016, is ``M_c = sum_k w_ck A_k``.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", ICCV 2017) weights each channel by the
spatial mean of ``dy_c / dA_k``, which for this head is ``w_ck / (H * W)``:
Grad-CAM on the last feature map is CAM times a positive constant. After the
ReLU and the min-max normalisation both methods apply, the maps are equal, so
the server gets the heatmap from one forward pass and no backward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = ["cam_from_features", "normalize_cam", "upsample_cam", "classifier_weights"]


def cam_from_features(features: np.ndarray, weight: np.ndarray, class_index: int) -> np.ndarray:
    """Raw class activation map of one image for one class.

    Parameters
    ----------
    features : numpy.ndarray
        ``float32 (C, h, w)``: the last feature map (the input of global
        average pooling), e.g. ``(1280, 7, 7)`` for EfficientNet-Lite0 at 224 px.
    weight : numpy.ndarray
        ``float (K, C)``: weights of the linear classifier (one row per class).
    class_index : int
        Row of ``weight`` to use, ``0 <= class_index < K``.

    Returns
    -------
    numpy.ndarray
        ``float32 (h, w)``, unnormalised ``sum_k w[c, k] * features[k]`` (may be negative).

    Raises
    ------
    ValueError
        Shapes do not match or ``class_index`` is out of range.
    """
    f = np.asarray(features, dtype=np.float32)
    w = np.asarray(weight, dtype=np.float32)
    if f.ndim != 3 or w.ndim != 2 or w.shape[1] != f.shape[0]:
        raise ValueError(f"features (C, h, w) and weight (K, C) expected, got {f.shape} and {w.shape}")
    if not 0 <= class_index < w.shape[0]:
        raise ValueError(f"class_index {class_index} out of range for {w.shape[0]} classes")
    return np.tensordot(w[class_index], f, axes=(0, 0)).astype(np.float32)


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """ReLU then min-max scaling to [0, 1], as Grad-CAM implementations do.

    Parameters
    ----------
    cam : numpy.ndarray
        ``float (h, w)`` raw map.

    Returns
    -------
    numpy.ndarray
        ``float32 (h, w)`` in [0, 1]; all zeros when the map has no positive
        part or is constant.
    """
    m = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-7 * max(1.0, abs(hi)):
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


def upsample_cam(cam: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a normalised map to image size.

    Parameters
    ----------
    cam : numpy.ndarray
        ``float (h, w)`` in [0, 1].
    size : int or (width, height)
        Output size in pixels.

    Returns
    -------
    numpy.ndarray
        ``float32 (height, width)`` in [0, 1].
    """
    w, h = (size, size) if isinstance(size, int) else size
    img = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F")
    return np.clip(np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32), 0.0, 1.0)


def classifier_weights(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a GAP + linear classifier head.

    Parameters
    ----------
    model : torch.nn.Module
        A registry model (timm interface ``get_classifier()``).

    Returns
    -------
    (weight, bias)
        ``float32 (K, C)`` and ``float32 (K,)``.

    Raises
    ------
    ValueError
        The head is not a single ``torch.nn.Linear`` layer.
    """
    import torch

    from cxrtriage.models.registry import classifier_head

    head = classifier_head(model)
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"CAM needs a linear classifier head, found {type(head).__name__}")
    w = head.weight.detach().float().cpu().numpy()
    b = head.bias.detach().float().cpu().numpy() if head.bias is not None else np.zeros(w.shape[0], np.float32)
    return w, b

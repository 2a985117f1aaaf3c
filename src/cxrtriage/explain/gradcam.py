"""Grad-CAM heatmaps with pytorch-grad-cam.

Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", ICCV 2017. Computed with the
``pytorch-grad-cam`` library (jacobgil/pytorch-grad-cam) on the output of the
last convolutional block of each registered architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # PyTorch and pytorch-grad-cam are imported by gradcam() itself: ONNX inference never needs them
    import torch

__all__ = ["gradcam"]


def gradcam(model: torch.nn.Module, arch: str, x: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM heatmap of one preprocessed image for one class.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier in eval mode.
    arch : str
        Registry name (decides the target layer).
    x : numpy.ndarray
        ``float32 (1, S, S)`` model input (see ``Predictor.preprocess``).
    class_index : int
        Class whose evidence is shown.

    Returns
    -------
    numpy.ndarray
        ``float32 (S, S)`` heatmap in [0, 1] (pytorch-grad-cam normalises each map).
    """
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cxrtriage.models.registry import cam_target_layer

    layer = cam_target_layer(arch, model)
    device = next(model.parameters(), torch.empty(0)).device  # the input goes where the weights are (CPU or GPU)
    inp = torch.from_numpy(np.ascontiguousarray(x))[None].float().to(device).requires_grad_(False)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        heat = cam(input_tensor=inp, targets=[ClassifierOutputTarget(int(class_index))])[0]
    return np.nan_to_num(heat.astype(np.float32), nan=0.0)

"""PyTorch dataset over cached images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["CachedDataset"]


class CachedDataset(Dataset):
    """Images from a decoded-image cache with their class targets.

    Parameters
    ----------
    images : numpy.ndarray
        ``uint8`` array ``(N, S, S)`` (may be a read-only memory map).
    targets : numpy.ndarray
        ``int64`` array ``(N,)`` of class indices, or ``(N, T)`` with several targets per image
        (e.g. the task's class and an auxiliary task's class).
    transform : callable
        PIL ``L`` image -> ``float32`` tensor ``(1, S, S)``.

    Items are ``(tensor (1, S, S) float32, int target)``, or ``(..., int64 tensor (T,))`` for ``(N, T)`` targets.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: Callable[[Image.Image], torch.Tensor]):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets, self.transform = images, np.asarray(targets, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        x = self.transform(Image.fromarray(np.array(self.images[i])))
        if self.targets.ndim == 2:
            return x, torch.from_numpy(self.targets[i].copy())
        return x, int(self.targets[i])

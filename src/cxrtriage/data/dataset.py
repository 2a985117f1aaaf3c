"""PyTorch datasets: labelled image files (class folders or a CSV manifest), and cached images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cxrtriage.data.discover import DatasetError, Sample, discover
from cxrtriage.data.io import read_image
from cxrtriage.tasks import get_task

__all__ = ["CachedDataset", "ImageDataset"]


class ImageDataset(Dataset):
    """The labelled images of a dataset folder or CSV manifest, as a :class:`torch.utils.data.Dataset`.

    Folders and manifests are read as ``cxr train`` and ``cxr evaluate`` read them
    (:func:`cxrtriage.data.discover.discover`): class-named subfolders at any depth, or a
    ``manifest.csv`` with ``path,label[,split,patient_id]``; labels are mapped onto the
    task's classes and images of other labels are left out. Items are
    ``(transform(image), label)``, ``image`` ``uint8 (H, W)`` from
    :func:`cxrtriage.data.io.read_image` (PNG, JPEG or DICOM).

    Parameters
    ----------
    data : path
        Dataset folder or ``manifest.csv``.
    task : str
        Task name (:mod:`cxrtriage.tasks`), e.g. ``"pneumonia"``; gives :attr:`classes`.
    split : str, optional
        Only this split (``train``, ``val``, ``test``).
    transform : callable, optional
        Applied to the decoded ``uint8 (H, W)`` array (e.g. a torchvision pipeline after
        ``PIL.Image.fromarray``); default: the array itself.

    Attributes
    ----------
    classes : tuple of str
        The task's classes; ``labels`` index into it.
    labels : numpy.ndarray
        ``int64 (N,)`` class index per image.
    patient_ids : list of str
        Patient (group) id per image, for patient-level splits.
    paths : list of str
        Absolute image paths.
    samples : list of Sample

    Raises
    ------
    cxrtriage.data.DatasetError
        ``data`` missing, an unusable manifest, or no image of the task's classes.
    cxrtriage.tasks.UnknownTaskError
        Unknown ``task``.
    """

    def __init__(
        self,
        data: str | Path,
        task: str,
        split: str | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        spec = get_task(task)
        self.task = spec.name
        self.classes: tuple[str, ...] = tuple(spec.classes)
        self.samples: list[Sample] = discover(data, spec, split)
        if not self.samples:
            raise DatasetError(f"{data}: no image of the classes {', '.join(self.classes)}")
        self.labels = np.array([s.target for s in self.samples], dtype=np.int64)
        self.patient_ids = [s.patient_id for s in self.samples]
        self.paths = [s.path for s in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = read_image(self.paths[i])
        return (self.transform(img) if self.transform is not None else img), int(self.labels[i])


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

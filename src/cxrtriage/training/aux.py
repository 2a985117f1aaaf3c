"""Auxiliary head: train on a finer labelling of the same images, keep only the task's head.

A pneumonia model learns NORMAL vs PNEUMONIA; the file names of the Kermany images also say whether a
pneumonia is bacterial or viral. :class:`AuxHeadNet` adds a second linear head on the pooled features that
predicts the finer classes (task ``pneumonia-type``), so the features must also separate the pneumonia
types, and it is dropped when the model is saved: the shipped network, its ONNX export and its CAM are
those of the task alone. (Multi-task learning as a regulariser: Caruana, "Multitask Learning", Machine
Learning 28:41-75, 1997.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrtriage.data.discover import Sample, discover
from cxrtriage.models.registry import classifier_head
from cxrtriage.tasks import TaskSpec

__all__ = ["AuxHeadNet", "aux_targets", "IGNORE_INDEX"]

#: Target of an image that has no class in the auxiliary task (``torch.nn.CrossEntropyLoss(ignore_index=...)``).
IGNORE_INDEX = -100


class AuxHeadNet(nn.Module):
    """A registry network plus an auxiliary linear head on the input of its classifier.

    Parameters
    ----------
    net : nn.Module
        Network with a linear classifier head (timm ``get_classifier()``); its forward pass is unchanged.
    num_aux_classes : int
        Classes of the auxiliary task.

    Forward: ``float32 (N, C, H, W)`` -> ``(logits (N, K), aux_logits (N, num_aux_classes))``.

    Raises
    ------
    ValueError
        The network's head is not a single ``nn.Linear``.
    """

    def __init__(self, net: nn.Module, num_aux_classes: int):
        super().__init__()
        head = classifier_head(net)
        if not isinstance(head, nn.Linear):
            raise ValueError(f"an auxiliary head needs a linear classifier, found {type(head).__name__}")
        self.net = net
        self.aux = nn.Linear(head.in_features, num_aux_classes)
        nn.init.normal_(self.aux.weight, std=0.01)
        nn.init.zeros_(self.aux.bias)
        self._pooled: torch.Tensor | None = None
        head.register_forward_pre_hook(self._keep_pooled)

    def _keep_pooled(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._pooled = inputs[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        pooled, self._pooled = self._pooled, None
        if pooled is None:
            raise RuntimeError("the classifier head did not run")
        return logits, self.aux(pooled)


def aux_targets(samples: list[Sample], data: str | Path, aux_task: TaskSpec) -> np.ndarray:
    """The auxiliary task's class of each sample, matched by image path.

    Parameters
    ----------
    samples : list of Sample
        The main task's samples (train + validation).
    data : str or Path
        The dataset they come from.
    aux_task : TaskSpec
        The finer task (e.g. ``pneumonia-type``).

    Returns
    -------
    numpy.ndarray
        ``int64 (len(samples),)``: class index in ``aux_task.classes``, or :data:`IGNORE_INDEX` where the
        image has no auxiliary class.

    Raises
    ------
    ValueError
        No sample has an auxiliary class (the dataset does not carry the finer labels).
    """
    fine = {Path(s.path).resolve(): s.target for s in discover(data, aux_task)}
    out = np.array([fine.get(Path(s.path).resolve(), IGNORE_INDEX) for s in samples], dtype=np.int64)
    if not (out != IGNORE_INDEX).any():
        raise ValueError(f"{data}: no image has a label of the auxiliary task {aux_task.name!r}")
    return out

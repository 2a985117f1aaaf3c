"""Seed ensembles: several networks of one architecture as one network with a GAP + linear head.

Averaging the logits of ``M`` networks that each end in global average pooling and a linear layer,

    mean_m (W_m p_m + b_m) = [W_1 ... W_M] / M . [p_1; ...; p_M] + mean_m b_m,

is itself such a network: its feature map is the members' feature maps stacked along the channels and its
classifier holds the members' rows side by side, divided by ``M``. So an ensemble exports to one ONNX graph with
the same ``logits`` / ``features`` outputs as a single model, and its class activation map (CAM, Zhou et al.,
CVPR 2016) is the mean of the members' maps; Grad-CAM, the OOD detector and the server need no special case.
Seed ensembles as a way to better generalisation and calibration: Lakshminarayanan, Pritzel & Blundell,
NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["SeedEnsemble", "merge_members", "ensemble_skeleton"]


class SeedEnsemble(nn.Module):
    """Mean of the logits of ``M`` GAP + linear networks, as one network (see the module docstring).

    Parameters
    ----------
    members : sequence of nn.Module
        ``M >= 2`` timm-style backbones with ``forward_features`` returning ``(N, C, h, w)``; their own classifiers
        are not used (``reset_classifier(0)`` is applied).
    num_classes : int
        Logits ``K``.

    Attributes
    ----------
    members : nn.ModuleList
    concat : nn.Identity
        Applied to the stacked feature map ``float32 (N, M * C, h, w)``: the layer Grad-CAM hooks into.
    classifier : nn.Linear
        ``M * C -> K``.
    """

    def __init__(self, members: Sequence[nn.Module], num_classes: int) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a seed ensemble needs at least 2 members, got {len(members)}")
        nets: list[Any] = list(members)  # timm networks: reset_classifier, num_features, forward_features
        for m in nets:
            m.reset_classifier(0)
        self.members = nn.ModuleList(nets)
        channels = int(nets[0].num_features)
        self.num_features = channels * len(members)
        self.concat = nn.Identity()
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``float32 (N, 1, S, S)`` -> stacked feature maps ``float32 (N, M * C, h, w)``."""
        nets: list[Any] = list(self.members)
        return self.concat(torch.cat([m.forward_features(x) for m in nets], dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Stacked feature map -> mean of the members' logits ``float32 (N, K)`` (pooled features if ``pre_logits``)."""
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``float32 (N, 1, S, S)`` -> logits ``float32 (N, K)``."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        """The merged linear classifier (timm interface)."""
        return self.classifier


def _linear_head(model: nn.Module) -> nn.Linear:
    from cxrtriage.models.registry import classifier_head

    head = classifier_head(model)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"a seed ensemble needs GAP + linear members, found a {type(head).__name__} head")
    return head


def merge_members(models: Sequence[nn.Module]) -> SeedEnsemble:
    """Build the ensemble of trained networks (their classifiers merged; the models are modified in place).

    Parameters
    ----------
    models : sequence of nn.Module
        ``M >= 2`` trained registry networks of one architecture and class count, each GAP + ``nn.Linear``.

    Returns
    -------
    SeedEnsemble
        In eval mode; its logits equal the mean of the members' logits (up to float rounding).

    Raises
    ------
    ValueError
        Fewer than 2 models, heads that are not linear, or different feature or class counts.
    """
    heads = [_linear_head(m) for m in models]
    shapes = {tuple(h.weight.shape) for h in heads}
    if len(shapes) != 1:
        raise ValueError(f"members differ in classifier shape: {sorted(shapes)}")
    k = heads[0].out_features
    weight = torch.cat([h.weight.detach() for h in heads], dim=1) / len(heads)
    bias = torch.stack([h.bias.detach() if h.bias is not None else torch.zeros(k) for h in heads]).mean(dim=0)
    ens = SeedEnsemble(list(models), k)
    with torch.no_grad():
        ens.classifier.weight.copy_(weight)
        ens.classifier.bias.copy_(bias)
    return ens.eval()


def ensemble_skeleton(arch: str, num_classes: int, members: int) -> SeedEnsemble:
    """An untrained :class:`SeedEnsemble` of ``members`` registry networks ``arch`` (to load weights into).

    Raises
    ------
    cxrtriage.models.registry.UnknownModelError
        Unknown ``arch``.
    ValueError
        ``members < 2``.
    """
    from cxrtriage.models.registry import create_model

    return SeedEnsemble([create_model(arch, num_classes, pretrained=False) for _ in range(members)], num_classes)

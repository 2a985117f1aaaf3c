"""Batch normalisation over the global batch of data-parallel processes, on any device (CPUs included).

PyTorch's ``SyncBatchNorm`` runs on GPUs only. :func:`global_batchnorm` makes every 2-D batch norm of a
model (``torch.nn.BatchNorm2d`` and timm's ``BatchNormAct2d``) normalise with the mean and variance of the
whole global batch during training: per-channel sums, sums of squares and counts are added over the
processes with a differentiable all-reduce (``torch.distributed.nn.functional.all_reduce``), so gradients
flow through the statistics as in single-process training (Ioffe & Szegedy, "Batch Normalization",
ICML 2015; the synchronised form of Peng et al., "MegDet", CVPR 2018). With one process, or in eval mode,
the layer is the original one. The parameters and buffers keep their names, so checkpoints and the saved
model are those of the plain network.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

__all__ = ["global_batchnorm"]


def _global_forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if not self.training or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return cast(Any, type(self).__mro__[1]).forward(self, x)  # the original class's forward
    import warnings

    from torch.distributed.nn.functional import all_reduce

    c = x.shape[1]
    xf = x.float()
    # sums in float64: the variance E[x^2] - E[x]^2 would lose digits in float32
    local = torch.cat(
        [
            xf.sum((0, 2, 3), dtype=torch.float64),
            (xf * xf).sum((0, 2, 3), dtype=torch.float64),
            torch.full((1,), float(x.numel() // c), dtype=torch.float64, device=x.device),
        ]
    )
    with warnings.catch_warnings():  # the suggested replacement (_functional_collectives) is private API
        warnings.simplefilter("ignore", FutureWarning)
        total = all_reduce(local)
    n = total[-1]
    mean64 = total[:c] / n
    mean, var = mean64.float(), (total[c : 2 * c] / n - mean64 * mean64).clamp_min(0.0).float()
    if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * float(n / (n - 1).clamp_min(1.0)), alpha=m)
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
    out = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
    if self.affine:
        out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
    out = out.to(x.dtype)
    # timm's BatchNormAct2d applies dropout and the activation after the normalisation
    drop: Any = getattr(self, "drop", None)
    act: Any = getattr(self, "act", None)
    if drop is not None:
        out = drop(out)
    if act is not None:
        out = act(out)
    return out


_CLASSES: dict[type, type] = {}


def global_batchnorm(model: nn.Module) -> nn.Module:
    """Switch every 2-D batch-norm layer of ``model`` (in place) to global-batch statistics in training.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    torch.nn.Module
        ``model`` itself; each ``BatchNorm2d`` (or subclass) now has a subclass of its own class whose
        ``forward`` uses the statistics of all processes when a process group of more than one is running.
    """
    for module in model.modules():
        cls = type(module)
        if (
            isinstance(module, nn.BatchNorm2d)
            and cls not in _CLASSES.values()
            and not isinstance(module, nn.SyncBatchNorm)
        ):
            if cls not in _CLASSES:
                _CLASSES[cls] = type(f"Global{cls.__name__}", (cls,), {"forward": _global_forward})
            module.__class__ = _CLASSES[cls]
    return model

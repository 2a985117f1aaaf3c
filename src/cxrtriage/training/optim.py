"""Optimiser and learning-rate schedule of the training loop, from timm.

``build_optimizer`` calls :func:`timm.optim.create_optimizer_v2`; ``build_scheduler`` returns a
:class:`timm.scheduler.CosineLRScheduler` stepped once per optimisation step (``step_update``), with the
warm-up cxrtriage has always used: linear over the first third of an epoch's steps, then cosine decay over
the remaining steps of the run to 2 % of the peak rate (Loshchilov & Hutter 2017, SGDR, without restarts).
"""

from __future__ import annotations

import math

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from cxrtriage.config import OPTIMIZERS, TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "schedule_lengths", "LR_MIN_FRACTION"]

#: Final learning rate of the cosine schedule as a fraction of the peak ``TrainConfig.lr``.
LR_MIN_FRACTION = 0.02


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over all parameters of ``model``.

    ``adamw`` (``torch.optim.AdamW``), ``adam``, ``sgd`` (Nesterov, momentum 0.9) or ``adagrad``, built by
    ``timm.optim.create_optimizer_v2`` with ``lr = cfg.lr`` and ``weight_decay = cfg.weight_decay`` applied to
    every parameter (``filter_bias_and_bn=False``, as before the move to timm).

    Parameters
    ----------
    model : nn.Module
        The (unwrapped) network.
    cfg : TrainConfig

    Returns
    -------
    torch.optim.Optimizer

    Raises
    ------
    ValueError
        ``cfg.optimizer`` is not one of :data:`cxrtriage.config.OPTIMIZERS`.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    return create_optimizer_v2(
        model,
        opt=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=0.9,
        filter_bias_and_bn=False,
    )


def schedule_lengths(n_train: int, cfg: TrainConfig) -> tuple[int, int]:
    """``(total_steps, warmup_steps)`` of a run: ``epochs * ceil(n_train / batch_size)`` and a third of an epoch.

    Raises
    ------
    ValueError
        ``n_train`` or ``cfg.batch_size`` below 1.
    """
    if n_train < 1 or cfg.batch_size < 1:
        raise ValueError(f"need n_train >= 1 and batch_size >= 1, got {n_train} and {cfg.batch_size}")
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    return cfg.epochs * steps_per_epoch, max(1, steps_per_epoch // 3)


def build_scheduler(optimizer: torch.optim.Optimizer, n_train: int, cfg: TrainConfig) -> CosineLRScheduler:
    """Cosine schedule with linear warm-up, stepped per optimisation step via ``step_update(num_updates=k)``.

    Step ``k`` (0-based) runs at ``warmup_lr_init + k * (lr - warmup_lr_init) / W`` for ``k < W`` (``W`` =
    warm-up steps, ``warmup_lr_init = lr / W``), then at
    ``lr_min + (lr - lr_min) / 2 * (1 + cos(pi * (k - W) / (T - W)))`` down to ``lr_min = 0.02 * lr`` at the
    last step ``T``, after which it stays at ``lr_min``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Its ``lr`` is the peak rate.
    n_train : int
        Training images per epoch (sets the steps per epoch with ``cfg.batch_size``).
    cfg : TrainConfig

    Returns
    -------
    timm.scheduler.CosineLRScheduler
        ``t_in_epochs=False``: call ``step_update(num_updates=k)`` after the ``k``-th optimiser step.
    """
    total, warmup = schedule_lengths(n_train, cfg)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=LR_MIN_FRACTION * cfg.lr,
        warmup_t=warmup,
        warmup_lr_init=cfg.lr / warmup,
        warmup_prefix=True,
        t_in_epochs=False,
    )

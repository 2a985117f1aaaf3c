"""Which training images each process sees, step by step: one global draw, split between processes.

Every process draws the same global sequence for an epoch (a class-balanced weighted draw with
replacement, or a permutation) from a generator seeded by ``(seed, epoch)``, and takes its own slice of
each global batch. The union of the processes' batches at a step is the batch a single process would use
with the same global batch size, so data-parallel training sees the same images in the same steps as
single-process training, whatever the number of processes (and a run resumed with another world size
draws the same batches). Each image also gets an augmentation seed from the same draw, so its random
augmentation does not depend on which process applies it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["GlobalBatchSampler", "SeededItems"]


class GlobalBatchSampler(Sampler[tuple[int, int]]):
    """This process's ``(index, augmentation seed)`` items of an epoch.

    Parameters
    ----------
    n : int
        Training images (>= 1).
    batch_size : int
        Global batch: images per optimisation step over all processes; divisible by ``world_size``.
    weights : numpy.ndarray or None
        ``float (n,)`` sampling weights (class balance: ``1 / count`` of each image's class) for a draw of
        ``n`` with replacement (``torch.multinomial``); ``None``: a random permutation.
    seed : int
    rank, world_size : int
        This process and the number of processes (``0 <= rank < world_size``).
    epoch : int
        The epoch whose sequence is drawn (generator seed ``seed * 1000 + epoch``). Fixed at construction on
        purpose: there is no ``set_epoch``, because Lightning Fabric's dataloader wrapper calls ``set_epoch`` on
        the sampler with its own count of ``__iter__`` calls, which is 0 for a loader set up afresh every epoch
        and so replayed epoch 0's images and augmentation seeds in every epoch.

    Notes
    -----
    Steps per epoch: ``n // batch_size`` when ``n > batch_size`` (the incomplete last batch is dropped),
    else one step of ``n`` images rounded down to a multiple of ``world_size``. Each process yields
    ``batch_size // world_size`` items per step; use it with a ``DataLoader`` of that batch size.

    Raises
    ------
    ValueError
        ``batch_size`` not divisible by ``world_size``, or fewer images than processes.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        weights: np.ndarray | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        epoch: int = 0,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        if n < world_size:
            raise ValueError(f"{n} training images for {world_size} processes")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.global_batch = batch_size if n > batch_size else n - n % world_size
        self.steps = n // batch_size if n > batch_size else 1
        self.per_rank = self.global_batch // world_size
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.per_rank

    def global_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's global ``(indices int64 (steps * global_batch,), augmentation seeds int64 (same,))``."""
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=gen)
        else:
            order = torch.randperm(self.n, generator=gen)
        seeds = torch.randint(0, 2**31 - 1, (self.n,), generator=gen)
        used = self.steps * self.global_batch
        return order[:used], seeds[:used]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self.global_order()
        for step in range(self.steps):
            lo = step * self.global_batch + self.rank * self.per_rank
            for j in range(lo, lo + self.per_rank):
                yield int(order[j]), int(seeds[j])


class SeededItems(Dataset):
    """Wrap a map-style dataset so that item ``(i, s)`` is ``dataset[i]`` drawn with random state ``s``.

    Python's, NumPy's and torch's global generators are seeded with ``s`` before the item is built (the
    augmentation of :mod:`cxrtriage.data.transforms` draws from them), so the same ``(i, s)`` gives the same
    augmented tensor in any process or DataLoader worker.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        i, s = item
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        return self.dataset[i]

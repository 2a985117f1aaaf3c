"""The epoch loop shared by every kind of model: steps, validation, checkpoints, resume, early stopping, history.

What a model kind adds is passed in (the MONAI ``SupervisedTrainer`` / Lightning Fabric split): a function that
runs one optimisation step on a batch, a function that scores the model on validation data, and a function that
builds an epoch's batches. :func:`fit` owns the rest:

- one ``checkpoints/last.pt`` after every epoch (model, optimiser, scheduler, epoch, step count, history, best
  score, RNG states, the run's settings, elapsed seconds), written to a temporary file and renamed, so a kill leaves
  the previous one intact; ``resume=True`` continues after the last finished epoch;
- ``checkpoints/best.pt`` (the model only) whenever the validation score rises; early stopping after ``patience``
  epochs without a rise;
- ``history.csv``: one row per epoch (the step function's means and the validation figures).

The classifier trainer (:func:`cxrtriage.training.trainer.train`) writes checkpoints of the same layout.
"""

from __future__ import annotations

import csv
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from torch import nn

__all__ = ["LoopResult", "fit", "seed_all", "rng_states", "set_rng_states", "write_history", "save_checkpoint"]

log = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """The global generators' states (Python, NumPy, torch), for a checkpoint."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore states saved by :func:`rng_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    """Write one CSV row per epoch (columns from the first row); nothing when ``history`` is empty.

    Written to a temporary file and renamed, so a kill mid-write leaves the previous file whole. The loops call it
    *before* saving ``last.pt``: a kill between the two leaves a row for an epoch the checkpoint does not hold, which
    resume drops (it rewrites the file from the checkpoint), never a checkpointed epoch without its row.
    """
    if not history:
        return
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def save_checkpoint(fabric: Fabric, state: dict[str, Any], path: Path) -> None:
    """``fabric.save`` to a temporary file, then rename: a kill mid-write leaves the previous file intact."""
    tmp = path.with_suffix(".tmp")
    fabric.save(tmp, state)
    if fabric.is_global_zero:
        tmp.replace(path)
    fabric.barrier()


@dataclass
class LoopResult:
    """What :func:`fit` did.

    Attributes
    ----------
    history : list of dict
        One row per epoch run (including those of a resumed run's earlier invocations).
    best_epoch : int
        Epoch of the highest validation score (1-based; 0 if none ran).
    best_score : float
        That score.
    elapsed : float
        Training seconds over all invocations.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    elapsed: float = 0.0


def fit(
    fabric: Fabric,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch_batches: Callable[[int], Iterable[Any]],
    train_step: Callable[[Any], tuple[torch.Tensor, int]],
    validate: Callable[[], dict[str, float]],
    select: str,
    epochs: int,
    patience: int,
    out: Path,
    config: dict[str, Any],
    seed: int,
    resume: bool = False,
    progress: bool = False,
    best_model: nn.Module | None = None,
) -> LoopResult:
    """Run epochs of ``train_step`` over ``epoch_batches(epoch)``, validate after each, checkpoint, stop early.

    Parameters
    ----------
    fabric : lightning.fabric.Fabric
        Launched; ``model`` and ``optimizer`` already set up by it.
    model, optimizer, scheduler
        ``scheduler`` is a timm scheduler stepped per step (``step_update(num_updates=k)``).
    epoch_batches : callable
        ``epoch -> iterable of batches`` (already on the device).
    train_step : callable
        ``batch -> (loss, batch_size)``; the loop does ``zero_grad``, ``fabric.backward`` and ``step``.
    validate : callable
        ``() -> {name: value}``; must contain ``select``. Higher is better.
    select : str
        Validation key that picks the best epoch.
    epochs, patience : int
        Maximum epochs; epochs without a rise of ``select`` before stopping.
    out : Path
        Run folder: ``checkpoints/{last,best}.pt`` and ``history.csv`` are written there.
    config : dict
        The run's settings, stored in every checkpoint.
    seed : int
        Epoch ``e`` is seeded with ``seed * 1000 + e`` (a resumed run draws the same batches).
    resume : bool
        Continue from ``out/checkpoints/last.pt`` when it exists.
    progress : bool
        Show a tqdm bar per epoch.
    best_model : torch.nn.Module, optional
        What ``best.pt`` holds (default ``model``), e.g. the unwrapped network.

    Returns
    -------
    LoopResult

    Raises
    ------
    KeyError
        ``validate`` did not return ``select``.
    """
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path = ckpt_dir / "last.pt"
    result = LoopResult()
    start_epoch, num_updates = 1, 0
    t_initial = getattr(scheduler, "t_initial", None)
    if resume and last_path.exists():
        rest = fabric.load(
            last_path,
            {"model": model, "optimizer": optimizer, "scheduler": scheduler},
            strict=False,
            weights_only=False,
        )
        result.history = rest["history"]
        if fabric.is_global_zero:
            write_history(result.history, out / "history.csv")
        result.best_epoch, result.best_score = int(rest["best"]["epoch"]), float(rest["best"]["score"])
        result.elapsed = float(rest.get("elapsed", 0.0))
        start_epoch, num_updates = int(rest["epoch"]) + 1, int(rest["num_updates"])
        set_rng_states(rest["rng"])
        if t_initial is not None:
            scheduler.t_initial = t_initial
        scheduler.step_update(num_updates=num_updates)
        log.info("resuming %s after epoch %d", out, rest["epoch"])
    t0 = time.time()
    stale = start_epoch - 1 - result.best_epoch if result.best_epoch else 0
    for epoch in range(start_epoch, epochs + 1):
        if stale >= patience:
            log.info("early stopping: no validation %s gain for %d epochs", select, stale)
            break
        seed_all(seed * 1000 + epoch)
        model.train()
        bar: Any = epoch_batches(epoch)
        if progress and fabric.is_global_zero:
            from tqdm import tqdm

            bar = tqdm(bar, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
        loss_sum, seen = 0.0, 0
        for batch in bar:
            loss, n = train_step(batch)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            num_updates += 1
            scheduler.step_update(num_updates=num_updates)
            loss_sum += float(loss.detach()) * n
            seen += n
            if progress and fabric.is_global_zero:
                bar.set_postfix(loss=f"{loss_sum / max(1, seen):.4f}")
        model.eval()
        with torch.no_grad():
            scores = validate()
        score = float(scores[select])
        row = {
            "epoch": epoch,
            "train_loss": round(loss_sum / max(1, seen), 6),
            **{f"val_{k}": round(float(v), 6) for k, v in scores.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(result.elapsed + time.time() - t0, 1),
        }
        result.history.append(row)
        if score > result.best_score:
            result.best_score, result.best_epoch, stale = score, epoch, 0
            save_checkpoint(fabric, {"model": best_model or model}, ckpt_dir / "best.pt")
        else:
            stale += 1
        if fabric.is_global_zero:
            write_history(result.history, out / "history.csv")
        save_checkpoint(
            fabric,
            {
                "model": model,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "epoch": epoch,
                "num_updates": num_updates,
                "history": result.history,
                "best": {"epoch": result.best_epoch, "score": result.best_score},
                "rng": rng_states(),
                "config": config,
                "elapsed": result.elapsed + time.time() - t0,
            },
            last_path,
        )
        shown = " ".join(f"{k} {v:.4f}" for k, v in scores.items())
        fabric.print(f"epoch {epoch}: train loss {row['train_loss']:.4f} | val {shown}", flush=True)
    result.elapsed += time.time() - t0
    return result

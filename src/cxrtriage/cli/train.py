"""CLI plugin: ``cxr train``; every ``TrainConfig`` field is an option with the dataclass default."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cxrtriage.cli.config_args import add_dataclass_arguments, dataclass_from_args
from cxrtriage.config import TrainConfig

__all__ = ["register"]


def _cmd_train(a: argparse.Namespace) -> int:
    from cxrtriage.metrics.report import format_estimate
    from cxrtriage.training.trainer import train

    cfg = dataclass_from_args(TrainConfig, a)
    res = train(cfg, progress=not a.quiet, resume=a.resume)
    auc = format_estimate(res.val_metrics.metrics.get("auroc"), 4)
    print(
        f"model written to {res.model_dir} (best epoch {res.best_epoch}, validation AUROC {auc}, {res.wall_seconds:.0f} s)"
    )
    if res.skipped:
        print(f"{len(res.skipped)} unreadable image(s) skipped (listed above)")
    return 0


def register(subparsers: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``train`` to the ``cxr`` parser."""
    p = subparsers.add_parser("train", help="train a classifier on a dataset folder or manifest")
    add_dataclass_arguments(p, TrainConfig, required=("data", "out"))
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    commands["train"] = _cmd_train

"""The ``cxr`` command line: train, evaluate, predict, demo (and more).

Every sub-command prints a one-line reason and exits non-zero on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cxrtriage import DISCLAIMER, __version__
from cxrtriage.cli import evaluate as evaluate_cli
from cxrtriage.cli import experiments as experiments_cli
from cxrtriage.cli import models as models_cli
from cxrtriage.cli import predict as predict_cli
from cxrtriage.cli import serve as serve_cli
from cxrtriage.config import SELECT_METRICS, TrainConfig

__all__ = ["main", "build_parser"]


def _add_train(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a classifier on a dataset folder or manifest")
    p.add_argument("--task", default=d.task)
    p.add_argument(
        "--data", required=True, help="dataset folder (ImageFolder layout or with manifest.csv) or a manifest CSV"
    )
    p.add_argument("--arch", default=d.arch)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", choices=["adamw", "adam", "sgd", "adagrad"], default=d.optimizer)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--balance", choices=["sampler", "loss", "none"], default=d.balance, help="class-imbalance handling")
    p.add_argument(
        "--patience", type=int, default=d.patience, help="early stopping patience (epochs) on --select-metric"
    )
    p.add_argument(
        "--select-metric",
        choices=SELECT_METRICS,
        default=d.select_metric,
        help="validation metric that picks the best epoch",
    )
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--intensity", choices=["equalize", "minmax", "none"], default=d.intensity)
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (off by default)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--no-pretrained", action="store_true", help="do not load ImageNet weights")
    p.add_argument("--threshold-rule", default=d.threshold_rule, help="youden or sensitivity:<target>")
    p.add_argument("--max-train-images", type=int, default=None)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", required=True, help="output folder: the trained model, checkpoints, history and curves")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_train(a) -> int:
    from cxrtriage.training.trainer import train

    cfg = TrainConfig(
        task=a.task,
        data=a.data,
        out=a.out,
        arch=a.arch,
        image_size=a.image_size,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        optimizer=a.optimizer,
        weight_decay=a.weight_decay,
        balance=a.balance,
        patience=a.patience,
        val_fraction=a.val_fraction,
        seed=a.seed,
        intensity=a.intensity,
        hflip=a.hflip,
        label_smoothing=a.label_smoothing,
        pretrained=not a.no_pretrained,
        threads=a.threads,
        channels_last=not a.no_channels_last,
        max_train_images=a.max_train_images,
        cache_dir=a.cache_dir,
        threshold_rule=a.threshold_rule,
        select_metric=a.select_metric,
    )
    res = train(cfg, progress=not a.quiet, resume=a.resume)
    auc = res.val_metrics.metrics["auroc"]
    print(
        f"model written to {res.model_dir} (best epoch {res.best_epoch}, validation AUROC {auc}, {res.wall_seconds:.0f} s)"
    )
    if res.skipped:
        print(f"{len(res.skipped)} unreadable image(s) skipped (listed above)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``cxr`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(prog="cxr", description=f"cxrtriage {__version__}: chest X-ray AI. {DISCLAIMER}")
    parser.add_argument("--version", action="version", version=f"cxrtriage {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    for module in COMMAND_GROUPS:
        module.register(sub, COMMANDS)
    return parser


COMMANDS = {"train": _cmd_train}

#: Modules that add sub-commands: each has ``register(subparsers, commands)``,
#: which adds its parsers and maps each command name to ``fn(args) -> int``.
COMMAND_GROUPS = [models_cli, evaluate_cli, predict_cli, serve_cli, experiments_cli]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cxr``; returns the process exit code."""
    from cxrtriage.data.discover import DatasetError
    from cxrtriage.data.io import ImageReadError
    from cxrtriage.models.bundle import ModelLoadError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (DatasetError, ImageReadError, ModelLoadError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"cxr {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

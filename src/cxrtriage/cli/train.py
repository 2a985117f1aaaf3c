"""CLI plugin: ``cxr train``; every ``TrainConfig`` field is an option with the dataclass default.

``cxr train --nproc N`` starts ``torchrun --standalone --nproc-per-node N -m cxrtriage.cli train ...`` (the same
options, without ``--nproc``): N data-parallel processes on this machine. For several machines call
``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m cxrtriage.cli train ...``
on each (``examples/slurm/train_ddp.sbatch``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable

from cxrtriage.cli.config_args import add_dataclass_arguments, dataclass_from_args
from cxrtriage.config import TrainConfig

__all__ = ["register", "torchrun_command"]


def torchrun_command(nproc: int, train_argv: list[str]) -> list[str]:
    """The ``torchrun`` command line running ``cxr train`` with ``train_argv`` in ``nproc`` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "cxrtriage.cli",
        "train",
        *train_argv,
    ]


def _argv_without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok == "--nproc":
            skip = True
            continue
        if tok.startswith("--nproc="):
            continue
        out.append(tok)
    return out


def _cmd_train(a: argparse.Namespace) -> int:
    if a.nproc > 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        if a.train_argv is None:
            raise ValueError("--nproc needs the command-line arguments (run `cxr train` from a shell)")
        cmd = torchrun_command(a.nproc, _argv_without_nproc(a.train_argv))
        print("running " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        return subprocess.run(cmd, check=False).returncode
    from cxrtriage.metrics.report import format_estimate
    from cxrtriage.training.trainer import train

    cfg = dataclass_from_args(TrainConfig, a)
    res = train(cfg, progress=not a.quiet, resume=a.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
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
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine, started with torchrun (batch-size is the global batch)",
    )
    commands["train"] = _cmd_train

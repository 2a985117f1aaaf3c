"""The ``cxr`` command line: train, evaluate, predict, demo (and more).

Every sub-command prints a one-line reason and exits non-zero on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from cxrtriage import DISCLAIMER, __version__
from cxrtriage.cli import audit as audit_cli
from cxrtriage.cli import evaluate as evaluate_cli
from cxrtriage.cli import experiments as experiments_cli
from cxrtriage.cli import models as models_cli
from cxrtriage.cli import pacs as pacs_cli
from cxrtriage.cli import predict as predict_cli
from cxrtriage.cli import score as score_cli
from cxrtriage.cli import segment as segment_cli
from cxrtriage.cli import serve as serve_cli
from cxrtriage.cli import train as train_cli
from cxrtriage.cli import users as users_cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``cxr`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(prog="cxr", description=f"cxrtriage {__version__}: chest X-ray AI. {DISCLAIMER}")
    parser.add_argument("--version", action="version", version=f"cxrtriage {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_GROUPS:
        module.register(sub, COMMANDS)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}

#: Modules that add sub-commands: each has ``register(subparsers, commands)``,
#: which adds its parsers and maps each command name to ``fn(args) -> int``.
COMMAND_GROUPS = [
    train_cli,
    models_cli,
    evaluate_cli,
    predict_cli,
    serve_cli,
    pacs_cli,
    users_cli,
    experiments_cli,
    audit_cli,
    score_cli,
    segment_cli,
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cxr``; returns the process exit code."""
    from cxrtriage.cli.extras import missing_extra_hint
    from cxrtriage.data.discover import DatasetError
    from cxrtriage.data.io import ImageReadError
    from cxrtriage.models.bundle import ModelLoadError

    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    if args.command == "train":  # `cxr train --nproc N` hands its own options on to torchrun
        args.train_argv = raw[raw.index("train") + 1 :]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (DatasetError, ImageReadError, ModelLoadError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"cxr {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra (e.g. [serve]) is not installed: say which one
        hint = missing_extra_hint(args.command, exc)
        if hint is None:
            raise
        print(hint, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

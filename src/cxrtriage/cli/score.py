"""``cxr score``: stream a large image archive through a model into a Parquet dataset."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cxrtriage.cli.config_args import add_dataclass_arguments, add_model_argument, dataclass_from_args
from cxrtriage.config import ScoreConfig

__all__ = ["register"]


def _cmd_score(a: argparse.Namespace) -> int:
    from cxrtriage.inference.score import score, score_dask

    cfg = dataclass_from_args(ScoreConfig, a)
    if a.dask:
        from distributed import Client, LocalCluster

        if a.dask.startswith("local:"):
            n = int(a.dask.partition(":")[2])
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True) as cluster, Client(cluster) as c:
                res = score_dask(cfg, c, partition_size=a.partition_size)
        else:
            with Client(a.dask) as c:
                res = score_dask(cfg, c, partition_size=a.partition_size)
    else:
        res = score(cfg, progress=not a.quiet)
    print(
        f"scored {res.scored} image(s), {res.errors} unreadable (recorded with the reason), "
        f"{res.already_done} already in {res.out}; {res.images_per_second:.1f} images/s"
    )
    return 0


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``score`` to the ``cxr`` parser."""
    p = sub.add_parser(
        "score", help="stream a folder or manifest of images through a model into a Parquet dataset (resumable)"
    )
    add_model_argument(p)
    add_dataclass_arguments(p, ScoreConfig, exclude=("model",), required=("data",))
    p.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="run as a Dask job: a scheduler address (tcp://host:8786) or local:N for N local worker processes",
    )
    p.add_argument("--partition-size", type=int, default=1024, help="images per Dask task (with --dask)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    commands["score"] = _cmd_score

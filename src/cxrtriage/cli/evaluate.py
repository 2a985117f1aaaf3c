"""``cxr evaluate``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cxrtriage.cli.config_args import add_device_argument, add_model_argument

__all__ = ["register"]


def _cmd_evaluate(a: argparse.Namespace) -> int:
    if len(a.data) > 1:
        return _cmd_evaluate_many(a)
    from cxrtriage.experiments.evaluate import evaluate

    res = evaluate(
        a.model,
        a.data[0],
        a.out,
        split=a.split,
        cache_dir=a.cache_dir,
        progress=not a.quiet,
        by=a.by,
        device=a.device,
    )
    from cxrtriage.metrics.report import format_estimate

    m, r = res.metrics, res.report
    for path, reason in res.skipped:
        print(f"skipped {path}: {reason}")
    print(f"{r.task}: n={r.n}" + ("" if r.is_binary else f" (macro over {', '.join(r.macro_over)})"))
    for k, est in r.metrics.items():
        print(f"  {k} {format_estimate(est, 4)}")
    for col, sub in m.get("subgroups", {}).items():
        print(f"by {col}:")
        for value, g in sub["groups"].items():
            shown = ", ".join(
                f"{k} {v['value']:.3f}"
                for k, v in g.get("metrics", {}).items()
                if k in ("accuracy", "sensitivity", "specificity", "auroc")
                and isinstance(v, dict)
                and v.get("value") is not None
            )
            print(f"  {value}: n={g['n']} {shown}")
    print(f"written to {res.out}/metrics.json")
    return 0


def _cmd_evaluate_many(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.evaluate import evaluate_many
    from cxrtriage.metrics.report import format_estimate

    res = evaluate_many(
        a.model, a.data, a.out, split=a.split, cache_dir=a.cache_dir, progress=not a.quiet, by=a.by, device=a.device
    )
    for name, r in res.results.items():
        rep = r.report
        key = "sensitivity" if rep.is_binary else "macro_sensitivity"
        print(
            f"{name}: n={rep.n} ({', '.join(f'{c} {k}' for c, k in rep.class_counts.items())}); "
            f"auroc {format_estimate(rep.metrics.get('auroc'), 4)}, {key} {format_estimate(rep.metrics.get(key), 4)}"
            + (f"; skipped {len(r.skipped)} unreadable" if r.skipped else "")
        )
    print(f"written to {res.out}/external.md (.csv, .json) and {res.out}/<dataset>/")
    return 0


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``evaluate`` to the ``cxr`` parser."""
    p = sub.add_parser("evaluate", help="score a labelled dataset and write metrics.json and figures")
    add_model_argument(p)
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="dataset folder or manifest; several: one sub-folder each in --out and one table external.md/.csv/.json",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default=None, help="only this split (train, val, test...)")
    p.add_argument(
        "--by",
        action="append",
        default=None,
        metavar="COLUMN",
        help="also report metrics per value of this manifest column (or age_band); repeatable",
    )
    p.add_argument("--cache-dir", default=None)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")
    commands["evaluate"] = _cmd_evaluate

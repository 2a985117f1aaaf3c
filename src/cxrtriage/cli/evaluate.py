"""``cxr evaluate``."""

from __future__ import annotations

__all__ = ["register"]


def _cmd_evaluate(a) -> int:
    from cxrtriage.experiments.evaluate import evaluate

    res = evaluate(a.model, a.data, a.out, split=a.split, cache_dir=a.cache_dir, progress=not a.quiet, by=a.by)
    m = res.metrics
    for path, reason in res.skipped:
        print(f"skipped {path}: {reason}")
    keys = ["accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auroc"]
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in keys if isinstance(m.get(k), float))
    print(f"{m['task']}: n={m['n']} {shown}")
    print(f"95% CI accuracy {m['ci95']['accuracy']}, AUROC {m['ci95']['auroc']}")
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


def register(sub, commands: dict) -> None:
    """Add ``evaluate`` to the ``cxr`` parser."""
    p = sub.add_parser("evaluate", help="score a labelled dataset and write metrics.json and figures")
    p.add_argument(
        "--model",
        default=None,
        help="model folder or shipped model name (`cxr models`; default: the shipped pneumonia model)",
    )
    p.add_argument("--data", required=True, help="dataset folder or manifest")
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
    p.add_argument("--quiet", action="store_true")
    commands["evaluate"] = _cmd_evaluate

"""``cxr predict`` and ``cxr demo``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from cxrtriage.cli.config_args import add_device_argument, add_model_argument

__all__ = ["register"]


def _cmd_predict(a: argparse.Namespace) -> int:
    from cxrtriage.inference.run import predict_files
    from cxrtriage.ood.gate import load_gate

    gate = None if a.no_cxr_gate else load_gate()
    results, errors = predict_files(
        a.model,
        a.images,
        a.out,
        with_gradcam=not a.no_gradcam,
        refuse=gate.refusal if gate is not None else None,
        device=a.device,
    )
    for r in results:
        if a.json:
            print(json.dumps(r))
        elif "refused" in r:
            print(f"{r['path']}: REFUSED: {r['refused']}")
        else:
            probs = ", ".join(f"{c} {p:.3f}" for c, p in r["probabilities"].items())
            thr = f"; threshold {r['threshold']:.3f} on {r['positive_class']}" if r["threshold"] is not None else ""
            print(f"{r['path']}: {r['label']} ({probs}{thr})")
    for path, reason in errors:
        print(f"cxr predict: error: {path}: {reason}", file=sys.stderr)
    return 1 if errors else 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.demo import run_demo

    page = run_demo(a.model, a.out)
    print(f"demo page written to {page}")
    return 0


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``predict`` and ``demo`` to the ``cxr`` parser."""
    p = sub.add_parser("predict", help="classify images; write annotated and Grad-CAM PNGs")
    p.add_argument("images", nargs="+", help="PNG, JPEG or DICOM files (any transfer syntax)")
    add_model_argument(p)
    p.add_argument("--out", default="predictions", help="folder for <stem>_annotated.png and <stem>_gradcam.png")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM heatmaps")
    p.add_argument(
        "--no-cxr-gate",
        action="store_true",
        help='classify every image without gate 1 ("is this a chest radiograph?"); refused images are reported '
        "with the reason by default",
    )
    add_device_argument(p)
    commands["predict"] = _cmd_predict
    d = sub.add_parser("demo", help="predict the shipped examples with the shipped model and write an HTML page")
    add_model_argument(d)
    d.add_argument("--out", default="demo_out", help="output folder (index.html and images)")
    commands["demo"] = _cmd_demo

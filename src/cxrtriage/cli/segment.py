"""CLI plugin: ``cxr train-segmenter`` (train the lung segmenter) and ``cxr segment`` (lung masks of images)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from cxrtriage.cli.config_args import add_dataclass_arguments, dataclass_from_args
from cxrtriage.config import SegmenterTrainConfig

__all__ = ["register"]


def _cmd_train_segmenter(a: argparse.Namespace) -> int:
    from cxrtriage.segment.bundle import SegmenterBundle
    from cxrtriage.training.segmenter import train_segmenter

    cfg = dataclass_from_args(SegmenterTrainConfig, a)
    out = train_segmenter(cfg, progress=not a.quiet, resume=a.resume)
    t = SegmenterBundle.load(out).training
    print(
        f"segmenter written to {out} (best epoch {t['best_epoch']}, held-out Dice {t['val_dice_at_best']:.4f} "
        f"on {t['n_val']} images of {t['val_patients']} patients, {t['wall_seconds']:.0f} s)"
    )
    return 0


def _cmd_segment(a: argparse.Namespace) -> int:
    from PIL import Image

    from cxrtriage.data.io import ImageReadError, read_image
    from cxrtriage.segment.runtime import load_segmenter

    seg = load_segmenter(a.segmenter)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    failed_reads = 0
    for path in a.images:
        try:
            img = read_image(path)
        except ImageReadError as exc:
            failed_reads += 1
            print(json.dumps({"image": str(path), "error": str(exc)}) if a.json else f"{path}: {exc}")
            continue
        res = seg.segment(img)
        dest = out / f"{Path(path).stem}_lungs.png"
        Image.fromarray((res.mask.astype("uint8") * 255), mode="L").save(dest)
        if a.json:
            print(json.dumps({"image": str(path), "mask": str(dest), **res.as_dict()}))
        else:
            flag = f"  FAILED: {res.reason}" if res.failed else ""
            print(f"{dest}: lungs cover {res.fraction:.1%} of the image{flag}")
    return 1 if failed_reads else 0


def _cmd_evaluate_segmenter(a: argparse.Namespace) -> int:
    import shlex
    import sys

    from cxrtriage.experiments.segmenter import evaluate_segmenter
    from cxrtriage.segment.runtime import shipped_segmenter_dir

    ev = evaluate_segmenter(
        a.segmenter or shipped_segmenter_dir(),
        a.shared_data,
        sheet=a.sheet,
        worst_sheet=a.worst_sheet,
        seed=a.seed,
        write=not a.no_write,
        command="cxr " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
    )
    for row in ev["rows"]:
        print(f"{row['kind']:>13}  {row['data']}: n={row['n']}  {row['figure']}")
    for note in ev["notes"]:
        print(f"  {note}")
    return 0


def register(subparsers: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``train-segmenter`` and ``segment`` to the ``cxr`` parser."""
    p = subparsers.add_parser("train-segmenter", help="train the lung-field segmenter on a mask dataset")
    add_dataclass_arguments(p, SegmenterTrainConfig, required=("data",))
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    commands["train-segmenter"] = _cmd_train_segmenter

    p = subparsers.add_parser(
        "segment", help="lung-field masks: DIR/<stem>_lungs.png (8-bit 0/255, the input's size) per image"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, DICOM, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--json", action="store_true", help="one JSON line per image: lung fraction and failure flag")
    p.add_argument("--segmenter", default=None, help="segmenter folder (default: the shipped one)")
    commands["segment"] = _cmd_segment

    p = subparsers.add_parser(
        "evaluate-segmenter",
        help="measure the lung segmenter: held-out Dice in source, lung area on adult images of other sources",
    )
    p.add_argument("--shared-data", required=True, help="folder holding lung-masks, rsna-lungs and the adult sets")
    p.add_argument("--segmenter", default=None, help="segmenter folder (default: the shipped one)")
    p.add_argument("--sheet", default=None, help="write a contact sheet of 48 random adult overlays here")
    p.add_argument(
        "--worst-sheet", default=None, help="write the 16 held-out images of lowest Dice (reference and contour) here"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the contact sheet's draw")
    p.add_argument("--no-write", action="store_true", help="print only; do not store the figures in the bundle")
    commands["evaluate-segmenter"] = _cmd_evaluate_segmenter

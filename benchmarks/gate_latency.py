"""Milliseconds gate 1 ("is this a chest radiograph?") adds to each upload.

Times :meth:`cxrtriage.serve.service.Engine.gates`'s work (resize to
128 px, frozen EfficientNet-Lite0 forward pass in torch, logistic
regression) one image at a time, as the server does, on real chest
radiographs of each population at their stored sizes and on a few
non-radiographs.

Usage::

    python benchmarks/gate_latency.py [--n 40] [--out benchmarks/results/gate.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, SHARED, machine
from cxrtriage.ood.gate import CXR_DATASETS, load_gate, non_cxr_images, read_gate_rows, read_gray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="images per chest X-ray dataset")
    ap.add_argument("--out", type=Path, default=RESULTS / "gate.json")
    a = ap.parse_args()
    import torch

    gate = load_gate()
    if gate is None:
        raise SystemExit("no gate shipped (run `cxr fit-gate`)")
    images: list[tuple[str, np.ndarray]] = []
    for name in CXR_DATASETS:
        rows = read_gate_rows(SHARED, name)[: a.n]
        images += [(name, read_gray(p)) for _, _, p in rows]
    images += [(k, im) for k, _, im in non_cxr_images(rendered=3, crops=0)[::10]]
    for _, im in images[:5]:  # warm-up
        gate.is_cxr(im)
    per: dict[str, list[float]] = {}
    for group, im in images:
        t0 = time.perf_counter()
        gate.is_cxr(im)
        per.setdefault(group, []).append((time.perf_counter() - t0) * 1e3)
    allms = np.concatenate([np.asarray(v) for v in per.values()])
    out = {
        "what": "gate 1 per upload: resize to 128 px grayscale, frozen ImageNet EfficientNet-Lite0 (torch, CPU), "
        "logistic regression; one image at a time",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "n": int(allms.size),
        "ms_p50": round(float(np.percentile(allms, 50)), 2),
        "ms_p95": round(float(np.percentile(allms, 95)), 2),
        "ms_mean": round(float(allms.mean()), 2),
        "by_group_ms_p50": {k: round(float(np.median(v)), 2) for k, v in per.items()},
        "image_sizes": sorted({f"{im.shape[1]}x{im.shape[0]}" for _, im in images})[:20],
        "machine": machine(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("n", "ms_p50", "ms_p95", "ms_mean")}))


if __name__ == "__main__":
    main()

"""Training images/s by device and process count (``cxr train``, data-parallel with torchrun).

Trains the same model on the same real Kermany images for 2 epochs in each setting and takes the time of
epoch 2 (epoch 1 carries the start-up: cache, model, process group), training plus sharded validation:
images/s = training images / epoch-2 seconds. Settings: 1 process x ``--threads`` threads, and ``--nproc``
processes under ``torchrun`` splitting the same global batch, with ``threads / nproc`` threads each
(and 1 process with that thread count, for the per-core comparison). On a machine with CUDA the same
settings run on the GPU(s) (``--device cuda``).

Writes ``benchmarks/results/train.json``. Usage::

    python benchmarks/train_throughput.py --images 600 --nproc 2 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, SHARED, machine, uptime, write_json


def write_manifest(path: Path, n_train: int, n_val: int) -> None:
    """Balanced training and validation images of distinct patients from the shared Kermany set."""
    root = SHARED / "kermany-pneumonia"
    with (root / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    out, used = [], set()
    for split, n in (("train", n_train), ("val", n_val)):
        chosen = []
        for label in ("NORMAL", "PNEUMONIA"):
            pool = [r for r in rows if r["label"] == label and r["patient_id"] not in used]
            chosen += (pool[::-1] if split == "val" else pool)[: n // 2]
        used |= {r["patient_id"] for r in chosen}
        out += [(str(root / r["path"]), r["label"], split, r["patient_id"]) for r in chosen]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "patient_id"])
        w.writerows(out)


def run(manifest: Path, out: Path, nproc: int, threads: int, a: argparse.Namespace) -> dict:
    args = [
        "--data", str(manifest), "--out", str(out), "--arch", a.arch, "--image-size", str(a.image_size),
        "--epochs", "2", "--batch-size", str(a.batch_size), "--threads", str(threads), "--device", a.device,
        "--cache-dir", str(manifest.parent / "cache"), "--quiet", "--patience", "5",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "cxrtriage.cli", "train", *args, "--nproc", str(nproc)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    with (out / "history.csv").open() as fh:
        hist = list(csv.DictReader(fh))
    epoch2 = float(hist[1]["seconds"]) - float(hist[0]["seconds"])
    bundle = json.loads((out / "bundle.json").read_text())
    n_train = bundle["split"]["n_train"]
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "device": bundle["training"]["runtime"]["device"],
        "world_size": bundle["training"]["runtime"]["world_size"],
        "train_images": n_train,
        "epoch2_seconds": round(epoch2, 2),
        "images_per_second": round(n_train / epoch2, 1),
        "val_auroc_epoch2": float(hist[1]["val_auroc"]),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600, help="training images (half per class)")
    ap.add_argument("--val-images", type=int, default=200)
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32, help="global batch")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the single process (split between ranks)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS / "train.json"))
    a = ap.parse_args()
    uptime_before = uptime()
    per_rank = max(1, a.threads // a.nproc)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        write_manifest(manifest, a.images, a.val_images)
        runs = [
            run(manifest, Path(tmp) / "one", 1, a.threads, a),
            run(manifest, Path(tmp) / "ddp", a.nproc, per_rank, a),
        ]
        if per_rank != a.threads:
            runs.append(run(manifest, Path(tmp) / "one-narrow", 1, per_rank, a))
    result = {
        "benchmark": "cxr train images/s: 1 process vs torchrun data-parallel processes, same global batch",
        "arch": a.arch,
        "image_size": a.image_size,
        "global_batch": a.batch_size,
        "runs": runs,
        "speedup_ddp_vs_one_process": round(runs[1]["images_per_second"] / runs[0]["images_per_second"], 3),
        "uptime_before": uptime_before,
        "uptime_after": uptime(),
        "machine": machine(),
    }
    write_json(a.out, result)


if __name__ == "__main__":
    main()

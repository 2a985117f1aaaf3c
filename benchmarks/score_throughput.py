"""``cxr score`` throughput and peak memory on a large archive vs ONNX Runtime alone, in the same run.

The archive is a temporary manifest listing the shared Kermany images again and again (``id`` column =
row number) up to ``--n`` rows: no image is copied. ``cxr score`` runs as a subprocess (the real CLI); the
resident memory of its whole process tree (scorer + decoding workers) is sampled every 0.1 s. The ONNX
Runtime limit is the same model and session settings run on batches already decoded and preprocessed in
memory, measured just before and just after the scoring run (their mean is the reference), with the
scorer's thread count and with every core (the better of the two is the strict reference).

Writes ``benchmarks/results/score.json``. Usage::

    python benchmarks/score_throughput.py --n 20000
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from _common import RESULTS, SHARED, machine, uptime, write_json
from cxrtriage.inference.backend import OnnxBackend, config_batches
from cxrtriage.models.bundle import resolve_model_dir


def tree_memory(proc: psutil.Process) -> tuple[int, int, int]:
    """``(rss of proc, summed rss of the tree, summed pss of the tree)`` in bytes.

    PSS (proportional set size) counts a page shared by k processes as 1/k in each, so the tree's PSS is
    the memory the tree really holds; summed RSS counts the shared libraries of every worker again.
    """
    own = rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
        if p.pid == proc.pid:
            own = info.rss
    return own, rss, pss


def write_manifest(path: Path, n: int) -> int:
    """A manifest of ``n`` rows cycling through the shared Kermany images; returns the distinct file count."""
    root = SHARED / "kermany-pneumonia"
    with (root / "manifest.csv").open() as fh:
        files = [str((root / r["path"]).resolve()) for r in csv.DictReader(fh)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path"])
        for i in range(n):
            w.writerow([f"img{i:07d}", files[i % len(files)]])
    return len(files)


def onnx_limit(model_dir: Path, threads: int, batch_size: int, n: int = 4096) -> float:
    """Images/s of ONNX Runtime alone on preprocessed in-memory batches (decoding excluded)."""
    backend = OnnxBackend(model_dir, threads=threads)
    root = SHARED / "kermany-pneumonia"
    with (root / "manifest.csv").open() as fh:
        paths = [str(root / r["path"]) for _, r in zip(range(batch_size * 4), csv.DictReader(fh))]
    batches = list(config_batches(paths, backend.require_config(), batch_size))
    backend.run(batches[:1])  # warm-up
    reps = max(1, n // (batch_size * len(batches)))
    t0 = time.perf_counter()
    for _ in range(reps):
        backend.run(batches)
    return reps * sum(len(b) for b in batches) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(RESULTS / "score.json"))
    a = ap.parse_args()
    model_dir = resolve_model_dir(a.model)
    uptime_before = uptime()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "archive.csv"
        distinct = write_manifest(manifest, a.n)
        cores = psutil.cpu_count() or 1
        limit_before = onnx_limit(model_dir, a.threads, a.batch_size)
        all_before = onnx_limit(model_dir, cores, a.batch_size) if cores != a.threads else limit_before
        cmd = [
            sys.executable, "-m", "cxrtriage.cli", "score", "--model", str(model_dir), "--data", str(manifest),
            "--out", str(Path(tmp) / "predictions.parquet"), "--workers", str(a.workers), "--threads",
            str(a.threads), "--batch-size", str(a.batch_size), "--device", "cpu", "--quiet",
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        peak = [0, 0, 0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[:] = [max(a, b) for a, b in zip(peak, tree_memory(ps))]
                time.sleep(0.1)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        out, _ = proc.communicate()
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        if proc.returncode != 0:
            raise SystemExit(f"cxr score failed ({proc.returncode}): {out}")
        limit_after = onnx_limit(model_dir, a.threads, a.batch_size)
        all_after = onnx_limit(model_dir, cores, a.batch_size) if cores != a.threads else limit_after
        import pyarrow.dataset as ds

        rows = ds.dataset(Path(tmp) / "predictions.parquet").count_rows()
    uptime_after = uptime()
    reported = float(out.strip().split("; ")[-1].split()[0])
    limit = (limit_before + limit_after) / 2
    best = max(limit, (all_before + all_after) / 2)
    result = {
        "benchmark": "cxr score on a manifest archive vs ONNX Runtime alone (same model, threads, batch)",
        "model": model_dir.name,
        "images": a.n,
        "distinct_files": distinct,
        "rows_written": rows,
        "workers": a.workers,
        "threads": a.threads,
        "batch_size": a.batch_size,
        "score_images_per_second": round(reported, 1),
        "score_wall_seconds_including_startup": round(wall, 1),
        "onnxruntime_images_per_second_before": round(limit_before, 1),
        "onnxruntime_images_per_second_after": round(limit_after, 1),
        "onnxruntime_all_cores_images_per_second_before": round(all_before, 1),
        "onnxruntime_all_cores_images_per_second_after": round(all_after, 1),
        "ratio_score_to_onnxruntime_same_threads": round(reported / limit, 3),
        "ratio_score_to_onnxruntime_best": round(reported / best, 3),
        "peak_rss_mb_scoring_process": round(peak[0] / 2**20, 1),
        "peak_pss_mb_process_tree": round(peak[2] / 2**20, 1),
        "peak_rss_mb_process_tree_summed": round(peak[1] / 2**20, 1),
        "targets": {"peak_memory_mb_below": 1536, "ratio_at_least": 0.8},
        "uptime_before": uptime_before,
        "uptime_after": uptime_after,
        "cxr_score_output": out.strip(),
        "machine": machine(),
    }
    write_json(a.out, result)


if __name__ == "__main__":
    main()

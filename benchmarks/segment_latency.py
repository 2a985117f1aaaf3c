"""Lung segmentation latency: in process and inside a real ``cxr serve``.

* in process: :meth:`cxrtriage.segment.LungSegmenter.segment` (ONNX Runtime, the server's segmenter threads,
  post-processing, mask resized to the image's own size) on distinct real CXRs of their stored sizes (Kermany
  224 px, COVID-19 Radiography 256 px), latency percentiles;
* in the server: ``timings.segment_ms`` of every ``POST /api/v1/predict`` answer of a real ``cxr serve`` (every
  shipped model, both gates, the segmenter), and the predict latency seen by one client, for comparison.

Goal (issue 23): segmentation adds <= 10 ms p95 per upload in ``cxr serve``.

Usage::

    python benchmarks/segment_latency.py [--requests 300] [--out segment.json] [--segmenter DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AUTH, SHARED, cxr_serve, machine, percentiles, real_cxr_uploads, write_result  # noqa: E402


def _adult_uploads(n: int) -> list[tuple[str, bytes]]:
    d = SHARED / "covid19-radiography"
    if not (d / "manifest.csv").is_file():
        return []
    with (d / "manifest.csv").open(newline="") as fh:
        rows = [r["path"] for r in csv.DictReader(fh) if r["label"] in ("COVID", "Normal")]
    rng = np.random.default_rng(1)
    return [(Path(rows[i]).name, (d / rows[i]).read_bytes()) for i in rng.choice(len(rows), n, replace=False)]


def in_process(uploads: list[tuple[str, bytes]], folder: Path | None, threads: int) -> dict:
    from cxrtriage.data.io import decode_bytes
    from cxrtriage.segment import LungSegmenter, shipped_segmenter_dir

    seg = LungSegmenter(folder or shipped_segmenter_dir(), threads=threads)
    imgs = [decode_bytes(b, name) for name, b in uploads]
    seg.segment(imgs[0])
    ms, failed = [], 0
    for im in imgs:
        t0 = time.perf_counter()
        m = seg.segment(im)
        ms.append((time.perf_counter() - t0) * 1e3)
        failed += int(m.failed)
    return {
        "latency": percentiles(ms),
        "failed": failed,
        "sizes": sorted({f"{im.shape[1]}x{im.shape[0]}" for im in imgs}),
    }


def in_server(uploads: list[tuple[str, bytes]], folder: Path | None, threads: int) -> dict:
    import httpx

    seg_ms, total_ms, refused = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        extra = ["--segmenter-threads", str(threads)] + (["--segmenter", str(folder)] if folder else [])
        with cxr_serve(None, data_dir, *extra) as (url, proc):
            with httpx.Client(base_url=url, timeout=60, auth=AUTH) as c:
                for name, data in uploads:
                    t0 = time.perf_counter()
                    r = c.post("/api/v1/predict", files={"file": (name, data, "application/octet-stream")})
                    if r.status_code == 422:
                        refused += 1
                        continue
                    r.raise_for_status()
                    j = r.json()
                    if j["duplicate"]:
                        continue
                    total_ms.append((time.perf_counter() - t0) * 1e3)
                    seg_ms.append(j["request_timings"]["segment_ms"])
    return {
        "segment_ms": percentiles(seg_ms),
        "predict_latency": percentiles(total_ms),
        "refused_422": refused,
        "share_of_predict_p50": round(float(np.median(seg_ms)) / float(np.median(total_ms)), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300, help="uploads (half pediatric, half adult when available)")
    ap.add_argument("--out", default="segment.json", help="result file (under benchmarks/results/)")
    ap.add_argument("--segmenter", type=Path, default=None, help="segmenter folder (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=None, help="segmenter threads (default: cxr serve's default)")
    a = ap.parse_args()
    from cxrtriage.segment import shipped_segmenter_dir
    from cxrtriage.segment.bundle import SegmenterBundle
    from cxrtriage.serve.settings import ServeSettings

    threads = a.threads or ServeSettings.segmenter_threads
    folder = a.segmenter.resolve() if a.segmenter else None
    version = SegmenterBundle.load(folder or shipped_segmenter_dir()).config.version
    adult = _adult_uploads(a.requests // 2)
    uploads = real_cxr_uploads(a.requests - len(adult)) + adult
    result = {
        "machine": machine(),
        "uploads": len(uploads),
        "adult_uploads": len(adult),
        "segmenter": version + ("" if folder else " (shipped)"),
        "segmenter_threads": threads,
        "in_process": in_process(uploads, folder, threads),
        "in_server": in_server(uploads, folder, threads),
        "goal": "segmentation adds <= 10 ms p95 per upload in cxr serve (issue 23)",
    }
    result["goal_met"] = result["in_server"]["segment_ms"]["p95_ms"] <= 10.0
    path = write_result(a.out, result)
    print(
        f"segment p95 in server {result['in_server']['segment_ms']['p95_ms']} ms; in process "
        f"{result['in_process']['latency']['p95_ms']} ms -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

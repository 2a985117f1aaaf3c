"""Bounded loopback load test of ``cxr serve``: 4 clients x 500 requests, mixed good and bad inputs.

Pass criteria: no 5xx answer, no lost study (rows in the database == accepted
new uploads, and each accepted study can be read back), the server healthy at
the end. Only 127.0.0.1 traffic; every loop is bounded.

Mix per request (deterministic by request index): 60 % new real CXR (JPEG),
5 % new DICOM (DX, 16-bit, made from a real CXR), 10 % repeat of an earlier
upload (duplicate), and 25 % bad inputs: garbage bytes, zero bytes, truncated
JPEG, colour photograph, CT DICOM, DICOM without pixels, animated PNG,
oversized body.

Usage::

    python benchmarks/load_test.py [--model DIR ...] [--clients 4] [--requests 500]

Without ``--model`` the server runs every shipped model on each upload.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    AUTH,
    add_models_argument,
    cxr_serve,
    machine,
    percentiles,
    real_cxr_uploads,
    run_threads,
    write_result,
)


def _dicom(img, **kw) -> bytes:
    from cxrtriage.data.dicom import write_dicom

    buf = io.BytesIO()
    write_dicom(buf, img, **kw)
    return buf.getvalue()


def bad_inputs(sample_jpeg: bytes, max_upload_mb: float) -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, expected status)."""
    from cxrtriage.data.io import decode_image

    cxr = decode_image(sample_jpeg)
    from sklearn.datasets import load_sample_images

    photo = io.BytesIO()
    Image.fromarray(load_sample_images().images[0]).save(photo, format="JPEG")
    apng = io.BytesIO()
    Image.fromarray(cxr).save(apng, format="PNG", save_all=True, append_images=[Image.fromarray(255 - cxr)])
    return {
        "garbage": (b"GET / HTTP/1.1\r\n" * 50, 415),
        "zero": (b"", 422),
        "truncated": (sample_jpeg[: len(sample_jpeg) // 3], 422),
        "colour_photo": (photo.getvalue(), 422),
        "ct_dicom": (_dicom(cxr, bits=8, modality="CT"), 422),
        "dicom_no_pixels": (_dicom(cxr, bits=8, with_pixels=False), 422),
        "animated_png": (apng.getvalue(), 422),
        "oversized": (sample_jpeg + b"\0" * int(max_upload_mb * 1e6 + 200_000), 413),
    }


def main(argv=None) -> int:
    import httpx

    from cxrtriage.data.io import decode_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_models_argument(ap)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=500, help="per client")
    ap.add_argument("--max-upload-mb", type=float, default=2.0)
    ap.add_argument("--out", default="load_test.json")
    a = ap.parse_args(argv)

    total = a.clients * a.requests
    good = real_cxr_uploads(int(total * 0.7) + 50, seed=2)
    bad = bad_inputs(good[0][1], a.max_upload_mb)
    bad_names = list(bad)
    rng_dcm = np.random.default_rng(3)

    def plan(client: int, i: int, pool_pos: list[int], sent: list[tuple[str, bytes]]):
        k = (i * 7 + client * 13) % 20  # 20 slots: 12 good, 1 dicom, 2 duplicate, 5 bad
        if k < 12 or (k < 14 and not sent):
            j = pool_pos[0]
            pool_pos[0] += a.clients
            name, data = good[j % len(good)]
            return "good", name, data, 200
        if k == 12:
            j = pool_pos[0]
            pool_pos[0] += a.clients
            img = decode_image(good[j % len(good)][1]).astype(np.uint16) * 16
            img = img + rng_dcm.integers(0, 2, img.shape).astype(np.uint16)
            return "dicom", "study.dcm", _dicom(img, bits=16, modality="DX"), 200
        if k < 15:
            name, data = sent[(i * 31) % len(sent)]
            return "duplicate", name, data, 200
        b = bad_names[(i + client) % len(bad_names)]
        return b, f"{b}.bin", bad[b][0], bad[b][1]

    statuses: Counter = Counter()
    kinds: Counter = Counter()
    unexpected: list[str] = []
    ood_refused: list[str] = []
    accepted_ids: set[str] = set()
    dup_ids: set[str] = set()
    latencies: list[float] = []
    lock = threading.Lock()

    with tempfile.TemporaryDirectory(prefix="cxr-load-") as tmp:
        data_dir = Path(tmp) / "data"
        with cxr_serve(a.model, data_dir, "--max-upload-mb", str(a.max_upload_mb)) as (url, proc):

            def client(c: int):
                pool_pos = [c]
                sent: list[tuple[str, bytes]] = []
                with httpx.Client(base_url=url, timeout=120, auth=AUTH) as h:
                    for i in range(a.requests):
                        kind, name, data, want = plan(c, i, pool_pos, sent)
                        t0 = time.perf_counter()
                        try:
                            r = h.post("/api/v1/predict", files={"file": (name, data, "application/octet-stream")})
                            code = r.status_code
                            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                        except httpx.HTTPError as exc:
                            code, body = -1, {"reason": repr(exc)}
                        ms = (time.perf_counter() - t0) * 1e3
                        with lock:
                            statuses[code] += 1
                            kinds[kind] += 1
                            latencies.append(ms)
                            if code == 422 and want == 200 and body.get("error") == "outside_population":
                                ood_refused.append(name)  # a real CXR outside the population of every model
                            elif code != want:
                                unexpected.append(f"{kind}: {code} (expected {want}) {str(body.get('reason'))[:120]}")
                            if code == 200:
                                (dup_ids if body["duplicate"] else accepted_ids).add(body["study_id"])
                        if code == 200 and kind in ("good",):
                            sent.append((name, data))

            wall = run_threads(client, a.clients)
            models = [m["name"] for m in httpx.get(url + "/api/v1/models", timeout=30).json()]
            health = httpx.get(url + "/api/v1/health", timeout=30).json()
            api_total = httpx.get(url + "/api/v1/studies", params={"limit": 1}, timeout=30, auth=AUTH).json()["total"]
            missing = [
                sid
                for sid in sorted(accepted_ids)
                if httpx.get(f"{url}/api/v1/studies/{sid}", timeout=30, auth=AUTH).status_code != 200
            ]
            alive = proc.poll() is None
        con = sqlite3.connect(data_dir / "studies.sqlite3")
        db_rows = con.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        result_rows = con.execute("SELECT COUNT(*) FROM model_results").fetchone()[0]
        con.close()

    n5xx = sum(v for k, v in statuses.items() if k >= 500)
    result = {
        "benchmark": f"load test: {a.clients} clients x {a.requests} requests over loopback, mixed inputs",
        "machine": machine(),
        "requests": sum(statuses.values()),
        "wall_s": round(wall, 1),
        "throughput_rps": round(sum(statuses.values()) / wall, 1),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "kind_counts": dict(kinds),
        "latency_all_requests": percentiles(latencies),
        "5xx": n5xx,
        "connection_errors": statuses.get(-1, 0),
        "models": models,
        "real_cxrs_refused_outside_population_of_every_model": len(ood_refused),
        "unexpected_status": len(unexpected),
        "unexpected_examples": unexpected[:10],
        "accepted_new_studies": len(accepted_ids),
        "duplicate_answers_distinct_studies": len(dup_ids),
        "db_rows": db_rows,
        "db_model_result_rows": result_rows,
        "api_total": api_total,
        "lost_studies": len(accepted_ids) - db_rows + len(missing),
        "studies_not_readable": len(missing),
        "server_alive": alive,
        "health_after": health,
        "passed": n5xx == 0
        and db_rows == len(accepted_ids) == api_total
        and result_rows == len(models) * db_rows
        and not missing
        and alive
        and health["status"] == "ok"
        and statuses.get(-1, 0) == 0,
    }
    out = write_result(a.out, result)
    print(f"wrote {out}")
    print(
        f"{result['requests']} requests in {result['wall_s']} s: statuses {result['status_counts']}; 5xx {n5xx}; "
        f"accepted {len(accepted_ids)}, DB rows {db_rows}; healthy {health['status']}; passed {result['passed']}"
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

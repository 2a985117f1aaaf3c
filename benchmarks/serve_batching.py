"""Micro-batching across requests in ``cxr serve`` (issue 25, item 2): throughput and latency by setting.

For each ``(max_batch, max_wait_ms)`` setting a real ``cxr serve`` subprocess is started (every shipped model
unless ``--model``, both gates and the lung segmenter, as by default; a fresh data folder) and measured with
1, 4 and 16 concurrent clients, each upload a distinct real chest radiograph (four sources of
``../shared/data`` plus the shipped examples; no duplicate short cut): uploads/s, p50/p95 latency of
``POST /api/v1/predict`` (the answer carries every model's probabilities, CAM and the draft report) and the
status codes. The same run measures the pipeline's in-process batch throughput (:func:`in_process_batch`:
decode, gate features and both gates, the segmenter, each model with its lung step, CAM, OOD score, the
draft report; batches of ``--batch``, no HTTP and no store), the issue's reference.

Targets (issue 25): 16 clients >= 0.8 x in-process batch throughput, no 5xx, one client p95 <= 60 ms.
The clients run on the same 2 cores as the server (and the load average says what else did).

Usage::

    python benchmarks/serve_batching.py [--settings 1:0,8:0,16:0,16:2,32:0] [--per-client 25] [--out serve_batching.json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    AUTH,
    REPO,
    SHARED,
    add_models_argument,
    cxr_serve,
    machine,
    percentiles,
    run_threads,
    uptime,
    write_result,
)

#: Datasets of ``../shared/data`` the uploads come from (with the shipped examples).
SOURCES = ("kermany-pneumonia", "covid19-radiography", "nih-cxr14-normal-abnormal-64px", "ieee8023-cxr")
CLIENTS = (1, 4, 16)


def real_uploads(n: int, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """``n`` distinct real radiograph files ``(source, name, bytes)``: the shipped examples, then round-robin over
    :data:`SOURCES`."""
    rng = np.random.default_rng(seed)
    per: dict[str, list[Path]] = {
        "examples": sorted((REPO / "src" / "cxrtriage" / "examples").glob("*.jpg")),
    }
    for name in SOURCES:
        manifest = SHARED / name / "manifest.csv"
        if manifest.is_file():
            with open(manifest, newline="") as fh:
                rows = [r["path"] for r in csv.DictReader(fh)]
            per[name] = [SHARED / name / rows[i] for i in rng.permutation(len(rows))]
    out: list[tuple[str, str, bytes]] = []
    seen: set[str] = set()
    while len(out) < n and any(per.values()):
        for name, paths in per.items():
            while paths:
                p = paths.pop()
                data = p.read_bytes()
                h = hashlib.sha256(data).hexdigest()
                if h not in seen:
                    seen.add(h)
                    out.append((name, p.name, data))
                    break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct radiographs found (needs ../shared/data)")
    return out[:n]


def clients_run(url: str, uploads: list[tuple[str, str, bytes]], clients: int) -> dict:
    """``clients`` threads, each sending its share of ``uploads`` one after the other."""
    import httpx

    chunks = [uploads[i::clients] for i in range(clients)]
    ms: list[list[float]] = [[] for _ in range(clients)]
    codes: list[Counter] = [Counter() for _ in range(clients)]
    batch_ms: list[list[float]] = [[] for _ in range(clients)]

    def run(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120, auth=AUTH) as c:
            for _, name, data in chunks[i]:
                t0 = time.perf_counter()
                r = c.post("/api/v1/predict", files={"file": (name, data, "application/octet-stream")})
                dt = (time.perf_counter() - t0) * 1e3
                codes[i][str(r.status_code) + ("" if r.status_code == 200 else f" {r.json().get('error')}")] += 1
                if r.status_code == 200:
                    j = r.json()
                    if j["duplicate"] or not j["report"]["text"]:
                        raise RuntimeError(f"{name}: unexpected duplicate or no report")
                    ms[i].append(dt)
                    t = j["request_timings"]
                    batch_ms[i].append(t["gates_ms"] + t["segment_ms"] + t["inference_ms"])

    wall = run_threads(run, clients)
    allms = [x for m in ms for x in m]
    total: Counter = sum(codes, Counter())
    return {
        "clients": clients,
        "uploads": len(uploads),
        "ok": len(allms),
        "status": dict(total),
        "server_errors_5xx": sum(v for k, v in total.items() if k.startswith("5")),
        "wall_s": round(wall, 2),
        "throughput_uploads_per_s": round(len(allms) / wall, 1),
        "latency": percentiles(allms) if allms else None,
        "networks_ms_p50": round(float(np.median([x for m in batch_ms for x in m])), 2) if allms else None,
    }


def in_process_batch(
    model_dirs, uploads: list[tuple[str, str, bytes]], batch: int, threads: int, rounds: int = 2
) -> dict:
    """The server's pipeline in-process, ``batch`` images per network call, ``threads`` ONNX Runtime intra-op
    threads per network (the gates' features as the server runs them): images/s (best of ``rounds``)."""
    from cxrtriage.data.io import decode_image
    from cxrtriage.explain.cam import cam_from_features, normalize_cam, upsample_cam
    from cxrtriage.inference.lung_input import model_inputs
    from cxrtriage.inference.predictor import predictions_from_probs
    from cxrtriage.metrics.audit import mass_in_mask
    from cxrtriage.metrics.calibration import softmax
    from cxrtriage.ood.gate import GateFeatures, load_gate
    from cxrtriage.ood.mahalanobis import MahalanobisDetector, pooled_features
    from cxrtriage.ood.population import load_population_gate
    from cxrtriage.report.draft import build_report
    from cxrtriage.segment.runtime import LungSegmenter, shipped_segmenter_dir
    from cxrtriage.serve.service import finding_priority, onnx_backend
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.store import ModelResult

    s = ServeSettings(model_dir=None, data_dir=Path("unused"), model_dirs=tuple(model_dirs or ()), threads=threads)
    gate, pop = load_gate(), load_population_gate()
    feats_net = GateFeatures(threads=s.gate_threads, memory_arena=False)
    seg = LungSegmenter(shipped_segmenter_dir(), threads=s.threads, memory_arena=False)
    models = [(onnx_backend(d, s.threads), MahalanobisDetector.load(d)) for d in s.model_dirs]
    data = [(name, b) for _, name, b in uploads]

    def pipeline(chunk: list[tuple[str, bytes]]) -> int:
        imgs = [decode_image(b, name, allow_multiframe=True) for name, b in chunk]
        f = feats_net(imgs, batch_size=batch)
        if gate is not None:
            gate.score(f)
        masks = seg.segment_batch(imgs)
        if pop is not None:  # gate 2 (with the lung masks when it uses their shape)
            pop.population_of(f, masks) if getattr(pop, "uses_lung_shape", False) else pop.population_of(f)
        per_image: list[list[dict]] = [[] for _ in imgs]
        for backend, det in models:
            c = backend.require_config()
            logits, fmap = backend.run([model_inputs(imgs, c, seg, lungs=masks)], features="map")
            probs = softmax(logits, c.temperature)
            preds = predictions_from_probs(probs, c)
            if det is not None:
                det.score(pooled_features(fmap))
            for i, p in enumerate(preds):
                cam = normalize_cam(cam_from_features(fmap[i], backend.head[0], p.label_index))
                if not masks[i].failed:
                    mass_in_mask(upsample_cam(cam, (imgs[i].shape[1], imgs[i].shape[0])), masks[i].mask)
                res = ModelResult(
                    study_id="0" * 16,
                    position=0,
                    model_name=backend.path.parent.name,
                    model_version=c.version,
                    task=c.task,
                    backend=backend.name,
                    label=p.label,
                    probabilities={k: float(v) for k, v in zip(c.classes, probs[i])},
                    threshold=c.threshold,
                    positive_class=c.positive_class or None,
                    flag=p.triage == "finding",
                    priority=finding_priority(probs[i], c),
                    applicable=True,
                    population_warning=None,
                    heat_class=p.label,
                    cam=np.round(cam, 4).tolist(),
                    ood_score=None,
                    cam_in_lungs=None,
                )
                per_image[i].append({**res.to_dict(), "triage": p.triage, "heatmap_url": "/heatmap"})
        for r in per_image:
            build_report(results=r, study_id="0" * 16)
        return len(imgs)

    pipeline(data[:batch])  # warm-up
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = sum(pipeline(data[i : i + batch]) for i in range(0, len(data), batch))
        best = max(best, n / (time.perf_counter() - t0))
    return {
        "batch": batch,
        "threads": threads,
        "images": len(data),
        "images_per_s": round(best, 1),
        "what": "decode, gate features + gate 1 + gate 2, lung masks (one segmentation per image, as in the "
        "server), every model (lung step, forward, softmax, decision, CAM, OOD score, CAM share in the lungs), "
        "draft report; no HTTP, no store (PNG + SQLite), one process",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_models_argument(ap)
    ap.add_argument("--settings", default="1:0,8:0,16:0,16:2,32:0", help="max_batch:max_wait_ms, comma separated")
    ap.add_argument("--per-client", type=int, default=25, help="uploads per client at 4 and 16 clients")
    ap.add_argument("--single", type=int, default=120, help="uploads of the single client")
    ap.add_argument("--batch", type=int, default=16, help="in-process batch size")
    ap.add_argument("--threads", type=int, default=None, help="cxr serve --threads (default: the server's own default)")
    ap.add_argument(
        "--segmenter-threads", type=int, default=None, help="cxr serve --segmenter-threads (default: the server's)"
    )
    ap.add_argument("--out", default="serve_batching.json")
    a = ap.parse_args(argv)
    settings = [tuple(float(x) for x in s.split(":")) for s in a.settings.split(",")]
    from cxrtriage.serve.settings import ServeSettings

    threads = a.threads if a.threads is not None else ServeSettings.threads
    seg_threads = a.segmenter_threads if a.segmenter_threads is not None else ServeSettings.segmenter_threads
    sizes = {1: a.single, 4: 4 * a.per_client, 16: 16 * a.per_client}
    uploads = real_uploads(sum(sizes.values()))
    result: dict = {
        "benchmark": "cxr serve micro-batching: POST /api/v1/predict over loopback, 1/4/16 clients per setting",
        "machine": machine(),
        "uptime_before": uptime(),
        "uploads": {
            "distinct_real_radiographs": len(uploads),
            "by_source": dict(Counter(src for src, _, _ in uploads)),
        },
        "server": "cxr serve, every shipped model (unless --model), gate 1, gate 2, lung segmenter, "
        f"threads {threads} per network, {seg_threads} for the segmenter",
        "in_process_batch": None,
        "in_process_reference": "the faster of the in-process runs with 1 and 2 threads per network",
        "settings": [],
    }
    runs = []
    for t in (1, 2):
        r = in_process_batch(a.model, uploads[: 8 * a.batch], a.batch, t)
        r["load_average_after"] = [round(x, 2) for x in __import__("os").getloadavg()]
        print(f"in-process, {t} thread(s):", r["images_per_s"], "images/s", flush=True)
        runs.append(r)
    result["in_process_batch"] = max(runs, key=lambda r: r["images_per_s"])
    result["in_process_batch_runs"] = runs
    for max_batch, max_wait in settings:
        row: dict = {"max_batch": int(max_batch), "max_wait_ms": max_wait, "load_average_before": uptime()}
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            extra = ("--max-batch", str(int(max_batch)), "--max-wait-ms", str(max_wait), "--threads", str(threads))
            extra += ("--segmenter-threads", str(seg_threads))
            with cxr_serve(a.model, data_dir, *extra) as (url, _proc):
                k = 0
                for n in CLIENTS:
                    part = uploads[k : k + sizes[n]]
                    k += sizes[n]
                    row[f"clients_{n}"] = r = clients_run(url, part, n)
                    print(max_batch, max_wait, n, r["throughput_uploads_per_s"], r["latency"], r["status"], flush=True)
                import httpx

                row["health_after"] = httpx.get(url + "/api/v1/health", auth=AUTH, timeout=10).json()["status"]
        row["load_average_after"] = uptime()
        result["settings"].append(row)
    ref = result["in_process_batch"]["images_per_s"]
    for row in result["settings"]:
        r1, r16 = row["clients_1"], row["clients_16"]
        row["goals"] = {
            "clients_16_throughput_over_in_process": round(r16["throughput_uploads_per_s"] / ref, 3),
            "clients_16_ge_0.8_in_process": r16["throughput_uploads_per_s"] >= 0.8 * ref,
            "no_5xx": all(row[f"clients_{n}"]["server_errors_5xx"] == 0 for n in CLIENTS),
            "single_client_p95_le_60ms": r1["latency"] is not None and r1["latency"]["p95_ms"] <= 60.0,
        }
    result["uptime_after"] = uptime()
    out = write_result(a.out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

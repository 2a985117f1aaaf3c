"""Resident memory of ``cxr serve`` at rest and after many mixed uploads, and whether it maps PyTorch (issue 25).

Starts a real ``cxr serve`` subprocess (every shipped model unless ``--model``; both gates and the lung
segmenter, as by default), records its resident memory (psutil: RSS, USS and PSS of the process and of its
children, if any) after start-up, then sends ``--uploads`` distinct uploads from ``--clients`` clients and records
it again (and every ``--every`` uploads). The mix (deterministic by upload index): 5 % images that are not chest
radiographs (scikit-image / scikit-learn / matplotlib package images and drawn pages, plots and patterns, as PNG:
gate 1 refuses them), 4 % DICOM files made from real radiographs (16-bit DX, :func:`cxrtriage.data.dicom.write_dicom`),
the rest real chest radiographs of four sources of ``../shared/data`` (Kermany, COVID-19 Radiography, NIH
ChestX-ray14 64 px, ieee8023), as their JPEG files or, one in three, re-encoded as PNG. Every upload has other
pixels (a new study), so the store grows as in use.

Also recorded: whether any PyTorch library (``libtorch*``, ``libc10*``) is mapped in the server
(``/proc/PID/maps``), the answers' status codes, uploads/s and the load average (2 shared cores).

Targets (issue 25): idle RSS <= 250 MB; <= 300 MB after 2000 uploads.

Usage::

    python benchmarks/serve_memory.py [--uploads 2000] [--clients 2] [--model DIR ...] [--out serve_memory.json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    AUTH,
    SHARED,
    add_models_argument,
    cxr_serve,
    machine,
    process_memory_mb,
    uptime,
    write_result,
)

#: Datasets of ``../shared/data`` the radiographs come from.
SOURCES = ("kermany-pneumonia", "covid19-radiography", "nih-cxr14-normal-abnormal-64px", "ieee8023-cxr")
#: Library names that mean PyTorch is mapped.
TORCH_LIBRARIES = ("libtorch", "libc10")
MB = 2**20


def _cxr_files(n: int, seed: int) -> list[tuple[str, Path]]:
    """Up to ``n`` distinct real radiographs (source, path), round-robin over :data:`SOURCES`."""
    rng = np.random.default_rng(seed)
    per: dict[str, list[Path]] = {}
    for name in SOURCES:
        manifest = SHARED / name / "manifest.csv"
        if not manifest.is_file():
            continue
        with open(manifest, newline="") as fh:
            rows = [r["path"] for r in csv.DictReader(fh)]
        per[name] = [SHARED / name / rows[i] for i in rng.permutation(len(rows))]
    if not per:
        raise SystemExit(f"{SHARED}: no chest X-ray dataset found (needs ../shared/data)")
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    while len(out) < n and any(per.values()):
        for name, paths in per.items():
            while paths:
                p = paths.pop()
                h = hashlib.sha256(p.read_bytes()).hexdigest()
                if h not in seen:
                    seen.add(h)
                    out.append((name, p))
                    break
    return out[:n]


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _dicom(img: np.ndarray) -> bytes:
    from cxrtriage.data.dicom import write_dicom

    buf = io.BytesIO()
    write_dicom(buf, img.astype(np.uint16) * 16, bits=16, rescale=(1.0, 0.0))
    return buf.getvalue()


def mixed_uploads(n: int, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """``n`` uploads ``(kind, file name, bytes)``: the mix of the module docstring."""
    from cxrtriage.data.io import read_image
    from cxrtriage.ood.gate import non_cxr_images

    n_not = sum(1 for i in range(n) if i % 20 == 7)
    n_dcm = sum(1 for i in range(n) if i % 25 == 3 and i % 20 != 7)
    cxrs = _cxr_files(n - n_not, seed)
    others = [im for _, _, im in non_cxr_images(seed=seed, rendered=max(5, n_not // 8), crops=1)]
    others = [others[i] for i in np.random.default_rng(seed).permutation(len(others))]
    out: list[tuple[str, str, bytes]] = []
    k_cxr = k_not = 0
    for i in range(n):
        if i % 20 == 7:
            out.append(("not_cxr", f"other{i}.png", _png(others[k_not % len(others)])))
            k_not += 1
            continue
        source, path = cxrs[k_cxr % len(cxrs)]
        k_cxr += 1
        if i % 25 == 3:
            out.append(("dicom", f"{path.stem}.dcm", _dicom(read_image(path))))
        elif i % 3 == 0:
            out.append((f"{source}/png", f"{path.stem}.png", _png(read_image(path))))
        else:
            out.append((f"{source}/jpeg", path.name, path.read_bytes()))
    assert sum(k == "dicom" for k, _, _ in out) == n_dcm
    return out


def tree_memory(pid: int, full: bool) -> dict:
    """Resident memory of a process and its children, MB: RSS (and USS / PSS when ``full``), process count."""
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    rss = uss = pss = 0
    for p in procs:
        try:
            if full:
                m = p.memory_full_info()
                rss, uss, pss = rss + m.rss, uss + m.uss, pss + m.pss
            else:
                rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    out = {"processes": len(procs), "rss_mb": round(rss / MB, 1)}
    if full:
        out |= {"uss_mb": round(uss / MB, 1), "pss_mb": round(pss / MB, 1)}
    return out


def status_breakdown(pid: int) -> dict:
    """``RssAnon`` / ``RssFile`` / ``VmHWM`` of ``/proc/PID/status``, MB: what the resident memory is."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM", "Threads"):
            v = int(val.split()[0])
            out[key] = v if key == "Threads" else round(v / 1024, 1)
    return out


def torch_mapped(pid: int) -> list[str]:
    """The PyTorch libraries mapped in a process (file names), from ``/proc/PID/maps``."""
    libs = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        name = line.split()[-1] if len(line.split()) >= 6 else ""
        if any(t in Path(name).name for t in TORCH_LIBRARIES):
            libs.add(Path(name).name)
    return sorted(libs)


def main(argv=None) -> int:
    import httpx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_models_argument(ap)
    ap.add_argument("--uploads", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--every", type=int, default=250, help="record RSS every this many uploads")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds at rest before the idle figure")
    ap.add_argument("--out", default="serve_memory.json", help="file name under benchmarks/results/")
    a = ap.parse_args(argv)

    uploads = mixed_uploads(a.uploads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    codes: Counter[tuple[str, int, str | None]] = Counter()
    curve: list[dict] = []
    lock = threading.Lock()
    done = [0]
    highest = [0.0]
    with tempfile.TemporaryDirectory(prefix="cxr-memory-") as tmp:
        data_dir = Path(tmp) / "data"
        with cxr_serve(a.model, data_dir) as (url, proc):
            models = httpx.get(url + "/api/v1/models", auth=AUTH).json()
            time.sleep(a.settle)
            idle = tree_memory(proc.pid, full=True) | status_breakdown(proc.pid)
            torch_idle = torch_mapped(proc.pid)

            def client(c: int) -> None:
                with httpx.Client(base_url=url, timeout=120, auth=AUTH) as cl:
                    for i in range(c, len(uploads), a.clients):
                        kind, name, data = uploads[i]
                        r = cl.post("/api/v1/predict", files={"file": (name, data, "application/octet-stream")})
                        err = r.json().get("error") if r.status_code != 200 else None
                        with lock:
                            codes[(kind.split("/")[-1] if kind != "not_cxr" else kind, r.status_code, err)] += 1
                            done[0] += 1
                            if done[0] % 10 == 7:  # off the server's release points (every 50 uploads)
                                highest[0] = max(highest[0], tree_memory(proc.pid, full=False)["rss_mb"])
                            if done[0] % a.every == 0:
                                curve.append({"uploads": done[0], **tree_memory(proc.pid, full=False)})

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            time.sleep(a.settle)
            after = tree_memory(proc.pid, full=True) | status_breakdown(proc.pid)
            torch_after = torch_mapped(proc.pid)
            health = httpx.get(url + "/api/v1/health", auth=AUTH).json()
            peak = process_memory_mb(proc.pid)
            startup_s = getattr(proc, "startup_s", None)
    result = {
        "benchmark": "resident memory of cxr serve at rest and after mixed uploads; PyTorch mapped or not",
        "machine": machine(),
        "load_average_before_1_5_15min": load_before,
        "uptime_after": uptime(),
        "models": [{k: m[k] for k in ("name", "version", "backend")} for m in models],
        "gates_and_segmenter": "both gates and the lung segmenter on (cxr serve's default)",
        "server_startup_s": startup_s,
        "uploads": len(uploads),
        "clients": a.clients,
        "mix": dict(sorted(Counter(k for k, _, _ in uploads).items())),
        "answers": [{"kind": k, "status": s, "error": e, "n": n} for (k, s, e), n in sorted(codes.items(), key=str)],
        "uploads_per_s": round(len(uploads) / wall, 1),
        "idle": idle,
        "after_uploads": after,
        "rss_curve": curve,
        "rss_max_sampled_mb": highest[0],
        "rss_max_sampled_note": "largest RSS seen every 10 uploads, between the server's memory releases",
        "peak_rss_mb_vmhwm": peak.get("peak_rss_mb"),
        "torch_libraries_mapped": {"idle": torch_idle, "after_uploads": torch_after},
        "torch_mapped": bool(torch_idle or torch_after),
        "targets": {
            "idle_rss_le_250mb": idle["rss_mb"] <= 250,
            "rss_after_2000_uploads_le_300mb": after["rss_mb"] <= 300 if len(uploads) >= 2000 else None,
            "rss_max_sampled_le_300mb": highest[0] <= 300,
        },
        "studies_stored": health.get("studies"),
        "server_health_after": health.get("status"),
        "note": "RSS = resident set of the server process and its children (none: one process); USS = its "
        "private pages, PSS = USS plus its share of shared pages; RssAnon/RssFile split the RSS into heap "
        "(allocations) and mapped files (libraries, models read by mmap)",
    }
    out = write_result(a.out, result)
    print(
        f"wrote {out}: idle RSS {idle['rss_mb']} MB, after {len(uploads)} uploads {after['rss_mb']} MB "
        f"(peak {peak.get('peak_rss_mb')} MB), torch mapped: {result['torch_mapped']}, "
        f"{result['uploads_per_s']} uploads/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

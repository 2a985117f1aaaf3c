"""Shared helpers of the serving benchmarks: start ``cxr serve`` in a subprocess, real CXR inputs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from cxrtriage.serve.testing import add_user, free_port, serve_command

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: The benchmark's server account (a radiologist, HTTP Basic), created in each fresh data folder.
AUTH = ("bench", "bench-password")

SHARED = Path(os.environ.get("CXRTRIAGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def machine() -> dict:
    """Where the numbers were measured."""
    import onnxruntime

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu(),
        "onnxruntime": onnxruntime.__version__,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
        "note": "2 shared cores: other jobs running at the same time inflate the latencies (see load average)",
    }


def _cpu() -> dict:
    """CPU model and the x86 extensions int8 kernels depend on (VNNI: ONNX Runtime's uint8 x int8 path)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or "unknown"}
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    return {"model": model, "avx2": "avx2" in flags, "vnni": any("vnni" in f for f in flags)}


@contextlib.contextmanager
def cxr_serve(model_dir, data_dir: Path, *extra: str, timeout: float = 120.0):
    """Run ``cxr serve`` (the real CLI) on a free loopback port; yield its base URL; stop it afterwards.

    ``model_dir``: a model folder, a list of them, or None (every shipped model). The user :data:`AUTH`
    (radiologist) is created first; clients send it with HTTP Basic. No upload quota. The process's
    ``startup_s`` (launch to first healthy answer) is set as an attribute of the yielded process.
    """
    import httpx

    port = free_port()
    add_user(data_dir, AUTH[0], AUTH[1], "radiologist")
    cmd = serve_command(model_dir, data_dir, port, "--upload-quota", "0", *extra)
    log = open(data_dir.parent / f"server-{port}.log", "w") if data_dir.parent.exists() else subprocess.DEVNULL
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {getattr(log, 'name', 'log')}")
            try:
                if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                    proc.startup_s = round(time.monotonic() - t0, 2)  # type: ignore[attr-defined]
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def real_cxr_uploads(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` distinct real chest X-ray files (bytes).

    From ``../shared/data/kermany-pneumonia`` when present (distinct files);
    otherwise the 8 shipped examples with +/-2 grey-level noise, re-encoded as
    PNG so every upload has different bytes.
    """
    kermany = SHARED / "kermany-pneumonia"
    if (kermany / "manifest.csv").is_file():
        import csv

        with open(kermany / "manifest.csv", newline="") as fh:
            rows = [r["path"] for r in csv.DictReader(fh)]
        import hashlib

        rng = np.random.default_rng(seed)
        out, seen = [], set()
        for i in rng.permutation(len(rows)):  # distinct bytes only (the dataset has a few exact copies)
            data = (kermany / rows[i]).read_bytes()
            h = hashlib.sha256(data).hexdigest()
            if h not in seen:
                seen.add(h)
                out.append((Path(rows[i]).name, data))
            if len(out) >= n:
                return out
    else:
        out = []
    from PIL import Image

    from cxrtriage.data.io import read_image

    examples = sorted((REPO / "src" / "cxrtriage" / "examples").glob("*.jpg"))
    rng = np.random.default_rng(seed)
    k = 0
    while len(out) < n:
        img = read_image(examples[k % len(examples)])
        noisy = np.clip(img.astype(int) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="PNG")
        out.append((f"variant{k}.png", buf.getvalue()))
        k += 1
    return out


def run_threads(target, n: int) -> float:
    """Run ``target(i)`` for ``i`` in ``range(n)`` on ``n`` threads; return the wall time in seconds."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=float)
    return {
        "n": int(a.size),
        "mean_ms": round(float(a.mean()), 2),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


def write_result(name: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON to ``RESULTS / name`` (an absolute ``name`` is used as it is); folders created."""
    out = RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def process_memory_mb(pid: int) -> dict:
    """Resident memory of a process from ``/proc/PID/status``: current (VmRSS) and peak (VmHWM), MB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[{"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb"}[key]] = round(int(val.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def add_models_argument(ap) -> None:
    """``--model DIR`` (repeatable) of the serving benchmarks; None (not given): every shipped model."""
    ap.add_argument(
        "--model",
        type=Path,
        action="append",
        default=None,
        help="model folder (repeatable; default: every shipped model)",
    )


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from ``/proc/PID/stat``; NaN if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def uptime() -> str:
    """``uptime`` output: the load of the shared machine when a figure was measured."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def write_json(path: str | Path, data: dict) -> None:
    """:func:`write_result` to ``path`` (relative to the working folder) and print the JSON."""
    write_result(Path(path).resolve(), data)
    print(json.dumps(data, indent=2))

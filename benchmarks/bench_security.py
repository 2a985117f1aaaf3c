"""Memory of ``cxr serve`` under decompression bombs and worst-case accepted uploads (issue 10).

For each hostile upload the server's peak resident memory during the request
is read from the kernel (``VmHWM`` of ``/proc/PID/status`` after resetting it
through ``/proc/PID/clear_refs``; by 10 ms sampling of ``VmRSS`` where that
is not allowed) and compared with its resident memory just before. Then 8
clients send worst-case *accepted* uploads (the largest images the limits
let through) at the same time and the server's absolute peak is recorded.

Targets: no request raises RSS by more than about 300 MB; the peak under 8
concurrent worst-case uploads stays under 2 GB. Every answer must be a 4xx
for the bombs and no answer may be a 5xx.

Usage::

    python benchmarks/bench_security.py [--model DIR] [--out security.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AUTH, cxr_serve, machine, write_result  # noqa: E402
from cxrtriage.serve import hostile  # noqa: E402

MB = 1024 * 1024


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class PeakRSS:
    """Peak resident memory of a process during a block (bytes), via VmHWM reset or sampling."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method = "VmHWM"

    def __enter__(self) -> PeakRSS:
        self.before = _status_kb(self.pid, "VmRSS") * 1024
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            self.method = "VmRSS sampled every 10 ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb(self.pid, "VmRSS") * 1024)
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = _status_kb(self.pid, "VmHWM") * 1024

    @property
    def growth_mb(self) -> float:
        return round((self.peak - self.before) / MB, 1)


def bombs() -> dict[str, bytes]:
    """The probes of issue 10 (all must be refused)."""
    return {
        "dicom_deflate_bomb_432KB_to_392MB": hostile.dicom_deflate_bomb(14_000),
        "png_16bit_49MP": hostile.png_bomb(7000, 7000, "I;16"),
        "png_rgb_144MP": hostile.png_bomb(12_000, 12_000, "RGB"),
        "dicom_corrupt_deflate": hostile.dicom_corrupt_deflate(),
        "dicom_number_of_frames_abcd": hostile.dicom_bad_number_of_frames(),
        "dicom_20000_deep_sequences": hostile.dicom_deep_sequence(20_000),
    }


def worst_case_accepted(k: int) -> dict[str, bytes]:
    """The largest uploads the default limits let through to a full decode (distinct pixels per ``k``)."""
    return {
        "png_16bit_36MP": hostile.png_bomb(6000, 6000, "I;16"),
        "png_rgb_36MP": hostile.png_bomb(6000, 6000, "RGB"),
        # deflated 16-bit DICOM: 62.7 MB inflated (limit: a quarter of the 256 MB budget), 31.4 MP
        "dicom_deflated_16bit_31MP": hostile.dicom_deflate_bomb(5600, seed=k),
    }


def main(argv: list[str] | None = None) -> int:
    import httpx

    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.serve.testing import find_model_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", default="security.json")
    a = ap.parse_args(argv)
    model = Path(a.model) if a.model else find_model_dir()
    if model is None:
        print("no model", file=sys.stderr)
        return 2
    results: dict = {"bombs": {}, "worst_case_accepted_single": {}}
    with tempfile.TemporaryDirectory(prefix="cxr-sec-") as tmp:
        data_dir = Path(tmp) / "data"
        with cxr_serve(model, data_dir) as (url, proc):
            with httpx.Client(base_url=url, timeout=300, auth=AUTH) as c:
                c.get("/api/v1/model")
                baseline = _status_kb(proc.pid, "VmRSS") * 1024
                for name, data in bombs().items():
                    with PeakRSS(proc.pid) as m:
                        r = c.post("/api/v1/predict", files={"file": (f"{name}.bin", data)})
                    results["bombs"][name] = {
                        "upload_kb": round(len(data) / 1024, 1),
                        "status": r.status_code,
                        "reason": r.json().get("reason", "")[:160] if r.status_code != 200 else "",
                        "rss_growth_mb": m.growth_mb,
                        "method": m.method,
                    }
                    print(name, results["bombs"][name])
                for name, data in worst_case_accepted(0).items():
                    with PeakRSS(proc.pid) as m:
                        r = c.post("/api/v1/predict", files={"file": (f"{name}.bin", data)})
                    results["worst_case_accepted_single"][name] = {
                        "upload_kb": round(len(data) / 1024, 1),
                        "status": r.status_code,
                        "error": r.json().get("error") if r.status_code != 200 else None,
                        "rss_growth_mb": m.growth_mb,
                    }
                    print(name, results["worst_case_accepted_single"][name])
            # N concurrent worst-case uploads: a mix of the three kinds
            payloads = []
            for k in range(a.clients):
                kinds = worst_case_accepted(k)
                name = list(kinds)[k % len(kinds)]
                payloads.append((name, kinds[name]))
            statuses: list[int] = [0] * a.clients

            def send(i: int) -> None:
                with httpx.Client(base_url=url, timeout=600, auth=AUTH) as h:
                    name, data = payloads[i]
                    statuses[i] = h.post("/api/v1/predict", files={"file": (f"{name}.bin", data)}).status_code

            threads = [threading.Thread(target=send, args=(i,)) for i in range(a.clients)]
            with PeakRSS(proc.pid) as m:
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
            results["concurrent_worst_case"] = {
                "clients": a.clients,
                "kinds": [n for n, _ in payloads],
                "statuses": statuses,
                "wall_s": round(wall, 1),
                "peak_rss_mb": round(m.peak / MB, 1),
                "rss_before_mb": round(m.before / MB, 1),
            }
            print("concurrent", results["concurrent_worst_case"])
            health = httpx.get(url + "/api/v1/health", timeout=30).json()
    defaults = ServeSettings(model_dir=model, data_dir=Path("."))
    all_growth = [v["rss_growth_mb"] for v in results["bombs"].values()] + [
        v["rss_growth_mb"] for v in results["worst_case_accepted_single"].values()
    ]
    every_status = (
        [v["status"] for v in results["bombs"].values()]
        + [v["status"] for v in results["worst_case_accepted_single"].values()]
        + results["concurrent_worst_case"]["statuses"]
    )
    result = {
        "benchmark": "server RSS under decompression bombs and worst-case accepted uploads (issue 10)",
        "machine": machine(),
        "server_rss_after_start_mb": round(baseline / MB, 1),
        "limits": {
            "max_pixels": defaults.max_pixels,
            "max_decoded_mb": defaults.max_decoded_mb,
            "max_concurrent_decodes": defaults.max_concurrent_decodes,
        },
        **results,
        "max_rss_growth_per_request_mb": max(all_growth),
        "any_5xx": any(s >= 500 for s in every_status),
        "bombs_all_4xx": all(400 <= v["status"] < 500 for v in results["bombs"].values()),
        "health_after": health["status"],
        "passed": max(all_growth) <= 300
        and results["concurrent_worst_case"]["peak_rss_mb"] < 2048
        and not any(s >= 500 for s in every_status)
        and all(400 <= v["status"] < 500 for v in results["bombs"].values()),
    }
    out = write_result(a.out, result)
    print(
        f"wrote {out}: max growth {result['max_rss_growth_per_request_mb']} MB per request, "
        f"concurrent peak {results['concurrent_worst_case']['peak_rss_mb']} MB, passed {result['passed']}"
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of the Python API's ``Model.predict`` over a list of paths, beside ``cxr predict`` on the same files.

``cxr predict`` here is its code path without pictures (``--no-gradcam``): read every file, then
score them in batches with the PyTorch backend (:func:`cxrtriage.inference.run.predict_files` writes an
annotated PNG per image on top, timed separately). The API streams the same list: a thread pool decodes
the next batch while the current one runs. Both load the model inside the timing.

    python benchmarks/api_throughput.py [--n 400]    # -> benchmarks/results/api_throughput.json

Images: Kermany images from ../shared/data when present, else the shipped examples repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("CXRTRIAGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def image_paths(n: int) -> tuple[list[str], str]:
    """``n`` image paths and where they come from."""
    manifest = SHARED / "kermany-pneumonia" / "manifest.csv"
    if manifest.is_file():
        import csv

        with manifest.open() as fh:
            rows = list(csv.DictReader(fh))
        step = max(1, len(rows) // n)  # spread over the manifest (both classes)
        paths = [str(manifest.parent / r["path"]) for r in rows[::step]][:n]
        source = "kermany-pneumonia from ../shared/data (every k-th manifest row)"
    else:
        paths = sorted(str(p) for p in (REPO / "src" / "cxrtriage" / "examples").glob("*.jpg"))
        source = "shipped examples (repeated)"
    return [paths[i % len(paths)] for i in range(n)], source


def time_cli_scoring(paths: list[str]) -> tuple[float, np.ndarray]:
    """``cxr predict``'s scoring: Predictor (torch backend), read all files, then batches of 32."""
    from cxrtriage.data.io import read_image
    from cxrtriage.inference.predictor import Predictor

    t0 = time.perf_counter()
    predictor = Predictor(None)
    images = [read_image(p) for p in paths]
    probs = predictor.probabilities(images)
    return time.perf_counter() - t0, probs


def time_cli_full(paths: list[str]) -> float:
    """:func:`predict_files` as ``cxr predict --no-gradcam`` runs it (annotated PNG per image)."""
    from cxrtriage.inference.run import predict_files

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        predict_files(None, paths, out, with_gradcam=False)
        return time.perf_counter() - t0


def time_api(paths: list[str], backend: str) -> tuple[float, np.ndarray]:
    import cxrtriage

    t0 = time.perf_counter()
    model = cxrtriage.load_model("pneumonia", backend=backend)  # type: ignore[arg-type]
    preds = model.predict(paths)
    probs = np.array([[p.probabilities[c] for c in model.classes] for p in preds])
    return time.perf_counter() - t0, probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="number of paths")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians are reported")
    a = ap.parse_args()
    paths, source = image_paths(a.n)
    time_api(paths[:8], "torch")  # warm-up: imports, first-run allocations
    runs: dict[str, list[float]] = {"cli": [], "api": [], "onnx": [], "full": []}
    for _ in range(a.rounds):  # interleaved, so a burst of background load hits every variant alike
        t, p_cli = time_cli_scoring(paths)
        runs["cli"].append(t)
        t, p_api = time_api(paths, "torch")
        runs["api"].append(t)
        runs["onnx"].append(time_api(paths, "onnx")[0])
        runs["full"].append(time_cli_full(paths))
    t_cli, t_api, t_onnx, t_full = (float(np.median(runs[k])) for k in ("cli", "api", "onnx", "full"))
    res = {
        "n_images": len(paths),
        "rounds": a.rounds,
        "seconds_per_round": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "images": source,
        "cxr_predict_scoring_images_per_s": round(len(paths) / t_cli, 1),
        "cxr_predict_no_gradcam_images_per_s": round(len(paths) / t_full, 1),
        "api_predict_torch_images_per_s": round(len(paths) / t_api, 1),
        "api_predict_onnx_images_per_s": round(len(paths) / t_onnx, 1),
        "api_torch_vs_cxr_predict_scoring": round(t_cli / t_api, 3),
        "max_abs_probability_difference_api_vs_cli": float(np.abs(p_api - p_cli).max()),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "note": "model loading included; 2 shared cores (other jobs running inflate the times, see load average)",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api_throughput.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

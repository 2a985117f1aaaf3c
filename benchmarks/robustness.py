"""Robustness of a model to simulated acquisition shifts on its own validation split.

The official Kermany test images differ in acquisition from the training
images, and most errors there are normals called pneumonia. This benchmark
applies deterministic shifts (exposure/gamma, contrast, blur, heavy JPEG
compression, low resolution, noise) to the model's patient-level validation
images and reports accuracy, sensitivity, specificity and AUROC at the saved
threshold for each, to show how much each kind of shift costs. It never
touches test data.

Usage::

    python benchmarks/robustness.py [--model DIR] [--out benchmarks/results/robustness.json]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from cxrtriage.data.cache import load_cached
from cxrtriage.data.split import recorded_validation_paths
from cxrtriage.inference import Predictor
from cxrtriage.metrics.classification import metric_report
from cxrtriage.models.bundle import ModelBundle, resolve_model_dir
from cxrtriage.tasks import get_task


def _gamma(g):
    return lambda im: np.clip(255 * (im / 255.0) ** g, 0, 255).astype(np.uint8)


def _contrast(c):
    return lambda im: np.clip((im.astype(np.float32) - 128) * c + 128, 0, 255).astype(np.uint8)


def _blur(r):
    return lambda im: np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(r)))


def _jpeg(q):
    def f(im):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=q)
        return np.asarray(Image.open(buf).convert("L"))

    return f


def _lowres(s):
    return lambda im: np.asarray(
        Image.fromarray(im).resize((s, s), Image.Resampling.BILINEAR).resize(im.shape[::-1], Image.Resampling.BILINEAR)
    )


def _noise(sigma):
    rng = np.random.default_rng(0)
    return lambda im: np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).astype(np.uint8)


SHIFTS = {
    "none": lambda im: im,
    "gamma_0.6": _gamma(0.6),
    "gamma_1.6": _gamma(1.6),
    "contrast_0.6": _contrast(0.6),
    "contrast_1.4": _contrast(1.4),
    "blur_r1.5": _blur(1.5),
    "jpeg_q20": _jpeg(20),
    "lowres_96px": _lowres(96),
    "noise_sigma8": _noise(8),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "robustness.json"))
    a = ap.parse_args()
    pred = Predictor(a.model)
    d = resolve_model_dir(a.model)
    sp = ModelBundle.load(d).split
    _, paths = recorded_validation_paths(d, sp.data if sp else None, sp.val_paths_relative if sp else None)
    task = get_task(pred.config.task)
    labels = [task.map_label(Path(p).parent.name, p) for p in paths]
    cache = load_cached(paths, pred.config.image_size)
    y = np.array([labels[i] for i in cache.index])
    results = {}
    for name, fn in SHIFTS.items():
        t0 = time.time()
        probs = pred.probabilities([fn(np.array(im)) for im in cache.images])
        rep = metric_report(
            y,
            probs,
            pred.config.classes,
            task=task.name,
            positive_class=pred.config.positive_class if task.is_binary else None,
            threshold=pred.config.threshold,
            n_boot=0,
        )
        results[name] = {k: rep.value(k) for k in ("accuracy", "sensitivity", "specificity", "auroc")}
        results[name]["seconds"] = round(time.time() - t0, 1)
        print(name, {k: round(v, 4) for k, v in results[name].items()}, flush=True)
    out = {
        "model": pred.config.version,
        "data": "patient-level validation split of the model (bundle.json split section)",
        "n": int(len(y)),
        "threshold": pred.config.threshold,
        "shifts": results,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()

"""Shortcut audit of a model: ``cxr audit``.

Does the model look at the lungs? Three measurements (DeGrave, Janizek & Lee,
Nat. Mach. Intell. 3, 2021; Zech et al., PLoS Med. 15(11), 2018):

1. **Hidden lungs.** The images are scored at the model's saved operating point
   as they are, with the lung fields hidden and with everything *but* the lung
   fields hidden (:func:`cxrtriage.explain.lungs.hide_region`). A model whose
   AUROC stays well above 0.5 with the lungs hidden reads markers, borders,
   collimation or source, not the lungs.
2. **Source probe.** With images from two or more datasets (or values of a
   manifest column), a cross-validated logistic regression on the pooled
   features predicts the source (:func:`cxrtriage.metrics.audit.source_probe`).
   A high AUROC means the features encode the source.
3. **Heatmap in the lungs.** Per image, the share of the predicted class's CAM
   mass inside the lung mask, against the mask's own area (the chance level).

The lung fields come from the shipped lung segmenter (:mod:`cxrtriage.segment`): images
that are already lung-only are detected and keep their own lung region; an image whose
segmentation failed (mask < 5 % or > 50 % of the image) is left out and listed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from cxrtriage import DISCLAIMER
from cxrtriage.cards.audit_page import write_audit_page
from cxrtriage.cards.model_card import write_card
from cxrtriage.config import ModelConfig
from cxrtriage.data.cache import load_cached
from cxrtriage.data.dedupe import dataset_tag, duplicate_pairs, image_hashes
from cxrtriage.data.discover import DatasetError, Sample, discover
from cxrtriage.explain.cam import cam_from_features, upsample_cam
from cxrtriage.explain.lungs import HideFill, hide_region
from cxrtriage.explain.overlay import heatmap_overlay
from cxrtriage.inference.backend import config_batches
from cxrtriage.inference.loading import load_backend
from cxrtriage.metrics.audit import mass_in_mask, mean_estimate, source_probe
from cxrtriage.metrics.calibration import softmax
from cxrtriage.metrics.classification import report_at_operating_point
from cxrtriage.metrics.decision import decide
from cxrtriage.metrics.report import MetricReport
from cxrtriage.models.bundle import AuditSection, ModelBundle
from cxrtriage.segment.runtime import LungSegmenter, load_segmenter
from cxrtriage.tasks import get_task

__all__ = ["AuditResult", "CONDITIONS", "hidden_lung_reports", "run_audit", "select_samples"]

#: The three scorings of the hidden-lungs test: key -> description.
CONDITIONS: dict[str, str] = {
    "original": "images as they are",
    "lungs_hidden": "lung fields hidden (periphery only)",
    "lungs_only": "everything but the lung fields hidden",
}


@dataclass
class AuditResult:
    """Outcome of :func:`run_audit`.

    Attributes
    ----------
    section : AuditSection
        The figures (also stored in the bundle with ``write_bundle``).
    out : Path
        Output folder holding ``audit.json``, ``audit.html`` and ``examples/``.
    summary : dict
        Content of ``audit.json``.
    """

    section: AuditSection
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)


def select_samples(samples: Sequence[Sample], max_images: int | None, seed: int = 0) -> list[Sample]:
    """Up to ``max_images`` samples, classes taken in turn (balanced as far as the data allow).

    Parameters
    ----------
    samples : sequence of Sample
    max_images : int or None
        ``None`` keeps all.
    seed : int
        Shuffle seed within each class.

    Returns
    -------
    list of Sample
        In the input order.
    """
    if max_images is None or max_images >= len(samples):
        return list(samples)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(s.target, []).append(i)
    queues = [list(rng.permutation(v)) for _, v in sorted(by_class.items())]
    chosen: list[int] = []
    while len(chosen) < max_images:
        for q in queues:
            if q and len(chosen) < max_images:
                chosen.append(int(q.pop(0)))
    return [samples[i] for i in sorted(chosen)]


def hidden_lung_reports(
    images: np.ndarray,
    masks: np.ndarray,
    y: np.ndarray,
    probabilities: Callable[[np.ndarray], np.ndarray],
    config: ModelConfig,
    fill: HideFill = "mean",
    n_boot: int = 1000,
) -> dict[str, MetricReport]:
    """Score images as they are, with the lungs hidden, and with only the lungs visible.

    Parameters
    ----------
    images : numpy.ndarray
        ``uint8 (N, H, W)``.
    masks : numpy.ndarray
        ``bool (N, H, W)`` lung masks (:func:`cxrtriage.segment.segment_lungs`).
    y : int array ``(N,)``
        True class indices of ``config.classes``.
    probabilities : callable
        ``uint8 (M, H, W)`` -> class probabilities ``float (M, K)``.
    config : ModelConfig
        Classes, task and saved operating point (:func:`cxrtriage.metrics.decision.decide`).
    fill : {"mean", "grey"}
        Grey level of hidden pixels (:func:`cxrtriage.explain.lungs.hide_region`).
    n_boot : int
        Bootstrap replicates of the intervals.

    Returns
    -------
    dict str -> MetricReport
        Keys of :data:`CONDITIONS`.

    Raises
    ------
    ValueError
        Shapes disagree.
    """
    if images.shape != masks.shape or len(y) != len(images):
        raise ValueError(f"images {images.shape}, masks {masks.shape} and {len(y)} labels disagree")
    variants = {
        "original": images,
        "lungs_hidden": np.stack([hide_region(im, m, fill) for im, m in zip(images, masks)]),
        "lungs_only": np.stack([hide_region(im, ~m, fill) for im, m in zip(images, masks)]),
    }
    out = {}
    for key, imgs in variants.items():
        probs = np.asarray(probabilities(imgs), dtype=np.float64)
        out[key] = report_at_operating_point(y, probs, config, n_boot=n_boot)
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def _example_panel(img: np.ndarray, mask: np.ndarray, heat: np.ndarray | None, fill: HideFill) -> Image.Image:
    s = img.shape[0]
    tiles = [
        np.stack([img] * 3, -1),
        np.stack([hide_region(img, mask, fill)] * 3, -1),
        np.stack([hide_region(img, ~mask, fill)] * 3, -1),
    ]
    over = np.asarray(heatmap_overlay(img, heat if heat is not None else np.zeros_like(img, np.float32), min_side=s))
    over = np.array(Image.fromarray(over).resize((img.shape[1], img.shape[0])))
    over[_outline(mask)] = (255, 255, 255)
    tiles.append(over)
    return Image.fromarray(np.concatenate(tiles, axis=1).astype(np.uint8))


def lung_mask_method(seg: LungSegmenter, failed: int, total: int) -> str:
    """One line naming the lung masks an audit used: the segmenter, its ONNX checksum, held-out Dice, the images left out.

    The checksum (first 12 hex digits of the SHA-256 of ``model.onnx``) tells two exports of the same version
    apart, e.g. a re-quantised one, which keeps the version string.
    """
    held = seg.bundle.evaluation.get("heldout", {})
    dice = f", held-out Dice {held['dice_mean']:.3f} against pseudo-masks" if "dice_mean" in held else ""
    sha = f", ONNX sha256 {seg.bundle.onnx_sha256[:12]}" if seg.bundle.onnx_sha256 else ""
    return (
        f"lung segmenter {seg.config.version} (U-Net, {seg.folder.name}{sha}{dice}); lung-only images detected and "
        f"their own lung region used; {failed} of {total} images left out (failed segmentation)"
    )


def run_audit(
    model: str | Path | None,
    data: Sequence[str | Path],
    out: str | Path,
    max_images: int | None = None,
    n_boot: int = 1000,
    source_column: str | None = None,
    fill: HideFill = "mean",
    seed: int = 0,
    write_bundle: bool = False,
    cache_dir: str | None = None,
    n_examples: int = 4,
    command: str = "",
    device: str = "cpu",
    segmenter: str | Path | None = None,
) -> AuditResult:
    """Run the shortcut audit of a model on one or more labelled datasets.

    Writes ``out/audit.json``, ``out/audit.html`` and ``out/examples/*.png``
    (original / lungs hidden / only lungs / CAM with the lung outline).

    Parameters
    ----------
    model : path, str or None
        Model folder or shipped model name (``None``: the default model).
    data : sequence of paths
        Dataset folders or manifests; labels are mapped by the model's task and
        images of other labels left out.
    out : path
        Output folder (created).
    max_images : int, optional
        At most this many images per dataset, classes in turn (:func:`select_samples`).
    n_boot : int
        Bootstrap replicates of every interval.
    source_column : str, optional
        Manifest column naming each image's source; default: the dataset folder name.
    fill : {"mean", "grey"}
        Grey level of hidden pixels.
    seed : int
        Image selection, cross-validation folds and bootstrap.
    write_bundle : bool
        Store the figures as the bundle's ``audit`` section and re-render its card.
    cache_dir : str, optional
        Decoded-image cache folder.
    n_examples : int
        Example panels on the page.
    command : str
        The command line, recorded.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``: a GPU runs the model in PyTorch, the CPU in ONNX Runtime.
    segmenter : path, optional
        Lung segmenter folder (default: the shipped one, :func:`cxrtriage.segment.load_segmenter`).

    Returns
    -------
    AuditResult

    Raises
    ------
    cxrtriage.data.DatasetError
        A dataset has no image of the task's classes, an image lacks ``source_column``,
        or no image could be read.
    cxrtriage.models.bundle.ModelLoadError
        The model folder cannot be read.
    """
    t0 = time.time()
    bundle = ModelBundle.load(model)
    cfg = bundle.config
    task = get_task(cfg.task)
    if not data:
        raise DatasetError("cxr audit: no dataset given")
    samples: list[Sample] = []
    sources: list[str] = []
    origin: list[int] = []
    for k, d in enumerate(data):
        found = discover(d, task)
        if not found:
            raise DatasetError(f"{d}: no image with a label of task {task.name!r} (classes {', '.join(task.classes)})")
        chosen = select_samples(found, max_images, seed)
        for s in chosen:
            if source_column is not None:
                value = (s.extra.get(source_column) or "").strip()
                if not value:
                    raise DatasetError(f"{d}: image {s.path} has no value in manifest column {source_column!r}")
                sources.append(value)
            else:
                sources.append(dataset_tag(d))
        samples += chosen
        origin += [k] * len(chosen)
    cache = load_cached([s.path for s in samples], cfg.image_size, cache_dir)
    if not len(cache.index):
        raise DatasetError(f"{', '.join(map(str, data))}: none of the {len(samples)} images could be read")
    keep = [int(i) for i in cache.index]
    images = np.asarray(cache.images)
    dropped: list[dict[str, str]] = []
    if len(data) > 1:
        hashes = image_hashes([samples[i].path for i in keep], cache_dir)
        drop: set[int] = set()
        for i, j, _ in duplicate_pairs(hashes):
            a, b = sorted((i, j), key=lambda r: (origin[keep[r]], r))
            if origin[keep[a]] != origin[keep[b]] and a not in drop:
                drop.add(b)
                dropped.append({"path": samples[keep[b]].path, "duplicate_of": samples[keep[a]].path})
        rows = [r for r in range(len(keep)) if r not in drop]
        keep, images = [keep[r] for r in rows], images[rows]
    # lung fields from the segmenter; images whose segmentation failed are left out, never masked wrongly
    seg = load_segmenter(segmenter)
    lung = [m for start in range(0, len(images), 64) for m in seg.segment_batch(list(images[start : start + 64]))]
    seg_failed = [{"path": samples[keep[r]].path, "reason": m.reason} for r, m in enumerate(lung) if m.failed]
    rows = [r for r, m in enumerate(lung) if not m.failed]
    if not rows:
        raise DatasetError(f"{', '.join(map(str, data))}: lung segmentation failed on all {len(lung)} images")
    keep, images = [keep[r] for r in rows], images[rows]
    masks = np.stack([lung[r].mask for r in rows])
    kept = [samples[i] for i in keep]
    src = [sources[i] for i in keep]
    y = np.array([s.target for s in kept])

    backend = load_backend(bundle.directory or model or "", export_if_missing=False, device=device)

    def probabilities(imgs: np.ndarray) -> np.ndarray:
        return softmax(backend.run(config_batches(imgs, cfg))[0], cfg.temperature)

    # one pass with feature maps on the originals: pooled features and CAMs
    pooled_l: list[np.ndarray] = []
    fractions: list[tuple[float, np.ndarray | None]] = []
    head = getattr(backend, "head", None)
    for start in range(0, len(images), 32):
        batch = images[start : start + 32]
        logits, fmap = backend.run(config_batches(batch, cfg), features="map")
        pooled_l.append(fmap.mean(axis=(2, 3)))
        pred = decide(softmax(logits, cfg.temperature), cfg)
        for f, c, m in zip(fmap, pred, masks[start : start + 32]):
            if head is None:
                fractions.append((float("nan"), None))
                continue
            cam = np.maximum(cam_from_features(f, head[0], int(c)), 0.0)
            heat = upsample_cam(cam / cam.max() if cam.max() > 0 else cam, (m.shape[1], m.shape[0]))
            fractions.append((mass_in_mask(heat, m), heat))
    pooled = np.concatenate(pooled_l)
    reports = hidden_lung_reports(images, masks, y, probabilities, cfg, fill, n_boot)
    frac = np.array([f for f, _ in fractions])
    cam_in_lung = {c: mean_estimate(frac[y == k], n_boot, seed) for k, c in enumerate(cfg.classes) if np.any(y == k)}
    lung_area = mean_estimate(masks.reshape(len(masks), -1).mean(axis=1), n_boot, seed)
    if len(set(src)) >= 2:
        groups = [f"{s}:{x.patient_id}" for s, x in zip(src, kept)]
        probe = source_probe(pooled, src, groups, n_boot=n_boot, seed=seed)
        probe_dict: dict[str, Any] | None = probe.to_dict()
        # within one true class the source cannot be told apart by disease: a cleaner test of source encoding
        within: dict[str, Any] = {}
        src_arr, grp_arr = np.asarray(src), np.asarray(groups)
        for k, c in enumerate(cfg.classes):
            sel = y == k
            per_source = [len(set(grp_arr[sel & (src_arr == s)].tolist())) for s in sorted(set(src))]
            if sum(n >= 5 for n in per_source) >= 2:
                keep_src = [s for s, n in zip(sorted(set(src)), per_source) if n >= 5]
                sel &= np.isin(src_arr, keep_src)
                within[c] = source_probe(pooled[sel], src_arr[sel], grp_arr[sel], n_boot=n_boot, seed=seed).to_dict()
        if probe_dict is not None:
            probe_dict["within_class"] = within
    else:
        probe_dict = None
    section = AuditSection(
        data=[dataset_tag(d) for d in data],
        n=len(kept),
        lung_mask=lung_mask_method(seg, len(seg_failed), len(lung)),
        fill="image mean intensity" if fill == "mean" else "neutral grey (128)",
        original=reports["original"],
        lungs_hidden=reports["lungs_hidden"],
        lungs_only=reports["lungs_only"],
        cam_in_lung=cam_in_lung,
        lung_area=lung_area,
        source_probe=probe_dict,
        command=command,
    )
    out = Path(out)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    examples: list[dict[str, Any]] = []
    first: dict[tuple[int, str], int] = {}
    for i, (t, s_) in enumerate(zip(y.tolist(), src)):
        first.setdefault((t, s_), i)
    order = sorted(first.values())
    order += [i for i in range(len(kept)) if i not in first.values()]
    for i in order[:n_examples]:
        name = f"example_{len(examples)}.png"
        _example_panel(images[i], masks[i], fractions[i][1], fill).save(out / "examples" / name)
        examples.append(
            {
                "file": f"examples/{name}",
                "label": kept[i].label,
                "source": src[i],
                "cam_in_lung": None if not np.isfinite(frac[i]) else round(float(frac[i]), 4),
                "lung_area": round(float(masks[i].mean()), 4),
            }
        )
    summary: dict[str, Any] = {
        **section.to_dict(),
        "model": {"dir": str(bundle.directory), "arch": cfg.arch, "version": cfg.version, "task": task.name},
        "cam": "ReLU'd class activation map of the predicted class (Zhou et al., CVPR 2016), upsampled to the input"
        if head is not None
        else "unavailable: the model has no GAP + linear head",
        "duplicates_dropped": dropped,
        "segmentation_failed": seg_failed,
        "skipped": [{"path": p, "reason": r} for p, r in cache.failures],
        "examples": examples,
        "seconds": round(time.time() - t0, 1),
        "disclaimer": DISCLAIMER,
    }
    (out / "audit.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_audit_page(summary, out / "audit.html")
    if write_bundle:
        bundle.audit = section
        bundle.save(bundle.directory or Path(str(model)))
        write_card(bundle)
    return AuditResult(section, out, summary)

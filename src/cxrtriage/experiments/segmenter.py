"""Measuring the lung segmenter: ``cxr evaluate-segmenter``.

In-source: Dice against the pseudo-masks of the training source's own held-out patients (the images recorded in
the bundle's ``training.val_images_relative``), after the full inference path (ONNX Runtime, resize to the
mask's size, post-processing). Out-of-source: the share of the image each mask covers on full adult X-rays of
other sources (no masks of the same convention exist for them), against the range of the RSNA adult masks
(``shared/data/rsna-lungs``, 1st-99th percentile), plus a contact sheet of random overlays to look at.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from cxrtriage.data.io import ImageReadError, read_image
from cxrtriage.segment.postprocess import LungMask, clean_mask, contour_of, dice_scores
from cxrtriage.segment.runtime import LungSegmenter

__all__ = [
    "ADULT_RANGE",
    "AreaStats",
    "adult_sources",
    "area_statistics",
    "contact_sheet",
    "dice",
    "evaluate_segmenter",
    "heldout_dice",
    "mask_fraction_percentiles",
]

#: Plausible share of a full adult frontal image inside the lung mask, for the out-of-source check: the RSNA
#: adult masks' 1st-99th percentile is 8.8-37.5 % (``shared/data/rsna-lungs``), widened to 8-40 %.
ADULT_RANGE = (0.08, 0.40)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary ``(H, W)`` masks in [0, 1] (1.0 when both are empty); one pair of
    :func:`cxrtriage.segment.postprocess.dice_scores`."""
    return float(dice_scores(np.asarray(pred)[None], np.asarray(truth)[None])[0])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _batched(seg: LungSegmenter, images: Sequence[np.ndarray], batch: int = 32) -> list[LungMask]:
    out: list[LungMask] = []
    for i in range(0, len(images), batch):
        out += seg.segment_batch(list(images[i : i + batch]), detect_lung_only_input=False)
    return out


def heldout_dice(
    seg: LungSegmenter, data: str | Path, images_relative: Sequence[str], worst: int = 0
) -> dict[str, Any]:
    """Dice of the segmenter's masks against a mask dataset's masks on the listed images.

    The reference masks of ``lung-masks`` are pseudo-labels; many hold extra pieces outside the lungs (gas
    bubbles under the diaphragm, air beside the arms) that the mandated post-processing (two largest components,
    holes filled) removes from any mask. So the Dice is also given against the reference after that same
    post-processing (``dice_cleaned_reference_mean``), and the reference's own Dice after it (its ceiling).

    Parameters
    ----------
    seg : LungSegmenter
    data : path
        Mask dataset folder with ``manifest.csv`` (``image``, ``mask``, optional ``label``).
    images_relative : sequence of str
        ``image`` column values to score (e.g. the bundle's held-out images).
    worst : int
        Also return the ``worst`` images of lowest Dice (against the cleaned reference) as
        ``(image, LungMask, reference mask, caption)`` under the key ``worst_items`` (not JSON; pop it).

    Returns
    -------
    dict
        ``n``, ``dice_mean``, ``dice_p10``, ``dice_min``, ``dice_raw_mean`` (before post-processing),
        ``dice_cleaned_reference_mean``, ``reference_ceiling_mean`` (cleaned reference against the reference),
        ``reference_more_than_two_components``, ``by_label`` (label -> n and both Dice means),
        ``failed`` (flagged masks), ``unreadable``.

    Raises
    ------
    ValueError
        None of the listed images is in the manifest.
    """
    root = Path(data)
    rows = {r["image"]: r for r in _read_csv(root / "manifest.csv")}
    wanted = [rows[p] for p in images_relative if p in rows]
    if not wanted:
        raise ValueError(f"{root}: none of the {len(images_relative)} held-out images is in manifest.csv")
    scores, raw_scores, clean_scores, ceiling, labels = [], [], [], [], []
    extra, failed, unreadable = 0, 0, 0
    keep: list[tuple[float, np.ndarray, LungMask, np.ndarray, str]] = []
    for start in range(0, len(wanted), 32):
        chunk = wanted[start : start + 32]
        imgs, truths, names = [], [], []
        for r in chunk:
            try:
                imgs.append(read_image(root / r["image"]))
                truths.append(read_image(root / r["mask"]) > 127)
                names.append(r)
            except ImageReadError:
                unreadable += 1
        logits = seg.logits(imgs)  # one network call: the raw and the post-processed masks come from it
        masks = seg.masks_from_logits(logits, [im.shape for im in imgs])
        for m, lg, t, im, r in zip(masks, logits, truths, imgs, names):
            cleaned, _ = clean_mask(t, keep=2)
            extra += int(ndimage.label(t, structure=np.ones((3, 3), dtype=bool))[1] > 2)
            scores.append(dice(m.mask, t))
            clean_scores.append(dice(m.mask, cleaned))
            ceiling.append(dice(cleaned, t))
            raw_scores.append(dice(seg._to_size(lg, im.shape) >= 0.0, t))
            labels.append(r.get("label", ""))
            failed += int(m.failed)
            if worst:
                keep.append((clean_scores[-1], im, m, cleaned, Path(r["image"]).stem))
                keep = sorted(keep, key=lambda k: k[0])[:worst]
    d, dc, lab = np.asarray(scores), np.asarray(clean_scores), np.asarray(labels)
    out: dict[str, Any] = {
        "n": len(d),
        "dice_mean": round(float(d.mean()), 4),
        "dice_p10": round(float(np.percentile(d, 10)), 4),
        "dice_min": round(float(d.min()), 4),
        "dice_raw_mean": round(float(np.mean(raw_scores)), 4),
        "dice_cleaned_reference_mean": round(float(dc.mean()), 4),
        "reference_ceiling_mean": round(float(np.mean(ceiling)), 4),
        "reference_more_than_two_components": extra,
        "by_label": {
            str(k): {
                "n": int((lab == k).sum()),
                "dice_mean": round(float(d[lab == k].mean()), 4),
                "dice_cleaned_reference_mean": round(float(dc[lab == k].mean()), 4),
            }
            for k in sorted(set(labels))
        },
        "failed": failed,
        "unreadable": unreadable,
    }
    if worst:
        out["worst_items"] = [(im, m, ref, f"{name[:14]} {score:.2f}") for score, im, m, ref, name in keep]
    return out


@dataclass
class AreaStats:
    """Lung-mask area on one set of images.

    Attributes
    ----------
    name : str
    n : int
        Images segmented.
    in_range : float
        Share of masks covering ``ADULT_RANGE`` (8-40 %) of the image.
    failed : float
        Share flagged as failed segmentations (< 5 % or > 50 %).
    p1, p50, p99 : float
        Percentiles of the covered share.
    """

    name: str
    n: int
    in_range: float
    failed: float
    p1: float
    p50: float
    p99: float

    def as_dict(self) -> dict[str, Any]:
        """Rounded plain ``dict``."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def area_statistics(seg: LungSegmenter, name: str, paths: Sequence[str | Path]) -> tuple[AreaStats, list[LungMask]]:
    """Segment ``paths`` (unreadable files skipped) and summarise the covered share (see :class:`AreaStats`)."""
    imgs = []
    for p in paths:
        try:
            imgs.append(read_image(p))
        except ImageReadError:
            continue
    masks = _batched(seg, imgs)
    f = np.array([m.fraction for m in masks])
    lo, hi = ADULT_RANGE
    stats = AreaStats(
        name=name,
        n=len(f),
        in_range=float(((f >= lo) & (f <= hi)).mean()),
        failed=float(np.mean([m.failed for m in masks])),
        p1=float(np.percentile(f, 1)),
        p50=float(np.percentile(f, 50)),
        p99=float(np.percentile(f, 99)),
    )
    return stats, masks


def adult_sources(shared_data: str | Path) -> dict[str, list[Path]]:
    """Full adult frontal X-rays of three sources without lung masks.

    - ``covid19-radiography``: COVID and Normal (not Viral_Pneumonia, which are pediatric Kermany images; rows
      marked as Kermany duplicates are left out);
    - ``ieee8023-cxr``: every image (adult COVID-19 and other pneumonias from publications);
    - ``nih-cxr14-normal-abnormal-64px``: every image (NIH ChestX-ray14, 64 px).

    Returns
    -------
    dict
        Source name -> image paths (sources whose folder is missing are left out).
    """
    root = Path(shared_data)
    out: dict[str, list[Path]] = {}
    d = root / "covid19-radiography"
    if (d / "manifest.csv").is_file():
        out["covid19-radiography"] = [
            d / r["path"]
            for r in _read_csv(d / "manifest.csv")
            if r["label"] in ("COVID", "Normal") and not r.get("kermany_duplicate")
        ]
    for name in ("ieee8023-cxr", "nih-cxr14-normal-abnormal-64px"):
        d = root / name
        if (d / "manifest.csv").is_file():
            out[name] = [d / r["path"] for r in _read_csv(d / "manifest.csv")]
    return out


def mask_fraction_percentiles(mask_paths: Sequence[str | Path], q: Sequence[float] = (1, 50, 99)) -> list[float]:
    """Percentiles ``q`` of the share of pixels inside the given mask files (e.g. the RSNA masks)."""
    f = [float((read_image(p) > 127).mean()) for p in mask_paths]
    return [round(float(v), 4) for v in np.percentile(f, q)]


def contact_sheet(
    items: Sequence[tuple[np.ndarray, LungMask, str]],
    out: str | Path,
    columns: int = 8,
    tile: int = 160,
    references: Sequence[np.ndarray] | None = None,
    show_fraction: bool = True,
) -> Path:
    """A grid of images with their lung contours (green; red when the segmentation failed) and captions.

    Parameters
    ----------
    items : sequence of (image, LungMask, caption)
        ``uint8 (H, W)`` images with their masks.
    references : sequence of bool (H, W) arrays, optional
        Reference masks, one per item, drawn as a blue tint under the contour.
    show_fraction : bool
        Append the mask's share of the image to each caption.
    out : path
        Output image (JPEG or PNG by suffix).
    columns, tile : int
        Grid width and tile side in pixels.
    """
    rows = (len(items) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (img, m, caption) in enumerate(items):
        rgb = np.stack([img] * 3, axis=-1).astype(np.uint8)
        if references is not None:
            ref = np.asarray(references[k], dtype=bool)
            rgb[ref] = (0.55 * rgb[ref] + 0.45 * np.array([60, 110, 255])).astype(np.uint8)
        # an outline wide enough to survive the downscale to the tile
        rgb[contour_of(m.mask, width=max(1, round(max(img.shape) / tile)))] = (
            (255, 40, 40) if m.failed else (40, 230, 60)
        )
        x0, y0 = (k % columns) * tile, (k // columns) * (tile + 14)
        sheet.paste(Image.fromarray(rgb).resize((tile, tile), Image.Resampling.BILINEAR), (x0, y0))
        draw.text((x0 + 2, y0 + tile), f"{caption} {m.fraction:.0%}" if show_fraction else caption, fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=85) if out.suffix.lower() in (".jpg", ".jpeg") else sheet.save(out)
    return out


def evaluate_segmenter(
    segmenter: str | Path,
    shared_data: str | Path,
    sheet: str | Path | None = None,
    sheet_images: int = 48,
    worst_sheet: str | Path | None = None,
    seed: int = 0,
    write: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Measure a segmenter (see the module docstring) and store the figures in its bundle and card.

    Parameters
    ----------
    segmenter : path
        Segmenter folder.
    shared_data : path
        Folder holding ``lung-masks``, ``rsna-lungs`` and the adult sources of :func:`adult_sources`.
    sheet : path, optional
        Write a contact sheet of ``sheet_images`` random adult overlays (equal share per source) there.
    worst_sheet : path, optional
        Write the 16 held-out images of lowest Dice (against the cleaned reference) there: reference in blue,
        the segmenter's contour in green.
    seed : int
        Seed of the contact sheet's draw.
    write : bool
        Store the figures in the bundle (``bundle.json`` and the card).
    command : str
        The command line that ran this, recorded in the card.

    Returns
    -------
    dict
        The bundle's ``evaluation`` section: ``rows`` (data, kind, n, figure), ``heldout``, ``adult``,
        ``rsna_mask_percentiles``, ``notes``, ``command``.
    """
    folder = Path(segmenter)
    seg = LungSegmenter(folder, threads=2)
    bundle = seg.bundle
    root = Path(shared_data)
    held = heldout_dice(
        seg, root / "lung-masks", bundle.training.get("val_images_relative", []), worst=16 if worst_sheet else 0
    )
    worst_items = held.pop("worst_items", [])
    rsna = root / "rsna-lungs"
    rsna_q = mask_fraction_percentiles([rsna / r["mask_path"] for r in _read_csv(rsna / "manifest.csv")])
    rows = [
        {
            "data": "lung-masks (Kermany pediatric, held-out patients)",
            "kind": "in-source",
            "n": held["n"],
            "figure": f"Dice {held['dice_mean']:.4f} mean, {held['dice_p10']:.4f} p10, {held['dice_min']:.4f} min "
            f"(before post-processing {held['dice_raw_mean']:.4f}); {held['failed']} flagged",
        },
        {
            "data": "lung-masks, reference cleaned the same way (two largest components, holes filled)",
            "kind": "in-source",
            "n": held["n"],
            "figure": f"Dice {held['dice_cleaned_reference_mean']:.4f} mean; "
            + "; ".join(
                f"{k} {v['dice_mean']:.4f} / {v['dice_cleaned_reference_mean']:.4f} (n={v['n']})"
                for k, v in held["by_label"].items()
            ),
        },
    ]
    adult: dict[str, Any] = {}
    picked: list[tuple[np.ndarray, LungMask, str]] = []
    rng = np.random.default_rng(seed)
    sources = adult_sources(root)
    for name, paths in sources.items():
        stats, masks = area_statistics(seg, name, paths)
        adult[name] = stats.as_dict()
        rows.append(
            {
                "data": f"{name} (adult, full image)",
                "kind": "out-of-source",
                "n": stats.n,
                "figure": f"{stats.in_range:.1%} of masks cover 8-40 % of the image (median {stats.p50:.1%}, "
                f"p1-p99 {stats.p1:.1%}-{stats.p99:.1%}); {stats.failed:.1%} flagged",
            }
        )
        if sheet is not None:
            k = sheet_images // max(1, len(sources))
            readable = [(p, m) for p, m in zip(paths, masks)]  # unreadable files are rare; alignment is checked below
            for i in rng.choice(len(readable), size=min(k, len(readable)), replace=False):
                p, m = readable[int(i)]
                img = read_image(p)
                if img.shape == m.mask.shape:
                    picked.append((img, m, name.split("-")[0]))
    pooled = [a for a in adult.values()]
    total = sum(a["n"] for a in pooled)
    in_range_all = sum(a["in_range"] * a["n"] for a in pooled) / max(1, total)
    rows.append(
        {
            "data": "all three adult sources",
            "kind": "out-of-source",
            "n": total,
            "figure": f"{in_range_all:.1%} of masks cover 8-40 % of the image",
        }
    )
    notes = [
        f"RSNA adult masks (rsna-lungs, {len(_read_csv(rsna / 'manifest.csv'))} images): covered share p1 / p50 / p99 "
        f"= {rsna_q[0]:.1%} / {rsna_q[1]:.1%} / {rsna_q[2]:.1%} (the reference range of the out-of-source check).",
        "Out-of-source rows have no masks of the same convention: the covered share is a plausibility check, "
        "not a Dice.",
        f"The reference pseudo-masks are not expert contours: {held['reference_more_than_two_components']} of "
        f"{held['n']} held-out ones have more than two pieces (mostly gas under the diaphragm or air beside the "
        f"arms), which the post-processing removes from any mask; the reference itself after that post-processing "
        f"scores Dice {held['reference_ceiling_mean']:.4f} against the raw reference, the ceiling of the first row.",
    ]
    if worst_sheet is not None and worst_items:
        contact_sheet(
            [(im, m, cap) for im, m, _, cap in worst_items],
            worst_sheet,
            columns=8,
            references=[ref for _, _, ref, _ in worst_items],
            show_fraction=False,
        )
        notes.append(
            f"The {len(worst_items)} held-out images of lowest Dice: `{Path(worst_sheet).name}` (docs/; reference "
            "blue, segmenter green)."
        )
    if sheet is not None and picked:
        contact_sheet(picked, sheet)
        notes.append(f"Contact sheet of {len(picked)} random adult overlays: `{Path(sheet).name}` (docs/).")
    evaluation = {
        "rows": rows,
        "heldout": held,
        "adult": adult,
        "adult_in_range_pooled": round(in_range_all, 4),
        "rsna_mask_percentiles": rsna_q,
        "notes": notes,
        "command": command,
    }
    if write:
        bundle.evaluation = evaluation
        bundle.write_metadata(folder)
    return evaluation

"""Fit and evaluate the out-of-distribution detector of a model folder (``cxr fit-ood``).

* Fit: pooled features of the training images (the dataset in
  recorded in the bundle's ``split`` section minus its validation images).
* Threshold: the ``percentile`` of the validation images' scores.
* False-rejection rate on real chest radiographs: two-fold cross-calibration
  on the validation split (patients split in halves; the threshold of one
  half is applied to the other), so the rate is measured on images the
  threshold has not seen.
* Rejection rate on natural images: every PNG/JPEG shipped in scikit-image's
  ``skimage/data`` folder, scikit-learn's ``load_sample_images`` and the
  ``lfw_subset`` face crops shipped with scikit-image (read from the installed
  packages, never downloaded), with and without the colour check.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxrtriage.data.io import to_uint8_gray
from cxrtriage.inference.backend import Backend, config_batches
from cxrtriage.ood.colour import COLOURFULNESS_LIMIT, colourfulness
from cxrtriage.ood.mahalanobis import MahalanobisDetector

__all__ = ["natural_images", "extract_pooled", "fit_ood"]

log = logging.getLogger(__name__)


def natural_images() -> list[tuple[str, np.ndarray, float]]:
    """Natural (non-radiograph) test images that ship inside installed PyPI packages.

    Returns
    -------
    list of (name, image, colourfulness)
        ``image`` is ``uint8 (H, W)`` grayscale (as the server would decode it);
        ``colourfulness`` is the Hasler-Suesstrunk score of the original
        (0 for grayscale originals). Packages that are not installed are skipped.
    """
    out: list[tuple[str, np.ndarray, float]] = []
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                continue
            try:
                img = Image.open(p)
                img.load()
            except OSError:
                continue
            colour = (
                0.0 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else colourfulness(np.asarray(img.convert("RGB")))
            )
            if min(img.size) < 16:
                continue
            out.append((f"skimage:{p.name}", to_uint8_gray(img), colour))
        lfw = folder / "lfw_subset.npy"
        if lfw.is_file():
            faces = np.load(lfw)
            for i, f in enumerate(faces):
                out.append((f"skimage:lfw_subset[{i}]", np.clip(np.asarray(f) * 255.0, 0, 255).astype(np.uint8), 0.0))
    except ImportError:
        log.warning("scikit-image not installed: its sample images are not used")
    try:
        from sklearn.datasets import load_sample_images

        ds = load_sample_images()
        for name, arr in zip(ds.filenames, ds.images):
            out.append((f"sklearn:{Path(name).name}", to_uint8_gray(Image.fromarray(arr)), colourfulness(arr)))
    except ImportError:
        pass
    return out


def extract_pooled(
    backend: Backend,
    images: Sequence[np.ndarray],
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled features ``float32 (N, C)`` of ``uint8 (H, W)`` images (:class:`cxrtriage.inference.backend.Backend`).

    The backend must know its :class:`cxrtriage.config.ModelConfig` (for preprocessing).
    """
    cfg = backend.config
    if cfg is None:
        raise ValueError("extract_pooled needs a backend with a ModelConfig")

    def batches() -> Iterator[np.ndarray]:
        for i, x in enumerate(config_batches(images, cfg, batch_size)):
            yield x
            if progress:
                progress(min((i + 1) * batch_size, len(images)))

    _, feats = backend.run(batches(), features="pooled")
    return feats


def _load(paths: Sequence[str], size: int) -> tuple[list[np.ndarray], list[int]]:
    from cxrtriage.data.cache import load_cached

    cached = load_cached(list(paths), size)
    return [np.asarray(im) for im in cached.images], [int(i) for i in cached.index]


def _half(patient: str) -> int:
    return int(hashlib.sha256(patient.encode()).hexdigest(), 16) % 2


def fit_ood(
    model_dir: str | Path,
    *,
    data: str | Path | None = None,
    percentile: float = 99.5,
    max_train: int | None = None,
    external: Sequence[str | Path] = (),
    max_external: int = 300,
    backend: Backend | None = None,
    seed: int = 0,
) -> dict:
    """Fit, calibrate, evaluate and save the Mahalanobis detector of a model folder.

    Parameters
    ----------
    model_dir : path
        Model bundle folder with a ``split`` section (dataset and validation images).
    data : path, optional
        Dataset to fit on instead of the recorded ``split.data``.
    percentile : float
        Threshold percentile of validation scores (0-100).
    max_train : int, optional
        Random subset of the training images (quick runs).
    external : sequence of path
        Other chest X-ray datasets (manifest folders) whose rejection rate is
        reported for information (a shifted population, not used for fitting).
    max_external : int
        Images drawn at random from each external dataset.
    backend : optional
        A :class:`cxrtriage.inference.backend.Backend` with its ModelConfig (default: :func:`load_backend`).
    seed : int
        Seed of the random subsets.

    Returns
    -------
    dict
        Threshold and measured rates (stored in the bundle's ``ood`` section; statistics in ``ood.npz``).

    Raises
    ------
    ValueError
        No split recorded in the bundle or no training image left.
    """
    from cxrtriage.cards.model_card import write_card
    from cxrtriage.data.discover import discover
    from cxrtriage.data.split import recorded_validation_paths
    from cxrtriage.inference.loading import load_backend
    from cxrtriage.models.bundle import README_FILE, ModelBundle
    from cxrtriage.tasks import get_task

    d = Path(model_dir)
    bundle = ModelBundle.load(d)
    cfg, sp = bundle.config, bundle.split
    try:
        data, paths = recorded_validation_paths(d, sp.data if sp else None, sp.val_paths_relative if sp else None, data)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"{exc}; the OOD detector needs the validation split of training") from None
    val_paths = set(paths)
    task = get_task(cfg.task)
    samples = [s for s in discover(data, task) if s.split in (None, "train", "val")]
    train = [s for s in samples if s.path not in val_paths]
    val = [s for s in samples if s.path in val_paths]
    if not val and val_paths:
        val = [s for s in discover(data, task) if s.path in val_paths]
    rng = np.random.default_rng(seed)
    if max_train and len(train) > max_train:
        train = [train[i] for i in sorted(rng.choice(len(train), max_train, replace=False))]
    if len(train) < 10 or len(val) < 10:
        raise ValueError(f"{d}: too few images to fit the OOD detector ({len(train)} training, {len(val)} validation)")
    backend = backend or load_backend(d)
    size = cfg.image_size

    imgs, idx = _load([s.path for s in train], size)
    f_train = extract_pooled(backend, imgs)
    y_train = np.array([train[i].target for i in idx])
    columns = f_train.shape[1] // cfg.members if cfg.members > 1 else None  # a seed ensemble: its first member's
    det = MahalanobisDetector.fit(f_train[:, :columns], y_train)
    det.columns = columns

    vimgs, vidx = _load([s.path for s in val], size)
    f_val = extract_pooled(backend, vimgs)
    halves = np.array([_half(val[i].patient_id) for i in vidx])
    s_val = det.score(f_val)
    cross = []
    for h in (0, 1):
        thr = float(np.percentile(s_val[halves == h], percentile))
        cross.append(s_val[halves != h] > thr)
    frr_cross = float(np.concatenate(cross).mean())
    det.calibrate(f_val, percentile)

    nat = natural_images()
    f_nat = extract_pooled(backend, [im for _, im, _ in nat])
    s_nat = det.score(f_nat)
    maha_rej = s_nat > det.threshold
    colour_rej = np.array([c > COLOURFULNESS_LIMIT for _, _, c in nat])
    groups = {
        "skimage_and_sklearn_photos": np.array([not n.startswith("skimage:lfw") for n, _, _ in nat]),
        "skimage_lfw_faces": np.array([n.startswith("skimage:lfw") for n, _, _ in nat]),
    }
    natural = {
        "n": int(len(nat)),
        "rejection_rate_mahalanobis": float(maha_rej.mean()),
        "rejection_rate_colour_or_mahalanobis": float((maha_rej | colour_rej).mean()),
        "by_group": {
            g: {
                "n": int(m.sum()),
                "rejection_rate_mahalanobis": float(maha_rej[m].mean()) if m.any() else None,
                "rejection_rate_colour_or_mahalanobis": float((maha_rej | colour_rej)[m].mean()) if m.any() else None,
            }
            for g, m in groups.items()
        },
        "accepted": [n for (n, _, _), r in zip(nat, maha_rej | colour_rej) if not r],
    }
    ext = {}
    for e in external:
        try:
            es = discover(e, task)
        except Exception as exc:  # noqa: BLE001 - optional information only
            log.warning("external dataset %s skipped: %s", e, exc)
            try:
                es = discover(e, get_task("finding"))
            except Exception:  # noqa: BLE001
                continue
        pick = sorted(rng.choice(len(es), min(max_external, len(es)), replace=False))
        eimgs, _ = _load([es[i].path for i in pick], size)
        es_scores = det.score(extract_pooled(backend, eimgs))
        ext[Path(e).name] = {"n": int(len(es_scores)), "rejection_rate": float((es_scores > det.threshold).mean())}

    det.info.update(
        {
            "model_version": cfg.version,
            "data": str(data),
            "n_train": int(len(f_train)),
            "n_val": int(len(f_val)),
            "val_false_rejection_rate_in_sample": float((s_val > det.threshold).mean()),
            "val_false_rejection_rate_cross_calibrated": frr_cross,
            "natural_images": natural,
            "colourfulness_limit": COLOURFULNESS_LIMIT,
            "external_cxr_rejection": ext,
            "feature": "global average pool of the last feature map (classifier input)"
            + (f"; of the first of the {cfg.members} ensemble members" if columns else ""),
            "backend": getattr(backend, "name", "?"),
        }
    )
    det.save(d)
    refreshed = ModelBundle.load(d)
    if (d / README_FILE).is_file() and refreshed.evaluation is not None:
        write_card(refreshed)
    return dict(det.info, threshold=det.threshold)

"""Decoded-image cache: decode and resize every image once.

JPEG decoding and resizing cost more than a small CNN's forward pass on two
CPU cores, so each dataset is decoded once per image size into one ``uint8``
array on disk (``.npy``, memory-mapped on later runs). The cache key covers
the file paths, their sizes and modification times and the image size, so
an edited dataset is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxrtriage.data.io import ImageReadError, read_image

__all__ = ["CachedImages", "load_cached", "resize_gray", "default_cache_dir"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Cache folder: ``$CXRTRIAGE_CACHE`` or ``~/.cache/cxrtriage``."""
    return Path(os.environ.get("CXRTRIAGE_CACHE", Path.home() / ".cache" / "cxrtriage"))


def resize_gray(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a grayscale image to ``size x size`` (aspect ratio not kept).

    Squashing matches the Kermany 224 px release, whose images were resized
    without keeping the aspect ratio. PIL's bilinear filter antialiases when
    shrinking.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8`` array ``(H, W)``.
    size : int
        Output side in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array ``(size, size)``.
    """
    if img.shape == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


@dataclass
class CachedImages:
    """Decoded images of a list of paths.

    Attributes
    ----------
    images : numpy.ndarray
        ``uint8`` array ``(N_ok, size, size)`` of the readable images.
    index : numpy.ndarray
        ``int64`` array ``(N_ok,)``: position of each row in the input path list.
    failures : list of (str, str)
        ``(path, reason)`` for every file that could not be read; they are
        skipped, never fatal.
    """

    images: np.ndarray
    index: np.ndarray
    failures: list[tuple[str, str]]


def _key(paths: Sequence[str], size: int) -> str:
    h = hashlib.sha1(f"v1|{size}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"|{p}|missing".encode())
    return h.hexdigest()[:20]


def _decode(path: str, size: int) -> np.ndarray | str:
    try:
        return resize_gray(read_image(path), size)
    except ImageReadError as exc:
        return exc.reason


def load_cached(
    paths: Sequence[str], size: int, cache_dir: str | Path | None = None, workers: int = 2, progress: bool = False
) -> CachedImages:
    """Decode and resize images once, then reuse the cached array.

    Parameters
    ----------
    paths : sequence of str
        Image files.
    size : int
        Square output size in pixels.
    cache_dir : path, optional
        Where the ``.npy`` cache lives (default :func:`default_cache_dir`);
        ``False``-y string ``""`` is not accepted, pass ``None`` for the default.
    workers : int
        Decoding threads.
    progress : bool
        Show a tqdm progress bar while decoding.

    Returns
    -------
    CachedImages
        Unreadable files are listed in ``failures`` (and logged), not raised.
    """
    cdir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = _key(paths, size)
    arr_path, meta_path = cdir / f"{key}.npy", cdir / f"{key}.json"
    if arr_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(arr_path, mmap_mode="r")
            failures = [tuple(f) for f in meta["failures"]]
            for path, reason in failures:
                log.warning("skipped unreadable image %s: %s", path, reason)
            return CachedImages(images, np.asarray(meta["index"], dtype=np.int64), failures)
        except (OSError, ValueError, KeyError):
            log.warning("cache %s unreadable; decoding again", arr_path)
    results: list[np.ndarray | str]

    def iterator(it: Iterable[Any]) -> Iterable[Any]:
        return it

    if progress:
        from tqdm import tqdm

        iterator = lambda it: tqdm(it, total=len(paths), desc=f"decode {size}px", unit="img")  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(iterator(pool.map(lambda p: _decode(p, size), paths)))
    ok = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    failures = [(paths[i], r) for i, r in enumerate(results) if isinstance(r, str)]
    for path, reason in failures:
        log.warning("skipped unreadable image %s: %s", path, reason)
    images = np.stack([results[i] for i in ok]) if ok else np.zeros((0, size, size), np.uint8)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = arr_path.with_suffix(".tmp.npy")
        np.save(tmp, images)
        os.replace(tmp, arr_path)
        meta_path.write_text(json.dumps({"size": size, "n": len(paths), "index": ok, "failures": failures}))
    except OSError as exc:
        log.warning("could not write image cache %s (%s); continuing without it", cdir, exc)
    return CachedImages(images, np.asarray(ok, dtype=np.int64), failures)

"""Duplicate images within and across datasets, and leak-free split groups.

Public chest X-ray collections reuse each other's images: 1337 of the 1338
"Viral Pneumonia" images of the COVID-19 Radiography Database are Kermany et
al. (2018) training images, re-encoded at another size. File hashes
(``sha256`` in the manifests) do not match across such copies, so duplicates
are found from the decoded pixels:

* an exact content hash (SHA-1 of the image decoded and resized to 64 x 64);
* a difference hash (dHash; N. Krawetz, "Kind of like that", The Hacker
  Factor blog, 2013): the sign of horizontal intensity differences on a
  ``(h, h + 1)`` thumbnail, ``h * h`` bits, compared by Hamming distance.
  It survives resizing, re-encoding and monotone intensity changes.

:func:`leak_free_groups` turns patient ids and duplicate pairs into one group
id per image (union-find), so a grouped K-fold (scikit-learn
``StratifiedGroupKFold``) puts every copy of an image, and every image of a
patient, in the same fold. Images of *reference* datasets (not used for
training, e.g. the Kermany set next to the COVID set) pass their patient ids
on to their copies: the COVID set has no patient ids, but its Kermany copies
do.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxrtriage.data.cache import load_cached
from cxrtriage.data.discover import DatasetError, Sample
from cxrtriage.data.io import IMAGE_SUFFIXES
from cxrtriage.data.patients import patient_id_from_filename

__all__ = [
    "HASH_SIZE",
    "DEFAULT_MAX_DISTANCE",
    "dhash",
    "content_hash",
    "image_hashes",
    "duplicate_pairs",
    "list_images",
    "leak_free_groups",
    "GroupReport",
]

#: dHash side: ``HASH_SIZE**2`` = 256 bits per image.
HASH_SIZE = 16

#: Largest Hamming distance (of 256 bits) still called a duplicate. On the
#: documented overlap (``kermany_duplicate`` column of the COVID set) all 1337
#: copies are within 10 bits (median 1), unrelated pairs mostly above 12; see
#: ``tests/test_dedupe.py``.
DEFAULT_MAX_DISTANCE = 10

_THUMB = 64  # side of the decoded thumbnail both hashes are computed from


def dhash(img: np.ndarray, hash_size: int = HASH_SIZE) -> np.ndarray:
    """Difference hash of one grayscale image.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8`` array ``(H, W)``, any size.
    hash_size : int
        The thumbnail is ``hash_size`` rows by ``hash_size + 1`` columns.

    Returns
    -------
    numpy.ndarray
        ``bool`` array ``(hash_size * hash_size,)``: pixel brighter than its
        right neighbour. Source: Krawetz 2013 (module docstring).
    """
    thumb = np.asarray(
        Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((hash_size + 1, hash_size), Image.Resampling.BILINEAR),
        dtype=np.int16,
    )
    return (thumb[:, :-1] > thumb[:, 1:]).ravel()


def content_hash(img: np.ndarray) -> str:
    """Exact content hash: SHA-1 hex digest of the ``uint8`` pixels and their shape.

    Equal for images whose decoded (and equally resized) pixels are identical,
    whatever the file format or name.
    """
    a = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    return hashlib.sha1(f"{a.shape}".encode() + a.tobytes()).hexdigest()


@dataclass
class ImageHashes:
    """Hashes of a list of image files.

    Attributes
    ----------
    bits : numpy.ndarray
        ``uint64`` array ``(N, HASH_SIZE**2 // 64)``: packed dHash per readable image.
    exact : list of str
        :func:`content_hash` of the 64 x 64 thumbnail per readable image.
    index : numpy.ndarray
        ``int64`` ``(N,)``: position of each row in the input path list.
    failures : list of (path, reason)
    """

    bits: np.ndarray
    exact: list[str]
    index: np.ndarray
    failures: list = field(default_factory=list)


def image_hashes(paths: Sequence[str], cache_dir: str | Path | None = None, progress: bool = False) -> ImageHashes:
    """Decode ``paths`` (through the 64-px decoded-image cache) and hash them.

    Parameters
    ----------
    paths : sequence of str
        Image files; unreadable ones are reported in ``failures`` and skipped.
    cache_dir : path, optional
        Decoded-image cache folder (see :func:`cxrtriage.data.cache.load_cached`).
    progress : bool

    Returns
    -------
    ImageHashes
    """
    cached = load_cached(list(paths), _THUMB, cache_dir, progress=progress)
    bits = np.stack([dhash(im) for im in cached.images]) if len(cached.images) else np.zeros((0, HASH_SIZE**2), bool)
    packed = np.packbits(bits, axis=1)  # (N, 32) uint8
    packed = packed.view(">u8").astype(np.uint64) if len(packed) else np.zeros((0, HASH_SIZE**2 // 64), np.uint64)
    exact = [content_hash(im) for im in cached.images]
    return ImageHashes(packed, exact, cached.index, list(cached.failures))


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits summed over the last axis of a ``uint64`` array (NumPy >= 2 fast path, else a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(axis=-1)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    as_bytes = np.ascontiguousarray(x).view(np.uint8)
    return table[as_bytes].reshape(*x.shape[:-1], -1).sum(axis=-1)


def duplicate_pairs(
    a: ImageHashes, b: ImageHashes | None = None, max_distance: int = DEFAULT_MAX_DISTANCE, chunk: int = 512
) -> list[tuple[int, int, int]]:
    """Pairs of duplicate images, by exact content hash or dHash distance.

    Parameters
    ----------
    a : ImageHashes
    b : ImageHashes, optional
        Second set; ``None`` compares ``a`` with itself (each pair once).
    max_distance : int
        Largest dHash Hamming distance (0-256) called a duplicate.
    chunk : int
        Rows of ``a`` compared at once (memory: ``chunk * len(b) * 32`` bytes).

    Returns
    -------
    list of (i, j, distance)
        ``i``, ``j`` are positions in the *input path lists* (``a.index``,
        ``b.index``); ``distance`` is the Hamming distance (0 for exact copies).
    """
    same = b is None
    b = a if b is None else b
    out: dict[tuple[int, int], int] = {}
    for start in range(0, len(a.bits), chunk):
        block = a.bits[start : start + chunk]
        dist = _popcount(block[:, None, :] ^ b.bits[None, :, :])
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip((ii + start).tolist(), jj.tolist(), strict=True):
            if same and j <= i:
                continue
            out[(int(a.index[i]), int(b.index[j]))] = int(dist[i - start, j])
    by_hash: dict[str, list[int]] = {}
    for j, h in enumerate(b.exact):
        by_hash.setdefault(h, []).append(j)
    for i, h in enumerate(a.exact):
        for j in by_hash.get(h, []):
            if same and j <= i:
                continue
            out[(int(a.index[i]), int(b.index[j]))] = 0
    return sorted((i, j, d) for (i, j), d in out.items())


def list_images(data: str | Path) -> list[tuple[str, str]]:
    """All images of a dataset with their patient ids, whatever their label.

    Parameters
    ----------
    data : path
        A folder (ImageFolder layout or with ``manifest.csv``) or a manifest CSV.

    Returns
    -------
    list of (absolute path, patient id)
        Patient id from the manifest, else from the file name
        (:func:`cxrtriage.data.patients.patient_id_from_filename`).

    Raises
    ------
    DatasetError
        ``data`` does not exist or holds no image.
    """
    loc = Path(data)
    manifest = loc if loc.is_file() else loc / "manifest.csv"
    out = []
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                rel = (row.get("path") or "").strip()
                if rel:
                    pid = (row.get("patient_id") or "").strip() or patient_id_from_filename(rel)
                    out.append((str((manifest.parent / rel).resolve()), pid))
    elif loc.is_dir():
        for p in sorted(q for q in loc.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()):
            out.append((str(p.resolve()), patient_id_from_filename(p)))
    if not out:
        raise DatasetError(f"{loc}: no images found")
    return out


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, x: Hashable, y: Hashable) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry, key=str)] = min(rx, ry, key=str)


@dataclass
class GroupReport:
    """What :func:`leak_free_groups` found.

    Attributes
    ----------
    n_images : int
        Samples grouped.
    n_patients : int
        Distinct (dataset, patient id) pairs among the samples.
    n_groups : int
        Distinct groups after merging duplicates.
    within_pairs : int
        Duplicate pairs among the samples.
    reference_pairs : dict str -> int
        Duplicate pairs between the samples and each reference dataset.
    samples_with_reference_copy : int
        Samples that have a copy in a reference dataset.
    largest_group : int
        Images in the largest group.
    examples : list of (str, str, int)
        Up to 20 duplicate pairs (path, path, dHash distance).
    """

    n_images: int
    n_patients: int
    n_groups: int
    within_pairs: int
    reference_pairs: dict
    samples_with_reference_copy: int
    largest_group: int
    examples: list

    def to_dict(self) -> dict:
        """JSON-serialisable ``dict``."""
        return dict(self.__dict__)


def dataset_tag(data: str | Path) -> str:
    """Short name of a dataset location (its folder name), used to namespace patient ids."""
    p = Path(data).resolve()
    return p.parent.name if p.is_file() else p.name


def unique_dataset_names(datasets: Sequence[str | Path]) -> list[str]:
    """Short unique names of dataset locations: :func:`dataset_tag` (a manifest's folder), ``-2``, ``-3``... on clashes.

    Parameters
    ----------
    datasets : sequence of paths
        Dataset folders or manifests.

    Returns
    -------
    list of str
        Same length and order as ``datasets``; no two equal.
    """
    names: list[str] = []
    for d in datasets:
        p = Path(d)
        base = (p.resolve().parent.name if p.suffix.lower() == ".csv" else dataset_tag(d)) or "dataset"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def leak_free_groups(
    samples: Sequence[Sample],
    tags: Sequence[str] | None = None,
    references: dict[str, list[tuple[str, str]]] | None = None,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[list[str], GroupReport]:
    """One group id per sample such that no patient and no image copy spans two groups.

    Union-find over: each sample with its ``(dataset tag, patient id)``;
    duplicate pairs among the samples; each sample with the patient of its
    copies in the reference datasets (and so with every other sample that
    has a copy of an image of that patient).

    Parameters
    ----------
    samples : sequence of Sample, length N
    tags : sequence of str, length N, optional
        Dataset of each sample (patient ids are only unique within a
        dataset); default: one dataset.
    references : dict tag -> list of (path, patient id), optional
        Other datasets (from :func:`list_images`) whose copies link samples.
    max_distance : int
        dHash Hamming threshold (see :func:`duplicate_pairs`).
    cache_dir : path, optional
    progress : bool

    Returns
    -------
    (groups, report)
        ``groups``: list of N strings for ``StratifiedGroupKFold``;
        ``report``: :class:`GroupReport`.
    """
    n = len(samples)
    tags = list(tags) if tags is not None else [""] * n
    uf = _UnionFind()
    for i, s in enumerate(samples):
        uf.union(("s", i), ("p", tags[i], s.patient_id))
    hashes = image_hashes([s.path for s in samples], cache_dir, progress)
    within = duplicate_pairs(hashes, None, max_distance)
    for i, j, _ in within:
        uf.union(("s", i), ("s", j))
    examples = [(samples[i].path, samples[j].path, d) for i, j, d in within[:10]]
    ref_counts: dict[str, int] = {}
    linked: set[int] = set()
    for rtag, items in (references or {}).items():
        rh = image_hashes([p for p, _ in items], cache_dir, progress)
        pairs = duplicate_pairs(hashes, rh, max_distance)
        own = {s.path for s in samples}
        pairs = [(i, j, d) for i, j, d in pairs if items[j][0] not in own]
        ref_counts[rtag] = len(pairs)
        for i, j, _d in pairs:
            uf.union(("s", i), ("p", "ref:" + rtag, items[j][1]))
            linked.add(i)
        examples += [(samples[i].path, items[j][0], d) for i, j, d in pairs[:10]]
    roots = [uf.find(("s", i)) for i in range(n)]
    names: dict = {}
    groups = [names.setdefault(r, f"g{len(names)}") for r in roots]
    sizes = np.unique(groups, return_counts=True)[1] if n else np.array([0])
    report = GroupReport(
        n_images=n,
        n_patients=len({(tags[i], s.patient_id) for i, s in enumerate(samples)}),
        n_groups=len(names),
        within_pairs=len(within),
        reference_pairs=ref_counts,
        samples_with_reference_copy=len(linked),
        largest_group=int(sizes.max()),
        examples=[list(e) for e in examples[:20]],
    )
    return groups, report

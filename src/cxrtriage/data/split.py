"""Patient-level, stratified, seeded splits.

All images of one patient land on the same side of every split, so the
validation figures are not inflated by near-identical studies of a patient
seen in training. Built on scikit-learn's ``StratifiedGroupKFold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrtriage.data.discover import DatasetError, Sample

__all__ = [
    "patient_kfold",
    "patient_train_val_split",
    "train_val_from_samples",
    "dataset_root",
    "resolve_dataset_path",
    "recorded_validation_paths",
]


def patient_kfold(
    targets: np.ndarray | Sequence[int], groups: np.ndarray | Sequence[str], n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, patient-grouped K-fold indices.

    Parameters
    ----------
    targets : sequence of int, length N
        Class index per image.
    groups : sequence of str, length N
        Patient (or duplicate-group) identifier per image.
    n_splits : int
        Number of folds K (>= 2).
    seed : int
        Shuffling seed; the same seed gives the same folds.

    Returns
    -------
    list of (train_idx, val_idx)
        K pairs of ``int64`` index arrays; every group is in exactly one
        validation fold.

    Raises
    ------
    DatasetError
        Fewer patients than folds.
    """
    y = np.asarray(targets)
    g = np.asarray(groups)
    if len(np.unique(g)) < n_splits:
        raise DatasetError(f"only {len(np.unique(g))} patients for {n_splits} folds")
    from sklearn.model_selection import StratifiedGroupKFold  # here: importing cxrtriage.data stays light

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(tr.astype(np.int64), va.astype(np.int64)) for tr, va in cv.split(np.zeros(len(y)), y, g)]


def patient_train_val_split(
    targets: np.ndarray | Sequence[int],
    groups: np.ndarray | Sequence[str],
    val_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a patient-level, stratified validation split.

    Uses one fold of a ``round(1 / val_fraction)``-fold stratified group split,
    so the validation share is close to (not exactly) ``val_fraction``.

    Parameters
    ----------
    targets, groups : sequences of length N
        Class index and patient identifier per image.
    val_fraction : float in (0, 0.5]
        Wanted share of images in validation.
    seed : int
        Split seed (recorded in model cards).

    Returns
    -------
    (train_idx, val_idx) : tuple of int64 arrays
    """
    if not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
    k = max(2, int(round(1.0 / val_fraction)))
    return patient_kfold(targets, groups, k, seed)[0]


def train_val_from_samples(
    samples: Sequence[Sample], val_fraction: float = 0.15, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split a dataset into training and validation samples.

    Rules: images of split ``test`` are never used. If the dataset has a
    ``val`` split, it is the validation set and ``train`` (or unsplit) images
    train. Otherwise a patient-level stratified validation split is carved
    from the training images with :func:`patient_train_val_split`.

    Returns
    -------
    (train_samples, val_samples) : tuple of lists
    """
    pool = [s for s in samples if s.split != "test"]
    given_val = [s for s in pool if s.split == "val"]
    if given_val and len({s.target for s in given_val}) > 1:
        return [s for s in pool if s.split != "val"], given_val
    tr, va = patient_train_val_split([s.target for s in pool], [s.patient_id for s in pool], val_fraction, seed)
    return [pool[i] for i in tr], [pool[i] for i in va]


def dataset_root(data: str | Path) -> Path:
    """Absolute folder that image paths of a dataset are recorded relative to:
    the dataset folder, or the folder of a manifest CSV."""
    root = Path(data).resolve()
    return root.parent if root.is_file() else root


def resolve_dataset_path(data: str | Path, model_dir: str | Path) -> str:
    """A dataset path from a model folder's training record, made usable from here.

    Returned as is when absolute or existing; else looked up relative to each
    parent folder of ``model_dir`` (records written from the repository root
    hold paths such as ``../shared/data/...``).
    """
    p = Path(data)
    if p.is_absolute() or p.exists():
        return str(p)
    for base in Path(model_dir).resolve().parents:
        if (base / p).exists():
            return str(base / p)
    return str(p)


def recorded_validation_paths(
    model_dir: str | Path,
    recorded_data: str | None,
    val_paths_relative: Sequence[str] | None,
    data: str | Path | None = None,
) -> tuple[str, list[str]]:
    """The validation images a model folder was trained with, as absolute paths.

    Parameters
    ----------
    model_dir : path
        The model folder (a recorded relative dataset location is resolved against it and its parents).
    recorded_data : str or None
        Dataset location recorded at training time (the bundle's ``split.data``).
    val_paths_relative : sequence of str or None
        Validation images relative to the dataset root (the bundle's ``split.val_paths_relative``);
        ``None``: the folder records no split.
    data : path, optional
        Where the dataset is now (overrides the recorded location).

    Returns
    -------
    (data, paths)
        The dataset path and the validation image paths, absolute (joined to
        :func:`dataset_root` of ``data``, so a model folder keeps working when the dataset moves).

    Raises
    ------
    FileNotFoundError
        No split recorded, or no dataset location recorded or given.
    ValueError
        The split lists no validation images.
    """
    d = Path(model_dir)
    if val_paths_relative is None:
        raise FileNotFoundError(f"{d}: no validation split recorded in bundle.json (needed for the validation images)")
    if data is None:
        if not recorded_data:
            raise FileNotFoundError(f"{d}: no dataset location recorded; pass the dataset (--data)")
        data = resolve_dataset_path(recorded_data, d)
    root = dataset_root(data)
    paths = [str((root / p).resolve()) for p in val_paths_relative]
    if not paths:
        raise ValueError(f"{d}: no validation images listed in bundle.json")
    return str(data), paths

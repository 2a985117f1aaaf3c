"""``cxr cv``: stratified, patient- and duplicate-grouped K-fold cross-validation.

Protocol (one architecture, one task):

1. All non-test images of the given dataset(s) form the pool. Each image gets
   a group id that joins images of one patient and every copy of an image
   (within the pool or via a linked reference dataset),
   :func:`cxrtriage.data.dedupe.leak_free_groups`.
2. The pool is split into K folds with scikit-learn's ``StratifiedGroupKFold``
   (class ratios kept, no group in two folds).
3. For fold k, the other K - 1 folds are split again, by group, into an inner
   training part and an inner validation part (``inner_val_fraction``).
   The model is trained on the inner training part; the best epoch, the
   decision threshold (``threshold_rule``) and the temperature
   (Guo et al. 2017) are chosen on the inner validation part only. Fold k is
   predicted once and never used for any choice, so every reported number is
   out-of-sample.
4. Per-fold metrics, their mean and sample SD over folds, and metrics of the
   pooled out-of-fold predictions with 95 % bootstrap intervals are written
   as JSON, CSV and Markdown, with the budget (images, size, epochs, wall time).

Leave-one-group-out (``group_by``, e.g. a manifest column ``source`` or the
built-in ``dataset``): scikit-learn ``LeaveOneGroupOut`` replaces step 2, one
fold per value, named in the per-fold table; each fold trains on all other
values and is scored on the held-out one (out-of-source validation). A patient
or duplicate group (step 1) may span two values (e.g. a COVID-19 image found
in two collections). Such a group is never split across training and
held-out images: when its value is held out, its images on the training side
are dropped from that fold's training (counted as ``n_dropped_leaking``), so
the held-out set stays complete and nothing of it is trained on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cxrtriage.cards.tables import fmt, markdown_table, write_csv, write_json
from cxrtriage.config import TrainConfig
from cxrtriage.data.cache import load_cached
from cxrtriage.data.dedupe import (
    DEFAULT_MAX_DISTANCE,
    dataset_tag,
    leak_free_groups,
    list_images,
    unique_dataset_names,
)
from cxrtriage.data.discover import DatasetError, Sample, discover
from cxrtriage.data.split import patient_kfold
from cxrtriage.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    softmax,
    summary_from_probs,
)
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.decision import decide_indices
from cxrtriage.metrics.operating_point import choose_threshold
from cxrtriage.metrics.report import MetricReport, format_estimate
from cxrtriage.models.registry import model_entry
from cxrtriage.tasks import TaskSpec, get_task

__all__ = [
    "CVDataset",
    "build_cv_dataset",
    "assign_folds",
    "group_values",
    "leave_one_group_out",
    "inner_split",
    "run_cv",
    "headline_metrics",
    "format_mean_sd",
]

log = logging.getLogger(__name__)


@dataclass
class CVDataset:
    """The pool of a cross-validation run.

    Attributes
    ----------
    samples : list of Sample, length N
    tags : list of str, length N
        Dataset (folder name) of each sample.
    groups : list of str, length N
        Leak-free group id per sample (patients + duplicates merged).
    dedupe : dict or None
        :class:`cxrtriage.data.dedupe.GroupReport` as a dict (``None`` when
        de-duplication was switched off).
    sources : list of str
        The dataset locations.
    origins : list of str, length N
        Unique name of the dataset each sample came from
        (:func:`cxrtriage.data.dedupe.unique_dataset_names` of ``sources``); the
        pseudo-column ``dataset`` of :func:`group_values`.
    """

    samples: list[Sample]
    tags: list[str]
    groups: list[str]
    dedupe: dict | None
    sources: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    @property
    def targets(self) -> np.ndarray:
        """``int64 (N,)`` class index per sample."""
        return np.array([s.target for s in self.samples], dtype=np.int64)


def build_cv_dataset(
    data: Sequence[str | Path],
    task: TaskSpec,
    link: Sequence[str | Path] = (),
    dedupe: bool = True,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    include_test: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> CVDataset:
    """Collect the pool and its leak-free groups.

    Parameters
    ----------
    data : sequence of paths
        One or more datasets (folders or manifests); their images are pooled.
    task : TaskSpec
    link : sequence of paths
        Reference datasets not trained on, whose patient ids pass to copies of
        their images in the pool (e.g. the Kermany set for the COVID set).
    dedupe : bool
        Detect duplicates by content hash (otherwise groups = patients).
    max_distance : int
        dHash Hamming threshold.
    include_test : bool
        Keep images of split ``test`` (left out by default: held-out test
        sets are not touched by cross-validation).
    cache_dir : path, optional
    progress : bool

    Returns
    -------
    CVDataset

    Raises
    ------
    DatasetError
        No images.
    """
    samples: list[Sample] = []
    tags: list[str] = []
    origins: list[str] = []
    for d, name in zip(data, unique_dataset_names(data)):
        found = discover(d, task)
        if not include_test:
            found = [s for s in found if s.split != "test"]
        samples += found
        tags += [dataset_tag(d)] * len(found)
        origins += [name] * len(found)
    if not samples:
        raise DatasetError(f"no non-test images of task {task.name!r} in {', '.join(map(str, data))}")
    if dedupe:
        refs = {dataset_tag(r): list_images(r) for r in link}
        groups, report = leak_free_groups(samples, tags, refs, max_distance, cache_dir, progress)
        rep = report.to_dict()
        rep["max_distance"] = max_distance
    else:
        groups = [f"{t}:{s.patient_id}" for t, s in zip(tags, samples)]
        rep = None
    return CVDataset(samples, tags, groups, rep, [str(d) for d in data], origins)


def group_values(ds: CVDataset, column: str) -> list[str]:
    """Value of a grouping column per sample, for leave-one-group-out folds.

    Parameters
    ----------
    ds : CVDataset
    column : str
        ``dataset`` (built in: the dataset each image came from, :attr:`CVDataset.origins`),
        ``split``, ``patient_id`` or any other manifest column (:attr:`Sample.extra`).

    Returns
    -------
    list of str, length N

    Raises
    ------
    DatasetError
        Images without a value in ``column``; the message names the dataset(s),
        the column and an example image.
    """
    if column == "dataset":
        return list(ds.origins) if ds.origins else list(ds.tags)
    values, missing = [], []
    for i, s in enumerate(ds.samples):
        if column == "split":
            v = s.split or ""
        elif column == "patient_id":
            v = s.patient_id or ""
        else:
            v = str(s.extra.get(column) or "")
        v = v.strip()
        if not v:
            missing.append(i)
        values.append(v)
    if missing:
        names = sorted({ds.origins[i] if ds.origins else ds.tags[i] for i in missing})
        raise DatasetError(
            f"{', '.join(names)}: {len(missing)} image(s) have no value in column {column!r} "
            f"(e.g. {ds.samples[missing[0]].path}); --group-by needs a manifest column filled for every image, "
            "or the built-in 'dataset'"
        )
    return values


def leave_one_group_out(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Fold number per image, one fold per distinct value (scikit-learn ``LeaveOneGroupOut``).

    Parameters
    ----------
    values : sequence of str, length N
        Grouping value per image (:func:`group_values`).

    Returns
    -------
    (fold, names)
        ``fold``: ``int64 (N,)`` in ``[0, G)``; ``names[g]``: the value held out in fold ``g``
        (sorted order).

    Raises
    ------
    DatasetError
        Fewer than two distinct values.
    """
    from sklearn.model_selection import LeaveOneGroupOut

    v = np.asarray(values, dtype=object)
    distinct = sorted(set(values))
    if len(distinct) < 2:
        raise DatasetError(
            f"leave-one-group-out needs at least 2 distinct values, got {len(distinct)} ({', '.join(distinct)})"
        )
    fold = np.full(len(v), -1, dtype=np.int64)
    names: list[str] = []
    logo = LeaveOneGroupOut()
    for i, (_, te) in enumerate(logo.split(np.zeros((len(v), 1)), groups=v)):
        fold[te] = i
        names.append(str(v[te[0]]))
    return fold, names


def assign_folds(targets: Sequence[int], groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold number per image from a stratified group K-fold.

    Parameters
    ----------
    targets : sequence of int, length N
    groups : sequence of str, length N
    k : int
        Folds (>= 2).
    seed : int

    Returns
    -------
    numpy.ndarray
        ``int64 (N,)`` in ``[0, k)``; all images of one group share a fold.
        Source: scikit-learn ``StratifiedGroupKFold`` via
        :func:`cxrtriage.data.split.patient_kfold`.
    """
    fold = np.full(len(targets), -1, dtype=np.int64)
    for i, (_, va) in enumerate(patient_kfold(targets, groups, k, seed)):
        fold[va] = i
    return fold


def inner_split(
    idx: np.ndarray, targets: np.ndarray, groups: np.ndarray | Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split the training folds ``idx`` into inner training / validation by group.

    One fold of a ``round(1 / val_fraction)``-fold stratified group split
    (fewer folds when there are fewer groups), like
    :func:`cxrtriage.data.split.patient_train_val_split`.

    Returns
    -------
    (inner_train_idx, inner_val_idx) : int64 arrays, subsets of ``idx``.
    """
    if not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"inner validation fraction must be in (0, 0.5], got {val_fraction}")
    g = np.asarray(groups)[idx]
    n_groups = len(np.unique(g))
    if n_groups < 2:
        raise DatasetError(f"only {n_groups} patient group(s) in the training folds; need at least 2")
    kk = max(2, min(int(round(1.0 / val_fraction)), n_groups))
    tr, va = patient_kfold(np.asarray(targets)[idx], g, kk, seed)[0]
    return idx[tr], idx[va]


def headline_metrics(task: TaskSpec) -> list[str]:
    """Metric names shown in tables for ``task``.

    Names of :data:`cxrtriage.metrics.report.METRIC_NAMES` (multi-class ``auroc``,
    ``ppv``, ``f1`` are macro averages over the classes present), plus per-class
    ``sensitivity_<class>`` for multi-class tasks (:meth:`MetricReport.lookup`).
    """
    if task.is_binary:
        return ["auroc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy"]
    return ["auroc", "macro_sensitivity", "ppv", "f1", "accuracy"] + [f"sensitivity_{c}" for c in task.classes]


def format_mean_sd(mean: float | None, sd: float | None) -> str:
    """``"0.912 ± 0.013"`` (``–`` when undefined)."""
    if mean is None:
        return "–"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"


def _subset_idx(idx: np.ndarray, targets: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Same stratified subset as the trainer's ``max_train_images`` (for the frozen head)."""
    if not n or n >= len(idx):
        return idx
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(list(range(len(idx))), train_size=n, random_state=seed, stratify=targets[idx])
    return idx[np.sort(keep)]


def _fold_finetune(
    cfg: TrainConfig,
    fold_dir: Path,
    ds: CVDataset,
    tr: np.ndarray,
    iv: np.ndarray,
    pool_images: np.ndarray,
    row_of: np.ndarray,
    progress: bool,
) -> dict:
    from cxrtriage.inference.backend import TorchBackend, config_batches
    from cxrtriage.models.bundle import ModelBundle
    from cxrtriage.training.trainer import train

    fcfg = replace(cfg, out=str(fold_dir))
    res = train(fcfg, progress=progress, split=([ds.samples[i] for i in tr], [ds.samples[i] for i in iv]))
    bundle = ModelBundle.load(fold_dir)
    model, mcfg = bundle.load_model(), bundle.config
    if bundle.split is None:
        raise ValueError(f"{fold_dir}: the trained fold model has no split section")
    shutil.rmtree(fold_dir / "checkpoints", ignore_errors=True)

    backend = TorchBackend(model, mcfg, threads=None)

    def logits(idx: np.ndarray) -> np.ndarray:
        return backend.run(config_batches(pool_images[row_of[idx]], mcfg, 64))[0]

    return {
        "logits": logits,
        "threshold": mcfg.threshold,
        "n_train": bundle.split.n_train,
        "best_epoch": res.best_epoch,
        "train_seconds": res.wall_seconds,
    }


def run_cv(
    ds: CVDataset,
    cfg: TrainConfig,
    out: str | Path,
    k: int = 4,
    seed: int = 0,
    inner_val_fraction: float = 0.15,
    frozen: bool = False,
    n_boot: int = 1000,
    progress: bool = False,
    command: str | None = None,
    label: str | None = None,
    group_by: str | None = None,
) -> dict:
    """Cross-validate one architecture on a pool.

    Parameters
    ----------
    ds : CVDataset
    cfg : TrainConfig
        Training settings (``arch``, ``task``, ``image_size``, ``epochs``,
        ``max_train_images``, ``threshold_rule``...). ``out`` is replaced per fold.
    out : path
        Output folder: ``cv.json``, ``cv_folds.csv``, ``cv_summary.csv`` (mean, SD, pooled CI per metric), ``cv.md``, ``oof.csv``,
        ``folds.csv``, ``fold<k>/`` models.
    k : int
        Folds.
    seed : int
        Fold and inner-split seed (same seed = same folds for every architecture).
    inner_val_fraction : float
        Share of the training folds used for epoch, threshold and temperature choice.
    frozen : bool
        Frozen pretrained backbone + logistic-regression head (:mod:`.frozen`).
    n_boot : int
        Bootstrap replicates for the pooled intervals.
    progress : bool
    command : str, optional
        The command line, recorded beside the tables.
    label : str, optional
        Row name (default: the architecture, ``+ " (frozen)"``).
    group_by : str, optional
        Leave-one-group-out instead of K folds: one fold per value of this column
        (:func:`group_values`; ``dataset`` = the dataset of each image); ``k`` is then ignored.
        Rows name the held-out value (``held_out``); training images whose leak-free group
        also occurs in the held-out value are dropped from that fold (``n_dropped_leaking``).

    Returns
    -------
    dict
        The content of ``cv.json``: ``folds`` (per-fold rows), ``summary``
        (mean/SD per metric), ``pooled`` (bootstrap intervals), ``calibration``,
        ``budget``, ``protocol``, ``dedupe``.

    Raises
    ------
    ValueError, DatasetError
        Bad settings, too few groups for ``k`` folds.
    """
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(cfg.task)
    label = label or (f"{cfg.arch} (frozen)" if frozen else cfg.arch)
    if frozen and not model_entry(cfg.arch).has_pretrained:
        from cxrtriage.experiments.frozen import FrozenBackboneError

        raise FrozenBackboneError(
            f"{cfg.arch}: frozen backbone needs pretrained weights; a random frozen backbone is meaningless"
        )
    pool = load_cached([s.path for s in ds.samples], cfg.image_size, cfg.cache_dir, progress=progress)
    for path, reason in pool.failures:
        print(f"skipped {path}: {reason}")
    keep = pool.index  # samples with a readable image
    row_of = np.full(len(ds.samples), -1, dtype=np.int64)
    row_of[keep] = np.arange(len(keep))
    y_all = ds.targets
    groups = np.asarray(ds.groups)
    fold_of = np.full(len(ds.samples), -1, dtype=np.int64)
    held_names: list[str] | None = None
    if group_by:
        values = np.asarray(group_values(ds, group_by), dtype=object)
        fold_of[keep], held_names = leave_one_group_out(list(values[keep]))
        k = len(held_names)
    else:
        fold_of[keep] = assign_folds(y_all[keep], groups[keep], k, seed)
    write_csv(
        [
            {"path": s.path, "label": s.label, "dataset": t, "group": g, "fold": int(f)}
            | ({"held_out": held_names[f] if f >= 0 else ""} if held_names is not None else {})
            for s, t, g, f in zip(ds.samples, ds.tags, ds.groups, fold_of)
        ],
        out / "folds.csv",
    )
    feats = None
    if frozen:
        import hashlib

        from cxrtriage.experiments.frozen import pooled_features

        key = hashlib.sha1("|".join(ds.samples[i].path for i in keep).encode()).hexdigest()
        tf = time.time()
        feats = pooled_features(cfg.arch, pool.images, cfg.image_size, cfg.intensity, key)
        feature_seconds = time.time() - tf

    n, kc = len(ds.samples), task.num_classes
    oof_logits = np.full((n, kc), np.nan)
    oof_cal = np.full((n, kc), np.nan)
    oof_pred = np.full(n, -1, dtype=np.int64)
    rows = []
    for f in range(k):
        tf = time.time()
        outer = np.nonzero(fold_of == f)[0]
        rest = np.nonzero((fold_of >= 0) & (fold_of != f))[0]
        n_leak = 0
        if held_names is not None:  # a patient/duplicate group never straddles training and held-out images
            leaking = np.isin(groups[rest], np.unique(groups[outer]))
            n_leak = int(leaking.sum())
            rest = rest[~leaking]
        tr, iv = inner_split(rest, y_all, groups, inner_val_fraction, seed)
        fold_dir = out / f"fold{f}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        cached = fold_dir / "fold_result.npz"
        threshold: float | None
        if cached.exists():
            z = np.load(cached)
            iv_logits, outer_logits, threshold = z["inner_logits"], z["outer_logits"], float(z["threshold"])
            threshold = None if np.isnan(threshold) else threshold
            info = json.loads((fold_dir / "fold_info.json").read_text())
        else:
            if frozen:
                from cxrtriage.experiments.frozen import fit_linear_head, head_logits

                if feats is None:  # computed above whenever frozen
                    raise RuntimeError("frozen cross-validation: pooled features were not computed")

                trs = _subset_idx(tr, y_all, cfg.max_train_images, cfg.seed)
                clf, c = fit_linear_head(feats[row_of[trs]], y_all[trs], feats[row_of[iv]], y_all[iv], seed=cfg.seed)
                iv_logits = head_logits(clf, feats[row_of[iv]], kc)
                outer_logits = head_logits(clf, feats[row_of[outer]], kc)
                threshold = None
                if task.is_binary:
                    pos = task.positive_index
                    threshold = choose_threshold(
                        (y_all[iv] == pos).astype(int), softmax(iv_logits)[:, pos], cfg.threshold_rule
                    )
                info = {"n_train": int(len(trs)), "best_epoch": None, "head_C": c}
            else:
                res = _fold_finetune(cfg, fold_dir, ds, tr, iv, pool.images, row_of, progress)
                iv_logits, outer_logits, threshold = res["logits"](iv), res["logits"](outer), res["threshold"]
                info = {"n_train": res["n_train"], "best_epoch": res["best_epoch"]}
            info["seconds"] = round(time.time() - tf, 1)
            np.savez(
                cached,
                inner_logits=iv_logits,
                outer_logits=outer_logits,
                threshold=np.nan if threshold is None else threshold,
                outer=outer,
                inner_val=iv,
            )
            (fold_dir / "fold_info.json").write_text(json.dumps(info) + "\n")
        t_fold = fit_temperature(iv_logits, y_all[iv])
        p_raw, p_cal = softmax(outer_logits), softmax(outer_logits, t_fold)
        y = y_all[outer]
        fold_rep = metric_report(
            y,
            p_raw,
            task.classes,
            task=task.name,
            positive_class=task.positive_class if task.is_binary else None,
            threshold=threshold if task.is_binary else None,
            n_boot=0,
        )
        pred = decide_indices(p_raw, task.positive_index if task.is_binary else None, threshold)
        m = fold_rep.flat_values()
        row = {
            "fold": f,
            **({"held_out": held_names[f], "n_dropped_leaking": n_leak} if held_names is not None else {}),
            "n_train": info["n_train"],
            "n_inner_val": int(len(iv)),
            "n_val": int(len(outer)),
            "val_groups": int(len(set(groups[outer]))),
            "best_epoch": info.get("best_epoch"),
            "threshold": threshold,
            "temperature": t_fold,
            **m,
            "ece": expected_calibration_error(p_raw, y),
            "ece_calibrated": expected_calibration_error(p_cal, y),
            "brier": brier_score(p_raw, y),
            "brier_calibrated": brier_score(p_cal, y),
            "seconds": info["seconds"],
        }
        rows.append(row)
        oof_logits[outer], oof_cal[outer], oof_pred[outer] = outer_logits, p_cal, pred
        print(
            f"[{label}] fold {f + 1}/{k}"
            + (f" (held out: {held_names[f]})" if held_names is not None else "")
            + ": "
            + ", ".join(f"{key} {fmt(row[key])}" for key in headline_metrics(task)[:3])
            + f" ({row['seconds']:.0f} s)",
            flush=True,
        )

    done = fold_of >= 0
    p_oof = softmax(oof_logits[done])
    y_oof = y_all[done]
    # pooled out-of-fold calls keep each fold's own threshold (y_pred), so the report has no single threshold
    pooled = metric_report(
        y_oof,
        p_oof,
        task.classes,
        task=task.name,
        positive_class=task.positive_class if task.is_binary else None,
        n_boot=n_boot,
        seed=seed,
        y_pred=oof_pred[done],
    ).to_dict()
    cal = summary_from_probs(p_oof, oof_cal[done], y_oof, "per fold (inner validation)")
    metric_keys = [
        key
        for key in rows[0]
        if key
        not in (
            "fold",
            "held_out",
            "n_dropped_leaking",
            "n_train",
            "n_inner_val",
            "n_val",
            "val_groups",
            "best_epoch",
            "seconds",
        )
    ]
    summary = {}
    for key in metric_keys:
        vals = [r[key] for r in rows if r[key] is not None]
        summary[key] = {
            "mean": float(np.mean(vals)) if vals else None,
            "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "n_folds": len(vals),
        }
    wall = time.time() - t0
    budget = {
        "pool_images": int(done.sum()),
        "train_images_per_fold": float(np.mean([r["n_train"] for r in rows])),
        "inner_val_images_per_fold": float(np.mean([r["n_inner_val"] for r in rows])),
        "val_images_per_fold": float(np.mean([r["n_val"] for r in rows])),
        "image_size": cfg.image_size,
        "epochs": None if frozen else cfg.epochs,
        "batch_size": cfg.batch_size,
        "max_train_images": cfg.max_train_images,
        "lr": cfg.lr,
        "pretrained": bool(frozen or (cfg.pretrained and model_entry(cfg.arch).has_pretrained)),
        "frozen": frozen,
        "head": "logistic regression (L-BFGS), C chosen on inner validation" if frozen else "fine-tuned end to end",
        "feature_seconds": round(feature_seconds, 1) if frozen else None,
        "wall_seconds": round(wall, 1),
        "threads": cfg.threads,
        "cpu_count": os.cpu_count(),
        "command": command or " ".join(sys.argv),
    }
    result = {
        "label": label,
        "task": task.name,
        "classes": list(task.classes),
        "arch": cfg.arch,
        "k": k,
        "seed": seed,
        "group_by": group_by,
        "held_out_groups": held_names,
        "protocol": (
            f"leave-one-group-out over `{group_by}` (scikit-learn LeaveOneGroupOut, {k} folds: "
            f"{', '.join(held_names or [])}); training images whose patient/duplicate group also occurs in the "
            f"held-out value are dropped from that fold; per fold, a group-wise inner validation split "
            f"({inner_val_fraction:.0%} of the training side) chooses the epoch, the threshold "
            f"({cfg.threshold_rule if task.is_binary else 'argmax'}) and the temperature; the held-out group is only "
            "predicted"
        )
        if group_by
        else (
            f"{k}-fold StratifiedGroupKFold (seed {seed}) over leak-free groups (patients + duplicate images); "
            f"per fold, a group-wise inner validation split ({inner_val_fraction:.0%} of the training folds) chooses "
            f"the epoch, the threshold ({cfg.threshold_rule if task.is_binary else 'argmax'}) and the temperature; "
            "the held-out fold is only predicted"
        ),
        "threshold_rule": cfg.threshold_rule if task.is_binary else "argmax",
        "sources": ds.sources,
        "dedupe": ds.dedupe,
        "folds": rows,
        "summary": summary,
        "pooled": pooled,
        "calibration": {
            "ece_before": cal["before"]["ece"],
            "ece_after": cal["after"]["ece"],
            "brier_before": cal["before"]["brier"],
            "brier_after": cal["after"]["brier"],
            "bins": {"before": cal["before"]["bins"], "after": cal["after"]["bins"]},
        },
        "budget": budget,
        "train_config": cfg.to_dict(),
    }
    _write_outputs(result, ds, done, oof_logits, oof_cal, oof_pred, fold_of, out, cal)
    return result


def _write_outputs(
    result: dict,
    ds: CVDataset,
    done: np.ndarray,
    oof_logits: np.ndarray,
    oof_cal: np.ndarray,
    oof_pred: np.ndarray,
    fold_of: np.ndarray,
    out: Path,
    cal: dict,
) -> None:
    from cxrtriage.cards.figures import reliability_diagram, roc_figure

    task = get_task(result["task"])
    write_json(result, out / "cv.json")
    write_csv(result["folds"], out / "cv_folds.csv")
    pooled = MetricReport.from_dict(result["pooled"])
    summary_rows = []
    for k, v in result["summary"].items():
        est = pooled.lookup(k)
        ci = est.ci95 if est is not None and est.ci95 is not None else (None, None)
        summary_rows.append(
            {
                "metric": k,
                "mean": v["mean"],
                "sd": v["sd"],
                "n_folds": v["n_folds"],
                "pooled": est.value if est is not None else None,
                "pooled_ci_low": ci[0],
                "pooled_ci_high": ci[1],
            }
        )
    write_csv(summary_rows, out / "cv_summary.csv")
    p = softmax(np.nan_to_num(oof_logits))
    oof_rows = []
    for i in np.nonzero(done)[0]:
        r = {
            "path": ds.samples[i].path,
            "target": ds.samples[i].label,
            "fold": int(fold_of[i]),
            "pred": task.classes[int(oof_pred[i])],
        }
        r.update({f"p_{c}": round(float(p[i, j]), 6) for j, c in enumerate(task.classes)})
        r.update({f"p_cal_{c}": round(float(oof_cal[i, j]), 6) for j, c in enumerate(task.classes)})
        oof_rows.append(r)
    write_csv(oof_rows, out / "oof.csv")
    pos = task.positive_index
    y = ds.targets[done]
    roc_figure(
        {result["label"]: ((y == pos).astype(int), p[done][:, pos])},
        out / "roc.png",
        title=f"{task.name}: {task.positive_class} vs rest, pooled out-of-fold",
    )
    reliability_diagram(cal, out / "reliability.png", title=f"{result['label']} out-of-fold")
    (out / "cv.md").write_text(cv_markdown(result))
    from cxrtriage.cards.html_report import write_report

    write_report(
        out / "report.html",
        f"Cross-validation: {result['label']} on {task.name}",
        [("Results", cv_markdown(result))],
        [("ROC (pooled out-of-fold)", out / "roc.png"), ("Reliability (out-of-fold)", out / "reliability.png")],
    )


def budget_lines(b: dict) -> list[str]:
    """Markdown bullet lines describing a run's budget."""
    return [
        f"- Command: `{b['command']}`",
        f"- Images: {b['pool_images']} pooled; per fold ≈ {b['train_images_per_fold']:.0f} training, "
        f"{b['inner_val_images_per_fold']:.0f} inner-validation, {b['val_images_per_fold']:.0f} held-out",
        f"- Image size {b['image_size']} px; epochs {b['epochs'] if b['epochs'] is not None else '– (frozen features)'}; "
        f"batch {b['batch_size']}; max training images {b['max_train_images']}; "
        f"{'ImageNet init' if b['pretrained'] else 'random init'}; {b['head']}",
        f"- Wall time {b['wall_seconds'] / 60:.1f} min on {b['cpu_count']} CPU cores ({b['threads']} torch threads), no GPU",
    ]


def cv_markdown(result: dict) -> str:
    """Markdown report of one :func:`run_cv` result: per-fold table, mean ± SD, pooled CIs, budget."""
    task = get_task(result["task"])
    keys = headline_metrics(task) + ["ece", "ece_calibrated", "brier"]
    cols = [("fold", "fold"), ("n_val", "n val")] + [(k, k.replace("_", " ")) for k in keys]
    if result.get("group_by"):
        cols[1:1] = [("held_out", f"held-out {result['group_by']}"), ("n_dropped_leaking", "train dropped (leak)")]
    rows = [dict(r) for r in result["folds"]]
    rows.append(
        {
            "fold": "mean ± SD",
            "n_val": "",
            **{
                k: format_mean_sd(result["summary"][k]["mean"], result["summary"][k]["sd"])
                for k in keys
                if k in result["summary"]
            },
        }
    )
    pooled = {"fold": "pooled (95% CI)", "n_val": result["budget"]["pool_images"]}
    report = MetricReport.from_dict(result["pooled"])
    for k in headline_metrics(task):
        est = report.lookup(k)
        if est is not None and est.value is not None:
            pooled[k] = format_estimate(est)
    pooled["ece"] = result["calibration"]["ece_before"]
    pooled["ece_calibrated"] = result["calibration"]["ece_after"]
    pooled["brier"] = result["calibration"]["brier_before"]
    rows.append(pooled)
    lines = [
        f"## {result['label']} — task `{result['task']}`, "
        + (
            f"leave-one-`{result['group_by']}`-out validation ({result['k']} folds)"
            if result.get("group_by")
            else f"{result['k']}-fold cross-validation"
        ),
        "",
        f"Protocol: {result['protocol']}.",
        "",
        *budget_lines(result["budget"]),
        "",
        markdown_table(rows, cols),
        "Thresholds and temperatures come from each fold's inner validation split; "
        "ECE = expected calibration error (15 bins), 'calibrated' = after temperature scaling.",
        "",
    ]
    if result.get("dedupe"):
        d = result["dedupe"]
        lines += [
            f"Leak-free groups: {d['n_images']} images, {d['n_patients']} patient ids, {d['n_groups']} groups; "
            f"{d['within_pairs']} duplicate pairs inside the pool, reference copies {d['reference_pairs']} "
            f"({d['samples_with_reference_copy']} images linked); largest group {d['largest_group']} images.",
            "",
        ]
    return "\n".join(lines)

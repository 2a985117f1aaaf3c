"""``cxr ensemble``: one model folder from several trained runs of one recipe (a seed ensemble).

The members must agree on everything a model folder promises at inference (task, classes, architecture, input
size, preprocessing, lung input) and on the validation images: an ensemble is calibrated and judged on its
members' shared validation split, so a member that trained on another's validation images would leak. Train the
members with the same ``--split-seed`` (``cxr train --seed S --split-seed 0``).

The result is an ordinary model folder (:class:`cxrtriage.models.ensemble.SeedEnsemble` behind
``config.members``); calibrate, export, card, evaluate and serve it like any other. Its temperature and
threshold are not inherited: run ``cxr calibrate`` on it.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrtriage.inference.backend import file_sha256
from cxrtriage.models.bundle import ModelBundle, TrainingSummary
from cxrtriage.models.ensemble import merge_members

__all__ = ["build_seed_ensemble", "ENSEMBLE_AGREES_ON"]

#: ``ModelConfig`` fields every member must share.
ENSEMBLE_AGREES_ON = ("arch", "task", "classes", "image_size", "intensity", "mean", "std", "input")


def _validation_auroc(b: ModelBundle) -> float | None:
    """The card's validation AUROC, else the best epoch's row of ``history.csv`` (a run without a card yet)."""
    if b.evaluation is not None:
        est = b.evaluation.validation.metrics.get("auroc")
        return None if est is None else est.value
    history = b.directory / "history.csv" if b.directory is not None else None
    if history is None or not history.is_file() or b.training is None:
        return None
    with history.open(newline="") as fh:
        row = next((r for r in csv.DictReader(fh) if int(r["epoch"]) == b.training.best_epoch), None)
    return float(row["val_auroc"]) if row and row.get("val_auroc") else None


def _member_row(b: ModelBundle) -> dict[str, Any]:
    return {
        "name": b.name,
        "version": b.config.version,
        "seed": b.train_config.seed if b.train_config is not None else None,
        "best_epoch": b.training.best_epoch if b.training is not None else None,
        "val_auroc": _validation_auroc(b),
        "wall_seconds": b.training.wall_seconds if b.training is not None else None,
        "weights_sha256": file_sha256(b.weights_path()),
    }


def build_seed_ensemble(member_dirs: Sequence[str | Path], out: str | Path, *, float16: bool = True) -> Path:
    """Merge trained model folders into one seed-ensemble model folder.

    Parameters
    ----------
    member_dirs : sequence of path
        ``M >= 2`` model folders (``cxr train`` output) of one task and recipe, with the same validation split.
    out : path
        New model folder: ``config.json`` (``members = M``, temperature 1, no threshold until ``cxr calibrate``),
        ``bundle.json`` (the first member's ``train_config`` and ``split``; ``training.members`` lists all) and
        ``model.safetensors``.
    float16 : bool
        Store the weights as float16 (``M`` Lite0 networks: about 6.8 MB each instead of 13.6 MB); the ONNX export
        then stores them in float16 too.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    ValueError
        Fewer than 2 members, a member that is itself an ensemble, members that disagree on a field of
        :data:`ENSEMBLE_AGREES_ON`, on the validation images (the message names the folder and the field), or that
        declare different populations or lung segmenter checksums (the ensemble takes the one its members
        declare, if any).
    cxrtriage.models.ModelLoadError
        A folder is not a model folder.
    """
    if len(member_dirs) < 2:
        raise ValueError(f"a seed ensemble needs at least 2 model folders, got {len(member_dirs)}")
    bundles = [ModelBundle.load(d) for d in member_dirs]
    first = bundles[0]
    for d, b in zip(member_dirs, bundles):
        if b.config.members != 1:
            raise ValueError(f"{d}: is itself an ensemble of {b.config.members}; list its members instead")
        for f in ENSEMBLE_AGREES_ON:
            if getattr(b.config, f) != getattr(first.config, f):
                raise ValueError(
                    f"{d}: {f} is {getattr(b.config, f)!r}, the first member ({member_dirs[0]}) has "
                    f"{getattr(first.config, f)!r}"
                )
        if b.split is None or first.split is None:
            raise ValueError(f"{d}: no split section; the ensemble needs the members' shared validation split")
        if sorted(b.split.val_paths_relative) != sorted(first.split.val_paths_relative):
            raise ValueError(
                f"{d}: validated on other images than {member_dirs[0]} (train the members with the same "
                "--split-seed); a member would have trained on another's validation images"
            )
    declared = {b.config.population for b in bundles} - {None}
    if len(declared) > 1:
        raise ValueError(f"members declare different populations: {sorted(map(str, declared))}")
    segmenters = {sha for b in bundles if (sha := b.config.segmenter_sha256) is not None}
    if len(segmenters) > 1:
        raise ValueError(
            "members were trained with different lung segmenter exports (segmenter_sha256 "
            f"{', '.join(sorted(s[:12] for s in segmenters))}): one ensemble gets one lung step"
        )
    model = merge_members([b.load_model() for b in bundles])
    seeds = [b.train_config.seed if b.train_config is not None else "?" for b in bundles]
    config = dataclasses.replace(
        first.config,
        members=len(bundles),
        population=next(iter(declared), None),
        segmenter_sha256=next(iter(segmenters), None),
        temperature=1.0,
        threshold=None,
        threshold_rule="not calibrated (run cxr calibrate)",
        version=f"{first.config.task}-{first.config.arch}-{first.config.image_size}px-ensemble-seeds"
        + "-".join(str(s) for s in seeds),
    )
    rows = [_member_row(b) for b in bundles]
    trainings = [b.training for b in bundles if b.training is not None]
    training = TrainingSummary(
        best_epoch=0,
        select_metric=first.training.select_metric if first.training is not None else "auroc",
        epochs_run=sum(t.epochs_run for t in trainings),
        wall_seconds=sum(t.wall_seconds for t in trainings),
        cpu_count=first.training.cpu_count if first.training is not None else None,
        runtime=dict(first.training.runtime) if first.training is not None else {},
        members=rows,
    )
    train_config = dataclasses.replace(first.train_config, out=str(out)) if first.train_config else None
    bundle = ModelBundle(config=config, train_config=train_config, training=training, split=first.split)
    return bundle.save(out, model, float16=float16)

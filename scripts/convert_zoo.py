"""Convert model folders of the pre-bundle layout to the typed bundle (issue 14, item 4).

Old layout: ``config.json`` (with ``extra``), ``model.pt`` (pickled state_dict), loose
``train_config.json``, ``train_summary.json``, ``split.json``, ``calibration.json``,
``holdout.json``, ``ood.json``, ``model_card.json``/``model_card.md``.
New layout (:class:`cxrtriage.models.bundle.ModelBundle`): strict ``config.json``,
``model.safetensors``, ``bundle.json`` (typed sections) and ``README.md`` rendered from it.
The loose files are deleted after conversion; ``history.csv``, PNG curves, ``ood.npz`` and
``model.onnx`` stay as auxiliary files. Paths in the old files are resolved relative to the
current directory (run from the repository root, as the shipped files were written).

Usage: ``python scripts/convert_zoo.py [MODEL_DIR ...]`` (default: every folder in the zoo).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from cxrtriage.cards.model_card import write_card
from cxrtriage.config import ModelConfig, TrainConfig
from cxrtriage.data.split import dataset_root
from cxrtriage.models.bundle import (
    CalibrationSection,
    Evaluation,
    ModelBundle,
    OnnxSection,
    OODSection,
    SplitSection,
    TrainingSummary,
    metric_report_from_legacy,
    zoo_dir,
)
from cxrtriage.models.registry import create_model

#: Loose files of the old layout, replaced by bundle sections, the safetensors weights and README.md.
OLD_FILES = (
    "model.pt",
    "model_card.json",
    "model_card.md",
    "train_config.json",
    "train_summary.json",
    "split.json",
    "calibration.json",
    "holdout.json",
    "ood.json",
)


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _relative(paths: list[str], data: str) -> list[str]:
    root = dataset_root(data)
    return [os.path.relpath(Path(p).resolve(), root) for p in paths]


def convert(d: Path) -> ModelBundle:
    """Convert one old-layout model folder in place; returns the saved bundle."""
    import torch

    raw_cfg = json.loads((d / "config.json").read_text())
    extra = raw_cfg.pop("extra", {}) or {}
    config = ModelConfig.from_dict(raw_cfg, source=str(d / "config.json"))
    tc = TrainConfig.from_dict(json.loads((d / "train_config.json").read_text()), source=str(d / "train_config.json"))
    ts = json.loads((d / "train_summary.json").read_text())
    sp = json.loads((d / "split.json").read_text())
    cal = json.loads((d / "calibration.json").read_text())
    card = _json(d / "model_card.json") or {}
    hold = _json(d / "holdout.json")
    ood = _json(d / "ood.json")
    data = sp.get("data") or tc.data
    csp = card.get("split") or {}
    ctr = card.get("training") or {}
    split = SplitSection(
        data=data,
        seed=int(sp.get("seed", tc.seed)),
        n_train=int(sp["n_train"]),
        n_val=int(sp["n_val"]),
        train_counts=csp.get("train_counts") or sp["train_counts"],
        val_counts=csp.get("val_counts") or sp["val_counts"],
        val_paths_relative=sp.get("val_paths_relative") or _relative(sp["val_paths"], data),
        val_patients=sp.get("val_patients"),
        n_test=csp.get("n_test"),
        test_counts=csp.get("test_counts"),
        test_paths_relative=_relative(hold["test_paths"], data) if hold else [],
        description=csp.get("description", ""),
        leak_control=csp.get("leak_control", ""),
        dropped_leaking_test_images=int((hold or {}).get("dropped_leaking_test_images", 0)),
    )
    xcal = extra.get("calibration") or {}
    calibration = CalibrationSection(
        temperature=float(cal["temperature"]),
        rule=cal["rule"],
        n_val=int(cal["n_val"]),
        ece_before=cal["ece_before"],
        ece_after=cal["ece_after"],
        brier_before=cal["brier_before"],
        brier_after=cal["brier_after"],
        threshold=cal.get("threshold"),
        threshold_uncalibrated=cal.get("threshold_uncalibrated"),
        nll_before=cal.get("nll_before"),
        nll_after=cal.get("nll_after"),
        val_sensitivity=xcal.get("val_sensitivity"),
        val_specificity=xcal.get("val_specificity"),
        test_ece_before=(hold or {}).get("ece_before"),
        test_ece_after=(hold or {}).get("ece_after"),
        test_brier_before=(hold or {}).get("brier_before"),
        test_brier_after=(hold or {}).get("brier_after"),
        method=cal.get("method", ""),
    )
    training = TrainingSummary(
        best_epoch=int(ts["best_epoch"]),
        select_metric=ts.get("select_metric", tc.select_metric),
        epochs_run=int(ts["epochs_run"]),
        wall_seconds=float(ts["wall_seconds"]),
        total_seconds=ctr.get("total_seconds"),
        cpu_count=ctr.get("cpu_count"),
        skipped=ts.get("skipped", []),
    )
    pos = config.positive_class or None
    report = lambda m, counts: metric_report_from_legacy(  # noqa: E731
        m, config.task, config.classes, counts, pos, config.threshold
    )
    link = [str(Path(data).parent / x["folder"]) for x in card.get("data", []) if x.get("role")]
    evaluation = Evaluation(
        validation=report(card["validation"], split.val_counts),
        test=report(card["test"], split.test_counts or {}) if card.get("test") else None,
        subgroups=card.get("subgroups") or {},
        command=card.get("command", ""),
        link=link,
    )
    onnx = (
        OnnxSection(file=extra["onnx_file"], opset=int(extra["onnx_opset"]), sha256=extra["onnx_sha256"])
        if "onnx_sha256" in extra
        else None
    )
    ood_section = (
        OODSection(threshold=float(ood["threshold"]), stats={k: v for k, v in ood.items() if k != "threshold"})
        if ood
        else None
    )
    bundle = ModelBundle(config, tc, training, split, calibration, ood_section, onnx, evaluation)
    model = create_model(config.arch, len(config.classes), pretrained=False)
    model.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    bundle.save(d, model)
    write_card(bundle)
    for name in OLD_FILES:
        (d / name).unlink(missing_ok=True)
    return bundle


def main(argv: list[str]) -> int:
    """Convert the folders named in ``argv`` (default: the zoo); prints one line per folder."""
    dirs = [Path(a) for a in argv] or sorted(p for p in zoo_dir().iterdir() if (p / "model.pt").is_file())
    for d in dirs:
        b = convert(d)
        print(f"{d}: {b.weights_mb():.1f} MB model.safetensors, bundle.json, README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

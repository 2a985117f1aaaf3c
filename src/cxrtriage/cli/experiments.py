"""CLI plugin: ``cxr cv``, ``cxr compare``, ``cxr calibrate``, ``cxr ship``, ``cxr dedupe``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from cxrtriage.cli.config_args import add_dataclass_arguments, dataclass_from_args
from cxrtriage.config import TrainConfig

if TYPE_CHECKING:
    from cxrtriage.experiments.cv import CVDataset
    from cxrtriage.models.bundle import ModelBundle

__all__ = ["register"]


#: Switches spelled ``--no-X`` (TrainConfig booleans that default to True).
_NEGATED = {f.name for f in dataclasses.fields(TrainConfig) if f.default is True}


def _command_line(a: argparse.Namespace) -> str:
    """The full equivalent command line of parsed arguments ``a`` (defaults spelled out)."""
    parts = ["cxr", a.command]
    for key, value in vars(a).items():
        if key in _NEGATED:
            if value is False:
                parts.append("--no-" + key.replace("_", "-"))
            continue
        if key in ("command", "verbose", "quiet") or value is None or value is False or value == [] or value == "":
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            for v in value:
                parts += [flag, shlex.quote(str(v))]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def _rule(a: argparse.Namespace) -> str:
    if getattr(a, "target_sensitivity", None) is not None:
        if not 0 < a.target_sensitivity <= 1:
            raise ValueError("--target-sensitivity must be in (0, 1]")
        return f"sensitivity:{a.target_sensitivity}"
    return a.threshold_rule


#: TrainConfig fields offered as options by ``cv``, ``compare`` and ``ship`` (``data`` and ``out`` have
#: command-specific meanings and are added by hand; ``arch`` by ``cv`` and ``ship`` only).
_TRAIN_FIELDS = (
    "task",
    "image_size",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "balance",
    "intensity",
    "hflip",
    "label_smoothing",
    "pretrained",
    "max_train_images",
    "threshold_rule",
    "select_metric",
    "seed",
    "threads",
    "channels_last",
    "cache_dir",
    "device",
    "precision",
    "devices",
    "strategy",
    "workers",
)

#: Command-specific defaults that differ from ``TrainConfig``'s (smaller, faster runs for repeated training).
CV_DEFAULTS: dict[str, object] = {"image_size": 128, "epochs": 2}
SHIP_DEFAULTS: dict[str, object] = {"image_size": 128, "epochs": 5}


def _add_training_args(p: argparse.ArgumentParser, fields: tuple[str, ...], defaults: dict[str, object]) -> None:
    add_dataclass_arguments(
        p,
        TrainConfig,
        include=fields,
        defaults=defaults,
        help={"max_train_images": "cap on training images per fold"} if "max_train_images" in fields else None,
    )
    p.add_argument(
        "--data", action="append", required=True, help="dataset folder or manifest (repeat to pool several datasets)"
    )
    p.add_argument(
        "--link",
        action="append",
        default=[],
        help="reference dataset (not trained on) whose patient ids pass to duplicate copies in --data",
    )
    p.add_argument("--no-dedupe", action="store_true", help="group by patient id only (no duplicate detection)")
    p.add_argument(
        "--max-distance", type=int, default=None, help="dHash Hamming threshold for duplicates (of 256 bits)"
    )
    p.add_argument("--target-sensitivity", type=float, default=None, help="shortcut for --threshold-rule sensitivity:S")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cfg(a: argparse.Namespace, arch: str, data: str, **overrides: object) -> TrainConfig:
    """The TrainConfig of ``cv`` / ``compare`` / ``ship`` options ``a`` (first dataset, rule from the shortcut)."""
    return dataclass_from_args(TrainConfig, a, data=data, out=a.out, arch=arch, threshold_rule=_rule(a), **overrides)


def _no_early_stop(a: argparse.Namespace) -> int:
    """``cv`` and ``compare``: patience that never stops a run within its epoch budget."""
    return max(TrainConfig().patience, a.epochs)


def _dataset(a: argparse.Namespace) -> CVDataset:
    from cxrtriage.data.dedupe import DEFAULT_MAX_DISTANCE
    from cxrtriage.experiments.cv import build_cv_dataset
    from cxrtriage.tasks import get_task

    return build_cv_dataset(
        a.data,
        get_task(a.task),
        link=a.link,
        dedupe=not a.no_dedupe,
        max_distance=a.max_distance if a.max_distance is not None else DEFAULT_MAX_DISTANCE,
        cache_dir=a.cache_dir,
        progress=not a.quiet,
    )


def _cmd_cv(a: argparse.Namespace) -> int:
    import torch

    from cxrtriage.experiments.cv import run_cv

    torch.set_num_threads(a.threads)
    ds = _dataset(a)
    res = run_cv(
        ds,
        _cfg(a, a.arch, a.data[0], patience=_no_early_stop(a)),
        a.out,
        k=a.k,
        seed=a.seed,
        inner_val_fraction=a.inner_val_fraction,
        frozen=a.frozen,
        n_boot=a.n_boot,
        progress=not a.quiet,
        command=_command_line(a),
        group_by=a.group_by,
    )
    from cxrtriage.metrics.report import MetricReport, format_estimate

    if res.get("held_out_groups"):
        print(f"leave-one-{a.group_by}-out folds: {', '.join(res['held_out_groups'])}")
    auc = MetricReport.from_dict(res["pooled"]).metrics["auroc"]
    print(
        f"{res['label']}: pooled out-of-fold auroc {format_estimate(auc, 4)}; "
        f"results in {a.out} (cv.md, cv.json, cv_folds.csv, report.html); {res['budget']['wall_seconds'] / 60:.1f} min"
    )
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    import torch

    from cxrtriage.experiments.compare import run_compare

    torch.set_num_threads(a.threads)
    archs = [x.strip() for x in a.archs.split(",") if x.strip()]
    frozen = [x.strip() for x in (a.frozen or "").split(",") if x.strip()]
    ds = _dataset(a)
    res = run_compare(
        ds,
        _cfg(a, archs[0] if archs else TrainConfig().arch, a.data[0], patience=_no_early_stop(a)),
        archs,
        a.out,
        k=a.k,
        seed=a.seed,
        frozen=frozen,
        inner_val_fraction=a.inner_val_fraction,
        n_boot=a.n_boot,
        progress=not a.quiet,
        command=_command_line(a),
    )
    print(a.out.rstrip("/") + "/compare.md:")
    for r in res["rows"]:
        key = next(k for k in r if k.startswith("pooled_") and not k.endswith(("_low", "_high")))
        print(f"  {r['architecture']:28s} {key} {r[key]:.4f}  ({r['wall_minutes']:.1f} min)")
    print(f"total {res['wall_seconds'] / 60:.1f} min; report: {a.out.rstrip('/')}/report.html")
    return 0


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.recalibrate import calibrate_model_dir

    rule = None
    if a.target_sensitivity is not None:
        rule = f"sensitivity:{a.target_sensitivity}"
    elif a.threshold_rule:
        rule = a.threshold_rule
    r = calibrate_model_dir(a.model, a.data, rule, cache_dir=a.cache_dir)
    msg = (
        f"T = {r['temperature']:.4f}; validation ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f}, "
        f"Brier {r['brier_before']:.4f} -> {r['brier_after']:.4f} (n = {r['n_val']})"
    )
    if r["threshold"] is not None:
        v = r["validation"]
        msg += (
            f"; threshold {r['threshold']:.4f} ({r['rule']}, calibrated probabilities): "
            f"sensitivity {v['sensitivity']:.3f}, specificity {v['specificity']:.3f}"
        )
    print(msg)
    print(f"updated {a.model}/config.json and the calibration section of bundle.json; wrote reliability.png")
    return 0


def _cmd_ship(a: argparse.Namespace) -> int:
    import torch

    from cxrtriage.experiments.ship import ship_model
    from cxrtriage.metrics.report import format_estimate

    torch.set_num_threads(a.threads)
    cfg = _cfg(a, a.arch, a.data[0])
    cfg.out = a.run_dir  # the working folder; --out is the model folder
    bundle = ship_model(
        cfg,
        a.out,
        link=a.link,
        test_fraction=a.test_fraction,
        by=a.by,
        n_boot=a.n_boot,
        progress=not a.quiet,
        command=_command_line(a),
        resplit=a.resplit,
        external=a.external,
    )
    ev, tr = bundle.evaluation, bundle.training
    assert ev is not None and ev.test is not None and tr is not None and tr.total_seconds is not None
    print(
        f"model written to {a.out}: test auroc {format_estimate(ev.test.metrics.get('auroc'), 4)}; {tr.total_seconds / 60:.1f} min"
    )
    return 0


def _cmd_card(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.ship import document_model
    from cxrtriage.metrics.report import format_estimate

    if a.keep_validation:
        if not a.external:
            raise SystemExit("cxr card --keep-validation needs at least one --external dataset")
        return _cmd_external(argparse.Namespace(model=a.model, data=a.external, n_boot=a.n_boot, cache_dir=a.cache_dir))
    if not a.training_command:
        raise SystemExit("cxr card: --training-command is required (unless --keep-validation)")
    bundle = document_model(a.model, a.training_command, n_boot=a.n_boot, cache_dir=a.cache_dir, external=a.external)
    assert bundle.evaluation is not None
    v = bundle.evaluation.validation
    print(
        f"wrote {a.model}/README.md (model card) and bundle.json: validation auroc "
        f"{format_estimate(v.metrics.get('auroc'), 4)} (95% CI, n = {v.n})"
    )
    _print_external(bundle)
    return 0


def _print_external(bundle: ModelBundle) -> None:
    from cxrtriage.metrics.report import format_estimate

    for e in bundle.evaluation.external if bundle.evaluation is not None else []:
        r = e.report
        key = "sensitivity" if r.is_binary else "macro_sensitivity"
        print(
            f"  external {e.name}: n={r.n}; auroc {format_estimate(r.metrics.get('auroc'), 4)}, "
            f"{key} {format_estimate(r.metrics.get(key), 4)}"
        )


def _cmd_external(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.external import add_external

    bundle = add_external(
        a.model, a.data, n_boot=a.n_boot, cache_dir=a.cache_dir, exclude_where=getattr(a, "exclude_where", ())
    )
    assert bundle.evaluation is not None
    print(
        f"updated {bundle.directory}/bundle.json (evaluation.external: "
        f"{', '.join(e.name for e in bundle.evaluation.external)}) and README.md; validation figures kept"
    )
    _print_external(bundle)
    return 0


def _cmd_compare_models(a: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrtriage.experiments.recipes import compare_models, write_model_comparison

    models = []
    for item in a.model:
        name, sep, folder = item.partition("=")
        models.append((name, folder) if sep else (Path(item).name, item))
    rows = compare_models(models, a.external, n_boot=a.n_boot, exclude_where=a.exclude_where, cache_dir=a.cache_dir)
    path = write_model_comparison(rows, a.out)
    print(path.read_text())
    print(f"wrote {path} and {path.with_name('models.json')}")
    return 0


def _cmd_dedupe(a: argparse.Namespace) -> int:
    import json

    from cxrtriage.data.dedupe import DEFAULT_MAX_DISTANCE, dataset_tag, leak_free_groups, list_images
    from cxrtriage.data.discover import Sample

    items = list_images(a.data)
    samples = [Sample(p, "", 0, pid) for p, pid in items]
    refs = {dataset_tag(r): list_images(r) for r in a.link}
    _, rep = leak_free_groups(
        samples,
        [dataset_tag(a.data)] * len(samples),
        refs,
        a.max_distance if a.max_distance is not None else DEFAULT_MAX_DISTANCE,
    )
    print(json.dumps(rep.to_dict(), indent=1))
    return 0


def _add_external_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="DATA",
        help="external validation dataset (another source), scored at the saved operating point and shown on the "
        "card beside the in-source figures (repeatable)",
    )


def _add_external_scoring_arguments(p: argparse.ArgumentParser) -> None:
    """``--n-boot``, ``--cache-dir`` and ``--exclude-where`` of the commands that score external datasets."""
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--cache-dir", default=None)
    p.add_argument(
        "--exclude-where",
        action="append",
        default=[],
        metavar="COLUMN[=VALUE]",
        help="leave out images whose manifest column COLUMN is non-empty, e.g. covid19_radiography_duplicate in "
        "ieee8023-cxr (images also in a model's training source), or equals VALUE, e.g. "
        "dataset_label=Viral_Pneumonia; repeatable",
    )


def register(subparsers: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``cv``, ``compare``, ``calibrate``, ``ship``, ``card`` and ``dedupe`` to the ``cxr`` parser."""
    p = subparsers.add_parser("cv", help="patient- and duplicate-grouped stratified K-fold cross-validation")
    _add_training_args(p, ("arch", *_TRAIN_FIELDS), CV_DEFAULTS)
    p.add_argument("--k", type=int, default=4, help="number of folds")
    p.add_argument("--inner-val-fraction", type=float, default=0.15)
    p.add_argument("--frozen", action="store_true", help="frozen pretrained backbone, logistic-regression head")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument(
        "--group-by",
        default=None,
        metavar="COLUMN",
        help="leave-one-group-out folds over this manifest column (e.g. source) or 'dataset' (the --data set of "
        "each image); --k is then ignored",
    )
    commands["cv"] = _cmd_cv

    p = subparsers.add_parser("compare", help="compare architectures on the same folds and budget")
    _add_training_args(p, _TRAIN_FIELDS, CV_DEFAULTS)
    p.add_argument(
        "--archs",
        default="cnn4,resnet18,mobilenetv2_100,densenet121,efficientnet_lite0",
        help="comma-separated fine-tuned architectures",
    )
    p.add_argument(
        "--frozen",
        default="",
        help="comma-separated pretrained architectures also run frozen (features cached once, linear head), "
        "e.g. efficientnet_lite0",
    )
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--inner-val-fraction", type=float, default=0.15)
    p.add_argument("--n-boot", type=int, default=1000)
    commands["compare"] = _cmd_compare

    p = subparsers.add_parser(
        "calibrate",
        help="temperature scaling + operating point of a model folder (validation images from its bundle.json split section)",
    )
    p.add_argument(
        "--model", required=True, help="model folder (config.json, model.safetensors, bundle.json with a split section)"
    )
    p.add_argument(
        "--data", default=None, help="dataset holding the validation images (default: recorded in bundle.json)"
    )
    p.add_argument("--target-sensitivity", type=float, default=None, help="threshold for this validation sensitivity")
    p.add_argument("--threshold-rule", default=None, help="youden or sensitivity:<s> (default: the training rule)")
    p.add_argument("--cache-dir", default=None)
    commands["calibrate"] = _cmd_calibrate

    p = subparsers.add_parser("ship", help="train + calibrate + held-out test + model card into a model folder")
    _add_training_args(p, ("arch", *_TRAIN_FIELDS, "val_fraction", "patience"), SHIP_DEFAULTS)
    p.add_argument("--run-dir", required=True, help="working folder (checkpoints, curves)")
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--by", action="append", default=[], help="subgroup column reported on the test split (repeatable)")
    p.add_argument(
        "--resplit",
        action="store_true",
        help="ignore the dataset's own test split (e.g. not patient-level) and carve a group-wise test split",
    )
    p.add_argument("--n-boot", type=int, default=1000)
    _add_external_arg(p)
    commands["ship"] = _cmd_ship

    p = subparsers.add_parser(
        "card", help="write the model card of a model folder trained by `cxr train` (after `cxr calibrate`)"
    )
    p.add_argument(
        "--model",
        required=True,
        help="model folder whose bundle.json has train_config, training, split and calibration sections",
    )
    p.add_argument(
        "--training-command",
        default=None,
        help="the exact command that trained the model (recorded in the card; required unless --keep-validation)",
    )
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--cache-dir", default=None)
    _add_external_arg(p)
    p.add_argument(
        "--keep-validation",
        action="store_true",
        help="only add/replace the --external entries; keep the bundle's validation figures (same as `cxr external`)",
    )
    commands["card"] = _cmd_card

    p = subparsers.add_parser(
        "external",
        help="score a model folder on external datasets and add them to its bundle and card (validation figures kept)",
    )
    p.add_argument("--model", required=True, help="model folder with an evaluation section (cxr ship / cxr card)")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="external dataset folders or manifests (an entry of the same name is replaced)",
    )
    _add_external_scoring_arguments(p)
    commands["external"] = _cmd_external

    p = subparsers.add_parser(
        "compare-models",
        help="score trained models of one task side by side: own validation split vs external datasets",
    )
    p.add_argument(
        "--model", required=True, nargs="+", metavar="[NAME=]FOLDER", help="model folders (cxr train), optionally named"
    )
    p.add_argument("--external", required=True, nargs="+", help="datasets none of the models was trained on")
    p.add_argument("--out", required=True, help="output folder (models.md, models.json)")
    _add_external_scoring_arguments(p)
    commands["compare-models"] = _cmd_compare_models

    p = subparsers.add_parser("dedupe", help="report duplicate images within a dataset and across reference datasets")
    p.add_argument("--data", required=True)
    p.add_argument("--link", action="append", default=[])
    p.add_argument("--max-distance", type=int, default=None)
    commands["dedupe"] = _cmd_dedupe

"""CLI plugin: ``cxr cv``, ``cxr compare``, ``cxr calibrate``, ``cxr ship``, ``cxr dedupe``."""

from __future__ import annotations

import shlex

from cxrtriage.config import SELECT_METRICS, TrainConfig

__all__ = ["register"]


def _command_line(a) -> str:
    """The full equivalent command line of parsed arguments ``a`` (defaults spelled out)."""
    parts = ["cxr", a.command]
    for key, value in vars(a).items():
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


def _rule(a) -> str:
    if getattr(a, "target_sensitivity", None) is not None:
        if not 0 < a.target_sensitivity <= 1:
            raise ValueError("--target-sensitivity must be in (0, 1]")
        return f"sensitivity:{a.target_sensitivity}"
    return a.threshold_rule


def _add_training_args(p, d: TrainConfig, image_size: int, epochs: int) -> None:
    p.add_argument("--task", default=d.task)
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
    p.add_argument("--image-size", type=int, default=image_size)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-train-images", type=int, default=None, help="cap on training images per fold")
    p.add_argument("--intensity", choices=["equalize", "minmax", "none"], default=d.intensity)
    p.add_argument("--threshold-rule", default=d.threshold_rule, help="youden or sensitivity:<target> (binary tasks)")
    p.add_argument("--target-sensitivity", type=float, default=None, help="shortcut for --threshold-rule sensitivity:S")
    p.add_argument(
        "--select-metric",
        choices=SELECT_METRICS,
        default=d.select_metric,
        help="validation metric that picks the best epoch",
    )
    p.add_argument("--no-pretrained", action="store_true", help="no ImageNet weights even where available")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cfg(a, arch: str, data: str) -> TrainConfig:
    d = TrainConfig()
    return TrainConfig(
        task=a.task,
        data=data,
        out=a.out,
        arch=arch,
        image_size=a.image_size,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        intensity=a.intensity,
        pretrained=not a.no_pretrained,
        threads=a.threads,
        max_train_images=a.max_train_images,
        cache_dir=a.cache_dir,
        threshold_rule=_rule(a),
        patience=max(d.patience, a.epochs),
        select_metric=a.select_metric,
    )


def _dataset(a):
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


def _cmd_cv(a) -> int:
    import torch

    from cxrtriage.experiments.cv import run_cv

    torch.set_num_threads(a.threads)
    ds = _dataset(a)
    res = run_cv(
        ds,
        _cfg(a, a.arch, a.data[0]),
        a.out,
        k=a.k,
        seed=a.seed,
        inner_val_fraction=a.inner_val_fraction,
        frozen=a.frozen,
        n_boot=a.n_boot,
        progress=not a.quiet,
        command=_command_line(a),
    )
    from cxrtriage.metrics.report import MetricReport, format_estimate

    auc = MetricReport.from_dict(res["pooled"]).metrics["auroc"]
    print(
        f"{res['label']}: pooled out-of-fold auroc {format_estimate(auc, 4)}; "
        f"results in {a.out} (cv.md, cv.json, cv_folds.csv, report.html); {res['budget']['wall_seconds'] / 60:.1f} min"
    )
    return 0


def _cmd_compare(a) -> int:
    import torch

    from cxrtriage.experiments.compare import run_compare

    torch.set_num_threads(a.threads)
    archs = [x.strip() for x in a.archs.split(",") if x.strip()]
    frozen = [x.strip() for x in (a.frozen or "").split(",") if x.strip()]
    ds = _dataset(a)
    res = run_compare(
        ds,
        _cfg(a, archs[0] if archs else "efficientnet_lite0", a.data[0]),
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


def _cmd_calibrate(a) -> int:
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
    print(f"updated {a.model}/config.json; wrote calibration.json and reliability.png")
    return 0


def _cmd_ship(a) -> int:
    import torch

    from cxrtriage.experiments.ship import ship_model

    torch.set_num_threads(a.threads)
    cfg = _cfg(a, a.arch, a.data[0])
    cfg.out = a.run_dir
    cfg.val_fraction = a.val_fraction
    cfg.patience = a.patience
    card = ship_model(
        cfg,
        a.out,
        link=a.link,
        test_fraction=a.test_fraction,
        by=a.by,
        n_boot=a.n_boot,
        progress=not a.quiet,
        command=_command_line(a),
        resplit=a.resplit,
    )
    from cxrtriage.metrics.intervals import format_ci

    print(
        f"model written to {a.out}: test auroc {format_ci(card['test']['auroc'])}; "
        f"{card['training']['total_seconds'] / 60:.1f} min"
    )
    return 0


def _cmd_card(a) -> int:
    from cxrtriage.experiments.ship import document_model

    card = document_model(a.model, a.training_command, n_boot=a.n_boot, cache_dir=a.cache_dir)
    from cxrtriage.metrics.intervals import format_ci

    print(
        f"wrote {a.model}/model_card.md and model_card.json: validation auroc {format_ci(card['validation']['auroc'])} "
        f"(n = {card['split']['n_val']})"
    )
    return 0


def _cmd_dedupe(a) -> int:
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


def register(subparsers, commands: dict) -> None:
    """Add ``cv``, ``compare``, ``calibrate``, ``ship``, ``card`` and ``dedupe`` to the ``cxr`` parser."""
    d = TrainConfig()
    p = subparsers.add_parser("cv", help="patient- and duplicate-grouped stratified K-fold cross-validation")
    _add_training_args(p, d, image_size=128, epochs=2)
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--k", type=int, default=4, help="number of folds")
    p.add_argument("--inner-val-fraction", type=float, default=0.15)
    p.add_argument("--frozen", action="store_true", help="frozen pretrained backbone, logistic-regression head")
    p.add_argument("--n-boot", type=int, default=1000)
    commands["cv"] = _cmd_cv

    p = subparsers.add_parser("compare", help="compare architectures on the same folds and budget")
    _add_training_args(p, d, image_size=128, epochs=2)
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
        "calibrate", help="temperature scaling + operating point of a model folder (from its split.json)"
    )
    p.add_argument(
        "--model", required=True, help="model folder with config.json, model.pt, split.json, train_config.json"
    )
    p.add_argument(
        "--data", default=None, help="dataset holding the validation images (default: from train_config.json)"
    )
    p.add_argument("--target-sensitivity", type=float, default=None, help="threshold for this validation sensitivity")
    p.add_argument("--threshold-rule", default=None, help="youden or sensitivity:<s> (default: the training rule)")
    p.add_argument("--cache-dir", default=None)
    commands["calibrate"] = _cmd_calibrate

    p = subparsers.add_parser("ship", help="train + calibrate + held-out test + model card into a model folder")
    _add_training_args(p, d, image_size=128, epochs=5)
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--run-dir", required=True, help="working folder (checkpoints, curves)")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--by", action="append", default=[], help="subgroup column reported on the test split (repeatable)")
    p.add_argument(
        "--resplit",
        action="store_true",
        help="ignore the dataset's own test split (e.g. not patient-level) and carve a group-wise test split",
    )
    p.add_argument("--n-boot", type=int, default=1000)
    commands["ship"] = _cmd_ship

    p = subparsers.add_parser(
        "card", help="write the model card of a model folder trained by `cxr train` (after `cxr calibrate`)"
    )
    p.add_argument(
        "--model",
        required=True,
        help="model folder with split.json, train_config.json, train_summary.json, calibration.json",
    )
    p.add_argument(
        "--training-command", required=True, help="the exact command that trained the model (recorded in the card)"
    )
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--cache-dir", default=None)
    commands["card"] = _cmd_card

    p = subparsers.add_parser("dedupe", help="report duplicate images within a dataset and across reference datasets")
    p.add_argument("--data", required=True)
    p.add_argument("--link", action="append", default=[])
    p.add_argument("--max-distance", type=int, default=None)
    commands["dedupe"] = _cmd_dedupe

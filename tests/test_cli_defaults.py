"""One source of defaults: the ``cxr`` training options come from ``TrainConfig`` and its fields' metadata."""

from __future__ import annotations

import dataclasses

import pytest

from cxrtriage.cli.config_args import dataclass_from_args
from cxrtriage.cli.experiments import _TRAIN_FIELDS, CV_DEFAULTS, SHIP_DEFAULTS, _cfg
from cxrtriage.cli.main import build_parser
from cxrtriage.config import TrainConfig

REQUIRED = {
    "train": ["--data", "d", "--out", "o"],
    "cv": ["--data", "d", "--out", "o"],
    "compare": ["--data", "d", "--out", "o"],
    "ship": ["--data", "d", "--out", "o", "--run-dir", "r"],
}
EXPOSED = {
    "train": [f.name for f in dataclasses.fields(TrainConfig)],
    "cv": ["arch", *_TRAIN_FIELDS],
    "compare": list(_TRAIN_FIELDS),
    "ship": ["arch", *_TRAIN_FIELDS, "val_fraction", "patience"],
}
OVERRIDES = {"train": {}, "cv": CV_DEFAULTS, "compare": CV_DEFAULTS, "ship": SHIP_DEFAULTS}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_parsed_defaults_are_the_dataclass_defaults(command: str) -> None:
    args = build_parser().parse_args([command, *REQUIRED[command]])
    expected = dataclasses.replace(TrainConfig(), **OVERRIDES[command])
    for name in EXPOSED[command]:
        if name in ("data", "out"):
            continue
        assert getattr(args, name) == getattr(expected, name), (command, name)
    assert set(OVERRIDES[command]) <= set(EXPOSED[command])


def test_train_builds_the_dataclass_without_copying() -> None:
    args = build_parser().parse_args(["train", *REQUIRED["train"]])
    assert dataclass_from_args(TrainConfig, args) == TrainConfig(data="d", out="o")


def test_cv_and_ship_configs() -> None:
    a = build_parser().parse_args(["cv", *REQUIRED["cv"], "--target-sensitivity", "0.9"])
    cfg = _cfg(a, a.arch, a.data[0])
    assert cfg == dataclasses.replace(TrainConfig(), data="d", out="o", threshold_rule="sensitivity:0.9", **CV_DEFAULTS)
    a = build_parser().parse_args(["ship", *REQUIRED["ship"], "--patience", "7", "--val-fraction", "0.2"])
    cfg = _cfg(a, a.arch, a.data[0])
    assert (cfg.patience, cfg.val_fraction, cfg.image_size, cfg.epochs) == (7, 0.2, 128, 5)


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_help_shows_the_defaults(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    expected = dataclasses.replace(TrainConfig(), **OVERRIDES[command])
    for name in EXPOSED[command]:
        value = getattr(expected, name)
        if name in ("data", "out") or isinstance(value, bool):
            continue
        help_text = TrainConfig.__dataclass_fields__[name].metadata["help"]
        assert " ".join(help_text.split()[:3]) in text, name
        assert f"(default: {value})" in text, name


def test_existing_flag_spellings() -> None:
    args = build_parser().parse_args(
        [
            "train",
            *REQUIRED["train"],
            "--no-pretrained",
            "--no-channels-last",
            "--hflip",
            "--threshold-rule",
            "sensitivity:0.95",
            "--select-metric",
            "macro_sensitivity",
            "--max-train-images",
            "100",
            "--cache-dir",
            "c",
            "--image-size",
            "96",
            "--optimizer",
            "sgd",
            "--balance",
            "loss",
            "--device",
            "cpu",
            "--precision",
            "bf16-mixed",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--resume",
            "--quiet",
        ]
    )
    cfg = dataclass_from_args(TrainConfig, args)
    assert (cfg.pretrained, cfg.channels_last, cfg.hflip) == (False, False, True)
    assert (cfg.threshold_rule, cfg.select_metric, cfg.max_train_images) == (
        "sensitivity:0.95",
        "macro_sensitivity",
        100,
    )
    assert (cfg.cache_dir, cfg.image_size, cfg.optimizer, cfg.balance) == ("c", 96, "sgd", "loss")
    assert (cfg.device, cfg.precision, cfg.devices, cfg.strategy) == ("cpu", "bf16-mixed", 2, "ddp")
    assert args.resume and args.quiet
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", *REQUIRED["train"], "--optimizer", "lamb"])

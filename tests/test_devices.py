"""``--device auto|cpu|cuda|cuda:N`` and precision ``auto`` resolve the same way for every command."""

from __future__ import annotations

import pytest
import torch

from cxrtriage.cli.main import build_parser
from cxrtriage.config import ScoreConfig, TrainConfig, check_device
from cxrtriage.inference.device import fabric_device, resolve_device, resolve_precision


@pytest.mark.parametrize("good", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_strings_accepted(good: str) -> None:
    assert check_device(good) == good


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "cpu:0", "CUDA", ""])
def test_device_strings_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown device"):
        check_device(bad)
    with pytest.raises(ValueError, match="unknown device"):
        TrainConfig(device=bad)


def test_auto_on_this_machine() -> None:
    want = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == want
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert fabric_device("cpu", 2) == ("cpu", 2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:1")


@pytest.mark.parametrize("command", ["train", "cv", "compare", "evaluate", "predict", "audit", "score"])
def test_every_model_command_has_device(command: str) -> None:
    parser = build_parser()
    required = {
        "train": ["--data", "d", "--out", "o"],
        "cv": ["--data", "d", "--out", "o"],
        "compare": ["--data", "d", "--out", "o"],
        "evaluate": ["--data", "d", "--out", "o"],
        "predict": ["x.png"],
        "audit": ["--data", "d", "--out", "o"],
        "score": ["--data", "d"],
    }[command]
    args = parser.parse_args([command, *required, "--device", "cuda:1"])
    assert args.device == "cuda:1"
    assert parser.parse_args([command, *required]).device == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args([command, *required, "--device", "tpu"])
    assert ScoreConfig().device == TrainConfig().device == "auto"

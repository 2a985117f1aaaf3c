"""The training loop on timm + Lightning Fabric: optimiser names, schedule, CPU runtime, determinism."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cxrtriage.config import OPTIMIZERS, TrainConfig
from cxrtriage.models.bundle import ModelBundle
from cxrtriage.models.registry import create_model
from cxrtriage.training.optim import LR_MIN_FRACTION, build_optimizer, build_scheduler, schedule_lengths
from cxrtriage.training.trainer import train


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_names(name: str) -> None:
    model = create_model("cnn4", 2, pretrained=False)
    opt = build_optimizer(model, replace(TrainConfig(), optimizer=name, lr=0.01, weight_decay=0.001))
    expected = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    assert isinstance(opt, expected.get(name, torch.optim.Adagrad))
    group = opt.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.001
    if name == "sgd":
        assert group["nesterov"] and group["momentum"] == 0.9
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))


def test_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(create_model("cnn4", 2, pretrained=False), replace(TrainConfig(), optimizer="lamb"))


def test_schedule_warmup_then_cosine() -> None:
    cfg = replace(TrainConfig(), lr=0.1, epochs=3, batch_size=10)
    opt = build_optimizer(create_model("cnn4", 2, pretrained=False), cfg)
    sched = build_scheduler(opt, 95, cfg)  # 10 steps per epoch
    total, warmup = schedule_lengths(95, cfg)
    assert (total, warmup) == (30, 3)
    lrs = [opt.param_groups[0]["lr"]]
    for k in range(1, total + 1):
        sched.step_update(num_updates=k)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1 / 3)
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(0.1)  # linear warm-up over a third of an epoch
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # then monotone cosine decay
    assert lrs[total] == pytest.approx(LR_MIN_FRACTION * 0.1)


def _history(out: Path) -> list[dict]:
    with (out / "history.csv").open() as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def _tiny(data: Path, tmp_path: Path, name: str, **kw: object) -> TrainConfig:
    """cnn4 at 64 px on the tiny dataset, half of it for validation, into ``tmp_path/name``."""
    base = {"arch": "cnn4", "pretrained": False, "image_size": 64, "batch_size": 8, "val_fraction": 0.5}
    return TrainConfig(data=str(data), out=str(tmp_path / name), cache_dir=str(tmp_path / "cache"), **{**base, **kw})


def test_fixed_seed_is_deterministic_on_cpu(tiny_folder_dataset: Path, tmp_path: Path) -> None:
    """Two runs with the same seed give the same history and weights; defaults run on CPU with 2 threads."""
    runs = []
    for name in ("a", "b"):
        train(_tiny(tiny_folder_dataset, tmp_path, name, epochs=2), progress=False)
        runs.append(tmp_path / name)
    a, b = runs
    assert _history(a) == _history(b) and len(_history(a)) == 2
    wa = torch.load(a / "checkpoints" / "last.pt", weights_only=False)["model"]
    wb = torch.load(b / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    runtime = ModelBundle.load(a).training.runtime
    assert runtime["device"] == "cpu" and runtime["threads"] == 2 and runtime["world_size"] == 1
    assert runtime["channels_last"] is True and runtime["precision"] == "32-true"


def test_bad_precision_is_a_value_error(tiny_folder_dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(tiny_folder_dataset), out=str(tmp_path / "m"), arch="cnn4", precision="17-odd")
    with pytest.raises(ValueError, match="precision"):
        train(cfg, progress=False)


def test_dataloader_workers_do_not_change_the_run(tiny_folder_dataset: Path, tmp_path: Path) -> None:
    """Augmentation seeds travel with the items and dropout is seeded per step: --workers 1 == --workers 0."""
    histories = []
    for workers in (0, 1):
        cfg = _tiny(tiny_folder_dataset, tmp_path, f"w{workers}", epochs=1, workers=workers)
        train(cfg, progress=False)
        histories.append(_history(Path(cfg.out)))
    assert histories[0] == histories[1]
    assert ModelBundle.load(tmp_path / "w1").training.runtime["workers"] == 1


def test_every_epoch_draws_its_own_items(
    tiny_folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch e trains on the draw of epoch e, not epoch 0's images and augmentation seeds again.

    Lightning Fabric's dataloader wrapper calls ``set_epoch`` on the sampler with its own count of iterations,
    0 for a loader set up afresh every epoch; a sampler with ``set_epoch`` replayed one draw in every epoch.
    """
    from cxrtriage.training import sampling

    drawn: list[tuple[int, list]] = []
    real_iter = sampling.GlobalBatchSampler.__iter__

    def recording_iter(self: sampling.GlobalBatchSampler):  # type: ignore[no-untyped-def]
        items = list(real_iter(self))
        drawn.append((self.epoch, items))
        return iter(items)

    monkeypatch.setattr(sampling.GlobalBatchSampler, "__iter__", recording_iter)
    train(_tiny(tiny_folder_dataset, tmp_path, "epochs", epochs=3, threads=1), progress=False)
    assert [e for e, _ in drawn] == [1, 2, 3]
    items = [tuple(it) for _, it in drawn]
    assert len(set(items)) == 3  # no epoch repeats another's (image, augmentation seed) sequence


def test_a_kill_between_history_and_checkpoint_loses_no_epoch(
    tiny_folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """history.csv is written before last.pt: a crash while saving epoch 2's checkpoint leaves epoch 1's row, and
    resume drops the orphan row of epoch 2, trains it again and ends with one row per epoch."""
    import cxrtriage.training.trainer as trainer_module

    real_save = trainer_module.save_checkpoint

    def crash_on_second_last(fabric, state, path):  # type: ignore[no-untyped-def]
        if path.name == "last.pt" and state["epoch"] == 2:
            raise KeyboardInterrupt("killed while saving epoch 2")
        real_save(fabric, state, path)

    cfg = _tiny(tiny_folder_dataset, tmp_path, "m", epochs=3)
    monkeypatch.setattr(trainer_module, "save_checkpoint", crash_on_second_last)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    out = Path(cfg.out)
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 1
    before = _history(out)
    assert [r["epoch"] for r in before] == ["1", "2"]  # epoch 2's row came first; its checkpoint never did

    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    train(cfg, resume=True, progress=False)
    after = _history(out)
    assert [r["epoch"] for r in after] == ["1", "2", "3"]
    assert after[0] == before[0]

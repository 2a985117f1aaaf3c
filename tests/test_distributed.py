"""Data-parallel training on CPUs: 2 gloo processes under torchrun, on real Kermany images.

* the 2-process run (``cxr train --nproc 2``, which starts torchrun) ends at the validation AUROC of the
  single-process run with the same global batch (within 0.01): same batches, same augmentation, batch norm
  over the global batch (no dropout, whose masks are per process);
* a rank killed with SIGKILL takes the run down; ``--resume`` in one process (another world size)
  continues after the last checkpointed epoch and keeps the history written before the kill.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cxrtriage.cli.train import torchrun_command
from cxrtriage.config import TrainConfig
from cxrtriage.models.bundle import ModelBundle
from cxrtriage.training.sampling import GlobalBatchSampler
from cxrtriage.training.trainer import train

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def kermany_subset(kermany_dir: Path, tmp_path_factory) -> Path:
    """A manifest of 300 training (100 NORMAL, 200 PNEUMONIA) and 200 validation images of other patients."""
    with (kermany_dir / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    out, used = [], set()
    for split, counts in (("train", {"NORMAL": 100, "PNEUMONIA": 200}), ("val", {"NORMAL": 100, "PNEUMONIA": 100})):
        chosen = []
        for label, n in counts.items():
            pool = [r for r in rows if r["label"] == label and r["patient_id"] not in used]
            chosen += (pool[::-1] if split == "val" else pool)[:n]
        used |= {r["patient_id"] for r in chosen}
        out += [(str(kermany_dir / r["path"]), r["label"], split, r["patient_id"]) for r in chosen]
    path = tmp_path_factory.mktemp("ddp") / "manifest.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "patient_id"])
        w.writerows(out)
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _argv(cfg: TrainConfig) -> list[str]:
    return [
        "--data", cfg.data, "--out", cfg.out, "--arch", cfg.arch, "--image-size", str(cfg.image_size),
        "--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size), "--threads", "1",
        "--cache-dir", str(cfg.cache_dir), "--lr", str(cfg.lr), "--drop-rate", str(cfg.drop_rate), "--quiet",
        *([] if cfg.pretrained else ["--no-pretrained"]),
    ]  # fmt: skip


def _history(out: Path) -> list[dict]:
    with (out / "history.csv").open() as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_global_batches_are_split_between_ranks() -> None:
    weights = torch.tensor([1.0] * 10 + [3.0] * 30).numpy()
    one = GlobalBatchSampler(40, 8, weights, seed=3)
    two = [GlobalBatchSampler(40, 8, weights, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (one, *two):
        s.set_epoch(2)
    single, parts = list(one), [list(s) for s in two]
    assert len(single) == 40 and all(len(p) == 20 for p in parts)
    # each global step of 8 is rank 0's 4 items followed by rank 1's 4 items
    rebuilt = [it for step in range(5) for p in parts for it in p[step * 4 : step * 4 + 4]]
    assert rebuilt == single
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchSampler(40, 9, None, seed=0, world_size=2)


def test_two_gloo_processes_reach_the_single_process_auroc(kermany_subset: Path, tmp_path: Path) -> None:
    base = TrainConfig(
        data=str(kermany_subset),
        arch="efficientnet_lite0",
        image_size=64,
        epochs=2,
        batch_size=32,
        drop_rate=0.0,  # dropout masks are drawn per process; batch norm is global (global_bn)
        threads=1,
        cache_dir=str(tmp_path.parent / "ddp-cache"),
    )
    one = TrainConfig(**{**base.to_dict(), "out": str(tmp_path / "one")})
    train(one, progress=False)
    two_out = tmp_path / "two"
    argv = [sys.executable, "-m", "cxrtriage.cli", "train", *_argv(one), "--nproc", "2"]
    argv[argv.index(one.out)] = str(two_out)
    res = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=400, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("model written to") == 1  # only rank 0 reports (and writes)
    auc_one = float(_history(Path(one.out))[-1]["val_auroc"])
    auc_two = float(_history(two_out)[-1]["val_auroc"])
    assert abs(auc_one - auc_two) <= 0.01, (auc_one, auc_two)
    runtime = ModelBundle.load(two_out).training.runtime
    assert runtime["world_size"] == 2 and runtime["strategy"] == "DDPStrategy" and runtime["device"] == "cpu"


def test_killed_rank_then_resume_with_another_world_size(kermany_subset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        data=str(kermany_subset),
        out=str(tmp_path / "run"),
        arch="cnn4",
        pretrained=False,
        image_size=64,
        epochs=4,
        batch_size=32,
        lr=0.002,
        threads=1,
        cache_dir=str(tmp_path.parent / "ddp-cache"),
    )
    psutil = pytest.importorskip("psutil")
    log = (tmp_path / "torchrun.log").open("w")
    proc = subprocess.Popen(torchrun_command(2, _argv(cfg)), env=_env(), stdout=log, stderr=subprocess.STDOUT)
    ckpt = Path(cfg.out) / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    try:
        while not ckpt.is_file():
            assert proc.poll() is None, (tmp_path / "torchrun.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        rank1 = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.environ().get("RANK") == "1"]
        assert rank1, "rank 1 not found"
        rank1[0].send_signal(signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    last = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
    before = _history(Path(cfg.out))
    # history.csv comes before last.pt: one row more when the kill fell between them (resume drops and redoes it)
    assert 1 <= last < cfg.epochs and len(before) in (last, last + 1)
    before = before[:last]
    train(cfg, progress=False, resume=True)  # one process now
    after = _history(Path(cfg.out))
    assert [int(r["epoch"]) for r in after] == [1, 2, 3, 4]
    assert after[:last] == before
    assert ModelBundle.load(cfg.out).training.runtime["world_size"] == 1

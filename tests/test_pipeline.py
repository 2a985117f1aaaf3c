"""End to end through the real ``cxr`` command: train -> checkpoint -> kill/resume -> evaluate -> predict.

Runs on images made from the shipped examples (always) and on a small real
subset of ../shared/data/kermany-pneumonia (when present).
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

CXR = [sys.executable, "-m", "cxrtriage.cli"]


def run(*args, check=True, **kw):
    proc = subprocess.run([*CXR, *map(str, args)], capture_output=True, text=True, timeout=600, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"cxr {args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def kermany_subset(kermany_dir, tmp_path_factory) -> Path:
    """A manifest of 48 real Kermany training images (24 NORMAL, 24 PNEUMONIA), one per patient."""
    rows, seen = {"NORMAL": [], "PNEUMONIA": []}, set()
    with (kermany_dir / "manifest.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["patient_id"] in seen or len(rows[r["label"]]) >= 24:
                continue
            seen.add(r["patient_id"])
            rows[r["label"]].append(r)
    out = tmp_path_factory.mktemp("kermany_subset") / "manifest.csv"
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id"])
        for r in rows["NORMAL"] + rows["PNEUMONIA"]:
            w.writerow([kermany_dir / r["path"], r["label"], r["patient_id"]])
    return out


def _train_args(data, out, epochs, size=64, arch="cnn4"):
    return [
        "train",
        "--data",
        data,
        "--out",
        out,
        "--arch",
        arch,
        "--no-pretrained",
        "--image-size",
        size,
        "--epochs",
        epochs,
        "--batch-size",
        8,
        "--val-fraction",
        0.5,
        "--patience",
        10,
        "--quiet",
    ]


def _history(out: Path) -> list[dict]:
    with (out / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def kill_and_resume(data, out: Path, epochs: int, env) -> None:
    """Start training, SIGKILL it right after its first checkpoint, resume, and check nothing was lost or redone."""
    proc = subprocess.Popen(
        [*CXR, *map(str, _train_args(data, out, epochs))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert ckpt.exists(), f"no checkpoint written before the kill: {proc.stderr.read()}"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    done = state["epoch"]
    assert done < epochs, "the run finished before it could be interrupted"
    # history.csv is written before last.pt, so every checkpointed epoch has its row (a kill between the two can
    # leave one row more, for an epoch resume trains again and rewrites)
    before = _history(out)[:done]
    assert [int(r["epoch"]) for r in before] == list(range(1, done + 1))
    res = run(*_train_args(data, out, epochs), "--resume", env=env)
    after = _history(out)
    assert [int(r["epoch"]) for r in after] == list(range(1, epochs + 1))
    assert after[:done] == before  # finished epochs were not trained again
    assert "model written to" in res.stdout
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    for name in ("curve_loss.png", "curve_accuracy.png", "curve_auroc.png"):
        assert (out / name).stat().st_size > 1000


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["CXRTRIAGE_CACHE"] = str(tmp_path / "cache")
    return e


@pytest.mark.parametrize("dataset", ["tiny_folder_dataset", "kermany_subset"])
def test_train_kill_resume_evaluate_predict(dataset, request, tmp_path, env, example_paths):
    data = request.getfixturevalue(dataset)
    out = tmp_path / "model"
    kill_and_resume(data, out, epochs=4, env=env)

    ev = tmp_path / "eval"
    res = run("evaluate", "--model", out, "--data", data, "--out", ev, "--quiet", env=env)
    m = json.loads((ev / "metrics.json").read_text())
    for key in [
        "task",
        "n",
        "classes",
        "positive_class",
        "threshold",
        "class_counts",
        "macro_over",
        "metrics",
        "per_class",
        "confusion_matrix",
        "n_boot",
    ]:
        assert key in m, key
    for key in ["accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auroc", "macro_sensitivity"]:
        assert key in m["metrics"], key
    assert m["n"] == sum(map(sum, m["confusion_matrix"]))
    acc = m["metrics"]["accuracy"]
    assert acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]
    assert 0.0 <= m["threshold"] <= 1.0
    for name in ("confusion_matrix.png", "roc_curve.png", "classification_report.txt"):
        assert (ev / name).stat().st_size > 100
    assert "accuracy" in res.stdout

    pred_out = tmp_path / "pred"
    res = run("predict", "--model", out, "--json", "--out", pred_out, *example_paths[:2], env=env)
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert len(lines) == 2
    for line, p in zip(lines, example_paths[:2]):
        assert abs(sum(line["probabilities"].values()) - 1) < 1e-4
        assert (pred_out / f"{p.stem}_annotated.png").exists() and (pred_out / f"{p.stem}_gradcam.png").exists()


def test_bad_files_are_reported_and_skipped(tiny_folder_dataset, tmp_path, env, example_paths):
    data = tmp_path / "data"
    shutil.copytree(tiny_folder_dataset, data)
    good = example_paths[0].read_bytes()
    bad = {
        data / "train" / "NORMAL" / "IM-9999-0001.jpg": good[: len(good) // 2],  # truncated JPEG
        data / "train" / "NORMAL" / "IM-9998-0001.png": b"",  # zero bytes
        data / "train" / "PNEUMONIA" / "person9999_virus_1.png": b"patient notes, not an image\n",  # text named .png
    }
    for path, content in bad.items():
        path.write_bytes(content)
    out = tmp_path / "model"
    res = run(*_train_args(data, out, 1), env=env)
    for path in bad:
        assert f"skipped {path}" in res.stdout
    assert "3 unreadable image(s) skipped" in res.stdout

    ev = tmp_path / "eval"
    res = run("evaluate", "--model", out, "--data", data, "--out", ev, "--quiet", env=env)
    m = json.loads((ev / "metrics.json").read_text())
    assert sorted(s["path"] for s in m["skipped"]) == sorted(map(str, bad))
    assert m["n"] == 40
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert "truncated" in reasons[str(next(iter(bad)))]


def test_predict_missing_or_broken_file_exits_nonzero(tmp_path, env, tiny_folder_dataset):
    out = tmp_path / "model"
    run(*_train_args(tiny_folder_dataset, out, 1), env=env)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0garbage")
    for path, reason in [(tmp_path / "missing.png", "file not found"), (broken, "")]:
        res = run("predict", "--model", out, path, "--out", tmp_path / "p", check=False, env=env)
        assert res.returncode != 0
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and reason in err[0]

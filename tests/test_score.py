"""``cxr score``: streaming batch scoring into Parquet, with workers, resume, heatmaps and a Dask job."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.dataset as ds  # noqa: E402

from cxrtriage.cli.main import main  # noqa: E402
from cxrtriage.config import ScoreConfig  # noqa: E402
from cxrtriage.inference.backend import OnnxBackend  # noqa: E402
from cxrtriage.inference.score import (  # noqa: E402
    MAX_AUTO_STREAMS,
    heatmap_dir,
    list_inputs,
    score,
    score_dask,
    stream_count,
)
from cxrtriage.models.bundle import resolve_model_dir  # noqa: E402


def _table(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in ds.dataset(out).to_table().to_pylist()}


@pytest.fixture()
def archive(examples_dir: Path, tmp_path: Path) -> Path:
    """The 8 shipped examples plus a truncated JPEG, in a nested folder."""
    root = tmp_path / "archive"
    (root / "a" / "b").mkdir(parents=True)
    for i, p in enumerate(sorted(examples_dir.glob("*.jpg"))):
        shutil.copy(p, root / ("a/b" if i % 2 else "a") / p.name)
    data = (examples_dir / "NORMAL_IM-0664-0001.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(data[: len(data) // 3])
    return root


def test_score_folder_matches_the_backend_and_reports_corrupt_files(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.parquet"
    rc = main(
        ["score", "--data", str(archive), "--out", str(out), "--workers", "2", "--threads", "1",
         "--batch-size", "3", "--rows-per-part", "4", "--heatmaps", "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    assert len(list(out.glob("part-*.parquet"))) == 3  # 9 rows in parts of 4
    rows = _table(out)
    assert len(rows) == 9
    broken = rows[str(archive / "broken.jpg")]
    assert broken["label"] is None and "truncated" in broken["error"]
    good = sorted(k for k, r in rows.items() if r["error"] is None)
    backend = OnnxBackend(resolve_model_dir(None), threads=1)
    want = backend.probabilities(good)
    got = np.array([[rows[k]["p_NORMAL"], rows[k]["p_PNEUMONIA"]] for k in good])
    np.testing.assert_allclose(got, want, atol=1e-5)
    findings = {k for k in good if rows[k]["triage"] == "finding"}
    assert findings and all(Path(rows[k]["heatmap"]).is_file() for k in findings)
    assert all(rows[k]["heatmap"] is None for k in good if k not in findings)
    assert len(list(heatmap_dir(out).glob("*.png"))) == len(findings)


def test_resume_skips_scored_ids_and_manifest_ids(examples_dir: Path, tmp_path: Path) -> None:
    paths = sorted(examples_dir.glob("*.jpg"))
    manifest = tmp_path / "archive.csv"
    rows = [(f"study-{i}", str(paths[i % len(paths)])) for i in range(12)]  # files listed more than once

    def write(n: int) -> None:
        with manifest.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "path"])
            w.writerows(rows[:n])

    out = tmp_path / "pred.parquet"
    write(5)  # the "crashed" first run got through 5 images
    first = score(ScoreConfig(data=str(manifest), out=str(out), workers=0, threads=1, device="cpu"), progress=False)
    (out / ".part-stale-00000.parquet.tmp").write_bytes(b"half a file")  # a part cut off by a crash
    write(12)
    second = score(ScoreConfig(data=str(manifest), out=str(out), workers=1, threads=1, device="cpu"), progress=False)
    assert (first.scored, second.scored, second.already_done) == (5, 7, 5)
    table = _table(out)
    assert sorted(table) == sorted(k for k, _ in rows)
    assert not list(out.glob(".*.tmp"))
    # the same file under two ids gets the same probabilities
    assert table["study-0"]["p_PNEUMONIA"] == pytest.approx(table["study-8"]["p_PNEUMONIA"], abs=1e-6)


def test_streams_score_in_parallel_and_write_in_input_order(archive: Path, tmp_path: Path) -> None:
    """Several batches in flight (each stream decoding its own) give the rows of one stream, in the same order."""
    outs = {}
    for streams in (1, 3):
        out = tmp_path / f"s{streams}.parquet"
        cfg = ScoreConfig(data=str(archive), out=str(out), workers=0, streams=streams, batch_size=2, device="cpu")
        res = score(cfg, progress=False)
        assert (res.scored, res.errors) == (8, 1)
        outs[streams] = ds.dataset(out).to_table().to_pylist()
    assert [r["id"] for r in outs[3]] == [r["id"] for r in outs[1]] == [p for _, p in list_inputs(archive)]
    for a, b in zip(outs[1], outs[3]):
        assert a["label"] == b["label"] and a["error"] == b["error"]
        if a["error"] is None:
            assert a["p_PNEUMONIA"] == pytest.approx(b["p_PNEUMONIA"], abs=1e-6)


def test_stream_count_defaults_to_one_per_core_on_onnxruntime(tmp_path: Path) -> None:
    backend = OnnxBackend(resolve_model_dir(None), threads=1)
    cores = len(os.sched_getaffinity(0))
    assert stream_count(ScoreConfig(streams=5), backend) == 5
    assert stream_count(ScoreConfig(), backend) == max(1, min(MAX_AUTO_STREAMS, cores))
    assert stream_count(ScoreConfig(threads=cores), backend) == 1
    with pytest.raises(ValueError, match="streams must be >= 0"):
        ScoreConfig(streams=-1)


def test_onnx_scoring_never_imports_pytorch(archive: Path, tmp_path: Path) -> None:
    """ONNX Runtime scoring on the CPU (``--device auto`` without a GPU driver, heatmaps included) runs without
    importing torch, torchvision or timm: they would hold most of the scorer's memory."""
    from cxrtriage.inference.device import _gpu_driver_present

    device = "cpu" if _gpu_driver_present() else "auto"  # with a GPU driver, auto rightly asks PyTorch
    code = (
        "import sys\n"
        "from cxrtriage.cli.main import main\n"
        f"rc = main(['score', '--data', {str(archive)!r}, '--out', {str(tmp_path / 'p.parquet')!r}, "
        f"'--device', {device!r}, '--heatmaps', '--quiet'])\n"
        "loaded = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]\n"
        "assert rc == 0 and not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(_table(tmp_path / "p.parquet")) == 9


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("file,label\nx.png,NORMAL\n")
    with pytest.raises(ValueError, match="'path' column"):
        list_inputs(bad)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_inputs(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown device"):
        ScoreConfig(device="gpu")


def test_dask_job_on_two_local_workers_matches_local_scoring(examples_dir: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    local = tmp_path / "local.parquet"
    score(ScoreConfig(data=str(examples_dir), out=str(local), workers=0, threads=1, device="cpu"), progress=False)
    out = tmp_path / "dask.parquet"
    cfg = ScoreConfig(data=str(examples_dir), out=str(out), threads=1, device="cpu", rows_per_part=2)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        res = score_dask(cfg, client, partition_size=3)
        assert res.scored == 8 and len(client.scheduler_info()["workers"]) == 2
        again = score_dask(cfg, client, partition_size=3)
    assert again.scored == 0 and again.already_done == 8
    a, b = _table(local), _table(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert b[k]["label"] == a[k]["label"]
        assert b[k]["p_PNEUMONIA"] == pytest.approx(a[k]["p_PNEUMONIA"], abs=1e-6)

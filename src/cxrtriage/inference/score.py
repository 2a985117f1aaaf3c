"""Streaming batch scoring of large image archives (``cxr score``) into a Parquet dataset.

Images are listed (a folder, searched recursively, or a CSV manifest), decoded and preprocessed
(:func:`cxrtriage.data.io.read_image`, :func:`cxrtriage.data.transforms.preprocess`) by the scoring threads
themselves or by worker processes, scored batch by batch through :meth:`cxrtriage.inference.backend.Backend.run`
(ONNX Runtime on the CPU, PyTorch on a GPU), several batches at once (:func:`stream_count`), and appended in
input order to ``OUT/part-*.parquet``. Memory stays constant: only a few batches are in flight and at most
``rows_per_part`` result rows are held before they are written. Each part is written under a temporary
name and renamed, so a crash loses at most the unwritten rows; a second run skips every image id already
in the output.

Output columns (one row per image):

``id`` (string)
    The manifest's ``id`` column when it has one (e.g. an SOP Instance UID), else the path as listed.
``path`` (string)
    The image file.
``label``, ``triage`` (string, null on error)
    Predicted class under the model's decision rule; ``finding`` / ``no_finding``.
``p_<class>`` (float32, null on error)
    Class probability, temperature applied.
``heatmap`` (string, null)
    CAM heatmap PNG (with ``heatmaps=True``, only for images called ``finding``).
``error`` (string, null)
    Why an unreadable image was skipped (it is not retried by a resumed run).
``model`` (string)
    The model version.

:func:`score_dask` runs the same scoring as a Dask job, one task per partition of the input.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import multiprocessing as mp
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrtriage.config import ModelConfig, ScoreConfig
from cxrtriage.data.cache import resize_gray
from cxrtriage.data.io import IMAGE_SUFFIXES, ImageReadError, read_image
from cxrtriage.data.transforms import preprocess
from cxrtriage.explain.cam import cam_from_features, normalize_cam
from cxrtriage.explain.overlay import heatmap_overlay
from cxrtriage.inference.backend import OnnxBackend, TorchBackend
from cxrtriage.inference.loading import load_backend
from cxrtriage.inference.lung_input import model_inputs
from cxrtriage.metrics.calibration import softmax
from cxrtriage.metrics.decision import decide
from cxrtriage.models.bundle import resolve_model_dir
from cxrtriage.tasks import get_task

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ScoreResult", "list_inputs", "read_scored_ids", "score", "score_dask", "heatmap_dir", "stream_count"]

log = logging.getLogger(__name__)

#: Upper bound of the automatic :func:`stream_count` (memory grows with every stream).
MAX_AUTO_STREAMS = 8

#: One image to score: ``(id, path)``.
Item = tuple[str, str]


@dataclass
class ScoreResult:
    """Outcome of :func:`score` / :func:`score_dask`.

    Attributes
    ----------
    out : Path
        The Parquet dataset folder.
    scored : int
        Images scored by this run (readable ones).
    errors : int
        Unreadable images recorded with their reason by this run.
    already_done : int
        Images skipped because their id was already in the output.
    seconds : float
        Wall time of this run.
    images_per_second : float
        ``(scored + errors) / seconds``.
    """

    out: Path
    scored: int
    errors: int
    already_done: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0


def list_inputs(data: str | Path) -> list[Item]:
    """The images of a folder (recursively, sorted) or of a CSV manifest, as ``(id, path)`` pairs.

    A manifest needs a ``path`` column (relative to the manifest's folder, or absolute); an ``id`` column,
    when present, names each row (the same file may then be listed several times), else the path is the id.

    Raises
    ------
    FileNotFoundError
        ``data`` does not exist.
    ValueError
        A manifest without a ``path`` column, a duplicate id, or a folder without images.
    """
    p = Path(data)
    if p.is_dir():
        paths = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not paths:
            raise ValueError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return [(x, x) for x in paths]
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such folder or manifest")
    items: list[Item] = []
    seen: set[str] = set()
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"{p}: manifest needs a 'path' column (has {reader.fieldnames})")
        has_id = "id" in (reader.fieldnames or [])
        for row in reader:
            rel = (row.get("path") or "").strip()
            if not rel:
                continue
            path = str(p.parent / rel) if not Path(rel).is_absolute() else rel
            key = (row.get("id") or "").strip() if has_id else path
            if not key:
                raise ValueError(f"{p}: empty id for {rel}")
            if key in seen:
                raise ValueError(f"{p}: id {key!r} listed twice")
            seen.add(key)
            items.append((key, path))
    return items


def _parts(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


def read_scored_ids(out: str | Path) -> set[str]:
    """Ids already in the output dataset (empty when it does not exist); stale temporary files are removed."""
    import pyarrow.parquet as pq

    d = Path(out)
    if not d.is_dir():
        return set()
    for tmp in d.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)
    done: set[str] = set()
    for part in _parts(d):
        done.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
    return done


def heatmap_dir(out: str | Path) -> Path:
    """Folder of the heatmap PNGs of output ``out``: ``<out without suffix>_heatmaps`` beside it."""
    o = Path(out)
    return o.with_name(o.stem + "_heatmaps")


def _prepare(
    item: Item, image_size: int, intensity: str, mean: float, std: float, lung_input: str = "full"
) -> tuple[Item, Any]:
    """Worker: ``(item, float32 (1, S, S))`` or ``(item, reason)`` for an unreadable file.

    For a model with a lung step (``lung_input`` not ``full``) the worker only decodes and squashes
    (``uint8 (S, S)``); the segmenter runs per batch in the stream (:func:`_forward`), never in a forked worker.
    """
    try:
        if lung_input != "full":
            return item, resize_gray(read_image(item[1]), image_size)
        return item, preprocess(read_image(item[1]), image_size, intensity, mean, std)
    except ImageReadError as exc:
        return item, exc.reason
    except (ValueError, OSError, MemoryError) as exc:  # a decoder failure not caught by read_image
        return item, f"cannot decode image ({exc})"


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _decoded_batches(
    items: Sequence[Item], cfg: ScoreConfig, fn: Callable[[Item], tuple[Item, Any]]
) -> Iterator[list[tuple[Item, Any]]]:
    """Batches prepared by ``fn`` (:func:`_prepare` with the model's settings) in ``cfg.workers`` (>= 1)
    decoding processes, in input order (bounded: 2 batches per worker ahead)."""
    # fork: the workers start at once and share the parent's pages (PIL, NumPy, the code) copy-on-write;
    # they only decode and resize (PIL/NumPy), never touch torch or ONNX Runtime state they inherit
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    with ctx.Pool(cfg.workers) as pool:
        pending: deque = deque()
        per_task = max(1, cfg.batch_size // (2 * cfg.workers))
        for chunk in _chunks(items, cfg.batch_size):
            pending.append(pool.map_async(fn, chunk, chunksize=per_task))
            if len(pending) > 2 * cfg.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def stream_count(cfg: ScoreConfig, backend: OnnxBackend | TorchBackend) -> int:
    """Batches :func:`score` keeps in flight: ``cfg.streams``, or when it is 0 the usable CPU cores divided
    by ``cfg.threads``, between 1 and :data:`MAX_AUTO_STREAMS`, for ONNX Runtime on the CPU and 1 for PyTorch
    (a GPU).

    On the 2-core reference machine two streams of one ONNX Runtime thread each, every stream decoding its
    own batch, score faster than one stream of two threads with decoding beside it (``docs/scaling.md``).
    Memory grows with streams x batch size (two streams, PyTorch still loaded: peak RSS 1,106 / 1,244 /
    1,527 MB at batch 16 / 32 / 64), hence the cap; on bigger machines raise ``threads`` instead.
    """
    if cfg.streams:
        return cfg.streams
    if not isinstance(backend, OnnxBackend):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_AUTO_STREAMS, cores // cfg.threads))


#: A batch after its forward pass: the prepared items, then logits ``float32 (n_ok, K)`` and CAM feature maps
#: ``float32 (n_ok, C, h, w)`` (or ``(n_ok, 0)``) of its readable images, in order (``None`` when none is).
Forwarded = tuple[list[tuple[Item, Any]], np.ndarray | None, np.ndarray | None]


def _forward(backend: OnnxBackend | TorchBackend, batch: list[tuple[Item, Any]], want_maps: bool) -> Forwarded:
    ok = [x for _, x in batch if isinstance(x, np.ndarray)]
    if not ok:
        return batch, None, None
    mc = backend.require_config()
    x = model_inputs(ok, mc) if mc.input != "full" else np.stack(ok)
    logits, fmaps = backend.run([x], features="map" if want_maps else "none")
    return batch, logits, fmaps


def _forwarded_batches(
    backend: OnnxBackend | TorchBackend, items: Sequence[Item], cfg: ScoreConfig, want_maps: bool
) -> Iterator[Forwarded]:
    """Batches after their forward pass, in input order, :func:`stream_count` of them in flight.

    Each stream is a thread that decodes its batch (``cfg.workers == 0``; PIL, NumPy and ONNX Runtime
    release the GIL) or takes it from the decoding processes, then runs the network on it.
    """
    mc = backend.require_config()
    fn = functools.partial(
        _prepare, image_size=mc.image_size, intensity=mc.intensity, mean=mc.mean, std=mc.std, lung_input=mc.input
    )
    streams = stream_count(cfg, backend)
    job: Callable[[Any], Forwarded]
    inputs: Iterable[Any]
    if cfg.workers == 0:
        inputs = _chunks(items, cfg.batch_size)

        def job(chunk: Any) -> Forwarded:
            return _forward(backend, [fn(it) for it in chunk], want_maps)

    else:
        inputs = _decoded_batches(items, cfg, fn)

        def job(batch: Any) -> Forwarded:
            return _forward(backend, batch, want_maps)

    with ThreadPoolExecutor(streams, thread_name_prefix="score") as ex:
        pending: deque[Future[Forwarded]] = deque()
        for x in inputs:
            pending.append(ex.submit(job, x))
            if len(pending) > streams:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _load_backend(model_dir: str | Path, cfg: ScoreConfig) -> OnnxBackend | TorchBackend:
    """ONNX Runtime on the CPU (exported on demand), PyTorch on a GPU."""
    return load_backend(model_dir, threads=cfg.threads, device=cfg.device)


class _PartWriter:
    """Buffers result rows and writes ``part-<run>-<n>.parquet`` files of ``rows`` rows, atomically."""

    def __init__(self, out: Path, schema: pa.Schema, rows: int, name: str | None = None):
        self.out, self.schema, self.rows = out, schema, rows
        self.run = name or uuid.uuid4().hex[:12]
        self.buffer: list[dict] = []
        self.n = 0
        out.mkdir(parents=True, exist_ok=True)

    def add(self, rows: Iterable[dict]) -> None:
        self.buffer.extend(rows)
        while len(self.buffer) >= self.rows:
            self._write(self.buffer[: self.rows])
            self.buffer = self.buffer[self.rows :]

    def close(self) -> None:
        if self.buffer:
            self._write(self.buffer)
            self.buffer = []

    def _write(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=self.schema)
        final = self.out / f"part-{self.run}-{self.n:05d}.parquet"
        tmp = self.out / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        tmp.replace(final)
        self.n += 1


def _schema(mc: ModelConfig) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("path", pa.string()),
            ("label", pa.string()),
            ("triage", pa.string()),
            *[(f"p_{c}", pa.float32()) for c in mc.classes],
            ("heatmap", pa.string()),
            ("error", pa.string()),
            ("model", pa.string()),
        ]
    )


def _heatmap_name(key: str, path: str) -> str:
    """``<file stem>-<8 hex of the id's SHA-1>.png``: readable, and unique when ids differ."""
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(path).stem)[:80]
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.png"


def _rows(forwarded: Forwarded, mc: ModelConfig, heat_dir: Path | None, head: Any) -> list[dict]:
    """Result rows of one batch after its forward pass (and its heatmap PNGs)."""
    task = get_task(mc.task)
    batch, logits, fmaps = forwarded
    rows: list[dict] = []
    ok = [item for item, x in batch if isinstance(x, np.ndarray)]
    for (key, path), reason in ((item, x) for item, x in batch if not isinstance(x, np.ndarray)):
        log.warning("skipped %s: %s", path, reason)
        rows.append({"id": key, "path": path, "error": str(reason), "model": mc.version})
    if logits is None:
        return rows
    probs = softmax(logits, mc.temperature)
    idx = decide(probs, mc)
    for i, (key, path) in enumerate(ok):
        label = mc.classes[int(idx[i])]
        row = {
            "id": key,
            "path": path,
            "label": label,
            "triage": "no_finding" if label in task.normal_classes else "finding",
            **{f"p_{c}": float(p) for c, p in zip(mc.classes, probs[i])},
            "model": mc.version,
        }
        if heat_dir is not None and fmaps is not None and row["triage"] == "finding":
            heat = normalize_cam(cam_from_features(fmaps[i], head[0], int(idx[i])))
            png = heat_dir / _heatmap_name(key, path)
            heatmap_overlay(read_image(path), heat).save(png)
            row["heatmap"] = str(png)
        rows.append(row)
    return rows


def _score_items(
    backend: OnnxBackend | TorchBackend,
    items: Sequence[Item],
    cfg: ScoreConfig,
    writer: _PartWriter,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Score ``items`` into ``writer``; returns ``(scored, errors)``."""
    mc = backend.require_config()
    heat_dir = heatmap_dir(cfg.out) if cfg.heatmaps and backend.head is not None else None
    if heat_dir is not None:
        heat_dir.mkdir(parents=True, exist_ok=True)
    scored = errors = 0
    for forwarded in _forwarded_batches(backend, items, cfg, want_maps=heat_dir is not None):
        rows = _rows(forwarded, mc, heat_dir, backend.head)
        writer.add(rows)
        n_err = sum(1 for r in rows if r.get("error"))
        errors += n_err
        scored += len(rows) - n_err
        if on_batch is not None:
            on_batch(len(rows))
    writer.close()
    return scored, errors


def _todo(cfg: ScoreConfig) -> tuple[list[Item], int]:
    items = list_inputs(cfg.data)
    done = read_scored_ids(cfg.out)
    todo = [it for it in items if it[0] not in done]
    return todo, len(items) - len(todo)


def score(cfg: ScoreConfig, progress: bool = True) -> ScoreResult:
    """Score every image of ``cfg.data`` not yet in ``cfg.out``; see the module docstring.

    Parameters
    ----------
    cfg : ScoreConfig
    progress : bool
        tqdm progress bar (images/s) on stderr.

    Returns
    -------
    ScoreResult

    Raises
    ------
    FileNotFoundError, ValueError
        Missing data, a bad manifest (:func:`list_inputs`), a bad device or model folder.
    """
    t0 = time.time()
    model_dir = resolve_model_dir(cfg.model)
    todo, done = _todo(cfg)
    backend = _load_backend(model_dir, cfg)
    writer = _PartWriter(Path(cfg.out), _schema(backend.require_config()), cfg.rows_per_part)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="score", smoothing=0.1)
    try:
        scored, errors = _score_items(backend, todo, cfg, writer, on_batch=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return ScoreResult(Path(cfg.out), scored, errors, done, time.time() - t0)


@functools.lru_cache(maxsize=2)
def _worker_backend(model_dir: str, device: str, threads: int) -> OnnxBackend | TorchBackend:
    """One backend per Dask worker process and model (loaded by the first task, reused by the others)."""
    return _load_backend(model_dir, ScoreConfig(device=device, threads=threads))


def _score_partition(model_dir: str, items: list[Item], cfg: ScoreConfig, name: str) -> tuple[int, int]:
    """Dask task: score one partition into its own part files ``part-<name>-*.parquet``."""
    backend = _worker_backend(model_dir, cfg.device, cfg.threads)
    writer = _PartWriter(Path(cfg.out), _schema(backend.require_config()), cfg.rows_per_part, name=name)
    return _score_items(backend, items, cfg, writer)


def score_dask(cfg: ScoreConfig, client: Any, partition_size: int = 1024) -> ScoreResult:
    """:func:`score` as a Dask job: one task per ``partition_size`` images, run by the client's workers.

    Each task decodes in its worker process (``cfg.workers`` and ``cfg.streams`` are ignored: Dask's workers
    are the parallelism), loads the model once per worker and writes its own part files into ``cfg.out``,
    which must be a folder every worker can write (a shared file system on a cluster). Resuming works as
    for :func:`score`.

    Parameters
    ----------
    cfg : ScoreConfig
    client : distributed.Client
        Connected to a ``LocalCluster`` or a cluster's scheduler.
    partition_size : int
        Images per task (>= 1).

    Returns
    -------
    ScoreResult

    Raises
    ------
    ValueError
        ``partition_size < 1`` or as :func:`score`.
    """
    if partition_size < 1:
        raise ValueError(f"partition_size must be >= 1, got {partition_size}")
    t0 = time.time()
    model_dir = str(resolve_model_dir(cfg.model))
    todo, done = _todo(cfg)
    task_cfg = replace(cfg, workers=0, streams=1)
    run = uuid.uuid4().hex[:8]
    parts = [list(todo[i : i + partition_size]) for i in range(0, len(todo), partition_size)]
    futures = client.map(
        _score_partition,
        [model_dir] * len(parts),
        parts,
        [task_cfg] * len(parts),
        [f"{run}{k:05d}" for k in range(len(parts))],
        pure=False,
    )
    counts = client.gather(futures)
    scored = sum(c[0] for c in counts)
    errors = sum(c[1] for c in counts)
    return ScoreResult(Path(cfg.out), scored, errors, done, time.time() - t0)

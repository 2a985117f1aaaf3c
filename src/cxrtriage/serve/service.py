"""The work behind the endpoints: decode an upload safely, analyse it, store the study.

Kept free of FastAPI so it can be tested and benchmarked directly.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import hashlib
import io
import logging
import re
import secrets
import struct
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrtriage.config import ModelConfig
from cxrtriage.data.dicom import OriginalPixels, decode_dicom_with_original, is_dicom
from cxrtriage.data.io import ImageReadError, decode_image
from cxrtriage.explain.cam import cam_from_features, normalize_cam, upsample_cam
from cxrtriage.inference.backend import OnnxBackend
from cxrtriage.inference.lung_input import model_inputs
from cxrtriage.inference.predictor import predictions_from_probs
from cxrtriage.metrics.audit import mass_in_mask
from cxrtriage.metrics.calibration import softmax
from cxrtriage.models.bundle import ModelLoadError
from cxrtriage.ood.colour import COLOURFULNESS_LIMIT, colourfulness_of_bytes
from cxrtriage.ood.gate import CxrGate, GateFeatures, gate_input, load_gate
from cxrtriage.ood.mahalanobis import MahalanobisDetector, pooled_features
from cxrtriage.ood.population import PopulationGate, load_population_gate, population_warning
from cxrtriage.report.draft import build_report, sign_off
from cxrtriage.report.render import render_html, render_json, render_pdf
from cxrtriage.segment.bundle import SegmenterBundleError
from cxrtriage.segment.postprocess import LungMask
from cxrtriage.segment.runtime import LungSegmenter, shipped_segmenter_dir
from cxrtriage.serve.batching import MicroBatcher, QueueFullError
from cxrtriage.serve.lan import public_url
from cxrtriage.serve.schemas import StudyOut, result_links
from cxrtriage.serve.settings import ServeSettings
from cxrtriage.store import ModelResult, Study, StudyStore, model_set_key, png_bytes
from cxrtriage.tasks import get_task

__all__ = [
    "ApiError",
    "Engine",
    "GateResult",
    "ModelEngine",
    "Analysis",
    "finding_priority",
    "onnx_backend",
    "StudyService",
    "safe_filename",
    "sniff_format",
    "check_image_header",
    "pixel_sha256",
    "reader_call",
    "reader_labels",
    "DECODE_WAIT_S",
]

log = logging.getLogger(__name__)

_PNG = b"\x89PNG\r\n\x1a\n"

#: Longest wait for a decode slot before answering 503, seconds.
DECODE_WAIT_S = 60.0

#: Bytes per pixel PIL holds for a decoded image of each mode (1-byte modes, 16-bit, else 4).
_PIL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}

#: Further bytes per pixel of the conversion to 8-bit gray (:func:`cxrtriage.data.io.to_uint8_gray`).
_CONVERT_BYTES = {"L": 1, "LA": 2, "La": 2, "RGB": 2, "RGBA": 6, "RGBX": 6, "I;16": 3, "I;16B": 3, "I;16L": 3}


class ApiError(Exception):
    """An error answer: HTTP ``status``, machine code ``error``, a human ``reason`` and optional response ``headers``."""

    def __init__(self, status: int, error: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason
        self.headers = headers


def safe_filename(name: str | None) -> str:
    """Last path component of an upload's file name, printable, at most 100 characters.

    ``"../../etc/passwd"`` -> ``"passwd"``; ``"C:\\x\\a.png"`` -> ``"a.png"``; empty -> ``"upload"``.
    Used only in messages; never as a path and never stored.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .")
    return base[:100] or "upload"


def sniff_format(data: bytes) -> str | None:
    """``"dicom"``, ``"png"``, ``"jpeg"`` from the file content (magic numbers), else None."""
    if is_dicom(data):
        return "dicom"
    if data.startswith(_PNG):
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def check_image_header(data: bytes, name: str, max_pixels: int, max_bytes: int) -> tuple[int, int]:
    """Check a PNG/JPEG's dimensions and decode memory from its header, before any pixel is decoded.

    ``PIL.Image.open`` only parses the header. The estimated peak is the
    decoded image (1, 2 or 4 bytes per pixel by mode) plus the conversion to
    8-bit gray, plus 6 bytes per pixel of coefficient buffers for progressive
    JPEG, plus the file itself.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str
        Name used in messages.
    max_pixels : int
        Largest accepted width x height.
    max_bytes : int
        Memory budget of one decode, bytes.

    Returns
    -------
    (width, height) : (int, int)

    Raises
    ------
    ImageReadError
        Unreadable header, too many pixels, or over the budget.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            mode = im.mode
            progressive = bool(im.info.get("progressive") or im.info.get("progression"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise ImageReadError(name, f"not a readable PNG or JPEG image ({exc.__class__.__name__})") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"image too large ({exc})") from None
    if w * h > max_pixels:
        raise ImageReadError(name, f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP > {max_pixels / 1e6:.0f} MP")
    per_pixel = _PIL_BYTES.get(mode, 4) + _CONVERT_BYTES.get(mode, 6) + (6 if progressive else 0)
    need = w * h * per_pixel + len(data)
    if need > max_bytes:
        raise ImageReadError(
            name,
            f"image needs about {need / 1e6:.0f} MB to decode ({w}x{h}, mode {mode}) > budget {max_bytes / 1e6:.0f} MB",
        )
    return w, h


def pixel_sha256(img: np.ndarray) -> str:
    """Hex SHA-256 of a decoded image: its shape and dtype, then its pixels (C order).

    The identity of a study: the same pixels give the same study whatever the
    file format, name or metadata; the file's bytes (which may carry PHI) are
    never hashed or stored.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8 (H, W)``.

    Returns
    -------
    str
        64 hex characters.
    """
    h = hashlib.sha256(f"{img.dtype.str}:{img.shape[0]}x{img.shape[1]}:".encode())
    h.update(np.ascontiguousarray(img).data)
    return h.hexdigest()


@dataclass
class GateResult:
    """What the two gates say about one image.

    Attributes
    ----------
    is_cxr : bool
        Gate 1: a chest radiograph (True when gate 1 is not shipped).
    cxr_score : float
        Gate 1 log-odds of a chest radiograph (NaN when not shipped).
    population : {"pediatric", "adult"} or None
        Gate 2 (None when not shipped or no model declares a population).
    population_score : float
        Gate 2 log-odds of pediatric (NaN when not run).
    ms : float
        Milliseconds of both gates.
    features : numpy.ndarray or None
        ``float32 (1, 1280)`` pooled gate features (kept for gate 2 when it waits for the lung mask).
    """

    is_cxr: bool = True
    cxr_score: float = float("nan")
    population: str | None = None
    population_score: float = float("nan")
    ms: float = 0.0
    features: np.ndarray | None = None


@dataclass
class Analysis:
    """One model's output for one image.

    Attributes
    ----------
    probabilities : numpy.ndarray
        ``float64 (K,)`` calibrated class probabilities.
    label, label_index, triage
        Predicted class, its index, ``"no_finding"`` or ``"finding"``.
    cam : numpy.ndarray or None
        ``float32 (h, w)`` class activation map in [0, 1] of the predicted class.
    ood_score : float or None
        Squared Mahalanobis distance on the model's pooled features (when a detector is fitted).
    inference_ms, heatmap_ms : float
        Milliseconds of the forward pass and of the CAM + OOD score.
    priority : float
        In [0, 1]: 1 - P(normal classes of the task); P(positive class) when the task has none.
    applicable : bool
        Inside the population the model was validated on (gate 2).
    population_warning : str or None
        Why not, when not applicable.
    cam_in_lungs : float or None
        Share of the CAM's mass inside the lung mask (None: no CAM or no usable mask).
    """

    probabilities: np.ndarray
    label: str
    label_index: int
    triage: str
    cam: np.ndarray | None
    ood_score: float | None
    inference_ms: float
    heatmap_ms: float
    priority: float = 0.0
    applicable: bool = True
    population_warning: str | None = None
    cam_in_lungs: float | None = None


def finding_priority(probabilities: np.ndarray, config: ModelConfig) -> float:
    """Calibrated probability of a finding according to one model.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``float (K,)`` class probabilities in the order of ``config.classes``.
    config : ModelConfig

    Returns
    -------
    float
        In [0, 1]: 1 - sum of P(normal classes of the task) (:attr:`cxrtriage.tasks.Task.normal_classes`);
        for a task without normal classes, P(``config.positive_class``).
    """
    probs = dict(zip(config.classes, (float(p) for p in probabilities)))
    normal = [c for c in get_task(config.task).normal_classes if c in probs]
    if normal:
        p = 1.0 - sum(probs[c] for c in normal)
    else:
        p = probs.get(config.positive_class, 0.0)
    return float(min(1.0, max(0.0, p)))


def onnx_backend(model_dir: str | Path, threads: int) -> OnnxBackend:
    """The ONNX Runtime backend of a served model: the server never runs PyTorch.

    Parameters
    ----------
    model_dir : path
        Model bundle folder with ``model.onnx`` (written by ``cxr export``).
    threads : int
        ONNX Runtime intra-op threads.

    Returns
    -------
    OnnxBackend

    Raises
    ------
    cxrtriage.models.bundle.ModelLoadError
        No ``model.onnx``, or one whose SHA-256 differs from the one recorded in ``bundle.json`` (a stale
        export); the message names the folder and the command that exports it.
    """
    d = Path(model_dir)
    try:
        return OnnxBackend(d, threads, memory_arena=False)  # one image per call: the arena only holds memory
    except FileNotFoundError as exc:
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(
            f"{d}: no model.onnx; the server runs models in ONNX Runtime only: export it first with "
            f"`cxr export --model {d}`"
        ) from None
    except ValueError as exc:
        raise ModelLoadError(f"{exc}; the server runs model.onnx only: run `cxr export --model {d}`") from None


class ModelEngine:
    """One model behind the server: ONNX Runtime backend, decision rule, CAM, OOD detector.

    Parameters
    ----------
    model_dir : path
        Model bundle folder.
    settings : ServeSettings
    lock : threading.Lock
        Shared by the models of one server: one forward pass at a time.
    position : int
        Order of the model on the server.
    segmenter : LungSegmenter, optional
        The lung step of a model declaring ``input: lungs | lung-crop`` (the server's micro-batched
        segmenter); None: the shipped one (:func:`cxrtriage.segment.load_segmenter`).

    Attributes
    ----------
    batcher : MicroBatcher
        The model's queue and worker (:mod:`cxrtriage.serve.batching`): network inputs ``float32 (1, S, S)``
        of concurrent uploads share one ONNX Runtime call, ``(logits (K,), feature map (C, h, w))`` back.

    Raises
    ------
    cxrtriage.models.bundle.ModelLoadError
        Not a model folder, or no up-to-date ``model.onnx`` in it (:func:`onnx_backend`).
    """

    def __init__(
        self,
        model_dir: Path,
        settings: ServeSettings,
        lock: threading.Lock,
        position: int = 0,
        segmenter: LungSegmenter | None = None,
    ):
        self.position = position
        self.model_dir = Path(model_dir)
        self.backend = onnx_backend(self.model_dir, settings.threads)
        self.config: ModelConfig = self.backend.require_config()
        self.model_name = self.model_dir.resolve().name
        self.detector = MahalanobisDetector.load(self.model_dir)
        fitted_for = self.detector.info.get("model_version") if self.detector is not None else None
        if fitted_for and fitted_for != self.config.version:
            log.warning(
                "OOD detector in %s was fitted for model %s, not %s: ignored (run `cxr fit-ood`)",
                self.model_dir,
                fitted_for,
                self.config.version,
            )
            self.detector = None
        self._lock = lock
        self.segmenter = segmenter
        self.batcher: MicroBatcher[np.ndarray, tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._run_batch, self.model_name, settings.max_batch, settings.max_wait_ms, settings.batch_queue
        )
        # warm-up: first run allocates buffers
        self.analyze(np.full((self.config.image_size, self.config.image_size), 128, np.uint8))

    def _run_batch(self, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One ONNX Runtime call on ``float32 (1, S, S)`` inputs; each input's logits and feature map."""
        with self._lock:
            logits, fmap = self.backend.run([np.stack(inputs)], features="map")
        return [(logits[i], fmap[i]) for i in range(len(inputs))]

    def inputs(self, img: np.ndarray, lungs: LungMask | None = None) -> np.ndarray:
        """Network input ``float32 (1, S, S)`` of one ``uint8 (H, W)`` image (with the model's lung step).

        ``lungs``: the upload's mask from the server's segmenter; its logits are reused for the lung step
        when the model's input size is the segmenter's (:func:`cxrtriage.inference.lung_input.model_inputs`).
        """
        return model_inputs([img], self.config, self.segmenter, lungs=None if lungs is None else [lungs])[0]

    def analyze(self, img: np.ndarray) -> Analysis:
        """Classify one ``uint8 (H, W)`` image: probabilities, decision, CAM of the predicted class, OOD score.

        The forward pass goes through :attr:`batcher` (shared with concurrent uploads). Applicability is
        decided by the caller (:meth:`Engine.analyze`, gate 2); the Mahalanobis score is only reported
        (``ood_score``).

        Raises
        ------
        cxrtriage.serve.batching.QueueFullError
            ``settings.batch_queue`` images already wait for this model.
        """
        t0 = time.perf_counter()
        return self.finish(self.batcher(self.inputs(img)), t0)

    def finish(self, output: tuple[np.ndarray, np.ndarray], t0: float) -> Analysis:
        """The :class:`Analysis` of one image from its network output.

        Parameters
        ----------
        output : (numpy.ndarray, numpy.ndarray)
            ``float32 (K,)`` logits and ``float32 (C, h, w)`` feature map (a :attr:`batcher` result).
        t0 : float
            ``time.perf_counter()`` when the image's preprocessing began (for ``inference_ms``).
        """
        c = self.config
        logits, fmap = output[0][None], output[1][None]
        probs = softmax(logits, c.temperature)
        pred = predictions_from_probs(probs, c)[0]
        t1 = time.perf_counter()
        score = float(self.detector.score(pooled_features(fmap))[0]) if self.detector is not None else None
        cam = None
        if self.backend.head is not None:
            cam = normalize_cam(cam_from_features(fmap[0], self.backend.head[0], pred.label_index))
        t2 = time.perf_counter()
        return Analysis(
            probs[0],
            pred.label,
            pred.label_index,
            pred.triage,
            cam,
            score,
            (t1 - t0) * 1e3,
            (t2 - t1) * 1e3,
            priority=finding_priority(probs[0], c),
        )

    def info(self, gate: CxrGate | None = None, population_gate: PopulationGate | None = None) -> dict:
        """Model description for ``GET /api/v1/models`` (and ``/api/v1/model``), with the gates' figures."""
        c = self.config
        det = None
        if self.detector is not None:
            i = self.detector.info
            det = {
                k: i.get(k)
                for k in (
                    "threshold",
                    "percentile",
                    "n_train",
                    "n_val",
                    "val_false_rejection_rate_cross_calibrated",
                    "method",
                )
            }
            nat = i.get("natural_images") or {}
            det["natural_image_rejection_rate"] = nat.get("rejection_rate_colour_or_mahalanobis")
        return {
            "name": self.model_name,
            "version": c.version,
            "task": c.task,
            "classes": list(c.classes),
            "image_size": c.image_size,
            "threshold": c.threshold,
            "positive_class": c.positive_class,
            "backend": self.backend.name,
            "onnx_sha256": getattr(self.backend, "sha256", None),
            "ood_detector": det,
            "population": c.population,
            "population_gate": None
            if population_gate is None
            else {
                "threshold": population_gate.threshold,
                "method": population_gate.info.get("method"),
                "caveat": population_gate.info.get("caveat"),
                "test_part": {
                    k: v["misrouted_rate"]
                    for k, v in (population_gate.info.get("test_part") or {}).get("by_source", {}).items()
                },
            },
            "cxr_gate": None
            if gate is None
            else {
                "threshold": gate.threshold,
                "method": gate.info.get("method"),
                "test_part": {
                    k: {g: v["refusal_rate"] for g, v in (gate.info.get("test_part") or {}).get(k, {}).items()}
                    for k in ("chest_radiographs", "not_chest_radiographs")
                },
            },
        }


class Engine:
    """The models behind the server and the gates in front of them.

    Parameters
    ----------
    settings : ServeSettings
        ``settings.model_dirs`` are loaded in order.

    Notes
    -----
    Each network (the gates' features, the lung segmenter, each model) has a
    :class:`~cxrtriage.serve.batching.MicroBatcher`: concurrent uploads share
    one ONNX Runtime call of it, up to ``settings.max_batch``. The models'
    calls share one lock (one classifier forward pass at a time, using all
    ``settings.threads`` threads), while decoding, preprocessing, CAM and
    storing run in parallel in the request threads.
    """

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self._lock = threading.Lock()
        #: the lung segmenter (ONNX Runtime); None when switched off or not shipped
        self.segmenter: LungSegmenter | None = None
        #: :attr:`segmenter` with its network calls micro-batched (used for uploads and the models' lung step)
        self._segmenter: LungSegmenter | None = None
        self._segment_batcher: MicroBatcher[np.ndarray, np.ndarray] | None = None
        self._gate_batcher: MicroBatcher[np.ndarray, np.ndarray] | None = None
        if settings.lung_segmenter:
            try:
                seg = LungSegmenter(
                    settings.segmenter_dir or shipped_segmenter_dir(),
                    threads=settings.segmenter_threads,
                    memory_arena=False,
                )
                self.segmenter = seg
                self._segment_batcher = self._batcher(self._segmenter_run, "segmenter")
                self._segmenter = seg.with_runner(self._batched_runner(self._segment_batcher))
                self._segmenter.segment(np.full((64, 64), 128, np.uint8))  # warm-up
            except SegmenterBundleError as exc:
                if settings.segmenter_dir is not None:
                    raise  # a folder asked for by name must be usable
                log.warning("no lung segmenter: %s; studies carry no lung mask", exc)
        self.models: list[ModelEngine] = [
            ModelEngine(d, settings, self._lock, position=i, segmenter=self._segmenter)
            for i, d in enumerate(settings.model_dirs)
        ]
        names = [m.model_name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"two models with the same folder name among {', '.join(map(str, settings.model_dirs))}")
        #: key of the set of model versions served (:attr:`cxrtriage.store.Study.model_set`)
        self.model_set = model_set_key(m.config.version for m in self.models)
        #: gate 1, "is this a chest radiograph?" (independent of the models); None when not shipped or switched off
        self.gate: CxrGate | None = load_gate() if settings.cxr_gate else None
        if self.gate is None and settings.cxr_gate:
            log.warning("no chest-radiograph gate shipped (run `cxr fit-gate`); uploads are not checked for being CXRs")
        #: gate 2, pediatric or adult (when a model declares its population); None when not shipped, not needed
        #: or switched off
        self.population_gate: PopulationGate | None = None
        if settings.population_gate and any(m.config.population for m in self.models):
            self.population_gate = load_population_gate()
            if self.population_gate is None:
                log.warning("no population gate shipped (run `cxr fit-population`); every result is marked applicable")
        self._features: GateFeatures | None = None
        if self.gate is not None or self.population_gate is not None:
            self._features = GateFeatures(threads=settings.gate_threads, memory_arena=False)
            self._gate_batcher = self._batcher(self._features_run, "gate-features")
            self.gates(np.full((64, 64), 128, np.uint8))  # warm-up

    def _batcher(
        self, run: Callable[[list[np.ndarray]], list[np.ndarray]], name: str
    ) -> MicroBatcher[np.ndarray, np.ndarray]:
        s = self.settings
        return MicroBatcher(run, name, s.max_batch, s.max_wait_ms, s.batch_queue)

    def _features_run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        assert self._features is not None
        return list(self._features.run_inputs(np.stack(inputs)))

    def _segmenter_run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        assert self.segmenter is not None
        return list(self.segmenter.run_inputs(np.stack(inputs)))

    @staticmethod
    def _batched_runner(batcher: MicroBatcher[np.ndarray, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        """``float32 (N, 1, S, S)`` -> ``(N, ...)``: each row through ``batcher`` (all queued before waiting)."""

        def run(x: np.ndarray) -> np.ndarray:
            futures = [batcher.submit(row) for row in x]
            return np.stack([f.result() for f in futures])

        return run

    def batchers(self) -> list[MicroBatcher]:
        """The micro-batchers of this engine's networks: gates' features, segmenter (those that run), models."""
        out: list[MicroBatcher] = [b for b in (self._gate_batcher, self._segment_batcher) if b is not None]
        return out + [m.batcher for m in self.models]

    def close(self) -> None:
        """Stop the networks' worker threads (queued uploads are finished first)."""
        for b in self.batchers():
            b.close()

    # the first model: the default one (``/api/v1/model``, start-up message)
    @property
    def config(self) -> ModelConfig:
        """Configuration of the first model."""
        return self.models[0].config

    @property
    def model_name(self) -> str:
        """Folder name of the first model."""
        return self.models[0].model_name

    @property
    def backend(self) -> OnnxBackend:
        """Backend of the first model."""
        return self.models[0].backend

    def model(self, name: str | None) -> ModelEngine:
        """The loaded model of this folder name (default: the first); :class:`KeyError` if none."""
        if name is None:
            return self.models[0]
        for m in self.models:
            if m.model_name == name:
                return m
        raise KeyError(name)

    def gates(self, img: np.ndarray) -> GateResult:
        """Gates 1 and 2 on one ``uint8 (H, W)`` image, from one computation of their shared features.

        A gate that is not shipped answers "chest radiograph" (gate 1) or "not checked" (gate 2).
        """
        t0 = time.perf_counter()
        out = GateResult()
        if self._features is None:
            return out
        assert self._gate_batcher is not None
        feats = self._gate_batcher(gate_input(img))[None]
        if self.gate is not None:
            out.cxr_score = float(self.gate.score(feats)[0])
            out.is_cxr = out.cxr_score >= self.gate.threshold
        out.features = feats
        if self.population_gate is not None and not self.population_gate.uses_lung_shape:
            pops, scores = self.population_gate.population_of(feats)
            out.population, out.population_score = pops[0], float(scores[0])
        out.ms = (time.perf_counter() - t0) * 1e3
        return out

    def route(self, g: GateResult, lungs: LungMask | None) -> GateResult:
        """Gate 2 from the gate features of :meth:`gates` and the image's lung mask (when the gate uses its shape).

        Sets ``g.population`` and ``g.population_score`` in place (unchanged when gate 2 is off, already
        decided, or the features are missing) and returns ``g``.
        """
        if self.population_gate is None or g.population is not None or g.features is None:
            return g
        t0 = time.perf_counter()
        pops, scores = self.population_gate.population_of(g.features, [lungs])
        g.population, g.population_score = pops[0], float(scores[0])
        g.ms += (time.perf_counter() - t0) * 1e3
        return g

    def segment(self, img: np.ndarray) -> tuple[LungMask | None, float]:
        """The lung mask of one ``uint8 (H, W)`` image (None without a segmenter) and its milliseconds."""
        if self.segmenter is None:
            return None, 0.0
        t0 = time.perf_counter()
        mask = (self._segmenter or self.segmenter).segment(img)
        return mask, (time.perf_counter() - t0) * 1e3

    def analyze(self, img: np.ndarray, population: str | None = None, lungs: LungMask | None = None) -> list[Analysis]:
        """Every model on one ``uint8 (H, W)`` image, in order, with its applicability (gate 2).

        Parameters
        ----------
        img : numpy.ndarray
            ``uint8 (H, W)``.
        population : {"pediatric", "adult"} or None
            The image's population from :meth:`gates`; None (or ``settings.population_gate`` off): every
            result is applicable.
        lungs : LungMask, optional
            The image's mask from :meth:`segment`: lung-input models reuse it instead of segmenting again
            (one segmenter call per upload).
        """
        t0 = time.perf_counter()
        inputs = [m.inputs(img, lungs) for m in self.models]
        futures = [m.batcher.submit(x) for m, x in zip(self.models, inputs)]  # every model queued, then awaited
        out = [m.finish(f.result(), t0) for m, f in zip(self.models, futures)]
        if self.settings.population_gate:
            for m, a in zip(self.models, out):
                a.population_warning = population_warning(m.config.population, population)
                a.applicable = a.population_warning is None
        return out

    def info(self) -> dict:
        """Description of the first model for ``GET /api/v1/model``."""
        return self.models[0].info(self.gate, self.population_gate)

    def infos(self) -> list[dict]:
        """Description of every model for ``GET /api/v1/models``."""
        return [m.info(self.gate, self.population_gate) for m in self.models]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


class StudyService:
    """Upload -> decoded image -> analysis -> stored study; and everything read back from it.

    Parameters
    ----------
    settings : ServeSettings
    engine : Engine, optional
        Built from ``settings`` when not given.
    """

    def __init__(self, settings: ServeSettings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.store = StudyStore(settings.data_dir, settings.database_url)
        from cxrtriage.serve.notify import Notifier

        #: critical-finding notifications (started by the app's lifespan)
        self.notifier = Notifier(self.store, settings.notify, public_url(settings.host, settings.port))
        # decodes run on a pool of max_concurrent_decodes threads: at most that many at once, and the memory
        # the C allocator keeps after a decode stays in those threads' arenas instead of one per request thread
        self._decoders = concurrent.futures.ThreadPoolExecutor(
            max(1, settings.max_concurrent_decodes), thread_name_prefix="cxrtriage-decode"
        )
        # once per process, not toggled per request (warnings filters are process-wide and not thread-safe):
        # the pixel and memory limits are enforced from the header by check_image_header
        from PIL import Image

        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        self._uploads_lock = threading.Lock()
        self._uploads_since_release = 0

    # -- decoding ---------------------------------------------------------
    def decode(self, data: bytes, filename: str | None) -> tuple[np.ndarray, str, dict | None]:
        """Decode an upload; raise :class:`ApiError` (4xx) with a reason for anything unusable.

        :meth:`decode_with_original` without the original DICOM pixels (see there).
        """
        img, fmt, meta, _ = self.decode_with_original(data, filename)
        return img, fmt, meta

    def decode_with_original(
        self, data: bytes, filename: str | None
    ) -> tuple[np.ndarray, str, dict | None, OriginalPixels | None]:
        """Decode an upload, keeping a DICOM's original pixels; :class:`ApiError` (4xx) for anything unusable.

        Order: size -> format sniffed from the content -> dimensions and memory
        budget from the header (no pixel decoded yet) -> colour check on a
        thumbnail -> one full decode, on a pool of
        ``settings.max_concurrent_decodes`` threads (so at most that many
        decodes hold memory at once; further uploads wait in its queue).

        Returns
        -------
        (image, source_format, dicom_metadata, original)
            ``uint8 (H, W)``, ``"png" | "jpeg" | "dicom"``, de-identified attributes or None, and for DICOM
            the original 16-bit pixels (:class:`cxrtriage.data.dicom.OriginalPixels`, for window/level) or None.

        Raises
        ------
        ApiError
            413 too large a file; 415 not PNG/JPEG/DICOM; 422 unreadable,
            malformed, too many pixels, over the decode memory budget, refused
            DICOM (modality, burned-in annotation...), colour image; 503 when
            no decode slot frees up within :data:`DECODE_WAIT_S` seconds.
        """
        name = safe_filename(filename)
        if len(data) == 0:
            raise ApiError(422, "empty_file", f"{name}: empty file (0 bytes)")
        if len(data) > self.settings.max_upload_bytes:
            raise ApiError(
                413, "file_too_large", f"{name}: {len(data) / 1e6:.1f} MB > limit {self.settings.max_upload_mb:g} MB"
            )
        fmt = sniff_format(data)
        if fmt is None:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"{name}: not a PNG, JPEG or DICOM file (content sniffed; extension and Content-Type are ignored)",
            )
        try:
            if fmt != "dicom":
                check_image_header(data, name, self.settings.max_pixels, self.settings.max_decoded_bytes)
            job = self._decoders.submit(self._decode, data, name, fmt)
            try:
                return job.result(timeout=DECODE_WAIT_S)
            except concurrent.futures.TimeoutError:
                job.cancel()
                raise ApiError(
                    503,
                    "busy",
                    f"{name}: server busy decoding other uploads; retry in a few seconds",
                    {"Retry-After": "5"},
                ) from None
        except ImageReadError as exc:
            raise ApiError(422, "unreadable_image", exc.reason if exc.path == name else str(exc)) from None
        except ApiError:
            raise
        except MemoryError:
            raise ApiError(422, "too_large_to_decode", f"{name}: not enough memory to decode this image") from None
        except Exception as exc:  # noqa: BLE001 - a decoder bug on hostile input is the upload's problem, not a 500
            log.warning("decoder failure on %s (%s)", name, exc.__class__.__name__, exc_info=True)
            raise ApiError(422, "unreadable_image", f"{name}: cannot decode ({exc.__class__.__name__})") from None

    def _decode(self, data: bytes, name: str, fmt: str) -> tuple[np.ndarray, str, dict | None, OriginalPixels | None]:
        if fmt == "dicom":
            img, meta, original = decode_dicom_with_original(
                data, name, max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_decoded_bytes
            )
            return img, fmt, meta, original
        if self.settings.cxr_gate:  # part of gate 1: a colour picture is not a chest radiograph
            m = colourfulness_of_bytes(data)
            if m > COLOURFULNESS_LIMIT:
                raise ApiError(
                    422,
                    "not_a_chest_radiograph",
                    f"{name}: not a chest radiograph (gate 1: colour image, colourfulness {m:.0f} > "
                    f"{COLOURFULNESS_LIMIT:g}; chest radiographs are grayscale)",
                )
        # JPEG: MPO files from phone cameras carry extra frames; the first is the picture.
        img = decode_image(data, name, max_pixels=self.settings.max_pixels, allow_multiframe=(fmt == "jpeg"))
        return img, fmt, None, None

    # -- predict ----------------------------------------------------------
    def predict(self, data: bytes, filename: str | None = None, *, source: str = "upload") -> tuple[Study, bool, dict]:
        """Analyse an upload with every loaded model and store the study (or return the stored study of the same image).

        The study's identity is :func:`pixel_sha256` of the decoded image and the
        key of the set of model versions (:attr:`Engine.model_set`), so the same
        pixels sent again (also re-encoded, renamed or with other metadata)
        return the stored study.

        Parameters
        ----------
        data : bytes
            The uploaded file (PNG, JPEG or DICOM).
        filename : str, optional
            Used in messages only.
        source : {"upload", "pacs", "stow"}
            How the image arrived (:attr:`cxrtriage.store.Study.source`).

        Returns
        -------
        (record, duplicate, request_timings_ms)

        Raises
        ------
        ApiError
            413/415/422 for unusable uploads, ``not_a_chest_radiograph`` (gate 1) and
            ``outside_population`` (gate 2: no loaded model was validated on the image's population);
            nothing is stored then. 503 ``busy`` with ``Retry-After``: no decode slot in time, or a network's
            queue is full (``settings.batch_queue``; :class:`cxrtriage.serve.batching.QueueFullError`).
        """
        try:
            return self._predict(data, filename, source)
        except QueueFullError as exc:
            raise ApiError(
                503,
                "busy",
                f"{safe_filename(filename)}: server at capacity ({exc.max_queue} images already wait for its "
                f"{exc.name} network); nothing was stored, retry in a second",
                {"Retry-After": "1"},
            ) from None
        finally:
            self._count_upload()

    def _count_upload(self) -> None:
        """Every ``settings.release_memory_every`` uploads, return the C heap's free memory to the system."""
        every = self.settings.release_memory_every
        if every <= 0:
            return
        with self._uploads_lock:
            self._uploads_since_release += 1
            due = self._uploads_since_release >= every
            if due:
                self._uploads_since_release = 0
        if due:
            from cxrtriage.serve.memory import release_free_memory

            release_free_memory()

    def _predict(self, data: bytes, filename: str | None, source: str) -> tuple[Study, bool, dict]:
        t0 = time.perf_counter()
        img, fmt, meta, original = self.decode_with_original(data, filename)
        g = self.engine.gates(img)
        if self.settings.cxr_gate and not g.is_cxr:
            raise ApiError(
                422,
                "not_a_chest_radiograph",
                f"{safe_filename(filename)}: not a chest radiograph (gate 1, independent of the models: "
                f"score {g.cxr_score:.1f} < threshold {self.engine.gate.threshold if self.engine.gate else 0:.1f}, "
                "log-odds of a chest radiograph); upload a frontal chest X-ray",
            )
        sha = pixel_sha256(img)
        existing = self.store.find(sha, self.engine.model_set)
        if existing is not None:
            return existing, True, {"total_ms": (time.perf_counter() - t0) * 1e3}
        lungs, segment_ms = self.engine.segment(img)
        g = self.engine.route(g, lungs)
        t1 = time.perf_counter()
        analyses = self.engine.analyze(img, g.population, lungs)
        if lungs is not None and not lungs.failed:
            for a in analyses:
                if a.cam is not None:
                    a.cam_in_lungs = round(
                        mass_in_mask(upsample_cam(a.cam, (img.shape[1], img.shape[0])), lungs.mask), 4
                    )
        if not any(a.applicable for a in analyses):
            why = "; ".join(a.population_warning or "" for a in analyses)
            raise ApiError(
                422,
                "outside_population",
                f"{safe_filename(filename)}: a chest radiograph, but outside the population every model of this "
                f"server was validated on ({why}); no result is shown",
            )
        t2 = time.perf_counter()
        sid = secrets.token_hex(8)
        results = [self._result(m, a, sid) for m, a in zip(self.engine.models, analyses)]
        report = build_report(
            results=[
                {
                    **r.to_dict(),
                    "triage": r.triage,
                    "heatmap_url": result_links(sid, r.model_name, r.cam is not None)["heatmap_url"],
                }
                for r in results
            ],
            study_id=sid,
        )
        t3 = time.perf_counter()
        rel = self.store.save_image(sha, img)
        original_rel = self.store.save_original(sha, original.pixels) if original is not None else None
        timings = {
            "decode_ms": (t1 - t0) * 1e3 - g.ms - segment_ms,
            "gates_ms": g.ms,
            "segment_ms": segment_ms,
            "inference_ms": sum(a.inference_ms for a in analyses),
            "heatmap_ms": sum(a.heatmap_ms for a in analyses),
            "report_ms": (t3 - t2) * 1e3,
        }
        applicable = [r for r in results if r.applicable]
        rec = Study(
            id=sid,
            received_at=_now(),
            sha256=sha,
            model_set=self.engine.model_set,
            source=source,
            source_format=fmt,
            image_file=rel,
            width=int(img.shape[1]),
            height=int(img.shape[0]),
            triage="finding" if any(r.flag for r in applicable) else "no_finding",
            priority=max((r.priority for r in applicable), default=0.0),
            dicom_meta=meta,
            report=report,
            report_status="draft",
            signed_by=None,
            signed_at=None,
            timings=timings,
            results=results,
            original_file=original_rel,
            original_offset=original.offset if original is not None else None,
            lungs=None
            if lungs is None or self.engine.segmenter is None
            else {**lungs.as_dict(), "segmenter": self.engine.segmenter.config.version},
        )
        t4 = time.perf_counter()
        timings["store_ms"] = (t4 - t3) * 1e3
        timings["total_ms"] = (t4 - t0) * 1e3
        rec, inserted = self.store.insert(rec)
        if inserted:
            self.notifier.enqueue(rec)
        timings["store_ms"] += (time.perf_counter() - t4) * 1e3
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return rec, not inserted, timings

    @staticmethod
    def _result(m: ModelEngine, a: Analysis, study_id: str) -> ModelResult:
        """The stored row of one model's analysis."""
        cfg = m.config
        return ModelResult(
            study_id=study_id,
            position=m.position,
            model_name=m.model_name,
            model_version=cfg.version,
            task=cfg.task,
            backend=m.backend.name,
            label=a.label,
            probabilities={k: float(v) for k, v in zip(cfg.classes, a.probabilities)},
            threshold=cfg.threshold,
            positive_class=cfg.positive_class or None,
            flag=a.triage == "finding",
            priority=a.priority,
            applicable=a.applicable,
            population_warning=a.population_warning,
            heat_class=a.label if a.cam is not None else None,
            cam=np.round(np.nan_to_num(a.cam, nan=0.0, posinf=1.0, neginf=0.0), 4).tolist()
            if a.cam is not None
            else None,
            ood_score=a.ood_score if a.ood_score is not None and np.isfinite(a.ood_score) else None,
            cam_in_lungs=a.cam_in_lungs,
        )

    # -- read back --------------------------------------------------------
    def get(self, study_id: str) -> Study:
        """The stored study; :class:`ApiError` 404 when unknown."""
        if not re.fullmatch(r"[0-9a-f]{16}", study_id or ""):
            raise ApiError(404, "not_found", f"no study {study_id[:40]!r}")
        rec = self.store.get(study_id)
        if rec is None:
            raise ApiError(404, "not_found", f"no study {study_id!r}")
        return rec

    def picture(self, rec: Study, kind: str, model: str | None = None) -> Path:
        """PNG file of ``kind`` (``image``, ``annotated``, ``heatmap``), rendered on first request and cached.

        Parameters
        ----------
        rec : Study
        kind : {"image", "annotated", "heatmap"}
        model : str, optional
            :attr:`ModelResult.model_name` whose probabilities / activation map are drawn (default: the first).

        Raises
        ------
        ApiError
            404: unknown kind, no result of that model, or no heatmap.
        """
        from cxrtriage.explain.overlay import annotate_probabilities, display_image, heatmap_overlay

        if kind == "image":
            return self.store.root / rec.image_file
        if kind == "lungs":
            return self._lung_picture(rec)
        res = rec.result(model)
        if res is None:
            raise ApiError(404, "not_found", f"study {rec.id} has no result of model {str(model)[:80]!r}")
        path = self.store.derived_path(rec.id, f"{kind}-{res.position}")
        if path.is_file():
            return path
        img = self.store.load_image(rec.image_file)
        if kind == "annotated":
            footer = "Research use only. Not a diagnosis."
            if not res.applicable:
                footer = "Outside the model's validated population. " + footer
            pil = annotate_probabilities(img, res.probabilities, res.label, footer=footer)
        elif kind == "heatmap":
            if res.cam is None:
                raise ApiError(
                    404, "not_found", f"study {rec.id}: model {res.model_name} has no heatmap (no GAP + linear head)"
                )
            base = display_image(img)
            heat = upsample_cam(np.asarray(res.cam, dtype=np.float32), base.size)
            pil = heatmap_overlay(img, heat)
        else:
            raise ApiError(404, "not_found", f"unknown picture {kind!r}")
        return self.store.write_derived(rec.id, f"{kind}-{res.position}", png_bytes(pil))

    def _lung_picture(self, rec: Study) -> Path:
        """The lung contour (green; red when the segmentation failed) on a transparent PNG of the image's size,
        rendered once and cached.

        The mask is recomputed from the stored image by the same segmenter (deterministic), not stored.

        Raises
        ------
        ApiError
            404 when the server runs no segmenter.
        """
        from PIL import Image

        from cxrtriage.segment.postprocess import contour_of

        seg = self.engine.segmenter
        if seg is None:
            raise ApiError(404, "not_found", "this server runs no lung segmenter")
        path = self.store.derived_path(rec.id, "lungs")
        if path.is_file():
            return path
        img = self.store.load_image(rec.image_file)
        m = seg.segment(img)
        rgba = np.zeros((*img.shape, 4), np.uint8)  # transparent except the contour: drawn over the viewer's image
        rgba[contour_of(m.mask, width=max(1, round(max(img.shape) / 300)))] = (
            (220, 40, 40, 255) if m.failed else (40, 220, 60, 255)
        )
        return self.store.write_derived(rec.id, "lungs", png_bytes(Image.fromarray(rgba, mode="RGBA")))

    def model_names(self) -> list[str]:
        """Names of the models this server runs, in display order."""
        return [m.model_name for m in self.engine.models]

    def score_references(self) -> dict[str, dict | None]:
        """Each served model's validation score histogram (``calibration.val_score_histogram`` of its bundle).

        Returns
        -------
        dict
            model name -> ``{"edges", "counts", ...}`` or None when the bundle stores none.
        """
        from cxrtriage.models.bundle import ModelBundle

        out: dict[str, dict | None] = {}
        for m in self.engine.models:
            cal = ModelBundle.load(m.model_dir).calibration
            out[m.model_name] = cal.val_score_histogram if cal is not None else None
        return out

    def heatmaps(self, rec: Study) -> list[dict]:
        """The class activation maps stored for a study, one per model that made one.

        Returns
        -------
        list of dict
            ``{"model": str, "heat_class": str, "cam": (h, w) list of lists in [0, 1]}``.
        """
        return [
            {"model": r.model_name, "heat_class": r.heat_class, "cam": r.cam} for r in rec.results if r.cam is not None
        ]

    def original_pixels(self, rec: Study) -> tuple[bytes, dict[str, str]]:
        """The original 16-bit pixels of a DICOM study as raw little-endian bytes, and their geometry headers.

        Returns
        -------
        (data, headers)
            ``uint16`` row-major bytes; ``X-Width``, ``X-Height``, ``X-Offset`` (modality value = pixel +
            offset, for 16-bit ranges), ``X-Window-Center`` / ``X-Window-Width``: a default
            window over the 0.5-99.5 percentiles of the pixels, in pixel units.

        Raises
        ------
        ApiError
            404 when the study has no original pixels (not a DICOM upload, or stored before they were kept).
        """
        if not rec.original_file:
            raise ApiError(404, "not_found", f"study {rec.id} has no original 16-bit pixels (not a DICOM upload)")
        try:
            px = self.store.load_original(rec.original_file)
        except FileNotFoundError:
            raise ApiError(404, "not_found", f"study {rec.id}: original pixels missing from the data folder") from None
        lo, hi = (float(v) for v in np.percentile(px, [0.5, 99.5]))
        headers = {
            "X-Width": str(px.shape[1]),
            "X-Height": str(px.shape[0]),
            "X-Offset": f"{rec.original_offset or 0.0:g}",
            "X-Window-Center": f"{(lo + hi) / 2:g}",
            "X-Window-Width": f"{max(1.0, hi - lo):g}",
            "Cache-Control": "private, max-age=3600",
        }
        return px.astype("<u2").tobytes(), headers

    def report_file(self, rec: Study, fmt: str) -> tuple[bytes, str]:
        """Report as ``json``, ``html`` or ``pdf`` bytes with its media type (the PDF cached per report version).

        HTML and PDF show the annotated image of the first model and the heatmap of each flagging model.
        """
        if fmt == "json":
            return render_json(rec.report), "application/json"
        if fmt not in ("html", "pdf"):
            raise ApiError(404, "not_found", f"unknown report format {fmt!r} (json, html or pdf)")
        cached = None
        if fmt == "pdf":  # a sign-off changes the report, hence the key and the file name
            key = "report-" + hashlib.sha256(render_json(rec.report)).hexdigest()[:16]
            cached = self.store.derived_path(rec.id, key, ".pdf")
            if cached.is_file():
                return cached.read_bytes(), "application/pdf"
        images = [("AI annotation", self.picture(rec, "annotated").read_bytes())]
        flagged = set(rec.report.get("flagged_by") or ())
        for r in rec.results:
            if r.model_name in flagged and r.cam is not None:
                images.append(
                    (
                        f"Heatmap of {r.model_name} (class activation map, {r.heat_class})",
                        self.picture(rec, "heatmap", r.model_name).read_bytes(),
                    )
                )
        if fmt == "html":
            return render_html(rec.report, images).encode("utf-8"), "text/html; charset=utf-8"
        pdf = render_pdf(rec.report, images)
        self.store.write_derived(rec.id, key, pdf, ".pdf")
        return pdf, "application/pdf"

    def sign(
        self,
        study_id: str,
        radiologist: str,
        findings: str | None,
        impression: str | None,
        *,
        username: str | None = None,
        agrees_with_ai: bool | None = None,
        reader_label: str | None = None,
        amend: bool = False,
    ) -> Study:
        """Sign a draft report off, or amend a signed one; both store a new report version.

        Parameters
        ----------
        study_id : str
        radiologist : str
            Name printed on the report.
        findings, impression : str or None
            Final wording (None: keep).
        username : str, optional
            The logged-in user (default ``radiologist``).
        agrees_with_ai : bool, optional
            The reader's agreement with the AI label.
        reader_label : str, optional
            The reader's own label, one of the model's classes (see :func:`reader_call`).
        amend : bool
            Amend a signed report instead of signing a draft.

        Returns
        -------
        Study

        Raises
        ------
        ApiError
            404 unknown study; 409 signing a signed report or amending an unsigned one;
            422 empty name or a label that is not a class of the model.
        """
        from cxrtriage.report.draft import ReportError
        from cxrtriage.report.draft import amend as amend_report
        from cxrtriage.store import ReportConflictError

        rec = self.get(study_id)
        call = reader_call(rec, agrees_with_ai, reader_label)
        try:
            if amend:
                report = amend_report(rec.report, radiologist, findings, impression, reader=call)
            else:
                report = sign_off(rec.report, radiologist, findings, impression, reader=call)
        except ReportError as exc:
            conflict = (rec.report.get("status") == "signed") != amend
            raise ApiError(409 if conflict else 422, "conflict" if conflict else "invalid_sign_off", str(exc)) from None
        try:
            self.store.sign_report(
                study_id,
                report,
                username=username or radiologist,
                reader_label=call["label"] if call else None,
                reader_finding=call["finding"] if call else None,
                reader_agrees=call["agrees_with_ai"] if call else None,
                amend=amend,
            )
        except ReportConflictError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except KeyError:
            raise ApiError(404, "not_found", f"no study {study_id!r}") from None
        return self.get(study_id)

    def health(self) -> dict:
        """Liveness data for ``GET /api/v1/health``."""
        from cxrtriage import __version__

        db = self.store.ping()
        return {
            "status": "ok" if db else "degraded",
            "model_loaded": True,
            "database": db,
            "backend": self.engine.backend.name,
            "models": [m.model_name for m in self.engine.models],
            "studies": self.store.count() if db else -1,
            "version": __version__,
        }


#: The reader's triage-level labels (always offered, besides the classes of the models that ran).
TRIAGE_LABELS = ("no_finding", "finding")


def reader_labels(rec: Study) -> tuple[list[str], set[str]]:
    """Labels a reader may choose for a study, and those meaning "no finding".

    Returns
    -------
    (labels, normal)
        ``no_finding``, ``finding``, then the classes of every model that ran (first seen first);
        ``normal``: ``no_finding`` and the normal classes of those models' tasks.
    """
    from cxrtriage.tasks import UnknownTaskError, get_task

    labels = list(TRIAGE_LABELS)
    normal = {"no_finding"}
    for r in rec.results:
        labels += [c for c in r.probabilities if c not in labels]
        try:
            normal |= set(get_task(r.task).normal_classes)
        except UnknownTaskError:
            normal |= {c for c in r.probabilities if c.lower() in ("normal", "no_finding")}
    return labels, normal


def reader_call(rec: Study, agrees_with_ai: bool | None, reader_label: str | None) -> dict | None:
    """The reader's call of a sign-off: their label, whether it is a finding, and their agreement with the AI.

    The AI's call is the study's combined triage (``finding`` when a model flagged it); agreeing means
    calling the same (finding or no finding).

    Parameters
    ----------
    rec : Study
    agrees_with_ai : bool or None
    reader_label : str or None
        One of :func:`reader_labels`. When missing: the AI's call if the reader agrees, the other one if not.

    Returns
    -------
    dict or None
        ``{"label", "finding", "agrees_with_ai"}``; None when neither argument is given (no call recorded).

    Raises
    ------
    ApiError
        422: an unknown label, or an agreement that contradicts the label (agreeing with a finding
        while labelling a normal class, or the reverse).
    """
    if agrees_with_ai is None and reader_label is None:
        return None
    labels, normal = reader_labels(rec)
    ai_finding = rec.triage == "finding"
    if reader_label is None:
        reader_label = "finding" if ai_finding == bool(agrees_with_ai) else "no_finding"
    if reader_label not in labels:
        raise ApiError(422, "invalid_sign_off", f"reader_label {reader_label[:60]!r} is not one of {labels}")
    finding = reader_label not in normal
    if agrees_with_ai is None:
        agrees_with_ai = finding == ai_finding
    elif bool(agrees_with_ai) != (finding == ai_finding):
        verb = "agreeing with" if agrees_with_ai else "disagreeing with"
        raise ApiError(
            422,
            "invalid_sign_off",
            f"{verb} the AI's {rec.triage} but labelling {reader_label!r} ({'a finding' if finding else 'no finding'})",
        )
    return {"label": reader_label, "finding": finding, "agrees_with_ai": bool(agrees_with_ai)}


def study_out(rec: Study) -> dict:
    """JSON-ready ``dict`` of :class:`cxrtriage.serve.schemas.StudyOut` for a stored study.

    Parameters
    ----------
    rec : cxrtriage.store.Study

    Returns
    -------
    dict
        ``StudyOut.model_validate(rec).model_dump()``: the API answer (and the page's data).
    """
    return StudyOut.model_validate(rec).model_dump()

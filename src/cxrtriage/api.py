"""The Python API: ``cxrtriage.load_model("pneumonia").predict(paths)``.

Everything here is re-exported by :mod:`cxrtriage` (``cxrtriage.__all__``)::

    import cxrtriage

    model = cxrtriage.load_model("pneumonia")          # a shipped model, or a model folder
    probs = model.probabilities(["a.png", "b.dcm"])    # float64 (N, K), rows sum to 1
    preds = model.predict(paths)                       # list[Prediction]: label, probabilities, OOD flag
    heat = model.explain("a.png")                      # float32 (H, W) in [0, 1] at the image's size
    report = cxrtriage.evaluate(model, "data/manifest.csv")   # MetricReport with 95 % CIs

Built on the same pieces as ``cxr predict`` and ``cxr serve``: the model bundle
(:class:`cxrtriage.models.bundle.ModelBundle`), the one forward pass
(:mod:`cxrtriage.inference.backend`), the one image reader
(:func:`cxrtriage.data.io.read_image`) and the one preprocessing
(:func:`cxrtriage.data.transforms.preprocess`), so the same image gets the same
probabilities from every entry point.

Research and second-opinion use only: not a diagnosis and not a medical device.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from cxrtriage.config import ModelConfig
from cxrtriage.data.cache import default_cache_dir
from cxrtriage.data.dataset import ImageDataset
from cxrtriage.data.discover import DatasetError, discover
from cxrtriage.data.io import ImageReadError, as_gray_uint8, read_image
from cxrtriage.explain.cam import cam_from_features, normalize_cam, upsample_cam
from cxrtriage.explain.gradcam import gradcam
from cxrtriage.inference.backend import ONNX_NAME, OnnxBackend, TorchBackend
from cxrtriage.inference.predictor import Prediction, predictions_from_probs
from cxrtriage.metrics.calibration import softmax
from cxrtriage.metrics.classification import report_at_operating_point
from cxrtriage.metrics.decision import decide
from cxrtriage.metrics.report import MetricReport
from cxrtriage.models.bundle import CONFIG_JSON, ModelBundle, ModelLoadError, shipped_models, zoo_dir
from cxrtriage.ood.gate import CxrGate
from cxrtriage.ood.mahalanobis import MahalanobisDetector
from cxrtriage.tasks import get_task

__all__ = [
    "ImageInput",
    "Model",
    "WITHDRAWN_MODELS",
    "evaluate",
    "list_models",
    "load_model",
]

#: One image: a path (PNG, JPEG or DICOM, format sniffed from the content), a ``numpy`` array
#: ``(H, W)`` (``uint8``, ``uint16`` or float), a ``PIL.Image.Image`` or a ``torch.Tensor`` ``(H, W)``.
ImageInput = str | os.PathLike | np.ndarray | Image.Image | Any

#: Short names of models that were shipped once and withdrawn, with the reason (shown by :func:`load_model`).
WITHDRAWN_MODELS = {
    "covid": "withdrawn: confidently wrong outside its source dataset (see the README, "
    "'The covid model is withdrawn', and docs/results/generalization/withdrawn-covid-efficientnet_lite0/)",
}


def _shipped_by_short_name() -> dict[str, str]:
    """Short name (the model's task) -> zoo folder name, for the shipped models."""
    out: dict[str, str] = {}
    for folder in shipped_models():
        task = ModelConfig.load(zoo_dir() / folder / CONFIG_JSON).task
        out.setdefault(task, folder)
    return dict(sorted(out.items()))


def list_models() -> list[str]:
    """Short names of the shipped models, sorted (e.g. ``["finding", "pneumonia", "pneumonia-type"]``).

    Each is the name of its task and an alias of a folder in ``cxrtriage/zoo``
    (``pneumonia`` -> ``pneumonia-efficientnet_lite0``); :func:`load_model` takes either.
    The covid model is withdrawn (:data:`WITHDRAWN_MODELS`) and not listed.

    Returns
    -------
    list of str
    """
    return list(_shipped_by_short_name())


def _resolve(name_or_path: str | os.PathLike) -> Path:
    text = os.fspath(name_or_path)
    short = _shipped_by_short_name()
    if text in short:
        return zoo_dir() / short[text]
    d = Path(text)
    if d.is_dir():
        if not (d / CONFIG_JSON).is_file():
            raise ModelLoadError(f"{d}: not a model folder ({CONFIG_JSON} missing)")
        return d
    if d.name == text and (zoo_dir() / text / CONFIG_JSON).is_file():
        return zoo_dir() / text
    known = ", ".join(list(short) + shipped_models())
    hint = f" ({text} was {WITHDRAWN_MODELS[text]})" if text in WITHDRAWN_MODELS else ""
    raise ModelLoadError(f"{text}: not a shipped model and no such model folder{hint}; known models: {known}")


def _onnx_backend(d: Path, bundle: ModelBundle, threads: int) -> OnnxBackend:
    """The folder's ``model.onnx``, else a fresh export in the cache (the package folder may be read-only)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f'load_model(..., backend="onnx") needs {exc.name}, in the serve extra: pip install "cxrtriage[serve]"',
            name=exc.name,
        ) from None
    if (d / ONNX_NAME).is_file():
        return OnnxBackend(d, threads)
    from cxrtriage.inference.export import export_onnx

    digest = hashlib.sha256(bundle.weights_path().read_bytes()).hexdigest()[:16]
    out = default_cache_dir() / "onnx" / f"{d.name}-{digest}.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        export_onnx(d, tmp)
        tmp.replace(out)
    return OnnxBackend(d, threads, onnx_path=out)


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str = "cpu",
    backend: Literal["torch", "onnx"] = "torch",
    threads: int | None = None,
) -> Model:
    """Load a shipped model by name, or a model folder from ``cxr train``.

    Parameters
    ----------
    name_or_path : str or path
        A short name from :func:`list_models` (``"pneumonia"``, ``"pneumonia-type"``,
        ``"finding"``), a zoo folder name (``"pneumonia-efficientnet_lite0"``) or a
        model folder (``config.json`` + ``model.safetensors``).
    device : str
        Torch device for ``backend="torch"`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``);
        the ONNX backend runs on the CPU.
    backend : {"torch", "onnx"}
        PyTorch (Grad-CAM heatmaps), or ONNX Runtime (faster on a CPU; CAM heatmaps
        from the feature map; the folder's ``model.onnx``, else exported once into the
        cache folder ``$CXRTRIAGE_CACHE/onnx``).
    threads : int, optional
        CPU threads: ``torch.set_num_threads`` (process-wide) or ONNX Runtime
        intra-op threads; default: torch's setting as it is, 2 for ONNX Runtime.

    Returns
    -------
    Model

    Raises
    ------
    cxrtriage.ModelLoadError
        Unknown name (the message lists the known ones; a withdrawn model says why),
        not a model folder, or weights that do not load.
    ValueError
        Unknown ``backend``; a stale ``model.onnx`` (checksum differs from ``bundle.json``).
    ModuleNotFoundError
        ``backend="onnx"`` without ONNX Runtime and onnx (the ``serve`` extra); the message says so.
    """
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    d = _resolve(name_or_path)
    bundle = ModelBundle.load(d)
    engine: TorchBackend | OnnxBackend
    if backend == "onnx":
        engine = _onnx_backend(d, bundle, threads or 2)
    else:
        net = bundle.load_model()
        if device != "cpu":
            net = net.to(device)
        engine = TorchBackend(net, bundle.config, threads=threads, channels_last=True)
    detector = MahalanobisDetector.load(d)
    if detector is not None and detector.info.get("model_version") not in (None, bundle.config.version):
        detector = None  # fitted for other weights
    return Model(bundle, engine, detector=detector, device=device if backend == "torch" else "cpu")


def _is_single(x: Any) -> bool:
    if isinstance(x, str | os.PathLike | Image.Image | bytes):
        return True
    ndim = getattr(x, "ndim", None)
    return ndim is not None and ndim <= 2


def _iter_inputs(inputs: Any) -> Iterator[tuple[str, Any]]:
    """``(name, item)`` per image of one input or an iterable of them (stacks ``(N, H, W)`` split)."""
    if _is_single(inputs):
        yield (os.fspath(inputs) if isinstance(inputs, str | os.PathLike) else "inputs", inputs)
        return
    if not isinstance(inputs, Iterable) and getattr(inputs, "ndim", None) is None:
        raise TypeError(
            f"expected an image (path, numpy array, PIL image, torch tensor) or an iterable of them, got {type(inputs).__name__}"
        )
    for i, item in enumerate(inputs):
        if isinstance(item, str | os.PathLike):
            yield os.fspath(item), item
        else:
            yield f"inputs[{i}]", item


def _to_gray(name: str, item: Any) -> np.ndarray:
    if isinstance(item, str | os.PathLike):
        return read_image(os.fspath(item))
    if isinstance(item, bytes):
        raise TypeError(f"{name}: bytes are not accepted; pass a path, an array, a PIL image or a tensor")
    return as_gray_uint8(item, name)


class Model:
    """A loaded model: probabilities, predictions at the shipped operating point, heatmaps.

    Made by :func:`load_model`. Inputs everywhere: one image or an iterable of images
    (see :data:`ImageInput`): paths (PNG, JPEG, DICOM of any transfer syntax), ``numpy``
    arrays ``(H, W)`` ``uint8``/``uint16``/float, PIL images, torch tensors ``(H, W)``;
    a stack ``(N, H, W)`` counts as N images. Iterables are streamed: images are decoded
    and preprocessed by a thread pool one batch ahead of the forward pass, so at most two
    batches are in memory whatever the length (a generator of 10,000 paths works).

    Attributes
    ----------
    card : ModelBundle
        The typed model bundle (config, training, split, calibration, OOD, evaluation, audit).
    config : ModelConfig
        Architecture, classes, preprocessing, temperature and operating point.
    classes : list of str
        Output classes in model order (the columns of :meth:`probabilities`).
    name : str
        Model folder name.
    backend : TorchBackend or OnnxBackend
        The forward pass.
    device : str
    """

    def __init__(
        self,
        card: ModelBundle,
        backend: TorchBackend | OnnxBackend,
        *,
        detector: MahalanobisDetector | None = None,
        device: str = "cpu",
    ) -> None:
        self.card = card
        self.config: ModelConfig = card.config
        self.backend = backend
        self.detector = detector
        self.device = device
        self._gate: CxrGate | None = None  # gate 1, loaded by the first predict(cxr_gate=True)

    @property
    def classes(self) -> list[str]:
        """Output classes in model order."""
        return list(self.config.classes)

    @property
    def name(self) -> str:
        """Model folder name, e.g. ``pneumonia-efficientnet_lite0``."""
        return self.card.name

    def __repr__(self) -> str:
        return f"Model({self.name!r}, classes={self.classes}, backend={self.backend.name!r}, device={self.device!r})"

    # -- streaming ---------------------------------------------------------
    def _prepare(
        self,
        name: str,
        item: Any,
        skip: list[tuple[str, str]] | None,
        gate_scores: dict[str, float] | None = None,
    ) -> np.ndarray | None:
        try:
            gray = _to_gray(name, item)
            if gate_scores is not None and self._gate is not None:
                gate_scores[name] = float(self._gate.score_images([gray])[0])
            return self.backend.preprocess(gray)
        except ImageReadError as exc:
            if skip is None:
                raise
            skip.append((exc.path, exc.reason))
            return None

    def _batches(
        self,
        inputs: Any,
        batch_size: int,
        workers: int,
        names: list[str],
        skip: list[tuple[str, str]] | None = None,
        gate_scores: dict[str, float] | None = None,
    ) -> Iterator[np.ndarray]:
        """``float32 (B, 1, S, S)`` batches; decoding runs one batch ahead in a thread pool."""
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")

        def collect(futures: list[tuple[str, Future]]) -> np.ndarray | None:
            rows = []
            for name, fut in futures:
                x = fut.result()
                if x is not None:
                    rows.append(x)
                    names.append(name)
            return np.stack(rows).astype(np.float32, copy=False) if rows else None

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxrtriage-decode") as pool:
            pending: list[tuple[str, Future]] = []
            current: list[tuple[str, Future]] = []
            for name, item in _iter_inputs(inputs):
                current.append((name, pool.submit(self._prepare, name, item, skip, gate_scores)))
                if len(current) == batch_size:
                    if pending:
                        batch = collect(pending)
                        if batch is not None:
                            yield batch
                    pending, current = current, []
            for part in (pending, current):
                if part:
                    batch = collect(part)
                    if batch is not None:
                        yield batch

    def _run(
        self,
        inputs: Any,
        batch_size: int,
        workers: int,
        with_ood: bool,
        skip: list[tuple[str, str]] | None = None,
        gate_scores: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
        names: list[str] = []
        want = with_ood and self.detector is not None
        logits, feats = self.backend.run(
            self._batches(inputs, batch_size, workers, names, skip, gate_scores), features="pooled" if want else "none"
        )
        probs = softmax(logits, self.config.temperature) if len(logits) else np.zeros((0, len(self.classes)))
        scores = self.detector.score(feats) if want and self.detector is not None and len(feats) else None
        return probs, scores, names

    # -- public ------------------------------------------------------------
    def probabilities(self, inputs: Any, *, batch_size: int = 32, workers: int = 2) -> np.ndarray:
        """Class probabilities of one image or many.

        Parameters
        ----------
        inputs : image or iterable of images
            See the class docstring.
        batch_size : int
            Images per forward pass (>= 1).
        workers : int
            Decoding threads (>= 1).

        Returns
        -------
        numpy.ndarray
            ``float64 (N, K)``, rows sum to 1, columns in :attr:`classes` order, the
            model's temperature applied (the probabilities ``cxr predict`` prints).
            One image gives ``(1, K)``.

        Raises
        ------
        cxrtriage.ImageReadError
            An image cannot be read (the message names the file or ``inputs[i]`` and the reason).
        TypeError
            ``inputs`` is neither an image nor an iterable of images.
        """
        return self._run(inputs, batch_size, workers, with_ood=False)[0]

    def predict(
        self, inputs: Any, *, batch_size: int = 32, workers: int = 2, cxr_gate: bool = True
    ) -> list[Prediction]:
        """Predictions at the model's shipped operating point, one per image.

        Parameters
        ----------
        inputs, batch_size, workers
            As in :meth:`probabilities`.
        cxr_gate : bool
            Check every image with gate 1 ("is this a chest radiograph?",
            :mod:`cxrtriage.ood.gate`, as the server does): a refused image's
            prediction has ``refused`` set to the reason and its label must not be used.
            False: skip the check.

        Returns
        -------
        list of Prediction
            ``probabilities`` (class -> 0-1), ``label`` (binary tasks: the saved
            threshold on ``positive_class``; otherwise arg-max), ``triage``, ``source``
            (path or ``inputs[i]``) and, when the model has an out-of-distribution
            detector (``cxr fit-ood``), ``ood_score`` and ``out_of_distribution``
            (``True``: atypical for the model's training images), and ``refused`` (gate 1).

        Raises
        ------
        cxrtriage.ImageReadError, TypeError
            As in :meth:`probabilities`.
        """
        gate_scores: dict[str, float] | None = None
        if cxr_gate and self._gate is None:
            from cxrtriage.ood.gate import gate_features, load_gate

            self._gate = load_gate()
            if self._gate is not None:
                self._gate.features = gate_features()
        if cxr_gate and self._gate is not None:
            gate_scores = {}
        probs, scores, names = self._run(inputs, batch_size, workers, with_ood=True, gate_scores=gate_scores)
        preds = predictions_from_probs(probs, self.config)
        for i, p in enumerate(preds):
            p.source = names[i]
            if gate_scores is not None and self._gate is not None:
                g = gate_scores.get(names[i], float("inf"))
                if g < self._gate.threshold:
                    p.refused = self._gate.refusal_text(g)
            if scores is not None and self.detector is not None:
                p.ood_score = float(scores[i])
                p.out_of_distribution = bool(scores[i] > self.detector.threshold)
        return preds

    def explain(self, image: Any, class_name: str | None = None) -> np.ndarray:
        """Heatmap of the evidence for one class, at the image's own resolution.

        PyTorch backend: Grad-CAM (Selvaraju et al., ICCV 2017) on the last
        convolutional block; ONNX backend: CAM (Zhou et al., CVPR 2016) from the
        feature map and the linear head. Coarse (the feature map is 4x4 at 128 px, 7x7 at 224 px):
        where the model looked, not a lesion outline.

        Parameters
        ----------
        image : one image
            See the class docstring (one path, array, PIL image or tensor).
        class_name : str, optional
            One of :attr:`classes`; default: the predicted class.

        Returns
        -------
        numpy.ndarray
            ``float32 (H, W)`` in [0, 1], ``(H, W)`` the shape of the decoded input
            (:func:`cxrtriage.read_image` for a path).

        Raises
        ------
        ValueError
            Unknown ``class_name`` (the message lists :attr:`classes`), or a backend
            without a linear head for CAM.
        cxrtriage.ImageReadError
            The image cannot be read.
        """
        items = list(_iter_inputs(image))
        if len(items) != 1:
            raise ValueError(f"explain takes one image, got {len(items)}")
        name, item = items[0]
        img = _to_gray(name, item)
        c = self.config
        x = self.backend.preprocess(img)
        if class_name is None:
            probs = softmax(self.backend.run([x[None]])[0], c.temperature)
            index = int(decide(probs, c)[0])
        elif class_name in c.classes:
            index = c.classes.index(class_name)
        else:
            raise ValueError(f"unknown class {class_name!r}; the model's classes: {', '.join(c.classes)}")
        if isinstance(self.backend, TorchBackend):
            heat = gradcam(self.backend.model, c.arch, x, index)
        else:
            if self.backend.head is None:
                raise ValueError(f"{self.name}: no linear classifier head in the ONNX graph; no CAM possible")
            fmap = self.backend.run([x[None]], features="map")[1]
            heat = normalize_cam(cam_from_features(fmap[0], self.backend.head[0], index))
        h, w = img.shape
        return upsample_cam(heat, (w, h)).astype(np.float32, copy=False)


def evaluate(
    model: Model,
    dataset: str | os.PathLike | ImageDataset,
    *,
    split: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
) -> MetricReport:
    """Score a labelled dataset at the model's operating point, with bootstrap 95 % intervals.

    The figures ``cxr evaluate`` writes to ``metrics.json`` (accuracy, AUROC,
    sensitivity, specificity, PPV, NPV, F1, per class and macro), computed with
    scikit-learn by :func:`cxrtriage.metrics.classification.report_at_operating_point`.
    ``cxr evaluate`` decodes through its resized image cache; this reads the files
    directly, so figures can differ in the last digits.

    Parameters
    ----------
    model : Model
        From :func:`load_model`.
    dataset : path or ImageDataset
        A dataset folder or ``manifest.csv`` (labels mapped onto the model's task),
        or an :class:`cxrtriage.ImageDataset` of the model's task.
    split : str, optional
        Only this split (for a path).
    n_boot : int
        Bootstrap replicates (0: no intervals).
    seed : int
        Bootstrap seed.
    batch_size : int

    Returns
    -------
    MetricReport
        ``report.metrics["auroc"].value``, ``.ci95``; ``report.to_dict()`` is JSON-ready.

    Raises
    ------
    cxrtriage.DatasetError
        No labelled image of the model's classes, none readable, or an
        :class:`ImageDataset` of other classes. Unreadable images are skipped with a
        warning naming them.
    """
    if isinstance(dataset, ImageDataset):
        if list(dataset.classes) != model.classes:
            raise DatasetError(f"dataset classes {list(dataset.classes)} differ from the model's {model.classes}")
        paths, labels = list(dataset.paths), np.asarray(dataset.labels)
    else:
        samples = discover(os.fspath(dataset), get_task(model.config.task), split)
        if not samples:
            raise DatasetError(f"{dataset}: no image of the classes {', '.join(model.classes)}")
        paths, labels = [s.path for s in samples], np.array([s.target for s in samples])
    skipped: list[tuple[str, str]] = []
    probs, _, names = model._run(paths, batch_size, 2, with_ood=False, skip=skipped)
    if skipped:
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        warnings.warn(f"{len(skipped)} unreadable image(s) skipped: {shown}", stacklevel=2)
    if not names:
        raise DatasetError(f"{dataset}: none of the {len(paths)} images could be read")
    index = {p: i for i, p in enumerate(paths)}
    y = labels[[index[n] for n in names]]
    return report_at_operating_point(y, probs, model.config, n_boot=n_boot, seed=seed)

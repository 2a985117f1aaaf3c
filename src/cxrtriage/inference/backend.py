"""The one batched forward pass: :class:`Backend` with a PyTorch and an ONNX Runtime implementation.

Every caller that runs a model over images — training validation, evaluation,
cross-validation, recalibration, ship, frozen features, the predictor, the
server, OOD fitting and the export check — goes through :meth:`Backend.run`.

Input contract: batches of the output of
:func:`cxrtriage.data.transforms.preprocess`, ``float32 (B, 1, S, S)``
(:func:`preprocessed_batches` makes them from images or paths), so
preprocessing is identical everywhere.

Output contract of ``run(batches, features=...)``: a tuple
``(logits, features)``:

* ``logits``  ``float32 (N, K)``: class logits, before temperature and softmax
  (:func:`cxrtriage.metrics.calibration.softmax` turns them into probabilities).
* ``features`` depends on ``features``:

  - ``"none"`` (default): ``float32 (N, 0)`` — nothing extra is computed;
  - ``"pooled"``: ``float32 (N, C)``, the global average of the last feature map
    (the input of a GAP + linear head; used by OOD and frozen-backbone heads);
  - ``"map"``: ``float32 (N, C, h, w)``, the last feature map (``forward_features``;
    for CAM heatmaps). Maps of many images are large, so ask for them only per request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from cxrtriage.config import ModelConfig
from cxrtriage.data.io import read_image
from cxrtriage.data.transforms import preprocess
from cxrtriage.metrics.calibration import softmax
from cxrtriage.models.bundle import ModelBundle

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Backend",
    "FeatureKind",
    "OnnxBackend",
    "TorchBackend",
    "config_batches",
    "ONNX_NAME",
    "file_sha256",
    "onnx_head_weights",
    "preprocessed_batches",
]

log = logging.getLogger(__name__)

#: What :meth:`Backend.run` returns beside the logits (see the module docstring).
FeatureKind = Literal["none", "pooled", "map"]


#: File name of a model folder's ONNX export (written by :func:`cxrtriage.inference.export.export_onnx`).
ONNX_NAME = "model.onnx"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (:func:`hashlib.file_digest`).

    Raises
    ------
    OSError
        The file cannot be read.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


#: Images for :func:`preprocessed_batches`: a stack ``uint8 (N, H, W)`` or a sequence of arrays and paths.
ImageInput = np.ndarray | Sequence[np.ndarray | str | Path]


def preprocessed_batches(
    images: ImageInput,
    image_size: int,
    intensity: str,
    mean: float = 0.5,
    std: float = 0.5,
    batch_size: int = 32,
) -> Iterator[np.ndarray]:
    """Model input, batch by batch, for decoded images or image files.

    Parameters
    ----------
    images : sequence of ``uint8 (H, W)`` arrays or paths
        Paths are read with :func:`cxrtriage.data.io.read_image`.
    image_size, intensity, mean, std
        Preprocessing of the model (:class:`cxrtriage.config.ModelConfig` fields),
        applied by :func:`cxrtriage.data.transforms.preprocess`.
    batch_size : int
        Images per batch (>= 1).

    Yields
    ------
    numpy.ndarray
        ``float32 (B, 1, image_size, image_size)``, ``B <= batch_size``.

    Raises
    ------
    cxrtriage.data.io.ImageReadError
        A path cannot be read as an image.
    ValueError
        ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        yield np.stack(
            [
                preprocess(
                    read_image(im) if isinstance(im, str | Path) else np.asarray(im), image_size, intensity, mean, std
                )
                for im in chunk
            ]
        ).astype(np.float32, copy=False)


def config_batches(images: ImageInput, config: ModelConfig, batch_size: int = 32) -> Iterator[np.ndarray]:
    """Model input batches ``float32 (B, 1, S, S)`` with the preprocessing of ``config``.

    For ``config.input`` ``full`` this is :func:`preprocessed_batches`; ``lungs`` and ``lung-crop`` add the
    lung step (:func:`cxrtriage.inference.lung_input.model_inputs`, one segmenter call per batch).
    """
    if config.input == "full":
        return preprocessed_batches(images, config.image_size, config.intensity, config.mean, config.std, batch_size)
    return _lung_batches(images, config, batch_size)


def _lung_batches(images: ImageInput, config: ModelConfig, batch_size: int) -> Iterator[np.ndarray]:
    from cxrtriage.inference.lung_input import model_inputs

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        yield model_inputs([read_image(im) if isinstance(im, str | Path) else np.asarray(im) for im in chunk], config)


def _empty(num_classes: int, features: FeatureKind) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, num_classes), np.float32), np.zeros((0, 0) if features != "map" else (0, 0, 0, 0), np.float32)


def _finish(
    logits: list[np.ndarray], feats: list[np.ndarray], k: int, features: FeatureKind
) -> tuple[np.ndarray, np.ndarray]:
    if not logits:
        return _empty(k, features)
    return np.concatenate(logits).astype(np.float32, copy=False), np.concatenate(feats).astype(np.float32, copy=False)


def _features(fmap: np.ndarray, n: int, features: FeatureKind) -> np.ndarray:
    if features == "map":
        return fmap
    if features == "pooled":
        return fmap.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
    return np.zeros((n, 0), np.float32)


class Backend(Protocol):
    """A model that maps preprocessed batches to logits and features.

    Attributes
    ----------
    name : str
        ``"torch"`` or ``"onnxruntime"``.
    config : ModelConfig or None
        The model's settings (``None`` for a bare module, e.g. during training).
    head : (weight float32 (K, C), bias float32 (K,)) or None
        Linear classifier after global average pooling, for CAM; ``None`` if not such a head.
    sha256 : str or None
        Checksum of the ONNX file (``None`` for torch).
    """

    name: str
    config: ModelConfig | None
    head: tuple[np.ndarray, np.ndarray] | None
    sha256: str | None

    def run(self, batches: Iterable[np.ndarray], features: FeatureKind = "none") -> tuple[np.ndarray, np.ndarray]:
        """``(logits float32 (N, K), features)`` for batches ``float32 (B, 1, S, S)``; see the module docstring."""
        ...


class _ConfigMixin:
    """Convenience methods shared by backends that know their :class:`ModelConfig`."""

    config: ModelConfig | None

    def run(
        self, batches: Iterable[np.ndarray], features: FeatureKind = "none"
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def require_config(self) -> ModelConfig:
        """The backend's :class:`ModelConfig`.

        Raises
        ------
        ValueError
            A bare module without configuration (e.g. the trainer's validation backend).
        """
        if self.config is None:
            raise ValueError("this backend has no ModelConfig; pass preprocessed batches to run()")
        return self.config

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """``uint8 (H, W)`` -> ``float32 (1, S, S)``: :func:`cxrtriage.data.transforms.preprocess`, after the
        model's lung step when ``config.input`` is ``lungs`` or ``lung-crop``
        (:func:`cxrtriage.inference.lung_input.model_inputs`)."""
        c = self.require_config()
        if c.input == "full":
            return preprocess(img, c.image_size, c.intensity, c.mean, c.std)
        from cxrtriage.inference.lung_input import model_inputs

        return model_inputs([img], c)[0]

    def logits(self, images: ImageInput, batch_size: int = 32) -> np.ndarray:
        """Logits ``float32 (N, K)`` of ``uint8 (H, W)`` images or image paths (model preprocessing)."""
        return self.run(config_batches(images, self.require_config(), batch_size))[0]

    def probabilities(self, images: ImageInput, batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``float64 (N, K)`` (rows sum to 1), the model's temperature applied."""
        return softmax(self.logits(images, batch_size), self.require_config().temperature)


class TorchBackend(_ConfigMixin):
    """A PyTorch module behind the :class:`Backend` interface.

    Runs in eval mode under :func:`torch.inference_mode`, optionally in
    channels-last memory format (faster on CPU for convolutional nets).

    Parameters
    ----------
    model : torch.nn.Module
        Switched to eval mode on every :meth:`run` (and converted to channels-last
        in place when ``channels_last``). ``features != "none"`` needs
        ``forward_features``/``forward_head`` (timm-style).
    config : ModelConfig, optional
        Enables :meth:`preprocess`, :meth:`logits` and :meth:`probabilities`.
    threads : int or None
        ``torch.set_num_threads`` (process-wide); ``None`` leaves it.
    channels_last : bool
        Run in channels-last memory format.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig | None = None,
        *,
        threads: int | None = 2,
        channels_last: bool = True,
    ) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.config = config
        self.channels_last = channels_last
        self.sha256: str | None = None
        self.head: tuple[np.ndarray, np.ndarray] | None = None
        if config is not None:
            from cxrtriage.explain.cam import classifier_weights
            from cxrtriage.models.registry import model_entry

            if model_entry(config.arch).gap_linear_head:
                self.head = classifier_weights(model)
        self._lock = threading.Lock()

    @classmethod
    def from_dir(
        cls, model_dir: str | Path | None, threads: int | None = 2, channels_last: bool = True
    ) -> TorchBackend:
        """Load a model folder (``config.json`` + weights; ``None``: the shipped model)."""
        bundle = ModelBundle.load(model_dir)
        return cls(bundle.load_model(), bundle.config, threads=threads, channels_last=channels_last)

    def run(self, batches: Iterable[np.ndarray], features: FeatureKind = "none") -> tuple[np.ndarray, np.ndarray]:
        """Logits ``float32 (N, K)`` and features (module docstring) for ``float32 (B, 1, S, S)`` batches."""
        import torch

        logits, feats = [], []
        k = len(self.config.classes) if self.config is not None else 0
        # batches go to the device the weights are on (the CPU here; a GPU during `cxr train --device cuda`)
        device = next(self.model.parameters(), torch.empty(0)).device
        with self._lock, torch.inference_mode():
            self.model.eval()
            for x in batches:
                xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
                if self.channels_last:
                    xt = xt.contiguous(memory_format=torch.channels_last)
                if features == "none":
                    out = self.model(xt)
                    feats.append(np.zeros((len(x), 0), np.float32))
                else:
                    fmap = self.model.forward_features(xt)  # type: ignore[operator]  # timm-style split
                    out = self.model.forward_head(fmap)  # type: ignore[operator]
                    feats.append(_features(fmap.float().contiguous().cpu().numpy(), len(x), features))
                logits.append(out.float().cpu().numpy())
        return _finish(logits, feats, k, features)


def onnx_head_weights(onnx_path: str | Path, output: str = "logits") -> tuple[np.ndarray, np.ndarray] | None:
    """Read the linear classifier (``Gemm`` producing ``output``) from an ONNX graph.

    Returns
    -------
    (weight, bias) or None
        ``float32 (K, C)`` and ``float32 (K,)``; ``None`` when the node producing
        ``output`` is not a ``Gemm`` with constant weights (then no CAM is possible).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path), load_external_data=True).graph
    inits = {i.name: i for i in graph.initializer}
    node = next((n for n in graph.node if output in n.output), None)
    if node is None or node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits:
        return None
    attrs = {a.name: a for a in node.attribute}
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    if "transB" not in attrs or attrs["transB"].i != 1:
        w = w.T
    alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
    b = (
        numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        if len(node.input) > 2 and node.input[2] in inits
        else np.zeros(w.shape[0], np.float32)
    )
    beta = attrs["beta"].f if "beta" in attrs else 1.0
    return np.ascontiguousarray(w * alpha), b * beta


class OnnxBackend(_ConfigMixin):
    """ONNX Runtime session of ``model.onnx`` in a model folder.

    The graph (written by :func:`cxrtriage.inference.export.export_onnx`) has
    input ``input`` ``float32 (N, 1, S, S)`` and outputs ``logits`` and ``features``.

    Parameters
    ----------
    model_dir : path
        Model folder with ``config.json`` and ``model.onnx``.
    threads : int
        ONNX Runtime intra-op threads (2 on the reference machine); inter-op is 1.
    check_sha256 : bool
        Refuse a ``model.onnx`` whose SHA-256 differs from the one recorded in
        the ``onnx`` section of ``bundle.json`` (a stale export).
    spin : bool
        Let idle ONNX Runtime threads busy-wait between runs (faster for
        back-to-back batch scoring, slower when other work shares the cores).
    onnx_path : path, optional
        Another ``.onnx`` file for this folder's model (e.g. a fresh export being
        checked); its checksum is not compared.
    memory_arena : bool
        Let ONNX Runtime keep its CPU memory arena (faster for large batches; the server, one image
        per call, turns it off to keep its resident memory down).

    Attributes
    ----------
    config : ModelConfig
    head : (weight (K, C), bias (K,)) or None
        The linear classifier read from the graph, for CAM heatmaps.
    sha256 : str
        Checksum of the ONNX file.

    Raises
    ------
    FileNotFoundError
        No ``model.onnx``.
    ValueError
        Checksum mismatch or an unusable graph.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_dir: str | Path,
        threads: int = 2,
        check_sha256: bool = True,
        spin: bool = False,
        onnx_path: str | Path | None = None,
        memory_arena: bool = True,
    ) -> None:
        import onnxruntime as ort

        d = Path(model_dir)
        bundle = ModelBundle.load(d)
        self.config: ModelConfig | None = bundle.config
        path = Path(onnx_path) if onnx_path is not None else d / ONNX_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (run `cxr export --model {d}`)")
        self.sha256: str | None = file_sha256(path)
        want = bundle.onnx.sha256 if bundle.onnx is not None else None
        if check_sha256 and onnx_path is None and want and want != self.sha256:
            raise ValueError(
                f"{path}: SHA-256 {self.sha256[:12]}... differs from bundle.json ({want[:12]}...); re-export"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_cpu_mem_arena = memory_arena
        if not spin:
            # Idle worker threads would otherwise busy-wait after each run and take the
            # cores from the rest of the request (decoding, NumPy, the web server).
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outs = [o.name for o in self.session.get_outputs()]
        if outs[:2] != ["logits", "features"]:
            raise ValueError(f"{path}: outputs {outs}, expected ['logits', 'features']")
        self.head = onnx_head_weights(path)
        self.path = path

    def run(self, batches: Iterable[np.ndarray], features: FeatureKind = "none") -> tuple[np.ndarray, np.ndarray]:
        """Logits ``float32 (N, K)`` and features (module docstring) for ``float32 (B, 1, S, S)`` batches.

        Safe to call from several threads at once (ONNX Runtime sessions are); with one intra-op
        thread each call runs on its caller's thread.
        """
        logits, feats = [], []
        # the feature map is only copied out of the session when it is asked for (it is ~1,000x the logits)
        names = ["logits"] if features == "none" else ["logits", "features"]
        for x in batches:
            out = self.session.run(names, {"input": np.ascontiguousarray(x, dtype=np.float32)})
            logits.append(out[0])
            feats.append(_features(out[-1], len(x), features))
        return _finish(logits, feats, len(self.require_config().classes), features)

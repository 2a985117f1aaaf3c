"""Inference backends that return logits *and* the last feature map.

:class:`OnnxBackend` runs ``model.onnx`` (written by :func:`cxrtriage.inference.export.export_onnx`)
with ONNX Runtime; :class:`TorchBackend` runs the PyTorch model with the same
interface, as the fallback when no ONNX file is available. Both take the
output of :func:`cxrtriage.data.transforms.preprocess`, so preprocessing is
identical to training, evaluation and ``cxr predict``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrtriage.config import ModelConfig
from cxrtriage.data.transforms import preprocess
from cxrtriage.inference.export import ONNX_NAME, file_sha256
from cxrtriage.metrics.calibration import softmax
from cxrtriage.models.bundle import ModelBundle

__all__ = ["OnnxBackend", "TorchBackend", "softmax", "onnx_head_weights", "load_backend"]

log = logging.getLogger(__name__)


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


class _Base:
    config: ModelConfig
    head: tuple[np.ndarray, np.ndarray] | None
    name: str

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """``uint8 (H, W)`` -> ``float32 (1, S, S)``, see :func:`cxrtriage.data.transforms.preprocess`."""
        c = self.config
        return preprocess(img, c.image_size, c.intensity, c.mean, c.std)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``float64 (N, K)`` for ``uint8 (H, W)`` images (temperature applied)."""
        out = []
        for start in range(0, len(images), batch_size):
            x = np.stack([self.preprocess(im) for im in images[start : start + batch_size]])
            logits, _ = self.run(x)
            out.append(softmax(logits, self.config.temperature))
        return np.concatenate(out) if out else np.zeros((0, len(self.config.classes)))


class OnnxBackend(_Base):
    """ONNX Runtime session of ``model.onnx`` in a model folder.

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

    def __init__(self, model_dir: str | Path, threads: int = 2, check_sha256: bool = True, spin: bool = False):
        import onnxruntime as ort

        d = Path(model_dir)
        self.config = ModelConfig.load(d / "config.json")
        path = d / ONNX_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (run `cxr export --model {d}`)")
        self.sha256 = file_sha256(path)
        onnx_section = ModelBundle.load(d).onnx
        want = onnx_section.sha256 if onnx_section is not None else None
        if check_sha256 and want and want != self.sha256:
            raise ValueError(
                f"{path}: SHA-256 {self.sha256[:12]}... differs from bundle.json ({want[:12]}...); re-export"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``float32 (N, K)`` and feature map ``float32 (N, C, h, w)`` for input ``float32 (N, 1, S, S)``."""
        logits, feats = self.session.run(["logits", "features"], {"input": np.ascontiguousarray(x, dtype=np.float32)})
        return logits, feats


class TorchBackend(_Base):
    """PyTorch model with the :class:`OnnxBackend` interface (fallback).

    Parameters
    ----------
    model_dir : path
        Model folder (``config.json`` + ``model.safetensors``).
    threads : int
        ``torch.set_num_threads``.
    """

    name = "torch"

    def __init__(self, model_dir: str | Path, threads: int = 2):
        import torch

        from cxrtriage.explain.cam import classifier_weights
        from cxrtriage.models.bundle import load_model
        from cxrtriage.models.registry import model_entry

        torch.set_num_threads(threads)
        self.model, self.config = load_model(model_dir)
        self.sha256 = None
        self.head = classifier_weights(self.model) if model_entry(self.config.arch).gap_linear_head else None
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``float32 (N, K)`` and feature map ``float32 (N, C, h, w)``."""
        import torch

        with self._lock, torch.no_grad():
            f = self.model.forward_features(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            logits = self.model.forward_head(f)
        return logits.float().numpy(), f.float().numpy()


def load_backend(
    model_dir: str | Path, threads: int = 2, prefer_onnx: bool = True, export_if_missing: bool = True
) -> _Base:
    """The fastest available backend for a model folder.

    ONNX Runtime when ``model.onnx`` exists and matches its recorded checksum;
    if it is missing (or stale) and the folder is writable, it is exported
    first; otherwise PyTorch.

    Returns
    -------
    OnnxBackend or TorchBackend
    """
    d = Path(model_dir)
    if prefer_onnx:
        try:
            return OnnxBackend(d, threads)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("ONNX backend unavailable: %s", exc)
            if export_if_missing and _writable(d):
                try:
                    from cxrtriage.inference.export import export_onnx

                    export_onnx(d)
                    return OnnxBackend(d, threads)
                except Exception as exc2:  # noqa: BLE001 - any export failure means: use torch
                    log.warning("ONNX export failed (%s); using PyTorch", exc2)
    return TorchBackend(d, threads)


def _writable(d: Path) -> bool:
    import os

    return os.access(d, os.W_OK) and (not (d / ONNX_NAME).exists() or os.access(d / ONNX_NAME, os.W_OK))

"""Export a model folder to ONNX (``cxr export``).

The exported graph has one input and two outputs:

* ``input``    ``float32 (N, 1, S, S)``: the output of :func:`cxrtriage.data.transforms.preprocess`;
* ``logits``   ``float32 (N, K)``: class logits (before temperature and softmax);
* ``features`` ``float32 (N, C, h, w)``: the last feature map (``forward_features``,
  for EfficientNet-Lite0 the output of ``bn2``, which is also the Grad-CAM
  target layer). Global average pooling of it gives the pooled features used
  by the out-of-distribution detector, and with the classifier row it gives the
  class activation map (:mod:`cxrtriage.explain.cam`).

A bundle whose ``model.safetensors`` holds float16 tensors (a seed ensemble, ``cxr ensemble``) is exported with
float16 weight storage and float32 arithmetic (:func:`store_initializers_float16`).

The file, opset and SHA-256 are recorded in the bundle's ``onnx`` section
(:class:`cxrtriage.models.bundle.OnnxSection`); when the folder has a model card
(``README.md``), it is re-rendered from the bundle.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrtriage.cards.model_card import write_card
from cxrtriage.inference.backend import ONNX_NAME, OnnxBackend, TorchBackend, file_sha256
from cxrtriage.models.bundle import README_FILE, ModelBundle, OnnxSection

if TYPE_CHECKING:
    import torch

__all__ = ["export_onnx", "ONNX_OPSET", "store_initializers_float16", "weights_are_float16"]

log = logging.getLogger(__name__)

#: File name of the exported graph inside a model folder.
#: ONNX opset used for the export (supported by ONNX Runtime >= 1.14).
ONNX_OPSET = 17

#: Verification tolerance of a float16-stored export, relative to the largest PyTorch output (float16 keeps
#: 11 significant bits, a relative rounding of up to 4.9e-4 per weight).
FLOAT16_RTOL = 1e-2


def _wrapper(model: torch.nn.Module) -> torch.nn.Module:
    import torch

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            # Any: a timm model whose forward_features/forward_head export_onnx has checked with hasattr.
            self.m: Any = m

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.m.forward_features(x)
            return self.m.forward_head(f), f

    return FeaturesAndLogits(model).eval()


def weights_are_float16(bundle: ModelBundle) -> bool:
    """Whether the bundle's ``model.safetensors`` stores its floating-point tensors as float16."""
    from safetensors import safe_open

    path = bundle.weights_path()
    if path.suffix != ".safetensors":
        return False
    with safe_open(str(path), framework="pt") as fh:
        return any(fh.get_slice(k).get_dtype() == "F16" for k in fh.keys())


def store_initializers_float16(onnx_path: str | Path, min_elements: int = 64) -> None:
    """Rewrite an ONNX file so its large float32 weights are stored as float16 and cast back on load.

    Every float32 initializer with at least ``min_elements`` values, except the inputs of the final ``Gemm``
    (the linear classifier that :func:`cxrtriage.inference.backend.onnx_head_weights` reads for CAM), becomes a
    float16 initializer followed by a ``Cast`` to float32: the arithmetic stays float32 and the file halves. The
    rounding is that of float16 on the exported weights (for networks with batch norm, after the exporter has
    folded it into the convolutions).

    Raises
    ------
    OSError
        The file cannot be read or written.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    head_inputs = {i for n in graph.node if n.op_type == "Gemm" for i in n.input}
    casts, keep = [], []
    for init in graph.initializer:
        n_values = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type != TensorProto.FLOAT or n_values < min_elements or init.name in head_inputs:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name=f"{init.name}__float16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def _record_checksum(bundle: ModelBundle, sha: str) -> None:
    """Store the export in the bundle's ``onnx`` section and re-render its card if it has one."""
    if bundle.directory is None:
        raise ValueError("cannot record the ONNX checksum: the bundle was not loaded from a folder")
    bundle.onnx = OnnxSection(file=ONNX_NAME, opset=ONNX_OPSET, sha256=sha)
    bundle.save(bundle.directory)
    if (bundle.directory / README_FILE).is_file() and bundle.evaluation is not None:
        write_card(bundle)


def export_onnx(
    model_dir: str | Path, out: str | Path | None = None, *, verify: bool = True, atol: float = 1e-3
) -> Path:
    """Export a model folder to ONNX and record the file's SHA-256.

    Parameters
    ----------
    model_dir : path
        Model bundle folder (:class:`cxrtriage.models.bundle.ModelBundle`).
    out : path, optional
        Output file; default ``model_dir/model.onnx``. The checksum is recorded
        in the model folder only for the default location.
    verify : bool
        Run the exported graph with ONNX Runtime on a real-valued test input
        and compare logits and features with PyTorch.
    atol : float
        Largest absolute difference accepted by the verification (for float16-stored weights, at least
        :data:`FLOAT16_RTOL` times the largest PyTorch output).

    Returns
    -------
    pathlib.Path
        The written ``.onnx`` file.

    Raises
    ------
    cxrtriage.models.ModelLoadError
        Not a model folder.
    ValueError
        The architecture has no ``forward_features``/``forward_head`` split,
        or the verification fails.
    """
    import torch

    d = Path(model_dir)
    bundle = ModelBundle.load(d)
    model, cfg = bundle.load_model(), bundle.config
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise ValueError(f"{cfg.arch}: ONNX export needs forward_features/forward_head")
    wrapper = _wrapper(model)
    dst = Path(out) if out else d / ONNX_NAME
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    s = cfg.image_size
    x = torch.zeros(1, 1, s, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (x,),
            str(tmp),
            dynamo=False,
            input_names=["input"],
            output_names=["logits", "features"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
        )
    half = weights_are_float16(bundle)
    if half:
        store_initializers_float16(tmp)
    if verify:
        rng = np.random.default_rng(0)
        xt = rng.normal(0.0, 1.0, size=(2, 1, s, s)).astype(np.float32)
        lo, fo = OnnxBackend(d, threads=1, onnx_path=tmp).run([xt], features="map")
        lt, ft = TorchBackend(model, cfg, threads=None, channels_last=False).run([xt], features="map")
        err = max(float(np.abs(lo - lt).max()), float(np.abs(fo - ft).max()))
        # float16 storage rounds the weights after the exporter has folded batch norm into the convolutions,
        # so the two differ by float16's precision relative to the outputs' scale, not by a fixed amount
        limit = max(atol, FLOAT16_RTOL * max(float(np.abs(lt).max()), float(np.abs(ft).max()))) if half else atol
        if not err <= limit:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"ONNX export of {d} does not match PyTorch (max abs difference {err:.2e} > {limit:.2e})")
        log.info("ONNX export verified: max abs difference %.2e", err)
    tmp.replace(dst)
    if out is None or dst.resolve() == (d / ONNX_NAME).resolve():
        _record_checksum(bundle, file_sha256(dst))
    return dst

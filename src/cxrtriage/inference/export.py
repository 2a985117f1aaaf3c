"""Export a model folder to ONNX (``cxr export``).

The exported graph has one input and two outputs:

* ``input``    ``float32 (N, 1, S, S)``: the output of :func:`cxrtriage.data.transforms.preprocess`;
* ``logits``   ``float32 (N, K)``: class logits (before temperature and softmax);
* ``features`` ``float32 (N, C, h, w)``: the last feature map (``forward_features``,
  for EfficientNet-Lite0 the output of ``bn2``, which is also the Grad-CAM
  target layer). Global average pooling of it gives the pooled features used
  by the out-of-distribution detector, and with the classifier row it gives the
  class activation map (:mod:`cxrtriage.explain.cam`).

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

__all__ = ["export_onnx", "ONNX_OPSET"]

log = logging.getLogger(__name__)

#: File name of the exported graph inside a model folder.
#: ONNX opset used for the export (supported by ONNX Runtime >= 1.14).
ONNX_OPSET = 17


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
        Largest absolute difference accepted by the verification.

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
    if verify:
        rng = np.random.default_rng(0)
        xt = rng.normal(0.0, 1.0, size=(2, 1, s, s)).astype(np.float32)
        lo, fo = OnnxBackend(d, threads=1, onnx_path=tmp).run([xt], features="map")
        lt, ft = TorchBackend(model, cfg, threads=None, channels_last=False).run([xt], features="map")
        err = max(float(np.abs(lo - lt).max()), float(np.abs(fo - ft).max()))
        if not err <= atol:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"ONNX export of {d} does not match PyTorch (max abs difference {err:.2e} > {atol})")
        log.info("ONNX export verified: max abs difference %.2e", err)
    tmp.replace(dst)
    if out is None or dst.resolve() == (d / ONNX_NAME).resolve():
        _record_checksum(bundle, file_sha256(dst))
    return dst

"""Pick the fastest backend for a model folder, exporting ONNX on demand.

Kept apart from :mod:`cxrtriage.inference.backend` (the backends) and
:mod:`cxrtriage.inference.export` (which checks an export with both backends), so that
neither of those imports the other in a loop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cxrtriage.inference.backend import ONNX_NAME, OnnxBackend, TorchBackend
from cxrtriage.inference.device import resolve_device
from cxrtriage.inference.export import export_onnx

__all__ = ["load_backend"]

log = logging.getLogger(__name__)


def load_backend(
    model_dir: str | Path,
    threads: int = 2,
    prefer_onnx: bool = True,
    export_if_missing: bool = True,
    device: str = "cpu",
) -> OnnxBackend | TorchBackend:
    """The fastest available backend for a model folder.

    On a GPU (``device`` resolving to ``cuda:N``, :func:`cxrtriage.inference.device.resolve_device`):
    PyTorch there. On the CPU: ONNX Runtime when ``model.onnx`` exists and matches its recorded checksum;
    if it is missing (or stale) and the folder is writable, it is exported
    first; otherwise PyTorch.

    Returns
    -------
    OnnxBackend or TorchBackend
    """
    d = Path(model_dir)
    where = resolve_device(device)
    if where != "cpu":
        backend = TorchBackend.from_dir(d, threads, channels_last=True)
        backend.model.to(where)
        return backend
    if prefer_onnx:
        try:
            return OnnxBackend(d, threads)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("ONNX backend unavailable: %s", exc)
            if export_if_missing and _writable(d):
                try:
                    export_onnx(d)
                    return OnnxBackend(d, threads)
                except Exception as exc2:  # noqa: BLE001 - any export failure means: use torch
                    log.warning("ONNX export failed (%s); using PyTorch", exc2)
    return TorchBackend.from_dir(d, threads, channels_last=False)


def _writable(d: Path) -> bool:
    return os.access(d, os.W_OK) and (not (d / ONNX_NAME).exists() or os.access(d / ONNX_NAME, os.W_OK))

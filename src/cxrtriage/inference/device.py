"""Where a model runs: resolve ``--device auto|cpu|cuda|cuda:N`` and the training precision ``auto``.

One place for the choice every command makes (``train``, ``cv``, ``compare``, ``evaluate``, ``predict``,
``audit``, ``score``): ``auto`` means the first CUDA GPU when PyTorch sees one, else the CPU.
"""

from __future__ import annotations

import os
import sys

from cxrtriage.config import PRECISION_AUTO, check_device

__all__ = ["resolve_device", "resolve_precision", "fabric_device"]


def resolve_device(device: str) -> str:
    """The concrete torch device of a device string.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns
    -------
    str
        ``"cpu"`` or ``"cuda:N"``.

    Raises
    ------
    ValueError
        Malformed string, or CUDA asked for but not available (or ``N`` out of range).
    """
    check_device(device)
    if device == "cpu" or (device == "auto" and not _gpu_driver_present()):
        return "cpu"  # without importing PyTorch (ONNX Runtime scoring does not need it)
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return f"cuda:{index}"


#: Files one of which exists wherever a CUDA GPU can be visible: the NVIDIA driver's control device and
#: proc entry on Linux (also inside containers given a GPU), and WSL 2's GPU device.
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg")


def _gpu_driver_present() -> bool:
    """Whether a GPU driver is visible; when it is not, CUDA cannot be available and ``auto`` is the CPU."""
    return not sys.platform.startswith("linux") or any(os.path.exists(f) for f in GPU_DRIVER_FILES)


def fabric_device(device: str, devices: int) -> tuple[str, int | list[int]]:
    """Lightning Fabric's ``(accelerator, devices)`` for a device string.

    ``cuda:N`` pins one GPU (``devices=[N]``); otherwise ``devices`` processes of the accelerator
    (``auto`` -> ``cuda`` when available, else ``cpu``).

    Raises
    ------
    ValueError
        As :func:`resolve_device`; or ``cuda:N`` with ``devices > 1``.
    """
    concrete = resolve_device(device)
    if concrete == "cpu":
        return "cpu", devices
    if ":" in device:
        if devices > 1:
            raise ValueError(f"device {device!r} names one GPU; use --device cuda with --devices {devices}")
        return "cuda", [int(concrete.partition(":")[2])]
    return "cuda", devices


def resolve_precision(precision: str, device: str) -> str:
    """Lightning Fabric precision for ``precision`` on ``device`` (a concrete device, see :func:`resolve_device`).

    ``auto`` is ``bf16-mixed`` on a GPU that supports bfloat16 (Ampere and later), ``16-mixed`` (float16
    autocast with a gradient scaler, Micikevicius et al., "Mixed Precision Training", ICLR 2018) on older GPUs,
    and ``32-true`` on the CPU. Other values are passed through.
    """
    if precision != PRECISION_AUTO:
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"

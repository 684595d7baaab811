"""Picking the compute device: a CUDA GPU when present, else the CPU.

Every ``--device`` goes through :func:`pick_device`, which checks the string against this torch
build and machine, so a bad device fails at once with one clear line instead of a torch
assertion after the data has been read or simulated.
"""

from __future__ import annotations

import torch

from lowdose.errors import LowdoseError

DEVICE_TYPES = ("cpu", "cuda", "mps")
"""The device types lowdose runs on (torch knows more, which nothing here supports)."""


def check_device(requested: str, flag: str = "--device") -> torch.device:
    """``requested`` as a ``torch.device``, refused unless this build and machine can use it.

    Raises:
        LowdoseError: not a device string, a type other than cpu/cuda/mps, CUDA on a build or a
            machine without it, a GPU index past the machine's GPUs, or MPS where it is absent;
            one line naming ``flag``, the value and what to use instead.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    text = str(requested).strip()
    usage = "use cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise LowdoseError(f"{flag} {text}: not a device; {usage}") from None
    if device.type not in DEVICE_TYPES:
        raise LowdoseError(f"{flag} {text}: not a device lowdose runs on; {usage}")
    if device.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise LowdoseError(f"{flag} {text}: this torch build has no CUDA support (torch "
                               f"{torch.__version__}); use --device cpu or install a CUDA build")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LowdoseError(f"{flag} {text}: no CUDA GPU is visible on this machine (driver "
                               "missing or CUDA_VISIBLE_DEVICES empty); use --device cpu")
        if device.index is not None and device.index >= count:
            raise LowdoseError(f"{flag} {text}: this machine has {count} CUDA GPU(s), "
                               f"cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LowdoseError(f"{flag} {text}: MPS (Apple GPU) is not available on this machine; "
                           "use --device cpu")
    return device


def pick_device(requested: str | None = None) -> torch.device:
    """Return ``requested`` (e.g. ``"cpu"``, ``"cuda:1"``), checked, or the best available device.

    Raises:
        LowdoseError: ``requested`` is not usable here (see :func:`check_device`).

    Example:
        >>> pick_device("cpu").type
        'cpu'
    """
    if requested:
        return check_device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN sees it.

    Without it bf16 convolutions are emulated and slower than fp32, so ``precision="bf16"`` is
    refused on such a CPU.

    Example:
        >>> isinstance(cpu_has_bf16(), bool)
        True
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False

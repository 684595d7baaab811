"""Picking the compute device: a CUDA GPU when present, else the CPU."""

from __future__ import annotations

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """Return ``requested`` (e.g. ``"cpu"``, ``"cuda:1"``) or the best available device.

    Example:
        >>> pick_device("cpu").type
        'cpu'
    """
    if requested:
        return torch.device(requested)
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

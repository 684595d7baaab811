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

"""Input checks shared by the simulators: dose in (0, 1], finite HU in a physical range."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lowdose.errors import LowdoseError
from lowdose.image import HU_EXTENDED_MAX

# Air is -1000 HU; scanners clip at -1024, so anything much lower is not a CT image in HU
# (e.g. raw stored values, or a [0, 1] image). The upper bound is the extended CT scale.
HU_PHYSICAL_MIN = -1100.0
HU_PHYSICAL_MAX = HU_EXTENDED_MAX


def check_dose(dose: float, name: str = "dose") -> float:
    """Return ``dose`` as a float, or raise LowdoseError unless it is in (0, 1].

    Example:
        >>> check_dose(0.25)
        0.25
    """
    try:
        value = float(dose)
    except (TypeError, ValueError):
        raise LowdoseError(f"{name}: {dose!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise LowdoseError(f"{name}: {dose!r} is outside (0, 1] (a fraction of the full dose)")
    return value


def check_hu_tensor(hu: torch.Tensor, source: str = "image", as_read: Any = None) -> None:
    """Raise LowdoseError unless ``hu`` is a ``(B, 1, H, W)`` tensor of finite, physical HU.

    ``as_read``: the values before any flooring at -1024 HU, for the range the error states.

    Example:
        >>> check_hu_tensor(torch.zeros(1, 1, 4, 4))
    """
    if hu.ndim != 4 or hu.shape[1] != 1:
        raise LowdoseError(f"{source}: expected a (B, 1, H, W) tensor, got shape {tuple(hu.shape)}")
    if hu.numel() == 0:
        raise LowdoseError(f"{source}: empty image")
    lo, hi = torch.aminmax(hu.detach())
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise LowdoseError(f"{source}: image contains NaN or infinite values")
    if lo < HU_PHYSICAL_MIN or hi > HU_PHYSICAL_MAX:
        if as_read is not None:
            lo, hi = float(np.min(as_read)), float(np.max(as_read))
        raise LowdoseError(
            f"{source}: values {lo:.1f}..{hi:.1f} are outside the physical HU range "
            f"[{HU_PHYSICAL_MIN:.0f}, {HU_PHYSICAL_MAX:.0f}] (is the image in HU? 8-bit images "
            "read through a window reaching below -1024 HU, like lung, need clipping at -1024)"
        )

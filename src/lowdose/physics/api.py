"""The functional entry point of the physics: ``simulate_low_dose(hu, dose, method, seed)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from lowdose.errors import LowdoseError
from lowdose.physics.base import LowDoseSimulator, simulators
from lowdose.physics.checks import check_dose

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

DEFAULT_METHOD = "projection"


def build_simulator(method: str = DEFAULT_METHOD, **options: Any) -> LowDoseSimulator:
    """Instantiate the simulator registered as ``method`` with its keyword ``options``.

    Example:
        >>> build_simulator("image-poisson").__class__.__name__
        'ImagePoissonSimulator'
    """
    cls = simulators.get(method)
    try:
        return cls(**options)
    except TypeError as exc:
        raise LowdoseError(f"simulator {method!r}: bad options {sorted(options)}: {exc}") from None


def relative_dose_options(method: str, option: str) -> dict[str, Any]:
    """The simulator options of a dose relative to each scan's own (``option`` names the setting
    in the error): only the projection physics reads a scan's own dose.

    Example:
        >>> relative_dose_options("projection", "--relative-dose")
        {'relative_to_image': True, 'texture_tolerance': 1.5}
    """
    from lowdose.physics.projection import TEXTURE_TOLERANCE

    if method != "projection":
        raise LowdoseError(f"{option}: needs the projection simulator (it reads the scan's own "
                           f"dose), not {method!r}")
    # Stated, so that cached draws made before the texture match differ by their key.
    return {"relative_to_image": True, "texture_tolerance": TEXTURE_TOLERANCE}


def simulate_low_dose(
    hu: ArrayT,
    dose: float,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    simulator: LowDoseSimulator | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> ArrayT:
    """Simulate a lower dose from full-dose HU pixels; returns the same type and shape.

    Works on a 2D slice ``(H, W)``, a stack or volume ``(N, H, W)`` (slice by slice, in batches
    of ``batch_size``) or a ``(B, 1, H, W)`` tensor. The input is never modified. The random
    stream depends only on ``seed`` and the slice order, so the same call gives the same output.

    Args:
        hu: full-dose pixels in HU (numpy array or torch tensor).
        dose: fraction of the full dose, in (0, 1].
        method: a registered simulator name (``projection``, ``image-poisson``).
        seed: seeds the ``torch.Generator`` of the noise.
        device: where to compute (default: the tensor's device, CPU for numpy input).
        batch_size: slices per batch.
        simulator: an already built simulator to use instead of ``method`` and ``options``.
        progress: called with the number of slices finished after each batch.
        **options: keyword options of the simulator (e.g. ``pixel_size_mm`` or ``calibration``
            for ``projection``).

    Example:
        >>> hu = np.full((32, 32), 40.0, np.float32)
        >>> out = simulate_low_dose(hu, 0.25, method="image-poisson", seed=1)
        >>> out.shape, out.dtype.name
        ((32, 32), 'float32')
    """
    dose = check_dose(dose)
    is_numpy = isinstance(hu, np.ndarray)
    tensor = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)) if is_numpy else hu
    if not isinstance(tensor, torch.Tensor):
        kind = type(hu).__name__
        raise LowdoseError(f"image: expected a numpy array or torch tensor, got {kind}")
    shape = tuple(tensor.shape)
    if tensor.ndim == 2:
        stack = tensor[None, None]
    elif tensor.ndim == 3:
        stack = tensor[:, None]
    elif tensor.ndim == 4 and tensor.shape[1] == 1:
        stack = tensor
    else:
        raise LowdoseError(f"image: expected (H, W), (N, H, W) or (B, 1, H, W), got shape {shape}")
    if int(batch_size) < 1:
        raise LowdoseError(f"batch_size {batch_size}: must be at least 1")
    target = torch.device(device) if device is not None else stack.device
    sim = simulator if simulator is not None else build_simulator(method, **options)
    sim = sim.to(target)
    generator = torch.Generator(device=target).manual_seed(int(seed))
    outputs = []
    with torch.no_grad():
        for start in range(0, stack.shape[0], int(batch_size)):
            batch = stack[start : start + batch_size].to(target, torch.float32)
            low = sim(batch, dose, generator)
            # A simulator (a plugin's) returning another shape would be reshaped into place
            # below, its pixels scrambled: refused, naming it.
            if not isinstance(low, torch.Tensor) or tuple(low.shape) != tuple(batch.shape):
                got = tuple(low.shape) if isinstance(low, torch.Tensor) else type(low).__name__
                raise LowdoseError(f"simulator {getattr(sim, 'name', '') or type(sim).__name__}"
                                   f": returned {got} for a batch of shape "
                                   f"{tuple(batch.shape)}; it must return its input's shape")
            outputs.append(low.to(stack.device))
            if progress is not None:
                progress(batch.shape[0])
    out = torch.cat(outputs).reshape(shape).to(torch.float32)
    if is_numpy:
        return out.numpy()
    return out

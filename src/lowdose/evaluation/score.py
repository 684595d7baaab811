"""Score images against a full-dose reference: the project's image metrics on the user's own data.

For each image (a restoration, or the low-dose scan itself) of the reference's grid: PSNR, SSIM
and RMSE under both conventions (``full``: HU clipped to [-1024, 3072]; ``window``: [-160, 240]
HU; :mod:`lowdose.metrics.image`), the RMSE in HU (both images clipped to the full range, so
scanner padding of -2048 or -3024 HU outside the reconstruction circle counts as air), and the
same RMSE within each tissue of the reference (:func:`lowdose.metrics.image.tissue_masks`:
outside the body, lung and gas, soft tissue, bone). A volume scores the mean over its slices
(PSNR, SSIM, RMSE) or pools its pixels (RMSE in HU, by tissue).

Example:
    >>> import numpy as np
    >>> from lowdose.image import CTImage
    >>> ref = CTImage(np.zeros((16, 16), np.float32), spacing=(0.7, 0.7))
    >>> low = CTImage(ref.hu + 40.96, spacing=(0.7, 0.7))
    >>> round(score_images(ref, {"low": low})["low"]["psnr_full"], 2)
    40.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import CTImage

#: Relative difference of pixel spacing above which two images are not on the same grid.
SPACING_TOLERANCE = 0.01


def check_same_grid(reference: CTImage, image: CTImage, label: str) -> None:
    """Raise a one-line :class:`LowdoseError` unless ``image`` has the reference's shape and
    (within :data:`SPACING_TOLERANCE`) its pixel spacing."""
    if image.shape != reference.shape:
        raise LowdoseError(f"{label}: shape {image.shape} differs from the reference's "
                           f"{reference.shape}; score images of the reference's grid")
    ref_mm, mm = np.asarray(reference.spacing), np.asarray(image.spacing)
    if np.any(np.abs(mm - ref_mm) > SPACING_TOLERANCE * ref_mm):
        raise LowdoseError(f"{label}: pixel spacing {tuple(float(s) for s in mm)} mm differs "
                           f"from the reference's {tuple(float(s) for s in ref_mm)} mm")


def score_images(reference: CTImage, images: dict[str, CTImage],
                 masks: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of each image against ``reference``, keyed by the images' labels.

    Each entry holds ``psnr_full``, ``ssim_full``, ``rmse_full``, the same for ``window``,
    ``rmse_hu`` (HU, both images clipped to the full range) and ``rmse_hu_<tissue>`` for each
    tissue (``outside_body``, ``lung_and_gas``,
    ``soft_tissue``, ``bone``; ``nan`` where the reference has none). ``masks``: the
    reference's :func:`lowdose.metrics.image.tissue_masks`, to reuse over several calls.

    Raises:
        LowdoseError: an image on another grid than the reference (shape or pixel spacing).
    """
    from lowdose.metrics.image import (
        image_quality,
        resolve_range,
        rmse_hu_by_tissue,
        tissue_masks,
    )

    full = resolve_range("full")

    target = reference.slices()
    masks = masks if masks is not None else tissue_masks(target)  # once for every image
    scores = {}
    for label, image in images.items():
        check_same_grid(reference, image, label)
        pred = image.slices()
        # rmse_hu clipped like the tissue columns: unclipped, a scanner's padding (-3024 HU)
        # against a restoration that floors air at -1024 HU reads as hundreds of HU of error.
        entry = image_quality(pred, target, rmse_hu_range=(full.lo, full.hi))
        for tissue, value in rmse_hu_by_tissue(pred, target, masks).items():
            entry[f"rmse_hu_{tissue.replace(' ', '_')}"] = value
        scores[label] = entry
    return scores


def difference_image(reference: CTImage, image: CTImage) -> CTImage:
    """``image - reference`` in HU on the reference's geometry (unclipped), to look at where a
    restoration changed structure, not only noise.

    Example:
        >>> ref = CTImage(np.zeros((4, 4), np.float32), spacing=(0.7, 0.7))
        >>> float(difference_image(ref, ref.with_pixels(ref.hu + 5)).hu.max())
        5.0
    """
    check_same_grid(reference, image, "image")
    return reference.with_pixels(image.slices() - reference.slices(),
                                 metadata={"difference": "image minus reference, HU"})


def format_scores(scores: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per image, PSNR/SSIM in both conventions, then RMSE in HU
    overall and by tissue."""
    from lowdose.metrics.image import TISSUES

    tissues = [t.replace(" ", "_") for t in TISSUES]
    head = ["image", "PSNR full", "SSIM full", "PSNR window", "SSIM window", "RMSE HU",
            *(f"{t} HU" for t in tissues)]
    rows = [head]
    for label, s in scores.items():
        rows.append([label, f"{s['psnr_full']:.2f}", f"{s['ssim_full']:.4f}",
                     f"{s['psnr_window']:.2f}", f"{s['ssim_window']:.4f}", f"{s['rmse_hu']:.1f}",
                     *(f"{s[f'rmse_hu_{t}']:.1f}" for t in tissues)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    return "\n".join(lines)

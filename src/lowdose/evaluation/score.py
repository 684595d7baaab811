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


#: Distance between two images' first voxels, in units of the smallest pixel spacing, above which
#: they are not on the same grid (DICOM stores positions in decimal strings; a slice is 1).
POSITION_TOLERANCE = 0.1


def check_same_grid(reference: CTImage, image: CTImage, label: str) -> None:
    """Raise a one-line :class:`LowdoseError` unless ``image`` has the reference's shape, (within
    :data:`SPACING_TOLERANCE`) its pixel spacing and, where both state them, its orientation and
    (within :data:`POSITION_TOLERANCE`) the position of its first voxel."""
    if image.shape != reference.shape:
        raise LowdoseError(f"{label}: shape {image.shape} differs from the reference's "
                           f"{reference.shape}; score images of the reference's grid")
    ref_mm, mm = np.asarray(reference.spacing), np.asarray(image.spacing)
    if np.any(np.abs(mm - ref_mm) > SPACING_TOLERANCE * ref_mm):
        raise LowdoseError(f"{label}: pixel spacing {tuple(float(s) for s in mm)} mm differs "
                           f"from the reference's {tuple(float(s) for s in ref_mm)} mm")
    if reference.direction is not None and image.direction is not None:
        axes = _array_axis_directions(image)
        if any(float(a @ b) < 0.99 for a, b in
               zip(axes, _array_axis_directions(reference), strict=True)):
            raise LowdoseError(f"{label}: its axes point along other patient directions than "
                               "the reference's (another orientation); resample it first")
    if reference.origin is not None and image.origin is not None:
        offset = np.asarray(image.origin, float) - np.asarray(reference.origin, float)
        if np.linalg.norm(offset) > POSITION_TOLERANCE * float(ref_mm.min()):
            shift = ", ".join(f"{v:+.2f}" for v in offset)
            raise LowdoseError(f"{label}: its first voxel lies ({shift}) mm from the "
                               "reference's (another position or slice range)")


def _array_axis_directions(image: CTImage) -> list[np.ndarray]:
    """Patient-space unit vector of each array axis of ``image`` (slice axis first)."""
    d = np.asarray(image.direction, float)
    columns = (2, 1, 0) if image.is_volume else (1, 0)  # direction: column, row, slice axes
    return [d[:, c] / np.linalg.norm(d[:, c]) for c in columns]


def on_reference_grid(reference: CTImage, image: CTImage, label: str) -> CTImage:
    """``image`` with its array axes reordered and flipped to the reference's, where both state
    their orientation and ``image`` holds the same axes in another order or sense (a NIfTI
    written RAS beside an LPS DICOM series, slices stored in falling z); then checked to lie
    on the reference's grid (:func:`check_same_grid`).

    Raises:
        LowdoseError: another shape, spacing, position, or an orientation that no reordering
            of axes makes the reference's (an oblique or reformatted image).

    Example:
        >>> ref = CTImage(np.arange(6, dtype=np.float32).reshape(2, 3), spacing=(1.0, 1.0),
        ...               origin=(0.0, 0.0, 0.0), direction=np.eye(3))
        >>> flipped = CTImage(ref.hu[:, ::-1], spacing=(1.0, 1.0), origin=(2.0, 0.0, 0.0),
        ...                   direction=np.diag([-1.0, 1.0, -1.0]))
        >>> bool(np.array_equal(on_reference_grid(ref, flipped, "x").hu, ref.hu))
        True
    """
    if (reference.direction is None or image.direction is None or image.origin is None
            or reference.is_volume != image.is_volume):
        check_same_grid(reference, image, label)
        return image
    ref_axes, axes = _array_axis_directions(reference), _array_axis_directions(image)
    order, flips = [], []
    for ref_axis in ref_axes:  # the image axis along each reference axis, and its sense
        dots = [float(a @ ref_axis) for a in axes]
        best = int(np.argmax(np.abs(dots)))
        if abs(dots[best]) < 0.99 or best in order:
            check_same_grid(reference, image, label)  # raises: another orientation
            return image
        order.append(best)
        flips.append(dots[best] < 0)
    if order == list(range(len(axes))) and not any(flips):
        check_same_grid(reference, image, label)
        return image
    hu = np.transpose(image.hu, order)
    first = np.asarray(image.origin, float)  # the voxel that becomes the first one
    for new_axis, (old_axis, flip) in enumerate(zip(order, flips, strict=True)):
        if flip:
            hu = np.flip(hu, new_axis)
            first = first + (image.shape[old_axis] - 1) * image.spacing[old_axis] * axes[old_axis]
    direction = np.asarray(reference.direction, float)
    moved = CTImage(np.ascontiguousarray(hu), spacing=tuple(image.spacing[a] for a in order),
                    origin=(float(first[0]), float(first[1]), float(first[2])),
                    direction=direction, metadata=dict(image.metadata))
    check_same_grid(reference, moved, label)
    return moved


def score_images(reference: CTImage, images: dict[str, CTImage],
                 masks: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of each image against ``reference``, keyed by the images' labels.

    Each entry holds ``psnr_full``, ``ssim_full``, ``rmse_full``, the same for ``window``,
    ``rmse_hu`` (HU, both images clipped to the full range) and ``rmse_hu_<tissue>`` for each
    tissue (``outside_body``, ``lung_and_gas``,
    ``soft_tissue``, ``bone``; ``nan`` where the reference has none). ``masks``: the
    reference's :func:`lowdose.metrics.image.tissue_masks`, to reuse over several calls.

    Raises:
        LowdoseError: an image on another grid than the reference (shape, pixel spacing,
            position, or an orientation that no reordering of its axes makes the reference's;
            one stored with its axes in another order or sense is reordered first).
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
        pred = on_reference_grid(reference, image, label).slices()
        # rmse_hu clipped like the tissue columns: unclipped, a scanner's padding (-3024 HU)
        # against a restoration that floors air at -1024 HU reads as hundreds of HU of error.
        entry = image_quality(pred, target, rmse_hu_range=(full.lo, full.hi))
        for tissue, value in rmse_hu_by_tissue(pred, target, masks).items():
            entry[f"rmse_hu_{tissue.replace(' ', '_')}"] = value
        scores[label] = entry
    return scores


def display_windows(images: dict[str, CTImage]) -> dict[str, list[float]]:
    """The HU window each 8-bit display image (PNG, JPEG) among ``images`` was read through,
    keyed by label; images that hold HU are left out.

    Example:
        >>> png = CTImage(np.zeros((4, 4), np.float32), (0.7, 0.7),
        ...               metadata={"window": [-1350.0, 150.0]})
        >>> display_windows({"a.png": png, "b.nii.gz": CTImage(png.hu, (0.7, 0.7))})
        {'a.png': [-1350.0, 150.0]}
    """
    return {label: [float(v) for v in image.metadata["window"]]
            for label, image in images.items() if "window" in image.metadata}


def display_window_notes(images: dict[str, CTImage]) -> list[str]:
    """What the scores of 8-bit display images rest on: the default window they were read
    through (where none was stated or recorded), and which grey levels the ``window``
    metric's HU range covers (often a sliver: the lung window maps [-160, 240] HU to grey
    levels 202-255).

    Example:
        >>> png = CTImage(np.zeros((4, 4), np.float32), (0.7, 0.7),
        ...               metadata={"window": [-1350.0, 150.0], "window_source": "given"})
        >>> display_window_notes({"a.png": png})[0][:70]
        "8-bit images read through [-1350, 150] HU: the window metric's [-160, "
    """
    from lowdose.evaluation.compare import window_note
    from lowdose.image import Window
    from lowdose.metrics.image import RANGES

    notes = [note for image in images.values() if (note := window_note(image))]
    metric = RANGES["window"]
    for lo, hi in dict.fromkeys(tuple(w) for w in display_windows(images).values()):
        g0, g1 = Window(lo, hi).to_unit([metric.lo, metric.hi]) * 255
        notes.append(f"8-bit images read through [{lo:g}, {hi:g}] HU: the window metric's "
                     f"[{metric.lo:g}, {metric.hi:g}] HU covers their grey levels "
                     f"{g0:.0f}-{g1:.0f} only (full: every grey level)")
    return list(dict.fromkeys(notes))


def difference_image(reference: CTImage, image: CTImage) -> CTImage:
    """``image - reference`` in HU on the reference's geometry (unclipped), to look at where a
    restoration changed structure, not only noise.

    Example:
        >>> ref = CTImage(np.zeros((4, 4), np.float32), spacing=(0.7, 0.7))
        >>> float(difference_image(ref, ref.with_pixels(ref.hu + 5)).hu.max())
        5.0
    """
    image = on_reference_grid(reference, image, "image")
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

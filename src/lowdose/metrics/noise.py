"""Reference-free noise measurement of a CT slice, in HU.

:func:`estimate_noise_hu` measures how noisy one slice is without a clean reference, so that a
classical denoiser's strength can follow the noise of each slice (real scans vary per slice
with tube-current modulation, thickness and patient size). It is a robust standard deviation
(the median absolute deviation, then the standard deviation within 3 of its sigmas) of a 3x3
second-difference high-pass (Immerkaer 1996) in flat soft tissue (smoothed HU in ``tissue``,
eroded away from edges), divided by the filter's gain for white noise (6).

CT noise after filtered back-projection is low-pass, so this high-pass reading is a fixed
fraction of the noise standard deviation for one reconstruction kernel, whatever the dose: on
the six real AAPM-Mayo quarter-dose slices of patient L506 it reads 0.27-0.29 of the
quarter-minus-full-dose noise (6.0 HU of 21 HU to 18.6 HU of 65 HU). It ranks slices by noise
and scales with it; a denoiser's factor on it is tuned once per kernel.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> hu = 40.0 + 20.0 * rng.standard_normal((128, 128))
    >>> round(estimate_noise_hu(hu))  # white noise: the full standard deviation
    20
"""

from __future__ import annotations

import numpy as np

SOFT_TISSUE_HU: tuple[float, float] = (-150.0, 250.0)
"""Smoothed HU counted as flat soft tissue by :func:`estimate_noise_hu`."""

_SECOND_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
_WHITE_GAIN = 6.0  # sqrt(sum of squared taps) = sqrt(36)
_MIN_PIXELS = 256
_TRUNCATED_STD = 0.98657  # standard deviation of a unit normal truncated at +-3


def estimate_noise_hu(hu: np.ndarray, tissue: tuple[float, float] = SOFT_TISSUE_HU,
                      tissue_of: np.ndarray | None = None) -> float:
    """Noise standard deviation of a 2D HU slice from its high frequencies (see module doc).

    Args:
        hu: one slice ``(H, W)`` in HU.
        tissue: smoothed-HU interval of the pixels measured.
        tissue_of: find the flat tissue in this slice instead of ``hu`` (to measure a noise
            image, e.g. simulated low dose minus full dose, where its scan has tissue).

    Returns:
        The estimate in HU, or ``nan`` when fewer than 256 pixels are flat tissue.
    """
    from scipy import ndimage

    img = np.asarray(hu, np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {img.shape}")
    anatomy = img if tissue_of is None else np.asarray(tissue_of, np.float64)
    if anatomy.shape != img.shape:
        raise ValueError(f"tissue_of shape {anatomy.shape} differs from {img.shape}")
    high = ndimage.convolve(img, _SECOND_DIFFERENCE, mode="reflect")
    smooth = ndimage.uniform_filter(anatomy, 9)
    flat = (smooth > tissue[0]) & (smooth < tissue[1])
    flat = ndimage.binary_erosion(flat, iterations=4)
    values = high[flat]
    if values.size < _MIN_PIXELS:
        return float("nan")
    centred = values - np.median(values)
    # MAD first (robust to the edges left), then the standard deviation of the values within
    # 3 of those sigmas: HU stored as integers make the MAD itself step in whole units.
    robust = 1.4826 * np.median(np.abs(centred))
    if robust == 0:
        return 0.0
    kept = centred[np.abs(centred) < 3.0 * robust]
    return float(kept.std() / _TRUNCATED_STD / _WHITE_GAIN)


def noise_texture(hu: np.ndarray, tissue_of: np.ndarray | None = None,
                  fine: float | None = None) -> float:
    """How coarse a slice's noise is: the :func:`estimate_noise_hu` reading of the slice binned
    2 x 2 over that of the slice itself (``tissue_of`` as there, binned alike). ``fine``: that
    reading of the slice itself, where the caller has made it already (it is not made again).

    White noise reads 0.5 (binning halves it); noise correlated over a few pixels reads more. On
    real scans: about 2.5 for the 1 mm B30f (smooth) Mayo L506 full dose at 0.66 mm pixels, 1.6
    for a 2 mm chest series at 0.98 mm pixels, 0.8 for the 1 mm sharp-kernel Mayo L067 slices.
    ``nan`` when either reading is.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> round(noise_texture(40.0 + 20.0 * rng.standard_normal((256, 256))), 1)
        0.5
    """
    img = np.asarray(hu, np.float64)
    if fine is None:
        fine = estimate_noise_hu(img, tissue_of=tissue_of)
    coarse = estimate_noise_hu(_bin2(img), tissue_of=None if tissue_of is None else
                               _bin2(np.asarray(tissue_of, np.float64)))
    return coarse / fine if fine > 0 else float("nan")


def _bin2(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    return img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

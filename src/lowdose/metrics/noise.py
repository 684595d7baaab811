"""Reference-free noise measurement of a CT slice, in HU.

:func:`estimate_noise_hu` measures how noisy one slice is without a clean reference, so that a
classical denoiser's strength can follow the noise of each slice (real scans vary per slice
with tube-current modulation, thickness and patient size). It is a robust standard deviation
(the median absolute deviation, then the standard deviation within 3 of its sigmas) of a 3x3
second-difference high-pass (Immerkaer 1996) in flat tissue, divided by the filter's gain for
white noise (6). Flat tissue is soft tissue (smoothed HU in ``tissue``) away from edges: eroded
by 4 pixels on slices of 256 pixels and more, by 2 on smaller ones (whose pixels are coarser).
Where a slice has too little of it, the reading falls back to the slice's own dominant tissue:
the most common smoothed value above -800 HU, +-100 HU. That finds the body in images whose HU
are not calibrated, such as 8-bit PNGs mapped through a guessed window (the Kaggle chest PNGs
through [-1024, 476] HU put the chest wall near -300 HU).

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

WHITE_TEXTURE = 0.5
""":func:`noise_texture` of white noise (binning 2 x 2 halves it)."""
RECONSTRUCTED_TEXTURE = 2.3
""":func:`noise_texture` of the real AAPM-Mayo L506 quarter-dose slices (2.22-2.32; B30f, 3 and
1 mm): the correlated noise that :func:`split_noise` separates from white noise."""

_SECOND_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
# The same taps two pixels apart, applied after a 2 x 2 box mean: the reading of the slice binned
# 2 x 2, at every pixel rather than every other one (four times the samples).
_SECOND_DIFFERENCE_2 = np.zeros((5, 5))
_SECOND_DIFFERENCE_2[::2, ::2] = _SECOND_DIFFERENCE
_WHITE_GAIN = 6.0  # sqrt(sum of squared taps) = sqrt(36)
_MIN_PIXELS = 256
_TRUNCATED_STD = 0.98657  # standard deviation of a unit normal truncated at +-3
_EDGE_MARGIN_PX = 4  # flat tissue is eroded this far from its edges (halved under 256 px)
_BODY_ABOVE_HU = -800.0  # the dominant-tissue fallback looks above lung and air
_FALLBACK_HALF_WIDTH_HU = 100.0


def _flat_tissue(anatomy: np.ndarray, tissue: tuple[float, float]) -> np.ndarray:
    """Pixels of smoothed HU in ``tissue`` (else in the dominant tissue), away from edges."""
    from scipy import ndimage

    smooth = ndimage.uniform_filter(anatomy, 9)
    margin = _EDGE_MARGIN_PX
    if min(anatomy.shape) < 256:
        margin //= 2  # coarser pixels: as far from the edges in mm, and enough pixels left

    def flat_in(band: tuple[float, float]) -> np.ndarray:
        inside = (smooth > band[0]) & (smooth < band[1])
        return ndimage.binary_erosion(inside, iterations=margin) if margin else inside

    flat = flat_in(tissue)
    if flat.sum() >= _MIN_PIXELS:
        return flat
    body = smooth[smooth > _BODY_ABOVE_HU]
    if body.size < _MIN_PIXELS:
        return flat
    counts, edges = np.histogram(body, bins=np.arange(_BODY_ABOVE_HU, body.max() + 20.0, 20.0))
    mode = float(edges[counts.argmax()] + 10.0)
    return flat_in((mode - _FALLBACK_HALF_WIDTH_HU, mode + _FALLBACK_HALF_WIDTH_HU))


def _robust_std(values: np.ndarray) -> float:
    if values.size < _MIN_PIXELS:
        return float("nan")
    centred = values - np.median(values)
    # MAD first (robust to the edges left), then the standard deviation of the values within
    # 3 of those sigmas: HU stored as integers make the MAD itself step in whole units.
    robust = 1.4826 * np.median(np.abs(centred))
    if robust == 0:
        return 0.0
    kept = centred[np.abs(centred) < 3.0 * robust]
    return float(kept.std() / _TRUNCATED_STD)


def _slice_and_flat(hu: np.ndarray, tissue_of: np.ndarray | None,
                    tissue: tuple[float, float] = SOFT_TISSUE_HU) -> tuple[np.ndarray, np.ndarray]:
    """The slice as float64 and its flat tissue (found in ``tissue_of`` where given)."""
    img = np.asarray(hu, np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {img.shape}")
    anatomy = img if tissue_of is None else np.asarray(tissue_of, np.float64)
    if anatomy.shape != img.shape:
        raise ValueError(f"tissue_of shape {anatomy.shape} differs from {img.shape}")
    return img, _flat_tissue(anatomy, tissue)


def _fine_reading(img: np.ndarray, flat: np.ndarray) -> float:
    from scipy import ndimage

    high = ndimage.convolve(img, _SECOND_DIFFERENCE, mode="reflect")
    return _robust_std(high[flat]) / _WHITE_GAIN


def _texture(img: np.ndarray, flat: np.ndarray, fine: float) -> float:
    """The reading of the slice binned 2 x 2, made at every pixel of ``flat``, over ``fine``."""
    from scipy import ndimage

    if not fine > 0:  # nan or zero: nothing to compare with
        return float("nan")
    box = ndimage.uniform_filter(img, 2, mode="reflect")
    coarse = _robust_std(ndimage.convolve(box, _SECOND_DIFFERENCE_2, mode="reflect")[flat])
    return coarse / _WHITE_GAIN / fine


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
    return _fine_reading(*_slice_and_flat(hu, tissue_of, tissue))


def noise_texture(hu: np.ndarray, tissue_of: np.ndarray | None = None,
                  fine: float | None = None) -> float:
    """How coarse a slice's noise is: the :func:`estimate_noise_hu` reading of the slice binned
    2 x 2 over that of the slice itself (``tissue_of`` as there). ``fine``: that reading of the
    slice itself, where the caller has made it already (it is not made again).

    The binned reading is made at every pixel (a 2 x 2 mean, then the high-pass with its taps
    two pixels apart) and in the same flat tissue, so both readings count the same pixels and a
    slice whose noise can be read has a texture too (a 112 px slice binned would not).

    White noise reads 0.5 (binning halves it); noise correlated over a few pixels reads more. On
    real scans: about 2.5 for the 1 mm B30f (smooth) Mayo L506 full dose at 0.66 mm pixels, 1.5
    for a 2 mm chest series at 0.98 mm pixels, 0.8 for the 1 mm sharp-kernel Mayo L067 slices.
    ``nan`` when either reading is.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> round(noise_texture(40.0 + 20.0 * rng.standard_normal((256, 256))), 1)
        0.5
    """
    img, flat = _slice_and_flat(hu, tissue_of)
    return _texture(img, flat, _fine_reading(img, flat) if fine is None else fine)


def split_noise(reading: float, texture: float,
                correlated_texture: float = RECONSTRUCTED_TEXTURE) -> tuple[float, float]:
    """Split a noise reading into a white part and a part correlated like a reconstruction's.

    The reading of a sum of independent noises adds in quadrature, and so does the reading of
    the slice binned 2 x 2 (``texture`` x ``reading``), in which white noise keeps half its
    reading and the correlated noise ``correlated_texture`` times its own. Two readings, two
    parts: a low-dose image simulated in the image domain (white) from a reconstructed scan
    (correlated) reads as the mixture it is. Textures outside the two clip to all of one part.

    Args:
        reading: the :func:`estimate_noise_hu` reading, HU.
        texture: its :func:`noise_texture`.
        correlated_texture: the texture of the correlated part.

    Returns:
        ``(white, correlated)`` readings in HU; ``hypot(white, correlated) == reading``.

    Example:
        >>> split_noise(20.0, 0.5)
        (20.0, 0.0)
        >>> white, correlated = split_noise(20.0, 1.0)
        >>> round(white, 1), round(correlated, 1)
        (18.5, 7.7)
    """
    share = (texture**2 - WHITE_TEXTURE**2) / (correlated_texture**2 - WHITE_TEXTURE**2)
    share = min(max(share, 0.0), 1.0)
    return reading * float(np.sqrt(1.0 - share)), reading * float(np.sqrt(share))


def read_noise(hu: np.ndarray, tissue_of: np.ndarray | None = None) -> dict[str, float]:
    """A slice's reading, texture and their split, as a record (``nan`` where unreadable).

    Keys: ``reading_hu`` (:func:`estimate_noise_hu`), ``texture`` (:func:`noise_texture`),
    ``white_hu`` and ``correlated_hu`` (:func:`split_noise`): what BM3D's and TV's default
    strength follow. ``tissue_of``: read a noise image in the flat tissue of this slice (as
    :func:`estimate_noise_hu`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> record = read_noise(40.0 + 20.0 * rng.standard_normal((128, 128)))
        >>> round(record["reading_hu"]), round(record["texture"], 1), round(record["white_hu"])
        (20, 0.5, 20)
    """
    img, flat = _slice_and_flat(hu, tissue_of)  # one flat-tissue mask for both readings
    reading = _fine_reading(img, flat)
    texture = _texture(img, flat, reading)
    white, correlated = (split_noise(reading, texture) if np.isfinite(texture)
                         else (float("nan"), float("nan")))
    return {"reading_hu": float(reading), "texture": float(texture), "white_hu": white,
            "correlated_hu": correlated}

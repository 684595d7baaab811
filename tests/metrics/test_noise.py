"""The reference-free noise reading: white noise read at its level, edges and air ignored."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from lowdose.metrics.noise import estimate_noise_hu


def _body(sigma: float, seed: int = 0, smooth: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:160, :160]
    clean = np.where((yy - 80) ** 2 + (xx - 80) ** 2 < 70**2, 40.0, -1000.0)
    clean[60:100, 60:100] = 300.0  # bone-like block: sharp edges inside the body
    noise = np.random.default_rng(seed).normal(0, 1, clean.shape)
    if smooth:
        noise = ndimage.gaussian_filter(noise, smooth)
        noise /= noise.std()
    return clean + sigma * noise


@pytest.mark.parametrize("sigma", [5.0, 20.0, 60.0])
def test_white_noise_is_read_at_its_level_despite_edges(sigma: float) -> None:
    assert estimate_noise_hu(_body(sigma)) == pytest.approx(sigma, rel=0.06)


def test_correlated_noise_reads_a_fixed_fraction_that_scales_with_the_noise() -> None:
    a, b = estimate_noise_hu(_body(20.0, smooth=1.0)), estimate_noise_hu(_body(40.0, smooth=1.0))
    assert a < 0.5 * 20.0  # low-pass noise: only its high frequencies are read
    assert b / a == pytest.approx(2.0, rel=0.05)


def test_no_flat_tissue_reads_nan() -> None:
    assert math.isnan(estimate_noise_hu(np.full((64, 64), -1000.0)))
    with pytest.raises(ValueError, match="2D"):
        estimate_noise_hu(np.zeros((2, 8, 8)))


def test_a_noise_image_is_read_in_the_flat_tissue_of_its_scan() -> None:
    scan = _body(0.0)
    rng = np.random.default_rng(3)
    noise = 15.0 * rng.standard_normal(scan.shape) * (scan > -500)  # none outside the body
    assert estimate_noise_hu(noise) < 12.0  # alone, the noiseless outside counts as "tissue"
    assert estimate_noise_hu(noise, tissue_of=scan) == pytest.approx(15.0, rel=0.06)
    with pytest.raises(ValueError, match="tissue_of"):
        estimate_noise_hu(noise, tissue_of=scan[:10])


def test_noise_texture_reads_how_coarse_the_noise_is() -> None:
    from scipy.ndimage import gaussian_filter

    from lowdose.metrics.noise import noise_texture

    rng = np.random.default_rng(3)
    white = 20.0 * rng.standard_normal((256, 256))
    readings = [noise_texture(40.0 + gaussian_filter(white, s)) for s in (0.0, 0.7, 1.2)]
    assert readings[0] == pytest.approx(0.5, abs=0.03)  # binning 2 x 2 halves white noise
    assert readings[0] < readings[1] < readings[2]  # correlated noise survives binning more
    # a noise image read where its scan has tissue; air alone cannot be read
    scan = np.where(np.arange(256)[:, None] < 128, 40.0, -1000.0) * np.ones((1, 256))
    assert noise_texture(white, tissue_of=scan) == pytest.approx(readings[0], abs=0.05)
    assert np.isnan(noise_texture(white, tissue_of=np.full((256, 256), -1000.0)))



def test_noise_texture_takes_the_slice_reading_it_was_given(monkeypatch) -> None:
    from lowdose.metrics import noise

    hu = _body(20.0, smooth=1.0)
    fine = estimate_noise_hu(hu)
    expected = noise.noise_texture(hu)
    calls: list[tuple[int, ...]] = []
    real = noise.estimate_noise_hu
    monkeypatch.setattr(noise, "estimate_noise_hu",
                        lambda img, **kw: calls.append(np.shape(img)) or real(img, **kw))
    assert noise.noise_texture(hu, fine=fine) == expected
    assert calls == []  # the slice's own reading is not made again


def test_tissue_away_from_the_soft_tissue_hu_is_found_and_read() -> None:
    """An 8-bit PNG mapped through a guessed window can put the body at -300 HU: the reading
    falls back to the slice's dominant tissue (and reads nothing in air alone)."""
    shifted = _body(20.0) - 340.0  # body at -300 HU, the block at -40 HU
    assert estimate_noise_hu(shifted) == pytest.approx(20.0, rel=0.06)
    lung_only = np.full((160, 160), -1000.0) + np.random.default_rng(1).normal(0, 5, (160, 160))
    assert math.isnan(estimate_noise_hu(lung_only))


def test_small_slices_are_read_with_their_texture() -> None:
    """A 112 px slice (the Kaggle study's) is read, its texture too: white 0.5, smooth more."""
    from lowdose.metrics.noise import noise_texture

    yy, xx = np.mgrid[:112, :112]
    body = np.where((yy - 56) ** 2 + (xx - 56) ** 2 < 45**2, 40.0, -1000.0)
    white = np.random.default_rng(4).normal(0, 25.0, body.shape)
    assert estimate_noise_hu(body + white) == pytest.approx(25.0, rel=0.08)
    assert noise_texture(body + white) == pytest.approx(0.5, abs=0.05)
    smooth = ndimage.gaussian_filter(white, 1.0)
    assert noise_texture(body + smooth) > 1.5


def test_split_noise_separates_white_noise_added_to_correlated_noise() -> None:
    """Image-domain white noise on a reconstructed scan: the white part reads the white noise,
    the correlated part the scan's own noise."""
    from lowdose.metrics.noise import noise_texture, split_noise

    scan = np.where(np.arange(256)[:, None] < 200, 40.0, -1000.0) * np.ones((1, 256))
    rng = np.random.default_rng(5)
    own = ndimage.gaussian_filter(rng.normal(0, 1, scan.shape), 0.8)
    own *= 30.0 / own.std()
    own_reading, own_texture = estimate_noise_hu(scan + own), noise_texture(scan + own)
    mixed = scan + own + rng.normal(0, 15.0, scan.shape)
    white, correlated = split_noise(estimate_noise_hu(mixed), noise_texture(mixed),
                                    correlated_texture=own_texture)
    assert white == pytest.approx(15.0, rel=0.08)
    assert correlated == pytest.approx(own_reading, rel=0.15)
    assert split_noise(10.0, 0.4) == (10.0, 0.0) and split_noise(10.0, 9.0) == (0.0, 10.0)


def test_read_noise_reads_a_noise_image_in_the_slice_tissue() -> None:
    """``read_noise(noise, tissue_of=slice)`` is the two readings made there, as one record."""
    from lowdose.metrics.noise import noise_texture, read_noise

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:128, :128]
    body = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 50**2, 40.0, -1000.0)
    noise = ndimage.gaussian_filter(rng.standard_normal((128, 128)), 1.0) * 30.0
    record = read_noise(noise, tissue_of=body)
    assert record["reading_hu"] == estimate_noise_hu(noise, tissue_of=body)
    assert record["texture"] == noise_texture(noise, tissue_of=body)
    assert record["reading_hu"] != read_noise(noise)["reading_hu"]  # its own mask differs

"""BM3D and TV: HU in, HU out, noise removed, strengths stated in HU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdose.models.base import denoisers
from lowdose.models.classical import BM3D, TotalVariation


def _noisy_disc(seed: int = 0, sigma: float = 30.0) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = np.mgrid[:48, :48]
    clean = np.where((yy - 24) ** 2 + (xx - 24) ** 2 < 15**2, 40.0, -1000.0).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, sigma, clean.shape).astype(np.float32)
    return torch.from_numpy(clean)[None, None], torch.from_numpy(clean + noise)[None, None]


@pytest.mark.parametrize("name", ["bm3d", "tv"])
def test_classical_removes_noise_in_hu(name: str) -> None:
    clean, noisy = _noisy_disc()
    out = denoisers.get(name)().denoise(noisy)
    assert out.shape == noisy.shape and out.dtype == torch.float32
    err_in = (noisy - clean).pow(2).mean().sqrt().item()
    err_out = (out - clean).pow(2).mean().sqrt().item()
    assert err_out < 0.6 * err_in, (err_in, err_out)
    # still HU: the disc stays at soft-tissue level, air at air
    assert abs(out[0, 0, 24, 24].item() - 40.0) < 30
    assert abs(out[0, 0, 2, 2].item() + 1000.0) < 30


def test_tv_weight_is_scale_free() -> None:
    """The HU weight means the same thing whatever unit TV runs in."""
    _, noisy = _noisy_disc()
    a = TotalVariation(weight_hu=20.0).denoise(noisy)
    b = TotalVariation(weight_hu=40.0).denoise(noisy)
    assert a.std() > b.std()  # a stronger HU weight smooths more


def test_bm3d_sigma_in_hu_units(monkeypatch: pytest.MonkeyPatch) -> None:
    import bm3d

    seen: list[float] = []
    monkeypatch.setattr(bm3d, "bm3d", lambda img, sigma_psd, profile: seen.append(sigma_psd) or img)
    BM3D(sigma_hu=4096.0).denoise(torch.zeros(1, 1, 8, 8))
    assert seen == [pytest.approx(1.0)]  # BM3D's unit: the full range, 4096 HU
    with pytest.raises(ValueError):
        BM3D(sigma_hu=0)
    with pytest.raises(ValueError):
        TotalVariation(noise_factor=-1)


def _tissue_slice(sigma: float, seed: int = 0) -> np.ndarray:
    """A 128 px body of soft tissue in air with white noise of ``sigma`` HU."""
    yy, xx = np.mgrid[:128, :128]
    clean = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 56**2, 40.0, -1000.0)
    return clean + np.random.default_rng(seed).normal(0, sigma, clean.shape)


def _correlated(sigma: float, seed: int = 0, blur_px: float = 1.5) -> np.ndarray:
    """``_tissue_slice``'s body with Gaussian-blurred noise of ``sigma`` HU (correlated over a
    few pixels, as a reconstruction makes it)."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(0, 1, (128, 128)), blur_px)
    return _tissue_slice(0.0) + sigma * noise / noise.std()


@pytest.mark.parametrize(("cls", "strength"), [(BM3D, "sigma_for"), (TotalVariation, "weight_for")])
def test_default_strength_follows_the_slice_noise_and_its_texture(cls: type, strength: str) -> None:
    from lowdose.metrics.noise import RECONSTRUCTED_TEXTURE, estimate_noise_hu, noise_texture

    den = cls()
    low, high = getattr(den, strength)(_tissue_slice(10.0)), getattr(den, strength)(
        _tissue_slice(30.0))
    assert high / low == pytest.approx(3.0, rel=0.08)
    # White noise (texture 0.5): the white factor of the reading (the full noise there).
    assert low == pytest.approx(den.white_noise_factor * 10.0, rel=0.08)
    # Correlated noise (texture of a reconstruction's and above): the reconstruction factor of
    # the reading, which is now a fraction of the noise.
    smooth = _correlated(30.0)
    assert noise_texture(smooth) > RECONSTRUCTED_TEXTURE
    assert getattr(den, strength)(smooth) == pytest.approx(
        den.noise_factor * estimate_noise_hu(smooth))
    fixed = cls(**{"sigma_hu" if cls is BM3D else "weight_hu": 25.0})
    assert getattr(fixed, strength)(_tissue_slice(30.0)) == 25.0


def test_the_strength_adds_the_white_and_correlated_parts_in_quadrature(monkeypatch) -> None:
    from lowdose.metrics import noise

    # the two readings read_noise makes in its one flat-tissue mask
    monkeypatch.setattr(noise, "_fine_reading", lambda img, flat: 10.0)
    bm3d = BM3D(noise_factor=6.0, white_noise_factor=1.0)
    # texture 1.0: correlated share (1 - 0.25) / (2.3^2 - 0.25) = 0.1488 of the reading's power,
    # so parts 9.226 (white) and 3.857 HU: hypot(1 x 9.226, 6 x 3.857) = 24.91 HU
    for texture, sigma in ((0.3, 10.0), (0.5, 10.0), (1.0, 24.91), (2.3, 60.0), (3.0, 60.0)):
        monkeypatch.setattr(noise, "_texture", lambda img, flat, fine, t=texture: t)
        assert bm3d.sigma_for(np.zeros((8, 8))) == pytest.approx(sigma, abs=0.01), texture
    monkeypatch.setattr(noise, "_texture", lambda img, flat, fine: float("nan"))
    assert bm3d.sigma_for(np.zeros((8, 8))) == pytest.approx(60.0)  # no texture: correlated


def test_on_white_noise_the_white_factor_restores_better_than_the_correlated_one() -> None:
    """The study's image-poisson noise is white: the factor tuned on reconstructed noise
    (a reading of a quarter of it) would smooth three to five times too hard."""
    clean = torch.from_numpy(_tissue_slice(0.0)).float()[None, None]
    noisy = torch.from_numpy(_tissue_slice(40.0, seed=5)).float()[None, None]
    for cls in (BM3D, TotalVariation):
        default = (cls().denoise(noisy) - clean).pow(2).mean().item()
        as_correlated = (cls(white_noise_factor=cls().noise_factor).denoise(noisy) - clean)
        assert default < as_correlated.pow(2).mean().item(), cls


def test_adaptive_bm3d_fits_each_noise_level_better_than_one_fixed_sigma() -> None:
    """Two slices, 10 and 40 HU of noise: the per-slice strength beats one fixed sigma."""
    clean = torch.from_numpy(_tissue_slice(0.0)).float()[None, None]
    errors = {"adaptive": [], "fixed": []}
    for sigma in (10.0, 40.0):
        noisy = torch.from_numpy(_tissue_slice(sigma, seed=3)).float()[None, None]
        for mode, den in (("adaptive", BM3D(noise_factor=1.0)), ("fixed", BM3D(sigma_hu=25.0))):
            errors[mode].append((den.denoise(noisy) - clean).pow(2).mean().item())
    # one fixed sigma (25 HU) under-smooths the 40 HU slice; per slice, each is fitted
    assert sum(errors["adaptive"]) < 0.2 * sum(errors["fixed"]), errors


def test_no_tissue_to_measure_falls_back_to_the_fixed_default() -> None:
    from lowdose.models.classical import DEFAULT_BM3D_SIGMA_HU

    assert BM3D().sigma_for(np.full((64, 64), -1000.0)) == DEFAULT_BM3D_SIGMA_HU


def test_batch_is_per_slice() -> None:
    _, a = _noisy_disc(1)
    _, b = _noisy_disc(2)
    tv = TotalVariation()
    both = tv.denoise(torch.cat([a, b]))
    assert torch.allclose(both[1:], tv.denoise(b), atol=1e-3)


def test_bad_shape() -> None:
    with pytest.raises(ValueError, match="B, 1, H, W"):
        TotalVariation().denoise(torch.zeros(8, 8))


def _projection_noisy(pixel_mm: float, dose: float, seed: int) -> tuple[torch.Tensor, ...]:
    """A 128 px body with a denser bar, and its scan by the projection physics (noise
    correlated as a reconstruction makes it)."""
    from lowdose.physics.projection import ProjectionSimulator

    clean = torch.from_numpy(_tissue_slice(0.0)).float()[None, None]
    clean[..., 50:60, 40:80] = 200.0
    simulator = ProjectionSimulator(pixel_size_mm=pixel_mm, input_is_noiseless=True)
    return clean, simulator(clean, dose, torch.Generator().manual_seed(seed))


def test_ct_noise_model_knows_the_spectrum_the_white_one_does_not() -> None:
    """Both take the noise reading at face value (factor 1); only the CT model knows how the
    reconstruction spreads that noise over frequencies, and removes it."""
    clean, noisy = _projection_noisy(0.75, 0.05, seed=7)

    def error(image: torch.Tensor) -> float:
        return (image - clean).pow(2).mean().sqrt().item()

    rmse = {"input": error(noisy), "white": error(BM3D(noise_factor=1.0).denoise(noisy)),
            "ct": error(BM3D(noise_model="ct", pixel_size_mm=0.75).denoise(noisy))}
    assert rmse["white"] > 0.9 * rmse["input"], rmse  # sigma = the reading: far too weak
    assert rmse["ct"] < 0.25 * rmse["input"], rmse


def test_ct_noise_psd_is_shaped_like_reconstructed_noise_and_reproducible() -> None:
    _, noisy = _projection_noisy(0.75, 0.05, seed=7)
    hu = noisy[0, 0].numpy()
    bm3d = BM3D(noise_model="ct", pixel_size_mm=0.75)
    psd = bm3d.noise_psd(hu)
    assert psd is not None and psd.shape == hu.shape
    np.testing.assert_array_equal(psd, bm3d.noise_psd(hu))  # fixed seeds: the same spectrum
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))
    band = [psd[(radius >= lo) & (radius < lo + 0.05)].mean() for lo in (0.0, 0.2, 0.45)]
    # filtered back-projection: little power at the lowest and the highest frequencies
    assert band[1] > 1.5 * band[0] and band[1] > 3 * band[2], band
    # on white noise the spectrum is flat: the white model's sigma^2 per frequency
    white = _tissue_slice(20.0, seed=1)
    flat = BM3D(noise_model="ct").noise_psd(white)
    assert flat.std() / flat.mean() < 0.05
    assert np.sqrt(flat.mean() / white.size) == pytest.approx(BM3D().sigma_for(white), rel=0.05)
    assert BM3D(noise_model="ct").noise_psd(np.full((64, 64), -1000.0)) is None  # unreadable


def test_ct_noise_model_takes_the_image_pixel_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from lowdose.image import CTImage
    from lowdose.models import classical

    seen: list[float | None] = []
    monkeypatch.setattr(classical, "_physics_noise",
                        lambda hu, pixel_mm: seen.append(pixel_mm) or [_correlated(5.0)])
    monkeypatch.setattr("bm3d.bm3d", lambda img, sigma_psd, profile: img)
    hu = _correlated(20.0)[None].astype(np.float32)
    BM3D(noise_model="ct").denoise_image(CTImage(hu, spacing=(2.0, 0.6, 0.6)))
    BM3D(noise_model="ct", pixel_size_mm=0.9).denoise_image(CTImage(hu, spacing=(2.0, 0.6, 0.6)))
    BM3D(noise_model="ct").denoise(torch.from_numpy(hu)[None])
    assert seen == [0.6, 0.9, None]


def test_bm3d_noise_model_settings() -> None:
    with pytest.raises(ValueError, match="noise_model"):
        BM3D(noise_model="pink")
    with pytest.raises(ValueError, match="sigma_hu applies to the white"):
        BM3D(noise_model="ct", sigma_hu=30.0)
    assert BM3D().noise_factor == 6.0 and BM3D(noise_model="ct").noise_factor == 1.0


@pytest.mark.parametrize(("batches_slices", "sizes"), [(True, [4, 2]), (False, [1] * 6)])
def test_progress_counts_slices_and_slice_methods_get_one_at_a_time(
        batches_slices: bool, sizes: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    # a classical method loops over slices anyway: given one at a time, its bar moves per slice
    from lowdose.image import CTImage
    from lowdose.models.base import Denoiser

    seen: list[int] = []

    class Counting(Denoiser):
        name = "counting"

        def denoise(self, hu: torch.Tensor) -> torch.Tensor:
            seen.append(hu.shape[0])
            return hu

    Counting.batches_slices = batches_slices
    volume = CTImage(np.zeros((6, 8, 8), np.float32), spacing=(1.0, 1.0, 1.0))
    Counting().denoise_image(volume, batch_size=4, progress=True)
    assert seen == sizes
    err = capsys.readouterr().err
    assert "6/6" in err and ("slice/s" in err or "s/slice" in err)  # tqdm: rate per slice
    assert BM3D.batches_slices is False and TotalVariation.batches_slices is False

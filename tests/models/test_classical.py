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


def test_bm3d_sigma_in_hu_units() -> None:
    assert BM3D(sigma_hu=4096.0).sigma_psd == pytest.approx(1.0)
    with pytest.raises(ValueError):
        BM3D(sigma_hu=0)


def test_batch_is_per_slice() -> None:
    _, a = _noisy_disc(1)
    _, b = _noisy_disc(2)
    tv = TotalVariation()
    both = tv.denoise(torch.cat([a, b]))
    assert torch.allclose(both[1:], tv.denoise(b), atol=1e-3)


def test_bad_shape() -> None:
    with pytest.raises(ValueError, match="B, 1, H, W"):
        TotalVariation().denoise(torch.zeros(8, 8))

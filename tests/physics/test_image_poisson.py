"""The study's image-domain method: its documented formula, seeding, batching and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.physics import build_simulator, simulate_low_dose, simulators
from lowdose.physics.image_poisson import ImagePoissonSimulator


def _formula(hu: torch.Tensor, dose: float, generator: torch.Generator) -> torch.Tensor:
    unit = ((hu + 1024) / 4096).clamp(0, 1)
    counts = torch.round(unit * 4095)
    return torch.poisson(counts * dose, generator=generator) / dose / 4095 * 4096 - 1024


def test_registered_by_name():
    assert "image-poisson" in simulators
    assert isinstance(build_simulator("image-poisson"), ImagePoissonSimulator)


def test_matches_documented_formula_draw_for_draw():
    hu = torch.linspace(-1200, 3500, 64 * 64).reshape(1, 1, 64, 64).clamp(min=-1050)
    ours = ImagePoissonSimulator()(hu, 0.25, torch.Generator().manual_seed(7))
    ref = _formula(hu, 0.25, torch.Generator().manual_seed(7))
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("dose", [1.0, 0.25, 0.05])
def test_mean_kept_and_variance_is_counts_over_dose(dose):
    hu = torch.full((4, 1, 64, 64), 40.0)
    out = ImagePoissonSimulator()(hu, dose, torch.Generator().manual_seed(0))
    counts = round((40 + 1024) / 4096 * 4095)
    hu_per_count = 4096 / 4095
    assert abs(out.mean().item() - (counts * hu_per_count - 1024)) < 2.0
    expected_std = np.sqrt(counts / dose) * hu_per_count
    assert out.std().item() == pytest.approx(expected_std, rel=0.05)


def test_quantises_to_12_bits_and_clips_input_range():
    # Without noise (a very high dose is not allowed, so check the quantisation step directly):
    # values above 3072 HU become 4095 counts, i.e. at most 3071 HU before noise.
    hu = torch.tensor([[[[5000.0, -1050.0]]]])
    out = ImagePoissonSimulator()(hu, 1.0, torch.Generator().manual_seed(0))
    assert out[0, 0, 0, 1].item() == pytest.approx(-1024.0)  # 0 counts -> Poisson(0) = 0
    assert abs(out[0, 0, 0, 0].item() - 3071) < 6 * np.sqrt(4095)


def test_same_seed_same_output_and_numpy_roundtrip():
    hu = np.random.default_rng(0).uniform(-1000, 1000, (3, 32, 32)).astype(np.float32)
    before = hu.copy()
    a = simulate_low_dose(hu, 0.25, method="image-poisson", seed=3)
    b = simulate_low_dose(hu, 0.25, method="image-poisson", seed=3)
    c = simulate_low_dose(hu, 0.25, method="image-poisson", seed=4)
    assert isinstance(a, np.ndarray) and a.shape == hu.shape and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(hu, before)
    t = simulate_low_dose(torch.from_numpy(hu[0]), 0.25, method="image-poisson", seed=3)
    assert isinstance(t, torch.Tensor) and t.shape == (32, 32)


@pytest.mark.parametrize("dose", [0.0, -0.1, 1.5, float("nan")])
def test_bad_dose(dose):
    with pytest.raises(LowdoseError, match="dose"):
        simulate_low_dose(np.zeros((8, 8), np.float32), dose, method="image-poisson")


@pytest.mark.parametrize("value", [-2000.0, float("nan"), 1e6])
def test_bad_hu(value):
    hu = np.zeros((8, 8), np.float32)
    hu[2, 2] = value
    with pytest.raises(LowdoseError):
        simulate_low_dose(hu, 0.5, method="image-poisson")


def test_unknown_method():
    with pytest.raises(LowdoseError, match="unknown simulator"):
        simulate_low_dose(np.zeros((8, 8), np.float32), 0.5, method="nope")

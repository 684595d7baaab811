"""Denoiser training data and presets: deterministic patches, artefact screening, presets."""

from __future__ import annotations

import numpy as np
import pytest

from lowdose.errors import LowdoseError
from lowdose.training.denoising import (
    PairedPatches,
    artifact_level,
    load_preset,
    validation_indices,
)


def test_artifact_level_separates_noise_from_streaks() -> None:
    rng = np.random.default_rng(0)
    full = np.zeros((128, 128), np.float32)
    noisy = full + rng.normal(0, 60, full.shape).astype(np.float32)
    streak = noisy.copy()
    streak[60:68, :] += 150.0
    assert artifact_level(noisy, full) < 6.0  # 60 HU white noise averages out over 15x15
    assert artifact_level(streak, full) > 20.0


@pytest.mark.parametrize(("n", "k", "expected"), [
    (97, 4, [0, 32, 64, 96]), (3, 4, [0, 2]), (1, 4, []), (10, 0, [])])
def test_validation_indices_spread_and_never_take_every_slice(n: int, k: int,
                                                              expected: list[int]) -> None:
    assert validation_indices(n, k) == expected


def test_patches_are_a_function_of_the_index() -> None:
    rng = np.random.default_rng(1)
    full = [rng.normal(0, 100, (80, 90)).astype(np.float32) for _ in range(3)]
    low = [np.stack([f + 1, f + 2]) for f in full]
    ds = PairedPatches(full, low, patch_size=32, length=50, seed=3, min_body_fraction=0.0)
    a, b = ds[7], ds[7]
    assert a["low"].shape == (1, 32, 32)
    assert np.array_equal(a["low"], b["low"]) and np.array_equal(a["full"], b["full"])
    diff = (a["low"] - a["full"]).numpy()
    assert np.ptp(diff) < 1e-3 and round(float(diff.mean())) in (1, 2)  # same crop and flips
    with pytest.raises(LowdoseError, match="smaller than the patch"):
        PairedPatches(full, low, patch_size=100, length=5)


def test_presets_and_per_model_sections() -> None:
    unet, red = load_preset("cpu", model="unet"), load_preset("cpu", model="red-cnn")
    assert unet.data.method == red.data.method == "projection"
    assert red.trainer.batch_size < unet.trainer.batch_size
    gpu = load_preset("gpu", model="unet", trainer={"max_steps": 5})
    assert gpu.trainer.max_steps == 5 and gpu.data.patch_size == 128
    with pytest.raises(LowdoseError, match="unknown keys"):
        load_preset("cpu", model="unet", trainer={"no_such_key": 1})


def test_every_shipped_preset_loads_and_fine_tuning_moves_the_weights_gently() -> None:
    from lowdose.training.presets import shipped_names

    names = shipped_names("denoiser")
    assert {"cpu", "cpu-long", "cpu-finetune", "gpu"} <= set(names)
    for name in names:
        assert load_preset(name, model="unet").data.method == "projection", name
    long, tune = load_preset("cpu-long"), load_preset("cpu-finetune")
    assert tune.optim.lr < long.optim.lr and tune.trainer.max_steps < long.trainer.max_steps
    assert tune.data.patch_size == long.data.patch_size  # the default unet's training patches


def test_dose_list_gives_draws_at_every_dose_and_reuses_the_cache(tmp_path) -> None:
    from lowdose.training.denoising import DataConfig, simulate_realisations

    yy, xx = np.mgrid[:64, :64] - 31.5
    disc = np.where(xx**2 + yy**2 < 28**2, 40.0, -1000.0).astype(np.float32)
    cfg = DataConfig(dose=[0.1, 0.5], method="image-poisson", realisations=2)
    assert cfg.doses == [0.1, 0.5]
    (draws,) = simulate_realisations([disc], ["disc"], cfg, 0, tmp_path, progress=False)
    assert draws.shape == (4, 64, 64)
    inside = xx**2 + yy**2 < 20**2
    noise_low, noise_high = (draws[:2] - disc)[:, inside].std(), (draws[2:] - disc)[:, inside].std()
    assert noise_low > 1.8 * noise_high  # std scales as 1/sqrt(dose): sqrt(5) = 2.24
    assert len(list(tmp_path.glob("*.npy"))) == 2  # one cache file per dose
    # A single-dose run at 0.5 reuses the 0.5 draws of the two-dose run.
    (single,) = simulate_realisations([disc], ["disc"], DataConfig(dose=0.5, method="image-poisson",
                                      realisations=2), 0, tmp_path, progress=False)
    assert np.array_equal(single, draws[2:]) and len(list(tmp_path.glob("*.npy"))) == 2


def test_relative_dose_reaches_the_simulator_and_its_own_cache(tmp_path) -> None:
    from lowdose.training.denoising import DataConfig, simulate_realisations

    with pytest.raises(LowdoseError, match="relative_dose"):
        DataConfig(relative_dose=True, method="image-poisson")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96] - 47.5
    body = xx**2 + yy**2 < 44**2
    noisy = np.where(body, 40.0 + 40.0 * rng.standard_normal((96, 96)), -1000.0).astype(np.float32)
    pixels = [{"pixel_size_mm": 2.0}]
    absolute, relative = (
        simulate_realisations([noisy], ["s"], DataConfig(relative_dose=flag, realisations=1), 0,
                              tmp_path, progress=False, pixels=pixels)[0]
        for flag in (False, True))
    inside = xx**2 + yy**2 < 30**2
    # 40 HU of its own noise: three times its power inserted, far above the calibration's
    assert (relative - noisy)[0][inside].std() > 2 * (absolute - noisy)[0][inside].std()
    assert len(list(tmp_path.glob("*.npy"))) == 2  # cached apart


@pytest.mark.parametrize("dose", [[], [0.25, 0.0], 1.5])
def test_bad_doses_are_refused(dose) -> None:
    from lowdose.training.denoising import DataConfig

    with pytest.raises(LowdoseError, match="dose"):
        DataConfig(dose=dose)


def test_bin_slice_means_blocks_and_data_bin_is_checked() -> None:
    from lowdose.training.denoising import DataConfig, bin_slice

    hu = np.arange(30, dtype=np.float32).reshape(5, 6)  # the odd last row is dropped
    assert bin_slice(hu, 2).tolist() == [[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]]
    assert bin_slice(hu, 1).tolist() == hu.tolist()
    assert DataConfig(bin=3).bin == 3
    for bad in (0, 1.5):
        with pytest.raises(LowdoseError, match=r"data\.bin must"):
            DataConfig(bin=bad)

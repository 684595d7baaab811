"""Denoiser training data and presets: deterministic patches, artefact screening, presets."""

from __future__ import annotations

import numpy as np
import pytest

from lowdose.errors import LowdoseError
from lowdose.training.denoising import PairedPatches, artifact_level, load_preset


def test_artifact_level_separates_noise_from_streaks() -> None:
    rng = np.random.default_rng(0)
    full = np.zeros((128, 128), np.float32)
    noisy = full + rng.normal(0, 60, full.shape).astype(np.float32)
    streak = noisy.copy()
    streak[60:68, :] += 150.0
    assert artifact_level(noisy, full) < 6.0  # 60 HU white noise averages out over 15x15
    assert artifact_level(streak, full) > 20.0


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

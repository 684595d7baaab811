"""Resuming a supervised denoiser run: settings of its data and model may not change, and a
bad device is refused before any simulation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowdose.errors import LowdoseError
from lowdose.image import CTImage
from lowdose.io import write_ct
from lowdose.training.denoising import DenoiserTrainConfig, train_denoiser

TINY = {
    "model": "unet", "arch": {"channels": [4, 8], "blocks": 1, "bottom_blocks": 1},
    "trainer": {"max_steps": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1,
                "num_threads": 1, "tensorboard": False, "progress": False},
    "data": {"method": "image-poisson", "realisations": 1, "patch_size": 32,
             "samples_per_epoch": 20, "val_slices": 0, "dose": 0.25},
    "optim": {"lr": 0.001, "warmup_steps": 1},
}


def _cfg(trainer: dict | None = None, data: dict | None = None) -> DenoiserTrainConfig:
    raw = json.loads(json.dumps(TINY))
    raw["trainer"].update(trainer or {})
    raw["data"].update(data or {})
    return DenoiserTrainConfig.from_dict(raw)


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    yy, xx = np.mgrid[:48, :48]
    hu = np.where((yy - 24) ** 2 + (xx - 24) ** 2 < 20**2, 40.0, -1000.0)
    return write_ct(CTImage(hu[None].repeat(2, 0).astype(np.float32), spacing=(2.0, 0.8, 0.8)),
                    tmp_path / "fd.nii.gz")


def _cached(out: Path) -> set[str]:
    return {p.name for p in (out / "cache").glob("*.npy")}


def test_resume_refuses_changed_data_settings_before_simulating(ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_denoiser(_cfg(), [ct], out, progress=False)
    cached = _cached(out)
    for data, message in [({"dose": 0.1}, "--dose 0.1, but the run was trained with --dose 0.25"),
                          ({"dose": [0.1, 0.25]}, "--dose 0.1,0.25, but"),
                          ({"method": "projection"}, "--method projection, but"),
                          ({"patch_size": 16}, "data.patch_size (preset) 16, but")]:
        with pytest.raises(LowdoseError, match="start a new --out") as err:
            train_denoiser(_cfg(trainer={"max_steps": 3}, data=data), [ct], out, resume=True,
                           progress=False)
        assert message in str(err.value)
    with pytest.raises(LowdoseError, match="--seed 5, but the run was trained with --seed 0"):
        train_denoiser(_cfg(trainer={"max_steps": 3, "seed": 5}), [ct], out, resume=True,
                       progress=False)
    with pytest.raises(LowdoseError, match="--data"):
        train_denoiser(_cfg(trainer={"max_steps": 3}), [ct, ct], out, resume=True,
                       progress=False)
    assert _cached(out) == cached  # refused before any new simulation
    config = json.loads((out / "config.json").read_text())
    assert config["family"]["metadata"]["dose"] == 0.25  # the run's provenance is intact
    # What may change: the run length (and threads, logging); the record keeps the dose.
    result = train_denoiser(_cfg(trainer={"max_steps": 3, "num_threads": 1, "log_every": 2}),
                            [ct], out, resume=True, progress=False)
    assert result.resumed_from == 2 and result.step == 3
    config = json.loads((out / "config.json").read_text())
    assert config["family"]["metadata"]["dose"] == 0.25


def test_a_bad_device_is_refused_before_any_data_work(ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(LowdoseError, match=r"^--device gpu: not a device; use cpu, cuda"):
        train_denoiser(_cfg(trainer={"device": "gpu"}), [ct], out, progress=False)
    assert not (out / "cache").exists()

"""``lowdose train denoiser``: simulated pairs from full-dose CT, checkpoints, --resume, the
result loads as a denoiser, and export with a model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowdose.cli.main import main
from lowdose.image import CTImage
from lowdose.io import write_ct

PRESET = """
model: unet
arch: {channels: [4, 8, 16], blocks: 1, bottom_blocks: 1}
trainer: {max_steps: 6, batch_size: 4, checkpoint_every: 3, log_every: 2, num_threads: 1,
          tensorboard: false, progress: false}
data: {method: image-poisson, realisations: 2, patch_size: 32, samples_per_epoch: 100,
       val_slices: 1}
optim: {lr: 0.001, warmup_steps: 2}
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2) < 26**2
    hu = np.where(body, 40.0, -1000.0)[None].repeat(3, 0) + rng.normal(0, 10, (3, 64, 64))
    data = write_ct(CTImage(hu.astype(np.float32), spacing=(2.0, 0.8, 0.8)), tmp_path / "fd.nii.gz")
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    return data, preset


def test_train_resume_load_export(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, preset = setup
    out = tmp_path / "run"
    args = ["train", "denoiser", "--model", "unet", "--data", str(data), "--dose", "0.25",
            "--preset", str(preset), "--out", str(out)]
    assert main([*args, "--steps", "3"]) == 0
    assert (out / "checkpoints" / "step-00000003" / "model.safetensors").is_file()
    assert main(args) == 2  # refuses to start over an existing run without --resume
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["step"] == 6
    assert "simulate" not in "".join(p.name for p in out.glob("*.partial*"))

    from lowdose.models.loading import load_denoiser
    from lowdose.training.denoising import export_denoiser

    d = load_denoiser(str(out), device="cpu")
    assert d.name == "unet" and d.metadata["dose"] == 0.25
    assert d.metadata["train_pixel_mm"] == pytest.approx([0.8, 0.8])  # the data's pixels
    assert d.pixel_size_note(3.1) is not None
    dest = export_denoiser(out, tmp_path / "ship" / "unet", benchmark={"psnr_full_gain": 1.0})
    card = dest.with_suffix(".md").read_text()
    assert "image-poisson" in card and "Steps trained**: 6" in card
    assert load_denoiser(str(dest)).metadata["steps"] == 6


def test_bad_arguments(setup: tuple[Path, Path], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    data, preset = setup
    base = ["train", "denoiser", "--out", str(tmp_path / "x"), "--preset", str(preset)]
    assert main([*base, "--model", "bm3d", "--data", str(data)]) == 2
    assert "not a learned" in capsys.readouterr().err
    assert main([*base, "--model", "unet"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main([*base, "--model", "unet", "--data", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([*base, "--model", "unet", "--data", str(data), "--preset", "nonesuch"]) == 2
    assert "preset" in capsys.readouterr().err
    assert main([*base, "--model", "unet", "--data", str(data), "--dose", "0.2,abc"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main([*base, "--model", "gan-circle", "--data", str(data), "--dose", "0.2,0.4"]) == 2
    assert "one dose" in capsys.readouterr().err
    rc = main(["train", "denoiser", "--out", str(tmp_path / "g"), "--model", "gan-circle",
               "--data", str(data), "--paired-fraction", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "paired_fraction must be in [0, 1]" in err and "ValueError" not in err
    assert main(["train", "denoiser", "--out", str(tmp_path / "g"), "--model", "gan-circle",
                 "--data", str(data), "--split", "patient"]) == 2
    assert "data.split 'patient'" in capsys.readouterr().err
    assert main([*base, "--model", "unet", "--data", str(data), "--split", "slice"]) == 2
    assert "--split" in capsys.readouterr().err
    assert main([*base, "--model", "gan-circle", "--data", str(data), "--bin", "2"]) == 2
    assert "--bin: supervised models only" in capsys.readouterr().err
    assert main([*base, "--model", "unet", "--data", str(data), "--bin", "4"]) == 2  # 16 px
    assert "no slice of at least 128x128" in capsys.readouterr().err


def test_bin_trains_at_coarser_pixels(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """--bin 2 averages 2 x 2 pixels of the 0.8 mm data first: the model trains on 32 px
    slices of 1.6 mm pixels, and its weights say so."""
    from lowdose.models.loading import load_denoiser

    data, preset = setup
    out = tmp_path / "run"
    assert main(["train", "denoiser", "--model", "unet", "--data", str(data), "--bin", "2",
                 "--preset", str(preset), "--out", str(out), "--steps", "2"]) == 0
    d = load_denoiser(str(out), device="cpu")
    assert d.metadata["bin"] == 2
    assert d.metadata["train_pixel_mm"] == pytest.approx([1.6, 1.6])
    assert d.pixel_size_note(1.6) is None and d.pixel_size_note(0.8) is not None


def test_several_doses_train_one_model(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, preset = setup
    out = tmp_path / "run"
    assert main(["train", "denoiser", "--model", "unet", "--data", str(data), "--dose",
                 "0.15,0.4", "--preset", str(preset), "--out", str(out), "--steps", "2"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["dose"] == [0.15, 0.4] and summary["config"]["data"]["dose"] == [0.15, 0.4]


def test_init_fine_tunes_from_weights_of_the_same_model(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from lowdose.models.loading import load_denoiser
    from lowdose.models.unet import ResUNetDenoiser
    from lowdose.training.denoising import initial_denoiser

    data, preset = setup
    base = ["train", "denoiser", "--model", "unet", "--data", str(data), "--dose", "0.25",
            "--preset", str(preset)]
    first = tmp_path / "first"
    assert main([*base, "--out", str(first), "--steps", "3"]) == 0
    start = initial_denoiser(ResUNetDenoiser, first)
    trained = load_denoiser(str(first), device="cpu")
    assert start.arch == trained.arch
    for name, tensor in trained.net.state_dict().items():
        assert torch.equal(start.net.state_dict()[name], tensor), name
    assert any(p.requires_grad for p in start.net.parameters())

    tuned = tmp_path / "tuned"
    assert main([*base, "--out", str(tuned), "--steps", "2", "--init", str(first)]) == 0
    assert json.loads((tuned / "train_summary.json").read_text())["init"] == str(first)
    moved = load_denoiser(str(tuned), device="cpu").net.state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in trained.net.state_dict().items())

    assert main([*base, "--out", str(tmp_path / "a"), "--init", "red-cnn"]) == 2
    assert "holds a 'red-cnn' model" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--init", "unet"]) == 2  # preset: tiny
    assert "architecture" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c"), "--init", str(tmp_path / "none")]) == 2
    assert "neither a known denoiser" in capsys.readouterr().err
    assert main(["train", "denoiser", "--model", "gan-circle", "--out", str(tmp_path / "d"),
                 "--init", str(first)]) == 2
    assert "not 'gan-circle'" in capsys.readouterr().err  # a GAN starts from a GAN run


def test_list_presets_has_a_header_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "denoiser", "--list-presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["preset", "model", "base", "max", "steps", "summary"]
    # The header's columns sit over the rows' columns.
    row = next(line for line in lines if line.startswith("cpu-finetune "))
    assert lines[0].index("model") == row.index("unet")
    assert lines[0].index("base") == row.index("base cpu-long")
    assert lines[0].index("summary") == row.index("Fine-tuning")


"""``lowdose train denoiser``: simulated pairs from full-dose CT, checkpoints, --resume, the
result loads as a denoiser, and export with a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lowdose.cli.main import main
from lowdose.image import CTImage
from lowdose.io import read_ct, write_ct

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


def test_train_resume_load_export(setup: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data, preset = setup
    out = tmp_path / "run"
    args = ["train", "denoiser", "--model", "unet", "--data", str(data), "--dose", "0.25",
            "--preset", str(preset), "--out", str(out)]
    assert main([*args, "--steps", "3"]) == 0
    assert (out / "checkpoints" / "step-00000003" / "model.safetensors").is_file()
    assert main(args) == 2  # refuses to start over an existing run without --resume
    assert main([*args, "--resume", "--steps", "6"]) == 0  # a longer run than recorded
    assert json.loads((out / "train_summary.json").read_text())["step"] == 6
    assert "simulate" not in "".join(p.name for p in out.glob("*.partial*"))
    rows = (out / "metrics.csv").read_text()
    capsys.readouterr()
    shutil.rmtree(out / "cache")  # said before the data work: the draws are not made again
    assert main([*args, "--resume"]) == 0  # finished at the recorded --steps 6: said, nothing
    # trained or logged again
    said = capsys.readouterr().out
    assert f"{out}: already finished at step 6" in said and "trained unet" not in said
    assert (out / "metrics.csv").read_text() == rows and not (out / "cache").exists()

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


def test_a_bare_resume_takes_the_runs_own_options(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--out R --resume` alone used to take the defaults (model unet, preset cpu, no data) and
    was refused; it now goes on with the options the run recorded, a typed one overriding."""
    data, preset = setup
    out = tmp_path / "run"
    start = ["train", "denoiser", "--data", str(data), "--dose", "0.4", "--preset",
             str(preset), "--out", str(out), "--steps", "3", "--threads", "1"]
    assert main(start) == 0
    assert json.loads((out / "command.json").read_text())["options"]["dose"] == "0.4"
    capsys.readouterr()
    shutil.rmtree(out / "cache")
    assert main(["train", "denoiser", "--out", str(out)]) == 2  # refused before the data work
    assert "holds checkpoints already; pass --resume" in capsys.readouterr().err
    assert not (out / "cache").exists()
    assert main(["train", "denoiser", "--out", str(out), "--resume", "--steps", "6"]) == 0
    said = capsys.readouterr()
    assert "resuming with the run's options" in said.err and "--dose 0.4" in said.err
    assert json.loads((out / "train_summary.json").read_text())["step"] == 6
    assert _metadata(out)["dose"] == 0.4
    assert main(["train", "denoiser", "--out", str(out), "--resume"]) == 0  # recorded: 6
    assert "already finished at step 6" in capsys.readouterr().out
    assert main(["train", "denoiser", "--out", str(out), "--resume", "--dose", "0.25",
                 "--steps", "9"]) == 2
    assert "--dose 0.25, but the run was trained with --dose 0.4" in capsys.readouterr().err
    assert json.loads((out / "command.json").read_text())["options"]["steps"] == 6


def test_a_resume_from_another_folder_does_not_read_relative_paths_there(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--data ct recorded as typed: a resume from the parent folder read ./ct there (another
    scan), silently. It is refused, naming the folder to resume from; --cache inside the data
    is refused as --out is."""
    data, preset = setup
    project = tmp_path / "project"
    (project / "ct").mkdir(parents=True)
    shutil.copy(data, project / "ct" / "fd.nii.gz")
    (tmp_path / "ct").mkdir()  # another scan, where the relative path leads from tmp_path
    monkeypatch.chdir(project)
    assert main(["train", "denoiser", "--data", "ct", "--preset", str(preset), "--steps", "3",
                 "--out", "runs/u"]) == 0
    assert main(["train", "denoiser", "--data", "ct", "--preset", str(preset), "--steps", "1",
                 "--out", "runs/v", "--cache", "ct/cache"]) == 2
    assert "--cache ct/cache: is inside the data folder ct" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["train", "denoiser", "--out", "project/runs/u", "--resume", "--steps",
                 "6"]) == 2
    assert f"the run was started in {project}, and its relative paths (ct)" in \
        capsys.readouterr().err
    monkeypatch.chdir(project)
    assert main(["train", "denoiser", "--out", "runs/u", "--resume", "--steps", "6"]) == 0


def test_a_run_without_command_json_resumes_on_the_defaults_and_says_so(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, preset = setup
    out = tmp_path / "run"
    args = ["train", "denoiser", "--data", str(data), "--preset", str(preset), "--out", str(out)]
    assert main([*args, "--steps", "3"]) == 0
    (out / "command.json").unlink()  # a run started by an older lowdose
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0  # the preset's 6 steps: the default
    assert "holds no command.json" in capsys.readouterr().err
    assert json.loads((out / "train_summary.json").read_text())["step"] == 6


GAN_PRESET = """
family: gan-circle
model: {scale: 1, f0: 8, critic_base: 8, paired_fraction: 0.0, pool_size: 0}
data: {dose: 0.25, method: image-poisson, patch: 32, slice_size: 64, min_mean_hu: -2000,
       val_length: 4}
trainer: {max_steps: 2, batch_size: 2, num_threads: 1, checkpoint_every: 1, log_every: 1,
          tensorboard: false, progress: false}
"""


def test_a_bare_gan_resume_takes_the_runs_model_preset_and_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Left out on --resume, --model used to be unet (a supervised run: refused) and --data the
    shared sets; they are the run's now."""
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2).astype(np.float32)
    np.save(tmp_path / "vol.npy", np.stack([-1000 + 1040 * body + 10 * k for k in range(4)])
            .astype(np.float32))
    preset = tmp_path / "tiny-gan.yaml"
    preset.write_text(GAN_PRESET)
    out = tmp_path / "gan"
    assert main(["train", "denoiser", "--model", "gan-circle", "--preset", str(preset),
                 "--data", str(tmp_path / "vol.npy"), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    # The split, as the supervised runs say theirs (one npy volume: its upper and lower half).
    assert said.startswith("slices: 2 degraded input (group: ") and ", unpaired; " in said
    assert main(["train", "denoiser", "--out", str(out), "--resume", "--steps", "3"]) == 0
    said = capsys.readouterr()
    assert "--model gan-circle" in said.err and "trained gan-circle to step 3" in said.out
    (out / "pool-x1.safetensors").unlink()
    assert main(["train", "denoiser", "--out", str(out), "--resume"]) == 0  # finished at 3:
    assert "already finished at step 3" in capsys.readouterr().out  # said before the pool
    assert not (out / "pool-x1.safetensors").exists()
    shared = tmp_path / "pools"  # --cache: a folder for the pool (it was ignored)
    assert main(["train", "denoiser", "--model", "gan-circle", "--preset", str(preset),
                 "--data", str(tmp_path / "vol.npy"), "--out", str(tmp_path / "gan2"),
                 "--cache", str(shared)]) == 0
    assert (shared / "pool-x1.safetensors").is_file()
    assert not (tmp_path / "gan2" / "pool-x1.safetensors").exists()


def test_gan_options_are_refused_where_they_were_ignored(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """unet took --scale 2 and trained a denoiser; gan-circle took --pairs and trained on the
    preset's shared sets."""
    data, preset = setup
    base = ["train", "denoiser", "--data", str(data), "--steps", "1", "--out"]
    assert main([*base, str(tmp_path / "a"), "--preset", str(preset), "--scale", "2"]) == 2
    assert "--scale: gan-circle/cyclegan only, not unet" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "b"), "--preset", str(preset),
                 "--paired-fraction", "0.5"]) == 2
    assert "--paired-fraction: gan-circle/cyclegan only" in capsys.readouterr().err
    assert main(["train", "denoiser", "--model", "gan-circle", "--scale", "3", "--out",
                 str(tmp_path / "d")]) == 2  # was 'ValueError: scale must be one of'
    assert "--scale 3: use 1 (denoising), 2 or 4" in capsys.readouterr().err
    (tmp_path / "pairs").mkdir()
    assert main(["train", "denoiser", "--model", "gan-circle", "--pairs", str(tmp_path / "pairs"),
                 "--out", str(tmp_path / "c")]) == 2
    assert "--pairs: supervised models only; gan-circle trains on full-dose --data" in \
        capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_gan_without_data_names_the_sets_it_lacks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --data a GAN trains on its preset's sets; where they are not, the error named
    the YAML key data.data_root, no option a user types."""
    monkeypatch.setenv("LOWDOSE_SHARED_DATA", str(tmp_path / "nowhere"))
    preset = tmp_path / "tiny-gan.yaml"
    preset.write_text(GAN_PRESET)
    assert main(["train", "denoiser", "--model", "gan-circle", "--preset", str(preset),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nowhere: the preset's training sets (chest-ct-dicom, " in err and "give --data" in err


def test_a_run_folder_inside_the_data_folder_is_refused(
        setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out data/run was taken: the next run on data/ read the cached low-dose draws as
    full-dose slices (12 train where there were 3)."""
    data, preset = setup
    folder = tmp_path / "scanner"
    folder.mkdir()
    shutil.copy(data, folder / "fd.nii.gz")
    assert main(["train", "denoiser", "--data", str(folder), "--preset", str(preset),
                 "--steps", "1", "--out", str(folder / "run")]) == 2
    assert f"--out {folder / 'run'}: is inside the data folder {folder}" in \
        capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["fd.nii.gz"]


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



def _metadata(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())["family"]["metadata"]


def test_a_small_set_trains_on_most_slices_and_says_the_split(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 slices (val_slices 1 in the preset) all train; 5 hold out 1. Used to be 2 + 1, and
    a 5-slice set trained on 1 slice with 4 held out, with nothing said on the console."""
    data, preset = setup
    out = tmp_path / "run"
    base = ["train", "denoiser", "--preset", str(preset), "--steps", "1"]
    assert main([*base, "--data", str(data), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("slices: 3 train, 0 validate (under 4 slices: all train), 0 dropped by "
                        "the artifact check")
    assert lines[-1].startswith("trained unet to step 1")
    assert (_metadata(out)["train_slices"], _metadata(out)["val_slices"]) == (3, 0)

    yy, xx = np.mgrid[:64, :64]
    hu = np.where(((yy - 32) ** 2 + (xx - 32) ** 2) < 26**2, 40.0, -1000.0)
    five = write_ct(CTImage(hu[None].repeat(5, 0).astype(np.float32), spacing=(2.0, 0.8, 0.8)),
                    tmp_path / "five.nii.gz")
    five_val = tmp_path / "five.yaml"
    five_val.write_text(PRESET.replace("val_slices: 1", "val_slices: 4"))
    assert main(["train", "denoiser", "--preset", str(five_val), "--steps", "1", "--data",
                 str(five), "--out", str(tmp_path / "five")]) == 0
    assert "slices: 4 train, 1 validate" in capsys.readouterr().out
    assert (_metadata(tmp_path / "five")["train_slices"],
            _metadata(tmp_path / "five")["val_slices"]) == (4, 1)


def test_reformats_are_left_out_of_training_with_a_warning(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, preset = setup
    folder = tmp_path / "mixed"
    folder.mkdir()
    axial = read_ct(data)
    write_ct(axial, folder / "axial.nii.gz")
    coronal = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    write_ct(CTImage(axial.hu.copy(), spacing=axial.spacing, direction=coronal),
             folder / "coronal.nii.gz")
    base = ["train", "denoiser", "--preset", str(preset), "--steps", "1"]
    with pytest.warns(UserWarning, match=r"left out 3 slice\(s\) of non-axial series "
                      r"\(3 coronal\); CT noise is made in the axial plane"):
        assert main([*base, "--data", str(folder), "--out", str(tmp_path / "run")]) == 0
    assert _metadata(tmp_path / "run")["train_slices"] == 3  # the axial file's 3 slices
    capsys.readouterr()
    (folder / "axial.nii.gz").unlink()
    assert main([*base, "--data", str(folder), "--out", str(tmp_path / "none")]) == 2
    assert "no axial slice to train on, only 3 coronal ones" in capsys.readouterr().err


def test_a_bad_init_is_refused_before_the_simulation_and_a_pickle_needs_trust_pickle(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from lowdose.models.loading import read_weights

    data, preset = setup
    base = ["train", "denoiser", "--data", str(data), "--preset", str(preset), "--steps", "1"]
    first = tmp_path / "first"
    assert main([*base, "--out", str(first)]) == 0
    state, config = read_weights(first / "model.safetensors")
    torch.save({"config": config, "state_dict": state}, tmp_path / "u.pt")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes((first / "model.safetensors").read_bytes()[:1000])
    capsys.readouterr()
    for init, message in [(tmp_path / "none", "neither a known denoiser"),
                          (truncated, "cut.safetensors"), ("red-cnn", "holds a 'red-cnn' model"),
                          (tmp_path / "u.pt", "--trust-pickle")]:
        out = tmp_path / "bad"
        assert main([*base, "--out", str(out), "--init", str(init)]) == 2, init
        assert message in capsys.readouterr().err
        assert not (out / "cache").exists(), init  # refused before any simulation
    tuned = tmp_path / "tuned"
    assert main([*base, "--out", str(tuned), "--init", str(tmp_path / "u.pt"),
                 "--trust-pickle"]) == 0
    assert _metadata(tuned)["init"] == str(tmp_path / "u.pt")


def test_npy_scale_reads_mayo_npy_training_data(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, preset = setup
    yy, xx = np.mgrid[:64, :64]
    hu = np.where(((yy - 32) ** 2 + (xx - 32) ** 2) < 26**2, 40.0, -1000.0)
    npy = tmp_path / "fd_target.npy"
    np.save(npy, ((hu + 1024) / 4096).astype(np.float32))
    base = ["train", "denoiser", "--data", str(npy), "--preset", str(preset), "--steps", "1"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "--npy-scale mayo" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--npy-scale", "mayo"]) == 0
    assert _metadata(tmp_path / "b")["npy_scale"] == "mayo"
    assert main([*base, "--out", str(tmp_path / "b"), "--npy-scale", "hu", "--resume"]) == 2
    assert "--npy-scale hu, but the run was trained with --npy-scale mayo" in \
        capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "c"), "--npy-scale", "raw"]) == 2
    assert "--npy-scale 'raw': use one of hu, mayo" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "g"), "--model", "gan-circle", "--npy-scale",
                 "mayo"]) == 2
    assert "--npy-scale: supervised models only, not gan-circle" in capsys.readouterr().err


@pytest.fixture
def torch_threads():
    """Restores torch's thread count, which a training run sets for the whole process."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_option_then_omp_num_threads_then_the_preset(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_threads
) -> None:
    """The preset says 2; OMP_NUM_THREADS=1 used to be overridden by it silently."""
    data, _ = setup
    two = tmp_path / "two.yaml"
    two.write_text(PRESET.replace("num_threads: 1", "num_threads: 2"))
    base = ["train", "denoiser", "--data", str(data), "--preset", str(two), "--steps", "1"]

    def threads_used(out: Path) -> int:
        return json.loads((out / "config.json").read_text())["trainer"]["num_threads"]

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main([*base, "--out", str(tmp_path / "env")]) == 0
    assert threads_used(tmp_path / "env") == 1
    assert main([*base, "--out", str(tmp_path / "opt"), "--threads", "3"]) == 0
    assert threads_used(tmp_path / "opt") == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert main([*base, "--out", str(tmp_path / "preset")]) == 0
    assert threads_used(tmp_path / "preset") == 2
    assert main([*base, "--out", str(tmp_path / "zero"), "--threads", "0"]) == 2

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
    (97, 4, [0, 32, 64, 96]), (1, 4, []), (10, 0, []), (2, 4, []), (3, 4, []), (4, 4, [0]),
    (5, 4, [0]), (8, 4, [0, 7]), (12, 4, [0, 6, 11]), (16, 4, [0, 5, 10, 15])])
def test_validation_indices_hold_out_at_most_a_quarter(n: int, k: int,
                                                       expected: list[int]) -> None:
    """A small set trains on most of its slices: 5 slices used to train on 1 (4 held out)."""
    assert validation_indices(n, k) == expected
    assert n - len(expected) >= 3 * n / 4


def test_split_line_counts_train_validate_and_dropped_with_the_reason() -> None:
    from lowdose.training.denoising import split_line

    line = split_line(4, 1, ["ct/a.dcm", "ct/b.nii.gz#3"], 20.0, val_slices=4)
    assert line.startswith("slices: 4 train, 1 validate, 2 dropped by the artifact check")
    assert "more than 20 HU" in line and "a.dcm, b.nii.gz#3" in line and "\n" not in line
    assert "(under 4 slices: all train)" in split_line(3, 0, [], 20.0, val_slices=4)
    assert split_line(9, 2) == "slices: 9 train, 2 validate"  # real pairs: no artifact check
    many = split_line(1, 0, [f"s{i}.dcm" for i in range(8)], 20.0, val_slices=0)
    assert "s0.dcm, s1.dcm, s2.dcm and 5 more" in many and "all train" not in many


def _slice_file(folder, name: str, plane: str):
    """A 64 x 64 disc phantom as a NIfTI slice in ``plane`` (its direction matrix)."""
    from lowdose.image import CTImage
    from lowdose.io import write_ct

    directions = {"axial": np.eye(3),
                  "coronal": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
                  "sagittal": np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]])}
    yy, xx = np.mgrid[:64, :64] - 31.5
    hu = np.where(xx**2 + yy**2 < 28**2, 40.0, -1000.0).astype(np.float32)
    image = CTImage(hu[None].repeat(2, 0), spacing=(2.0, 0.8, 0.8), direction=directions[plane])
    assert image.orientation == plane
    return write_ct(image, folder / name)


def test_load_slices_leaves_out_reformats_with_one_warning(tmp_path) -> None:
    from lowdose.training.denoising import load_slices

    _slice_file(tmp_path, "ax.nii.gz", "axial")
    _slice_file(tmp_path, "cor.nii.gz", "coronal")
    _slice_file(tmp_path, "sag.nii.gz", "sagittal")
    with pytest.warns(UserWarning) as said:
        slices, names, _ = load_slices([tmp_path])
    assert len(slices) == 2 and all("ax.nii.gz" in n for n in names)
    (message,) = [str(w.message) for w in said]
    assert "left out 4 slice(s) of non-axial series (2 coronal, 2 sagittal)" in message
    assert "CT noise is made in the axial plane" in message


def test_load_slices_refuses_reformats_only(tmp_path) -> None:
    from lowdose.training.denoising import load_slices

    _slice_file(tmp_path, "cor.nii.gz", "coronal")
    with pytest.raises(LowdoseError, match="no axial slice to train on, only 2 coronal ones"):
        load_slices([tmp_path])


def test_load_slices_reads_npy_in_the_stated_scale(tmp_path) -> None:
    from lowdose.training.denoising import load_slices

    yy, xx = np.mgrid[:64, :64] - 31.5
    mayo = np.where(xx**2 + yy**2 < 28**2, 1064 / 4096, 24 / 4096).astype(np.float32)
    np.save(tmp_path / "fd.npy", mayo)
    with pytest.raises(LowdoseError, match="--npy-scale mayo"):
        load_slices([tmp_path / "fd.npy"])
    (hu,), _, _ = load_slices([tmp_path / "fd.npy"], npy_scale="mayo")
    assert hu[32, 32] == pytest.approx(40.0) and hu[0, 0] == pytest.approx(-1000.0)


def test_thread_count_option_then_environment_then_preset(monkeypatch) -> None:
    from lowdose.training.denoising import thread_count

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_count(None, 2) == (1, "OMP_NUM_THREADS")
    assert thread_count(3, 2) == (3, "--threads")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_count(None, 2) == (2, "preset")
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert thread_count(None, 2) == (2, "preset")
    with pytest.raises(LowdoseError, match="--threads 0: use 1 or more"):
        thread_count(0, 2)


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


@pytest.mark.parametrize(("text", "error"), [
    ("trainer: {max_steps: abc}", "trainer.max_steps: 'abc' is not an integer"),
    ("trainer: {max_steps: 0}", "trainer.max_steps: 0 is out of range; use an integer >= 1"),
    ("trainer: {batch_size: 0}", "trainer.batch_size: 0 is out of range"),
    ("trainer: {tensorboard: 'no'}", "trainer.tensorboard: 'no' is not true or false"),
    ("optim: {lr: fast}", "optim.lr: 'fast' is not a number"),
    ("optim: {lr: -1}", r"optim.lr: -1 is out of range; use a number > 0"),
    ("optim: {betas: 0.9}", r"optim.betas: 0.9 is not a pair of numbers in \[0, 1\)"),
    ("optim: {warmup_steps: -5}", "optim.warmup_steps: -5 is out of range"),
    ("data: {realisations: 0}", "data.realisations: 0 is out of range; use an integer >= 1"),
    ("data: {patch_size: -32}", "data.patch_size: -32 is out of range; use an integer >= 1"),
    ("data: {method: poison}", "data.method: 'poison' is not one of image-poisson, projection"),
    ("data: {dose: abc}", "data.dose: 'abc' is not a number"),
    ("data: {min_body_fraction: 2}", r"data.min_body_fraction: 2 is out of range; use a "
                                     r"number in \[0, 1\]"),
    ("data: 5", "config section 'data': 5 is not a mapping of settings"),
    ("trainr: {max_steps: 5}", "config: unknown key 'trainr'; known: model, arch, trainer"),
    ("model: unett", "model: 'unett' is not a learned denoiser; known: .*red-cnn, unet"),
    ("arch: {widthh: 3}", r"arch: unknown keys \['widthh'\] for unet; known: blocks"),
])
def test_a_bad_preset_value_is_refused_when_loaded_naming_the_key(
    tmp_path, text: str, error: str
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: cpu\n{text}\n")
    with pytest.raises(LowdoseError, match=error):
        load_preset(str(path))


def test_a_preset_takes_yaml_spellings_of_numbers(tmp_path) -> None:
    # PyYAML reads 1e-4 and 1e3 as strings (YAML 1.1 floats need a dot); ints fill floats.
    path = tmp_path / "mine.yaml"
    path.write_text("base: cpu\noptim: {lr: 1e-4, weight_decay: 0, betas: [0.5, 1.0e-1]}\n"
                    "trainer: {max_steps: 1e3, grad_clip: 1}\ndata: {max_artifact_hu: .inf}\n")
    cfg = load_preset(str(path))
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas) == (1e-4, 0.0, (0.5, 0.1))
    assert (cfg.trainer.max_steps, cfg.trainer.grad_clip) == (1000, 1.0)
    assert cfg.data.max_artifact_hu == float("inf")  # no artifact check


def test_every_shipped_preset_loads_for_every_learned_model() -> None:
    from lowdose.models.base import denoisers
    from lowdose.models.network import NetworkDenoiser
    from lowdose.training.presets import shipped_names

    for name in shipped_names("denoiser"):
        for model in ("unet", "unet-fast", "red-cnn", None):
            cfg = load_preset(name, model=model)
            net = denoisers.get(cfg.model)
            assert isinstance(net, type) and issubclass(net, NetworkDenoiser), (name, model)
    # The gpu preset's red-cnn section resets the architecture (`arch: {}`), which a merge
    # with the unet's channels kept: the network could not be built.
    assert load_preset("gpu", model="red-cnn").arch == {}
    assert load_preset("gpu", model="unet").arch["channels"] == [32, 64, 128, 256]


def test_training_data_named_as_low_dose_is_warned_about(tmp_path) -> None:
    """A folder of real Mayo pairs given as --data trained on its quarter-dose inputs as if
    they were full dose, silently."""
    import warnings

    import numpy as np

    from lowdose.training.denoising import load_slices

    hu = np.full((64, 64), 40.0, np.float32)
    for role in ("input", "target"):
        np.save(tmp_path / f"L506_86_{role}.npy", hu)
    with pytest.warns(UserWarning, match=r"1 of the 2 training files are named as low dose "
                                         r"\(L506_86_input.npy\).*use --pairs"):
        load_slices([tmp_path], npy_scale="hu")
    (tmp_path / "L506_86_input.npy").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_slices([tmp_path], npy_scale="hu")

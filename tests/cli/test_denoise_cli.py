"""``lowdose denoise``: --list, a DICOM series in and a derived series out, NIfTI, folders of
images, weight files, and one-line errors on bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lowdose.cli.main import main
from lowdose.image import CTImage
from lowdose.io import read_ct, write_ct


def _volume(n: int = 3, size: int = 48, seed: int = 0) -> CTImage:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.4) ** 2
    hu = np.where(body, 40.0, -1000.0)[None].repeat(n, 0)
    hu = hu + rng.normal(0, 40, hu.shape)
    return CTImage(hu.astype(np.float32), spacing=(2.0, 0.8, 0.8), origin=(0.0, 0.0, 0.0),
                   direction=np.eye(3))


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["denoise", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("bm3d", "tv", "red-cnn", "unet (default)"):
        assert name in out


def test_list_prints_docstrings_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """No reStructuredText markup (``bm3d``, :class:`Denoiser`) in what a terminal shows."""
    assert main(["denoise", "--list"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out and "`" not in out, out
    assert "the bm3d package" in out and "as a Denoiser" in out


def test_plain_text_renders_roles_literals_and_links() -> None:
    from lowdose.cli.options import plain_text

    assert plain_text("``G`` as a :class:`Denoiser`, :func:`~lowdose.io.read_ct`") == (
        "G as a Denoiser, read_ct")
    assert plain_text(":mod:`lowdose.physics` and `the paper <https://x.org>`_") == (
        "lowdose.physics and the paper")
    assert plain_text("HU [-1024, 3072] -> [0, 1]: plain") == "HU [-1024, 3072] -> [0, 1]: plain"


def test_dicom_series_in_derived_series_out(tmp_path: Path) -> None:
    src = write_ct(_volume(), tmp_path / "series")  # a DICOM series folder
    assert main(["denoise", str(src), str(tmp_path / "restored"), "--model", "tv"]) == 0
    before, after = read_ct(src), read_ct(tmp_path / "restored")
    assert after.shape == before.shape == (3, 48, 48)
    assert after.spacing == pytest.approx(before.spacing)
    # noise went down inside the body, HU level kept
    inside = slice(18, 30)
    assert after.hu[:, inside, inside].std() < 0.6 * before.hu[:, inside, inside].std()
    assert abs(after.hu[:, inside, inside].mean() - 40) < 15
    sources = {getattr(h, "SeriesInstanceUID", None) for h in before.source_headers or []}
    derived = {getattr(h, "SeriesInstanceUID", None) for h in after.source_headers or []}
    assert derived and not (derived & sources)  # a new series, not a copy of the input


def test_nifti_and_folder_of_images(tmp_path: Path) -> None:
    nii = write_ct(_volume(2), tmp_path / "qd.nii.gz")
    assert main(["denoise", str(nii), str(tmp_path / "out.nii.gz"), "-m", "bm3d"]) == 0
    assert read_ct(tmp_path / "out.nii.gz").shape == (2, 48, 48)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"s{i}.npy", _volume(1, seed=i).hu[0])
    assert main(["denoise", str(folder), str(tmp_path / "imgs-out"), "-m", "tv"]) == 0
    assert sorted(p.name for p in (tmp_path / "imgs-out").iterdir()) == ["s0.npy", "s1.npy"]


def test_a_tree_of_class_folders_keeps_its_layout_and_jpeg_is_written_as_png(
        tmp_path: Path) -> None:
    from PIL import Image

    tree = tmp_path / "Data"
    grey = np.random.default_rng(0).integers(0, 256, (40, 40)).astype(np.uint8)
    for split, label in (("train", "normal"), ("test", "adenocarcinoma")):
        (tree / split / label).mkdir(parents=True)
        Image.fromarray(grey, "L").save(tree / split / label / "a.png")
    Image.fromarray(grey, "L").save(tree / "test" / "adenocarcinoma" / "n9 (2).jpg")
    (tree / "README.txt").write_text("not an image: passed over")
    assert main(["denoise", str(tree), str(tmp_path / "out"), "-m", "tv"]) == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["test/adenocarcinoma/a.png", "test/adenocarcinoma/n9 (2).png",
                       "train/normal/a.png"]


def test_an_output_that_cannot_hold_the_image_is_refused_before_the_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lowdose.models.classical import TotalVariation

    def never(*args, **kwargs):
        raise AssertionError("denoised before the output was checked")

    monkeypatch.setattr(TotalVariation, "denoise_image", never)
    nii = write_ct(_volume(3), tmp_path / "qd.nii.gz")
    for out in ("o.png", "o.dcm"):
        assert main(["denoise", str(nii), str(tmp_path / out), "-m", "tv"]) == 2
        err = capsys.readouterr().err
        assert "holds one slice, the image has 3" in err, err


def test_set_gives_a_classical_denoiser_its_settings(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--set weight_hu=60`` is ``TotalVariation(weight_hu=60)``: the same pixels, and not
    those of the default strength; ``--list`` names what --set takes."""
    import torch

    from lowdose.models.classical import TotalVariation

    nii = write_ct(_volume(1), tmp_path / "qd.nii.gz")
    for name, extra in (("set", ["--set", "weight_hu=60"]), ("default", [])):
        assert main(["denoise", str(nii), str(tmp_path / f"{name}.nii.gz"), "-m", "tv",
                     *extra]) == 0
    with torch.inference_mode():
        api = TotalVariation(weight_hu=60.0).denoise(torch.from_numpy(read_ct(nii).hu)[None, None])
    cli = read_ct(tmp_path / "set.nii.gz").hu
    np.testing.assert_allclose(cli, api[0, 0].numpy(), atol=0.5)  # NIfTI stores rounded HU
    assert np.abs(cli - read_ct(tmp_path / "default.nii.gz").hu).max() > 5
    assert main(["denoise", str(nii), str(tmp_path / "spec.nii.gz"), "-m", "tv:weight_hu=60"]) == 0
    np.testing.assert_array_equal(read_ct(tmp_path / "spec.nii.gz").hu, cli)  # the same, named
    capsys.readouterr()
    assert main(["denoise", "--list"]) == 0
    assert "--set sigma_hu, noise_factor" in capsys.readouterr().out


def test_weight_file_model(tmp_path: Path) -> None:
    from lowdose.models.loading import save_weights
    from lowdose.models.unet import ResUNetDenoiser

    d = ResUNetDenoiser.untrained({"channels": [4, 8, 16]})
    weights = save_weights(d.net.state_dict(), d.config(), tmp_path / "u.safetensors")
    nii = write_ct(_volume(1), tmp_path / "qd.nii.gz")
    assert main(["denoise", str(nii), str(tmp_path / "o.nii.gz"), "-m", str(weights)]) == 0
    assert read_ct(tmp_path / "o.nii.gz").shape == (48, 48)
    assert main(["denoise", str(nii), str(tmp_path / "e.nii.gz"), "-m", str(weights),
                 "--self-ensemble"]) == 0
    plain, ensembled = read_ct(tmp_path / "o.nii.gz").hu, read_ct(tmp_path / "e.nii.gz").hu
    assert ensembled.shape == plain.shape and not np.allclose(ensembled, plain, atol=1e-3)
    from lowdose.device import cpu_has_bf16

    if cpu_has_bf16():
        assert main(["denoise", str(nii), str(tmp_path / "b.nii.gz"), "-m", str(weights),
                     "--precision", "bf16"]) == 0
        rounded = read_ct(tmp_path / "b.nii.gz").hu
        assert 0 < np.abs(rounded - plain).max() < 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{nii}", "{nii}", "-m", "tv"], "overwrite the input"),
        (["{tmp}/missing.nii.gz", "{tmp}/o.nii.gz", "-m", "tv"], "no such file"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "nonsense"], "neither a known denoiser"),
        (["{txt}", "{tmp}/o.nii.gz", "-m", "tv"], "notes.txt"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "{pt}"], "pickle checkpoint refused"),
        (["{nii}"], "give an INPUT and an OUTPUT"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "tv", "--self-ensemble"], "learned denoisers only"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "bm3d", "--strength", "1.2"], "learned denoisers"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "tv", "--precision", "bf16"], "learned denoisers"),
        (["{nii}", "{tmp}/o.nii.gz", "--precision", "fp16"], "use one of fp32, bf16"),
        (["{nii}", "{tmp}/o.nii.gz", "--set", "sigma_hu=40"], "classical denoisers (bm3d, tv)"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "tv", "--set", "sigma_hu=40"], "tv takes weight_hu"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "tv", "--set", "weight_hu"], "expected KEY=VALUE"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "tv", "--set", "weight_hu=big"],
         "weight_hu=big: expected float or none"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "tv", "--set", "weight_hu=-3"], "must be positive"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "bm3d", "--set", "noise_model=pink"],
         "noise_model must be one of white, ct"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "{pt}", "--set", "x=1"], "settings are in its weight"),
        (["{nii}", "{tmp}/o.nii.gz", "-m", "bm3d:sigma_hu=40", "--set", "sigma_hu=20"],
         "--set sigma_hu=20.0: sigma_hu is also given in the model name (bm3d:sigma_hu=40.0)"),
    ],
)
def test_bad_input_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    nii = write_ct(_volume(1), tmp_path / "qd.nii.gz")
    (tmp_path / "notes.txt").write_text("not a CT image")
    (tmp_path / "m.pt").write_bytes(b"\x80\x04not really")
    fmt = {"nii": nii, "tmp": tmp_path, "txt": tmp_path / "notes.txt", "pt": tmp_path / "m.pt"}
    assert main(["denoise", *[a.format(**fmt) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


@pytest.mark.integration
def test_real_mayo_dicom(shared_data: Path, tmp_path: Path) -> None:
    qd = sorted((shared_data / "mayo-l506-pairs" / "dicom").glob("*_QD_*"))[0]
    assert main(["denoise", str(qd), str(tmp_path / "out.nii.gz"), "-m", "tv"]) == 0
    out = read_ct(tmp_path / "out.nii.gz")
    assert out.shape == (512, 512)


def test_pixels_outside_the_training_scale_warn_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights that record their training pixel sizes warn on much coarser slices (once per
    input), stay silent inside the range, and say nothing where the input has no spacing."""
    from lowdose.models.loading import save_weights
    from lowdose.models.unet import ResUNetDenoiser

    d = ResUNetDenoiser.untrained({"channels": [4, 8, 16]},
                                  metadata={"train_pixel_mm": [0.6, 0.8]})
    weights = save_weights(d.net.state_dict(), d.config(), tmp_path / "u.safetensors")
    fine = write_ct(_volume(2), tmp_path / "fine.nii.gz")  # 0.8 mm pixels
    coarse_image = _volume(2)
    coarse_image.spacing = (2.0, 3.1, 3.1)
    coarse = write_ct(coarse_image, tmp_path / "coarse.nii.gz")
    capsys.readouterr()
    assert main(["denoise", str(fine), str(tmp_path / "a.nii.gz"), "-m", str(weights)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["denoise", str(coarse), str(tmp_path / "b.nii.gz"), "-m", str(weights)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: unet was trained on 0.60-0.80 mm pixels") == 1
    assert "3.10 mm pixels, outside its training scale" in err
    np.save(tmp_path / "x.npy", coarse_image.hu[0])  # npy: no spacing, no claim
    assert main(["denoise", str(tmp_path / "x.npy"), str(tmp_path / "c.npy"), "-m",
                 str(weights)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_reformats_warn_once_and_axial_slices_do_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A coronal series (read from its DICOM orientation, kept through NIfTI) gets one warning
    that names the plane and the advice; the same pixels as an axial series get none."""
    from tests.io.test_dicom import make_series

    hu = np.round(_volume(3).hu)
    coronal = make_series(tmp_path / "cor", hu, iop=(1, 0, 0, 0, 0, -1), series_uid="1.2.3.4")
    axial = make_series(tmp_path / "ax", hu, series_uid="1.2.3.5")
    capsys.readouterr()
    assert main(["denoise", str(coronal), str(tmp_path / "c.nii.gz"), "-m", "tv"]) == 0
    err = capsys.readouterr().err
    assert err.count("these slices are coronal") == 1
    assert "denoise it and reformat the result" in err
    assert main(["denoise", str(tmp_path / "c.nii.gz"), str(tmp_path / "c2.nii.gz"),
                 "-m", "tv"]) == 0  # the orientation survives the NIfTI round trip
    assert "these slices are coronal" in capsys.readouterr().err
    assert main(["denoise", str(axial), str(tmp_path / "a.nii.gz"), "-m", "tv"]) == 0
    assert "these slices are" not in capsys.readouterr().err


def test_along_axial_denoises_a_coronal_volume_along_its_axial_planes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A coronal volume (slices stacked front to back, image rows running head to foot) is
    denoised plane by plane across its slices: the same as TV on each axial plane of the
    array, not TV on each coronal slice; no reformat warning then, and a single slice or an
    unknown --along is one error line."""
    from lowdose.models.classical import TotalVariation
    from tests.io.test_dicom import make_series

    rng = np.random.default_rng(3)
    hu = np.round(_volume(6, size=32).hu + rng.normal(0, 40, (6, 32, 32)))
    coronal = make_series(tmp_path / "cor", hu, iop=(1, 0, 0, 0, 0, -1), series_uid="1.2.3.6")
    image = read_ct(coronal)
    assert image.orientation == "coronal" and image.axial_axis() == 1
    capsys.readouterr()
    assert main(["denoise", str(coronal), str(tmp_path / "p.nii.gz"), "-m", "tv",
                 "--along", "axial"]) == 0
    assert "these slices are" not in capsys.readouterr().err
    tv = TotalVariation()
    planes = np.moveaxis(image.hu, 1, 0)
    expected = np.moveaxis(tv.denoise_image(CTImage(planes, (0.8, 2.0, 0.7))).hu, 0, 1)
    by_slice = tv.denoise_image(image).hu
    got = read_ct(tmp_path / "p.nii.gz").hu
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert np.abs(got - by_slice).max() > 5  # another result than slice by slice
    assert main(["denoise", str(coronal), str(tmp_path / "s.nii.gz"), "-m", "tv"]) == 0
    assert "--along axial" in capsys.readouterr().err  # the hint, for a volume
    one = make_series(tmp_path / "one", hu[:1], iop=(1, 0, 0, 0, 0, -1), series_uid="1.2.3.7")
    for argv, needle in (([str(one), str(tmp_path / "o.nii.gz"), "--along", "axial"],
                          "needs a volume"),
                         ([str(coronal), str(tmp_path / "x.nii.gz"), "--along", "sideways"],
                          "--along 'sideways'")):
        assert main(["denoise", *argv, "-m", "tv"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_a_series_goes_to_a_folder_whatever_dots_its_name_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`restored-0.5` for a DICOM series is a folder (was: "cannot tell the output format from
    '.5'"); a NIfTI input to such a name is still refused, and `.nii.gz` still means NIfTI."""
    from tests.io.test_dicom import make_series

    series = make_series(tmp_path / "s", np.round(_volume(2).hu), series_uid="1.2.3.10")
    for command in (["denoise", "-m", "tv"], ["upscale", "--scale", "2"]):
        out = tmp_path / f"{command[0]}-0.5"
        assert main([*command, str(series), str(out)]) == 0
        assert out.is_dir() and read_ct(out).metadata["format"] == "dicom"
    assert main(["denoise", str(series), str(tmp_path / "r.nii.gz"), "-m", "tv"]) == 0
    assert read_ct(tmp_path / "r.nii.gz").metadata["format"] == "nifti"
    nifti = write_ct(_volume(2), tmp_path / "v.nii.gz")
    capsys.readouterr()
    assert main(["denoise", str(nifti), str(tmp_path / "v-0.5"), "-m", "tv"]) == 2
    assert "cannot tell the output format" in capsys.readouterr().err


def test_list_and_denoise_with_a_registered_factory_function(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Registry takes classes or functions: a factory must not break --list or -m."""
    from lowdose.models.base import denoisers
    from lowdose.models.classical import TotalVariation

    denoisers.names()
    monkeypatch.setattr(denoisers, "_entries", dict(denoisers._entries))

    @denoisers.register("tv-strong")
    def tv_strong(weight_hu: float = 60.0) -> TotalVariation:
        """TV with a strong fixed weight."""
        return TotalVariation(weight_hu=weight_hu)

    assert main(["denoise", "--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^tv-strong +TV with a strong fixed weight\. \[--set weight_hu\]$", out,
                     re.MULTILINE), out
    src = tmp_path / "in.npy"
    np.save(src, _volume(1, 24).hu[0])
    assert main(["denoise", str(src), str(tmp_path / "out.npy"), "-m", "tv-strong",
                 "--set", "weight_hu=30"]) == 0
    assert np.load(tmp_path / "out.npy").shape == (24, 24)


def test_denoise_and_upscale_read_8bit_images_through_a_stated_window(tmp_path, capsys) -> None:
    """They had no --window: a PNG saved in another window was read as lung, silently."""
    import numpy as np
    from PIL import Image

    from lowdose.io import read_ct
    from tests.cli.cli_helpers import run

    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(folder / "a.png")
    rc, _, err = run(["denoise", str(folder), str(tmp_path / "d"), "-m", "tv"], capsys)
    assert rc == 0 and "read as HU through the default window, lung" in err, err
    rc, _, err = run(["denoise", str(folder), str(tmp_path / "s"), "-m", "tv", "--window",
                      "-160,240"], capsys)
    assert rc == 0 and "default window" not in err, err
    assert read_ct(tmp_path / "s" / "a.png").metadata["window"] == [-160.0, 240.0]
    rc, _, err = run(["upscale", str(folder), str(tmp_path / "u"), "--window", "-160,240"],
                     capsys)
    assert rc == 0 and read_ct(tmp_path / "u" / "a.png").metadata["window"] == [-160.0, 240.0]
    # An HU input written as PNG: through the window given (it was ignored: lung)
    from lowdose.image import CTImage
    from lowdose.io import write_ct

    nii = write_ct(CTImage(np.full((32, 32), 40.0, np.float32), spacing=(0.7, 0.7)),
                   tmp_path / "hu.nii.gz")
    for command in (["denoise", str(nii), str(tmp_path / "hu.png"), "-m", "tv"],
                    ["upscale", str(nii), str(tmp_path / "hu2.png")]):
        rc, _, err = run([*command, "--window", "-160,240"], capsys)
        written = read_ct(Path(command[2]))
        assert rc == 0 and written.metadata["window"] == [-160.0, 240.0], err

"""``lowdose simulate`` and ``lowdose calibrate``: NIfTI, DICOM series, PNG datasets, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from lowdose.image import CTImage, Window
from lowdose.io import read_ct, write_ct
from tests.cli.cli_helpers import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_one_error_line(rc: int, err: str, *needles: str) -> None:
    """Like ``cli_helpers.assert_one_error_line``, but simulate's progress bar may precede the
    error on stderr, so only the ``error:`` lines are counted."""
    assert rc != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]



def body(n: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - n / 2
    hu = np.where((xx / (0.45 * n)) ** 2 + (yy / (0.35 * n)) ** 2 < 1, 40.0, -1000.0)
    hu[np.hypot(xx - 5, yy) < 4] = 600.0
    return hu.astype(np.float32)


def write_nifti(path, vol_zyx: np.ndarray, spacing=(3.0, 1.5, 1.5)) -> None:
    data = np.transpose(vol_zyx, (2, 1, 0))  # NIfTI x, y, z
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(data, affine), path)


def test_nifti_volume_round_trip_default_projection(tmp_path, capsys):
    fd = tmp_path / "FD.nii.gz"
    vol = np.stack([body(), body(), body()])
    write_nifti(fd, vol)
    before = fd.read_bytes()
    rc, _, err = run(["simulate", str(fd), str(tmp_path / "OUT.nii.gz"), "--dose", "0.25",
                        "--seed", "0"], capsys)
    assert rc == 0, err
    assert fd.read_bytes() == before  # input untouched
    original = read_ct(fd)
    low = read_ct(tmp_path / "OUT.nii.gz")
    assert low.shape == original.shape == (3, 64, 64)
    assert low.spacing == pytest.approx(original.spacing)
    diff = low.hu - original.hu
    inside = original.hu > -500
    assert 1.0 < diff[:, inside[0]].std() < 200  # noise in HU, not a rescaled image
    assert abs(diff[:, inside[0]].mean()) < 5
    # Same seed, same file; another method, another result.
    rc, _, _ = run(["simulate", str(fd), str(tmp_path / "again.nii.gz"), "--dose", "0.25",
                    "--seed", "0"], capsys)
    assert rc == 0 and np.array_equal(read_ct(tmp_path / "again.nii.gz").hu, low.hu)
    rc, _, err = run(["simulate", str(fd), str(tmp_path / "ip.nii.gz"), "--dose", "0.25",
                      "--method", "image-poisson"], capsys)
    assert rc == 0, err
    ip = read_ct(tmp_path / "ip.nii.gz").hu - original.hu
    # The study's method: about 65 HU of noise at 40 HU and 0.25 dose (see image_poisson).
    assert 50 < ip[:, inside[0]].std() < 80


def test_single_slice_nifti_and_several_doses(tmp_path, capsys):
    fd = tmp_path / "slice.nii.gz"
    write_nifti(fd, body()[None])
    rc, out, err = run(["simulate", str(fd), str(tmp_path / "doses"), "--doses", "1,0.25,0.05"],
                       capsys)
    assert rc == 0, err
    assert out.splitlines() == [f"wrote {tmp_path / 'doses' / f'dose-{d}' / 'slice.nii.gz'}"
                                for d in ("1", "0.25", "0.05")]
    original = read_ct(fd).hu
    stds = {}
    for dose in ("1", "0.25", "0.05"):
        low = read_ct(tmp_path / "doses" / f"dose-{dose}" / "slice.nii.gz").hu
        assert low.shape == original.shape
        stds[dose] = float(np.std(low - original))
    assert stds["1"] == 0.0  # dose 1: the full-dose image unchanged
    assert 0 < stds["0.25"] < stds["0.05"]


def test_dicom_series_in_series_out(tmp_path, capsys):
    from tests.io.test_dicom import make_series

    vol = np.stack([body(32), body(32)]) + 0.0
    series = make_series(tmp_path / "series", np.round(vol))
    rc, _, err = run(["simulate", str(series), str(tmp_path / "low"), "--dose", "0.5"], capsys)
    assert rc == 0, err
    low = read_ct(tmp_path / "low")
    assert low.shape == (2, 32, 32)
    assert low.metadata["format"] == "dicom"


def test_a_tree_of_dicom_files_named_dicom_or_ima_writes_dcm(tmp_path, capsys):
    from tests.io.test_dicom import ct_slice

    for name in ("a/one.dicom", "b/two.IMA"):
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        ct_slice(tmp_path / "tree" / name, np.round(body(32)))
    rc, _, err = run(["simulate", str(tmp_path / "tree"), str(tmp_path / "low"),
                      "--dose", "0.5"], capsys)
    assert rc == 0, err
    outs = sorted(p.relative_to(tmp_path / "low").as_posix()
                  for p in (tmp_path / "low").rglob("*") if p.is_file())
    assert outs == ["a/one.dcm", "b/two.dcm"]
    assert read_ct(tmp_path / "low" / "a" / "one.dcm").shape == (32, 32)


def test_png_dataset_keeps_its_layout_and_window(tmp_path, capsys):
    data = tmp_path / "data"
    lung = Window.named("lung")
    for split, label in (("train", "normal"), ("test", "adenocarcinoma")):
        (data / split / label).mkdir(parents=True)
        img = CTImage(body(64), spacing=(0.7, 0.7))
        write_ct(img, data / split / label / "a.png", window=lung)
    (data / "README.txt").write_text("not an image")
    rc, out, err = run(["simulate", str(data), str(tmp_path / "low"), "--dose", "0.25"], capsys)
    assert rc == 0, err
    assert len(out.splitlines()) == 2 and out.startswith("wrote ")
    outs = sorted(p.relative_to(tmp_path / "low").as_posix()
                  for p in (tmp_path / "low").rglob("*.png"))
    assert outs == ["test/adenocarcinoma/a.png", "train/normal/a.png"]
    low = read_ct(tmp_path / "low" / "train" / "normal" / "a.png")
    assert tuple(low.metadata["window"]) == (lung.lo, lung.hi)


@pytest.mark.parametrize("command", [["simulate", "--dose", "0.5"], ["denoise", "-m", "tv"]])
def test_many_outputs_are_counted_not_listed(tmp_path, capsys, monkeypatch, command):
    from lowdose.cli import options

    monkeypatch.setattr(options, "MAX_OUTPUTS_LISTED", 1)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.png", "b.png"):
        write_ct(CTImage(body(32), spacing=(0.7, 0.7)), data / name, window=Window.named("lung"))
    rc, out, err = run([command[0], str(data), str(tmp_path / "low"), *command[1:]], capsys)
    assert rc == 0, err
    assert out.strip() == f"wrote 2 files under {tmp_path / 'low'}"


def test_png_without_a_stated_window_is_read_through_the_lung_window(tmp_path, capsys):
    """As denoise, score and info read it (the README's convention), saying so before the
    progress bar; the same output as --window lung."""
    from PIL import Image

    grey = np.clip((body(64) + 1350) / 1500 * 255, 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "plain.png")
    rc, _, err = run(["simulate", str(tmp_path / "plain.png"), str(tmp_path / "o.png")], capsys)
    assert rc == 0, err
    note = "note: 8-bit input read as HU through the default window, lung [-1350, 150] HU"
    assert err.startswith(note), err  # before the bar
    assert tuple(read_ct(tmp_path / "o.png").metadata["window"]) == (-1350.0, 150.0)
    rc, _, err = run(["simulate", str(tmp_path / "plain.png"), str(tmp_path / "given.png"),
                      "--window", "lung"], capsys)
    assert rc == 0 and "default window" not in err, err
    assert np.array_equal(read_ct(tmp_path / "o.png").hu, read_ct(tmp_path / "given.png").hu)


def test_a_window_recorded_in_a_png_is_kept_without_window(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    soft = Window.named("abdomen")
    for name in ("a.png", "b.png"):
        write_ct(CTImage(body(32), spacing=(0.7, 0.7)), data / name, window=soft)
    rc, _, err = run(["simulate", str(data), str(tmp_path / "low"), "--dose", "0.5"], capsys)
    assert rc == 0 and "default window" not in err, err
    assert tuple(read_ct(tmp_path / "low" / "a.png").metadata["window"]) == (soft.lo, soft.hi)


def test_pngs_with_and_without_a_recorded_window_need_one_window_before_the_bar(
        tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    write_ct(CTImage(body(32), spacing=(0.7, 0.7)), data / "a.png", window=Window.named("abdomen"))
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "b.png")
    rc, _, err = run(["simulate", str(data), str(tmp_path / "low")], capsys)
    assert_one_error_line(rc, err, "1 8-bit image(s) record their HU window (e.g. a.png)",
                          "1 do not (e.g. b.png)", "pass --window")
    assert err.strip().startswith("error: ") and "image/s" not in err  # no progress bar
    assert not (tmp_path / "low").exists()
    rc, _, err = run(["simulate", str(data), str(tmp_path / "low"), "--window", "lung"], capsys)
    assert rc == 0, err


def test_relative_dose_follows_the_scans_own_noise(tmp_path, capsys):
    from lowdose.metrics.noise import estimate_noise_hu

    rng = np.random.default_rng(0)
    clean = body(128)
    readings = {}
    for own in (10.0, 30.0):
        scan = clean + own * rng.standard_normal(clean.shape) * (clean > -500)
        fd = tmp_path / f"fd{own:g}.nii.gz"
        write_nifti(fd, scan[None].astype(np.float32), spacing=(3.0, 1.5, 1.5))
        out = tmp_path / f"ld{own:g}.nii.gz"
        rc, _, err = run(["simulate", str(fd), str(out), "--dose", "0.25", "--relative-dose"],
                         capsys)
        assert rc == 0, err
        fd_hu, ld_hu = np.squeeze(read_ct(fd).hu), np.squeeze(read_ct(out).hu)
        readings[own] = estimate_noise_hu(ld_hu - fd_hu, tissue_of=fd_hu) / estimate_noise_hu(fd_hu)
    # a quarter of each scan's own dose: sqrt(3) times its own noise inserted, whatever it is
    assert readings[10.0] == pytest.approx(3**0.5, rel=0.1)
    assert readings[30.0] == pytest.approx(3**0.5, rel=0.1)


def test_bad_input_gives_one_error_line(tmp_path, capsys):
    fd = tmp_path / "fd.nii.gz"
    write_nifti(fd, body()[None])
    for argv, needles in (
        (["simulate", str(fd), str(tmp_path / "o.nii.gz"), "--dose", "0"], ("--dose", "(0, 1]")),
        (["simulate", str(fd), str(tmp_path / "o.nii.gz"), "--dose", "2"], ("--dose",)),
        (["simulate", str(fd), str(fd)], ("must not be the input",)),
        (["simulate", str(tmp_path / "missing.nii.gz"), str(tmp_path / "o.nii.gz")],
         ("missing.nii.gz",)),
        (["simulate", str(fd), str(tmp_path / "o.nii.gz"), "--method", "magic"],
         ("unknown simulator",)),
        (["simulate", str(fd), str(tmp_path / "o.nii.gz"), "--method", "image-poisson",
          "--calibration", str(tmp_path / "c.json")], ("--calibration",)),
        (["simulate", str(fd), str(tmp_path / "o.nii.gz"), "--calibration",
          str(tmp_path / "nope.json")], ("nope.json",)),
        (["simulate", str(fd), str(tmp_path / "o.nii.gz"), "--method", "image-poisson",
          "--relative-dose"], ("--relative-dose",)),
    ):
        rc, _, err = run(argv, capsys)
        assert_one_error_line(rc, err, *needles)
    nan = tmp_path / "nan.nii.gz"
    bad = body()[None].copy()
    bad[0, 3, 3] = np.nan
    write_nifti(nan, bad)
    rc, _, err = run(["simulate", str(nan), str(tmp_path / "o2.nii.gz")], capsys)
    assert_one_error_line(rc, err, "NaN")


def test_padding_below_air_is_read_as_air(tmp_path, capsys):
    padded = body()[None].copy()
    padded[0, :4] = -3024  # DICOM padding outside the reconstruction circle
    fd = tmp_path / "padded.nii.gz"
    write_nifti(fd, padded)
    rc, _, err = run(["simulate", str(fd), str(tmp_path / "o.nii.gz")], capsys)
    assert rc == 0, err
    assert read_ct(tmp_path / "o.nii.gz").hu.min() >= -1024


def test_calibrate_then_simulate_with_the_file(tmp_path, capsys):
    from tests.physics.test_calibration import TRUE, make_pairs

    pairs = make_pairs(tmp_path / "pairs", n_pairs=2, size=96)
    out = tmp_path / "cal.json"
    rc, stdout, err = run(["calibrate", str(pairs), "--out", str(out), "--pixel-size", "2",
                           "--roi", "16"], capsys)
    assert rc == 0, err
    cal = json.loads(out.read_text())
    assert cal["i0"] == pytest.approx(TRUE.i0, rel=0.2)
    assert "pooled: std ratio" in stdout
    fd = tmp_path / "fd.nii.gz"
    write_nifti(fd, body()[None], spacing=(3.0, 2.0, 2.0))
    rc, _, err = run(["simulate", str(fd), str(tmp_path / "ld.nii.gz"), "--calibration",
                      str(out)], capsys)
    assert rc == 0, err
    rc, _, err = run(["calibrate", str(tmp_path / "fd.nii.gz")], capsys)
    assert_one_error_line(rc, err, "fd.nii.gz")


def test_projection_on_a_reformat_warns_once(tmp_path):
    """The projection physics makes axial noise: handed a coronal series it says so, once;
    an axial series and the image-domain method get no such warning."""
    import warnings

    from lowdose.cli.main import main
    from tests.io.test_dicom import make_series

    vol = np.round(np.stack([body(32)] * 3) + 0.0)
    coronal = make_series(tmp_path / "cor", vol, iop=(1, 0, 0, 0, 0, -1), series_uid="1.2.3.8")
    axial = make_series(tmp_path / "ax", vol, series_uid="1.2.3.9")
    with pytest.warns(UserWarning, match="these slices are coronal") as caught:
        assert main(["simulate", str(coronal), str(tmp_path / "c"), "--doses", "0.5,0.25"]) == 0
    assert sum("these slices are" in str(w.message) for w in caught) == 1
    for argv in ([str(axial), str(tmp_path / "a"), "--dose", "0.5"],
                 [str(coronal), str(tmp_path / "i"), "--dose", "0.5", "--method",
                  "image-poisson"]):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["simulate", *argv]) == 0
        assert not any("these slices are" in str(w.message) for w in seen)


@pytest.mark.parametrize("method", ["projection", "image-poisson"])
def test_values_that_are_not_hu_are_refused_naming_the_file_and_their_range(tmp_path, capsys,
                                                                             method) -> None:
    """Stored values read as HU (an unsigned/signed mix-up: 0..65535) are one error naming the
    input file and the range as read, not the range after flooring at -1024 HU."""
    hu = np.full((32, 32), 40000.0, np.float32)
    hu[:4] = -40000.0
    hu[4:8] = 65535.0
    src = write_ct(CTImage(hu, spacing=(0.7, 0.7)), tmp_path / "raw.nii.gz")
    rc, _, err = run(["simulate", str(src), str(tmp_path / "o.nii.gz"), "--method", method],
                     capsys)
    assert_one_error_line(rc, err, "raw.nii.gz: values -40000.0..65535.0 are outside the "
                          "physical HU range")


@pytest.mark.parametrize(("args", "said"), [
    (["simulate", "{npy}", "{tmp}/x.npy", "--pixel-size", "0"], "--pixel-size"),
    (["calibrate", "{tmp}", "--roi", "0"], "--roi"),
    (["calibrate", "{tmp}", "--pixel-size", "-1"], "--pixel-size"),
])
def test_impossible_sizes_are_one_usage_line(tmp_path, capsys, args, said) -> None:
    """They were a ZeroDivisionError, an IndexError or an FFT's ValueError, some after a fit."""
    import numpy as np

    npy = tmp_path / "fd.npy"
    np.save(npy, np.full((32, 32), 40.0, np.float32))
    rc, _, err = run([a.format(tmp=tmp_path, npy=npy) for a in args], capsys)
    assert rc == 2 and f"Invalid value for '{said}'" in err, err
    assert not any(name in err for name in ("ZeroDivision", "IndexError", "ValueError")), err


@pytest.mark.parametrize("command", [
    ["calibrate", "{tmp}/pairs", "--out", "{tmp}/fd.npy/c.json"],
    ["data", "audit", "{tmp}/pairs", "--json", "{tmp}/fd.npy/a.json"],
    ["compare", "{tmp}/fd.npy", "{tmp}/fd.npy/cmp", "-m", "tv"],
])
def test_an_output_under_a_file_is_refused_before_the_work(tmp_path, capsys, command) -> None:
    """They ran the fit, the audit or the comparison, then failed on a FileExistsError."""
    import numpy as np

    np.save(tmp_path / "fd.npy", np.full((32, 32), 40.0, np.float32))
    (tmp_path / "pairs").mkdir()
    rc, _, err = run([a.format(tmp=tmp_path) for a in command], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "is a file, not a folder" in lines[0], err
    assert "Error:" not in err and "FileExistsError" not in err

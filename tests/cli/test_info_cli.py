"""``lowdose info``: what a path holds on stdout; bad input is one ``error:`` line on stderr."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lowdose import LowdoseError
from lowdose.cli.main import main
from lowdose.io.read import each_series
from tests.cli.cli_helpers import assert_one_error_line, run
from tests.io.test_dicom import ct_slice, make_series, phantom_volume


def test_info_on_a_64_slice_series_folder(tmp_path, capsys):
    folder = make_series(tmp_path / "series", phantom_volume(64), reverse_files=True)
    (folder / "info").mkdir()
    (folder / "info" / "capture.png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    rc, out, err = run(["info", str(folder)], capsys)
    assert rc == 0 and err == ""
    assert "shape:       64 x 16 x 16 (slices x rows x cols)" in out
    assert "spacing:     2 x 0.8 x 0.7 mm" in out
    assert "kind:        folder: DICOM series (64 files read)" in out
    assert "series found: 1" in out and "1.2.826.0.1.3680043.8.498.2" in out
    assert "TEST SERIES" in out
    assert "skipped:     1 file(s)" in out and "info/capture.png: not DICOM (png file)" in out
    hu = phantom_volume(64)
    assert f"min {hu.min():.1f}" in out and f"max {hu.max():.1f}" in out
    assert f"mean {hu.mean():.1f}" in out


def test_info_on_single_files(tmp_path, capsys):
    ct_slice(tmp_path / "one.dcm", phantom_volume(1)[0])
    rc, out, _ = run(["info", str(tmp_path / "one.dcm")], capsys)
    assert rc == 0 and "kind:        DICOM file" in out and "shape:       16 x 16" in out
    Image.fromarray(np.full((6, 8), 255, np.uint8)).save(tmp_path / "a.png")
    rc, out, _ = run(["info", str(tmp_path / "a.png")], capsys)
    assert rc == 0 and "window:      lung [-1350, 150] HU" in out and "max 150.0" in out
    rc, out, _ = run(["info", str(tmp_path / "a.png"), "--window", "-160,240"], capsys)
    assert rc == 0 and "window:      abdomen [-160, 240] HU (given)" in out
    rc, out, _ = run(["info", str(tmp_path / "a.png"), "--window=bone"], capsys)
    assert rc == 0 and "max 1050.0" in out
    np.save(tmp_path / "m.npy", np.full((4, 4), 0.25))
    rc, out, _ = run(["info", str(tmp_path / "m.npy"), "--npy-scale", "mayo"], capsys)
    assert rc == 0 and "min 0.0" in out and "npy scale:   mayo" in out


def test_info_reads_the_noise_and_its_texture(tmp_path, capsys):
    from scipy import ndimage

    from lowdose.image import CTImage
    from lowdose.io import write_ct

    rng = np.random.default_rng(0)
    white = CTImage(40 + 20 * rng.standard_normal((2, 128, 128)), spacing=(2.0, 0.7, 0.7))
    smooth_noise = ndimage.gaussian_filter(rng.standard_normal((128, 128)), 1.5)
    smooth = CTImage(40 + 20 * smooth_noise / smooth_noise.std(), spacing=(0.7, 0.7))
    rc, out, _ = run(["info", str(write_ct(white, tmp_path / "w.nii.gz"))], capsys)
    line = next(x for x in out.splitlines() if x.startswith("noise:"))
    reading = float(line.split()[1])
    assert rc == 0 and abs(reading - 20.0) < 0.5 and "(middle slice)" in line
    assert "texture 0.5" in line  # white noise: binning halves it
    white, correlated = (float(line.split(f"{part} ")[1].split()[0])
                         for part in ("): white", "correlated"))
    assert abs(white - reading) < 0.1 and correlated < 0.1 * reading  # all of it white
    rc, out, _ = run(["info", str(write_ct(smooth, tmp_path / "s.nii.gz"))], capsys)
    texture = float(out.split("texture ")[1].split()[0])
    assert rc == 0 and texture > 1.5  # correlated over a few pixels: coarser
    air = CTImage(np.full((64, 64), -1000.0), spacing=(0.7, 0.7))
    rc, out, _ = run(["info", str(write_ct(air, tmp_path / "a.nii.gz"))], capsys)
    assert "noise:       no reading: too little flat tissue" in out


def test_info_mixed_series_describes_each_and_series_picks_one(tmp_path, capsys, monkeypatch):
    from lowdose.io.formats import dicom

    make_series(tmp_path / "m" / "a", phantom_volume(3), series_uid="1.2.3.111")
    make_series(tmp_path / "m" / "b", phantom_volume(2) + 100, series_uid="1.2.3.222")
    (tmp_path / "m" / "notes.txt").write_text("not DICOM")
    scans = []
    real_scan = dicom.scan_folder
    monkeypatch.setattr(dicom, "scan_folder", lambda f: scans.append(f) or real_scan(f))
    for argv in (["info", str(tmp_path / "m")], ["info", str(tmp_path / "m"), "--series", "all"]):
        scans.clear()
        rc, out, err = run(argv, capsys)
        assert rc == 0 and err == ""
        assert len(scans) == 1  # the headers are read once
        assert "series found: 2" in out and "1.2.3.222" in out
        names = [name for name, _ in each_series(tmp_path / "m")]  # where --series all writes
        assert f"--series all (denoise, upscale, simulate) writes them to: {names[0]}/, " \
            f"{names[1]}/" in out
        # each series described in turn, largest first, with its own HU and shape
        blocks = out.split("\n\nseries ")[1:]
        assert [b.split("\n", 1)[0] for b in blocks] == [f"1 of 2 ({names[0]}/):",
                                                          f"2 of 2 ({names[1]}/):"]
        assert "shape:       3 x 16 x 16" in blocks[0] and "shape:       2 x 16 x 16" in blocks[1]
        assert f"max {phantom_volume(2).max() + 100:.1f}" in blocks[1]
        # the scan's skipped file is listed; the other series' files are not "skipped"
        assert all("skipped:     1 file(s)" in b and "notes.txt" in b for b in blocks)
        assert "other series" not in out
    scans.clear()
    rc, out, err = run(["info", str(tmp_path / "m"), "--series", "1.2.3.222"], capsys)
    assert rc == 0 and "shape:       2 x 16 x 16" in out
    assert len(scans) == 1
    assert "other series 1.2.3.111" in out
    rc, out, err = run(["info", str(tmp_path / "m"), "--series", "1.2.3"], capsys)
    assert_one_error_line(rc, err, "1.2.3.111", "1.2.3.222")
    one_file = next((tmp_path / "m" / "b").iterdir())
    rc, out, err = run(["info", str(one_file), "--series", "all"], capsys)
    assert rc == 0 and "kind:        DICOM file" in out and "shape:       16 x 16" in out


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "missing", "no such file or folder"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty folder"),
        (
            lambda d: (d / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 50) and d / "x.dcm",
            "corrupt or truncated DICOM",
        ),
        (lambda d: np.save(d / "n.npy", np.full((3, 3), np.nan)) or d / "n.npy", "NaN"),
        (lambda d: ct_slice(d / "np.dcm", phantom_volume(1)[0], pixels=False), "without pixel"),
    ],
    ids=["missing", "empty-folder", "corrupt-dicom", "nan", "no-pixels"],
)
def test_info_bad_input_is_one_error_line(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    rc, _, err = run(["info", str(path)], capsys)
    assert_one_error_line(rc, err, str(path.name), needle)


def test_info_bad_window_and_debug_traceback(tmp_path, capsys):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    rc, _, err = run(["info", str(tmp_path / "a.png"), "--window", "wide"], capsys)
    assert_one_error_line(rc, err, "--window 'wide'")
    with pytest.raises(LowdoseError, match="no such file"):
        main(["--debug", "info", str(tmp_path / "missing.dcm")])


def test_console_script_end_to_end(tmp_path):
    folder = make_series(tmp_path / "s", phantom_volume(3))
    script = [
        sys.executable,
        "-c",
        "import sys; from lowdose.cli.main import main; sys.exit(main())",
    ]
    ok = subprocess.run([*script, "info", str(folder)], capture_output=True, text=True)
    assert ok.returncode == 0 and "shape:       3 x 16 x 16" in ok.stdout
    bad = subprocess.run([*script, "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert_one_error_line(bad.returncode, bad.stderr, "nope: no such file or folder")


@pytest.mark.integration
def test_info_on_the_itkelastix_series(shared_data, capsys):
    rc, out, err = run(["info", str(shared_data / "ct-series-itkelastix-chest")], capsys)
    assert rc == 0 and err == ""
    assert "shape:       72 x 512 x 512" in out and "spacing:     2 x 0.9766 x 0.9766" in out
    assert "min -1024.0" in out and "max 1317.0" in out


def test_info_on_a_nifti_volume_names_its_orientation(tmp_path, capsys):
    """As it does for DICOM: the plane the NIfTI affine gives."""
    from lowdose.image import CTImage
    from lowdose.io import write_ct

    hu = np.full((3, 16, 16), 40.0, np.float32)
    coronal = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    for name, direction, plane in (("ax", np.eye(3), "axial"), ("cor", coronal, "coronal")):
        path = write_ct(CTImage(hu, spacing=(2.0, 0.7, 0.7), origin=(0.0, 0.0, 0.0),
                                direction=direction), tmp_path / f"{name}.nii.gz")
        rc, out, err = run(["info", str(path)], capsys)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines.count(f"orientation: {plane}") == 1, out
        assert lines.index(f"orientation: {plane}") == 1 + next(
            i for i, line in enumerate(lines) if line.startswith("origin:"))
    np.save(tmp_path / "m.npy", hu[0])  # no direction stored: no orientation claimed
    rc, out, _ = run(["info", str(tmp_path / "m.npy"), "--npy-scale", "hu"], capsys)
    assert rc == 0 and "orientation:" not in out



def test_info_says_the_pixel_size_simulate_takes_for_an_npy(tmp_path, capsys) -> None:
    """info said '1 x 1 mm (unknown)' where simulate took 0.742 mm: two sizes, one unexplained."""
    import numpy as np

    from lowdose.cli.main import main

    np.save(tmp_path / "x.npy", np.full((512, 512), 40.0, np.float32))
    assert main(["info", str(tmp_path / "x.npy")]) == 0
    assert "simulate takes the larger side as 380 mm, 0.742 mm pixels, unless given " \
           "--pixel-size" in capsys.readouterr().out

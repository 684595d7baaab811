"""``--series`` on every command that reads a CT input: a folder holding two DICOM series fails
with one error line that names the option to use, and the option picks the series;
``--series all`` (denoise, upscale, simulate) writes each series into a subfolder of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowdose.image import CTImage
from lowdose.io import read_ct, write_ct
from tests.cli.cli_helpers import assert_one_error_line, run


def _series(tmp_path: Path, name: str, n: int, level: float) -> Path:
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[:32, :32]
    body = ((yy - 16) ** 2 + (xx - 16) ** 2) < 12**2
    hu = np.where(body, level, -1000.0)[None].repeat(n, 0) + rng.normal(0, 30, (n, 32, 32))
    image = CTImage(hu.astype(np.float32), spacing=(2.0, 0.8, 0.8), origin=(0.0, 0.0, 0.0),
                    direction=np.eye(3))
    return write_ct(image, tmp_path / name)


def _uid(folder: Path) -> str:
    return read_ct(folder).metadata["series_uid"]


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, str, str]:
    """One flat folder holding a 3-slice series (40 HU body) and a 2-slice series (300 HU);
    their UIDs."""
    three, two = _series(tmp_path, "three", 3, 40.0), _series(tmp_path, "two", 2, 300.0)
    uid3, uid2 = _uid(three), _uid(two)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for source in (three, two):
        for f in source.iterdir():
            f.rename(folder / f"{source.name}-{f.name}")
    return folder, uid3, uid2


@pytest.mark.parametrize("command", [
    ["denoise", "--model", "tv"],
    ["upscale", "--scale", "2"],
    ["simulate", "--dose", "0.5", "--method", "image-poisson"],
])
def test_series_picks_one_of_two_in_a_folder(mixed, tmp_path: Path, capsys, command) -> None:
    folder, uid3, uid2 = mixed
    name, *options = command
    out = tmp_path / "out"
    rc, _, err = run([name, str(folder), str(out), *options], capsys)
    assert_one_error_line(rc, err, "2 DICOM series", "--series UID", uid3, uid2)
    assert not out.exists()
    rc, _, err = run([name, str(folder), str(out), *options, "--series", uid2], capsys)
    assert rc == 0, err
    written = read_ct(out)
    assert written.shape[0] == 2  # the 2-slice series, not the 3-slice one
    rc, _, err = run([name, str(folder), str(tmp_path / "out3"), *options,
                      "--series", uid3[-6:]], capsys)  # a unique part of the UID does too
    assert rc == 0, err
    assert read_ct(tmp_path / "out3").shape[0] == 3


def test_series_refuses_a_uid_the_folder_lacks(mixed, tmp_path: Path, capsys) -> None:
    folder, uid3, _ = mixed
    rc, _, err = run(["denoise", str(folder), str(tmp_path / "o"), "--model", "tv",
                      "--series", "9.9.9.9"], capsys)
    assert_one_error_line(rc, err, "'9.9.9.9' is not here", uid3)


def test_simulate_series_reads_a_folder_with_subfolders_as_one_series_folder(
    mixed, tmp_path: Path, capsys
) -> None:
    folder, _, uid2 = mixed
    (folder / "info").mkdir()  # a subfolder makes it a dataset tree unless a series is named
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "info" / "capture.png")
    with pytest.warns(UserWarning, match="skipped info/capture.png"):
        rc, _, err = run(["simulate", str(folder), str(tmp_path / "o"), "--series", uid2],
                         capsys)
    assert rc == 0, err
    assert read_ct(tmp_path / "o").shape == (2, 32, 32)
    pngs = tmp_path / "pngs" / "class"
    pngs.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pngs / "a.png")
    rc, _, err = run(["simulate", str(tmp_path / "pngs"), str(tmp_path / "p"),
                      "--series", uid2], capsys)
    assert_one_error_line(rc, err, "no DICOM series")


def test_score_reference_series_and_image_series(mixed, tmp_path: Path, capsys) -> None:
    folder, uid3, _ = mixed
    restored = _series(tmp_path, "restored", 3, 45.0)  # one series: read as it is
    rc, _, err = run(["score", str(folder), str(restored)], capsys)
    assert_one_error_line(rc, err, "--reference-series UID", uid3)
    scores = tmp_path / "s.json"
    rc, _, err = run(["score", str(folder), str(restored), str(folder),
                      "--reference-series", uid3, "--series", uid3, "--json", str(scores)],
                     capsys)
    assert rc == 0, err
    entries = json.loads(scores.read_text())["scores"]
    # the mixed folder as an image read its 3-slice series: identical to the reference
    assert entries[str(folder)]["psnr_full"] is None and entries[str(folder)]["rmse_hu"] == 0
    assert 0 < entries[str(restored)]["rmse_hu"] < 30


def test_from_the_shell_a_warning_is_one_line(mixed, tmp_path: Path) -> None:
    folder, _, uid2 = mixed
    (folder / "info").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "info" / "capture.png")
    script = [sys.executable, "-c",
              "import sys; from lowdose.cli.main import main; sys.exit(main())"]
    done = subprocess.run([*script, "denoise", str(folder), str(tmp_path / "o"), "--model", "tv",
                           "--series", uid2], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.replace("\r", "\n").splitlines()
             if line.strip() and "%|" not in line]
    assert lines == [f"warning: {folder}: skipped info/capture.png (not DICOM (png file))"]


@pytest.mark.parametrize("command", [
    ["denoise", "--model", "tv"],
    ["upscale", "--scale", "2"],
    ["simulate", "--dose", "0.5", "--method", "image-poisson"],
    ["simulate", "--doses", "0.5,0.25", "--method", "image-poisson"],
])
def test_series_all_writes_each_series_into_its_own_subfolder(
    mixed, tmp_path: Path, capsys, command
) -> None:
    from lowdose.io.read import each_series

    folder, _, _ = mixed
    (folder / "info").mkdir()  # a viewer's capture beside the series: warned of once
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "info" / "capture.png")
    names = [name for name, _ in each_series(folder)]
    assert len(set(names)) == 2
    name, *options = command
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="skipped info/capture.png") as caught:
        rc, _, err = run([name, str(folder), str(out), *options, "--series", "all"], capsys)
    assert rc == 0, err
    assert len(caught) == 1
    roots = [out / "dose-0.5", out / "dose-0.25"] if "--doses" in options else [out]
    for root in roots:
        assert sorted(p.name for p in root.iterdir()) == sorted(names)
        three, two = (read_ct(root / n) for n in names)  # largest series first
        assert (three.shape[0], two.shape[0]) == (3, 2)
        c, k = three.shape[-1] // 2, three.shape[-1] // 8
        body = (slice(None), slice(c - k, c + k), slice(c - k, c + k))
        # each subfolder holds its own series: the 40 HU and the 300 HU body (image-poisson
        # noise moves the mean of these 128-192 pixels by up to about 10 HU)
        assert abs(float(three.slices()[body].mean()) - 40) < 50
        assert abs(float(two.slices()[body].mean()) - 300) < 50


def test_series_all_refuses_a_file_and_commands_that_read_one_series(
    mixed, tmp_path: Path, capsys
) -> None:
    folder, uid3, _ = mixed
    one = next(folder.iterdir())
    rc, _, err = run(["denoise", str(one), str(tmp_path / "o"), "--model", "tv",
                      "--series", "all"], capsys)
    assert_one_error_line(rc, err, "--series all reads a folder of DICOM series, not a file")
    rc, _, err = run(["score", str(folder), str(folder), "--reference-series", uid3,
                      "--series", "all"], capsys)
    assert_one_error_line(rc, err, "--series all is for the commands that write each series "
                          "apart")
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run(["simulate", str(empty), str(tmp_path / "s"), "--series", "all"], capsys)
    assert_one_error_line(rc, err, "empty folder")


def test_series_all_warnings_name_their_series(tmp_path: Path) -> None:
    """Two series in one folder, one with a missing slice: the gap warning used to name only
    the folder both share, so `--series all` did not say which series had the gap."""
    import warnings

    from lowdose.io.read import each_series

    gappy, whole = _series(tmp_path, "gappy", 5, 40.0), _series(tmp_path, "whole", 3, 300.0)
    sorted(gappy.iterdir())[2].unlink()
    folder = tmp_path / "exam"
    folder.mkdir()
    for source in (gappy, whole):
        for f in source.iterdir():
            f.rename(folder / f"{source.name}-{f.name}")
    (folder / "README.txt").write_text("notes")  # the folder's, no series': said unprefixed
    said = {}
    for name, read in each_series(folder):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read()
        said[name] = [str(w.message) for w in caught]
    skipped = [m for name in said for m in said[name] if "README.txt" in m]
    assert len(skipped) == 1 and skipped[0].startswith(f"{folder}: skipped"), said
    said = {name: [m for m in said[name] if m not in skipped] for name in said}
    gappy_name = next(name for name in said if said[name])
    assert all(m.startswith(f"series {gappy_name}: ") for m in said[gappy_name])
    assert any("gap" in m or "spac" in m for m in said[gappy_name]), said
    assert [said[name] for name in said if name != gappy_name] == [[]]


def test_series_on_a_single_file_must_name_its_series(tmp_path: Path, capsys) -> None:
    """A DICOM file of another series was refused, but on a NIfTI --series was ignored."""
    three = _series(tmp_path, "three", 3, 40.0)
    one = sorted(three.iterdir())[0]
    uid = _uid(three)
    rc, _, err = run(["denoise", str(one), str(tmp_path / "o.dcm"), "-m", "tv", "--series",
                      "9.9.9"], capsys)
    assert_one_error_line(rc, err, f"belongs to series {uid}, not 9.9.9")
    rc, _, err = run(["denoise", str(one), str(tmp_path / "o2.nii.gz"), "-m", "tv",
                      "--series", uid[-6:]], capsys)  # a unique part, as for a folder
    assert rc == 0, err
    nii = write_ct(read_ct(three), tmp_path / "v.nii.gz")
    rc, _, err = run(["info", str(nii), "--series", "1.2"], capsys)
    assert_one_error_line(rc, err, "picks a DICOM series of a folder; this is a nifti file")

"""denoise, upscale and simulate: outputs never inside an input folder, checked before the
work, trees that go on past a bad file, ``--doses`` folders, older files warned about, and
progress in slices (the robustness QA's items 2, 3, 4, 6, 7 and 10)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowdose.image import CTImage
from lowdose.io import read_ct, write_ct
from tests.cli.cli_helpers import assert_one_error_line, run


def _volume(n: int = 3, size: int = 32) -> CTImage:
    rng = np.random.default_rng(0)
    hu = rng.normal(40.0, 30.0, (n, size, size)).astype(np.float32)
    return CTImage(hu, spacing=(2.0, 0.8, 0.8), origin=(0.0, 0.0, 0.0), direction=np.eye(3))


def _png_tree(root: Path, bad: str | None = None) -> Path:
    """``root/{adenocarcinoma/b,c, normal/a}.png``, and an empty ``bad`` file (half copied)."""
    grey = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    for rel in ("adenocarcinoma/b.png", "adenocarcinoma/c.png", "normal/a.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey, "L").save(root / rel)
    if bad:
        (root / bad).write_bytes(b"")
    return root


# --- item 2: never inside an input folder --------------------------------------------------


@pytest.mark.parametrize("command", ["denoise", "upscale"])
def test_output_inside_an_image_tree_is_refused(tmp_path, capsys, command):
    tree = _png_tree(tmp_path / "t")
    argv = [command, str(tree), str(tree / "restored")]
    rc, _, err = run(argv + (["-m", "tv"] if command == "denoise" else []), capsys)
    assert_one_error_line(rc, err, "inside the input folder")
    assert not (tree / "restored").exists()


def test_output_beside_a_dicom_file_of_its_series_is_refused(tmp_path, capsys):
    series = write_ct(_volume(), tmp_path / "s")
    one = sorted(series.iterdir())[0]
    for out in (series / "new.dcm", series / "restoredX"):
        rc, _, err = run(["denoise", str(one), str(out), "-m", "tv"], capsys)
        assert_one_error_line(rc, err, "folder of the input's DICOM series")
        assert not out.exists()
    rc, _, err = run(["simulate", str(one), str(series / "low.dcm"), "--method",
                      "image-poisson"], capsys)
    assert_one_error_line(rc, err, "folder of the input's DICOM series")
    # a lone DICOM file: its folder holds no series to mix with
    alone = tmp_path / "alone"
    alone.mkdir()
    os.link(one, alone / "x.dcm")
    rc, _, err = run(["denoise", str(alone / "x.dcm"), str(alone / "y.dcm"), "-m", "tv"], capsys)
    assert rc == 0, err


def test_output_in_the_folder_symlinks_lead_to_is_refused(tmp_path, capsys):
    series = write_ct(_volume(), tmp_path / "s")
    links = tmp_path / "sl" / "files"
    links.mkdir(parents=True)
    for f in sorted(series.iterdir()):
        (links / f.name).symlink_to(f.resolve())
    rc, _, err = run(["denoise", str(links), str(series / "y"), "-m", "tv"], capsys)
    assert_one_error_line(rc, err, f"inside a folder the input's symlinks lead to, "
                                   f"{series.resolve()}")
    assert not (series / "y").exists()


# --- item 6: the output checked before the work ----------------------------------------------


def test_a_folder_that_cannot_be_written_is_one_error_before_the_work(tmp_path, capsys,
                                                                      monkeypatch):
    import lowdose.io.atomic as atomic
    from lowdose.models.base import Denoiser

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(atomic.os, "access",
                        lambda p, mode: False if Path(p) == ro else real(p, mode))
    ran = []
    monkeypatch.setattr(Denoiser, "denoise_image", lambda self, *a, **k: ran.append(1))
    src = write_ct(_volume(), tmp_path / "ct.nii.gz")
    for out in (ro / "x", ro / "x.nii.gz"):
        rc, _, err = run(["denoise", str(src), str(out), "-m", "tv"], capsys)
        assert_one_error_line(rc, err, f"{ro}: folder not writable")
        assert ".partial" not in err and not ran


def test_long_names_fit_their_temporary_names_and_too_long_ones_fail_first(tmp_path, capsys):
    src = write_ct(_volume(), tmp_path / "ct.nii.gz")
    longest = tmp_path / ("a" * 248 + ".nii.gz")  # 255 bytes: the limit itself
    rc, _, err = run(["denoise", str(src), str(longest), "-m", "tv"], capsys)
    assert rc == 0, err
    assert read_ct(longest).shape == (3, 32, 32)
    folder = tmp_path / ("b" * 250)
    rc, _, err = run(["denoise", str(src), str(folder), "--model", "tv"], capsys)
    assert rc == 0 and len(list(folder.iterdir())) == 3, err
    rc, _, err = run(["simulate", str(src), str(tmp_path / ("e" * 248 + ".nii.gz")), "--method",
                      "image-poisson"], capsys)
    assert rc == 0, err
    for name in ("c" * 250 + ".nii.gz", "d" * 256):
        rc, _, err = run(["denoise", str(src), str(tmp_path / name), "-m", "tv"], capsys)
        assert_one_error_line(rc, err, "bytes): name too long for its file system")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_existing_folder_of_other_files_is_refused_before_the_work(tmp_path, capsys,
                                                                      monkeypatch):
    from lowdose.models.base import Denoiser

    series = write_ct(_volume(), tmp_path / "s")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("hi")
    ran = []
    monkeypatch.setattr(Denoiser, "denoise_image", lambda self, *a, **k: ran.append(1))
    rc, _, err = run(["denoise", str(series), str(user), "-m", "tv"], capsys)
    assert_one_error_line(rc, err, "holds other files (notes.txt)")
    assert not ran


def test_a_ds_store_in_an_earlier_output_does_not_block_a_rerun(tmp_path, capsys):
    series = write_ct(_volume(), tmp_path / "s")
    out = tmp_path / "o5"
    assert run(["denoise", str(series), str(out), "-m", "tv"], capsys)[0] == 0
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    rc, _, err = run(["denoise", str(series), str(out), "-m", "tv"], capsys)
    assert rc == 0, err
    assert read_ct(out).shape == (3, 32, 32)


# --- item 3: a bad file in a tree ---------------------------------------------------------------


def _run_warned(args: list[str], capsys) -> tuple[int, str, str]:
    """``(exit code, stderr, stderr and every warning)``: a warning reaches stderr only from
    the shell; under pytest's own warning capture, or once its place warned before, it does
    not."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, _, err = run(args, capsys)
    return rc, err, err + "\n".join(str(w.message) for w in caught)


@pytest.mark.parametrize("command", ["denoise", "simulate"])
def test_a_bad_file_in_a_tree_is_skipped_and_counted(tmp_path, capsys, command):
    tree = _png_tree(tmp_path / "t", bad="adenocarcinoma/b0.png")
    out = tmp_path / "o"
    extra = ["-m", "tv"] if command == "denoise" else ["--method", "image-poisson"]
    rc, err, said = _run_warned([command, str(tree), str(out), *extra], capsys)
    assert rc == 2
    # the warning (a 'warning: ' line from the shell), then one error line
    assert f"skipped {tree / 'adenocarcinoma' / 'b0.png'}: empty file" in said, said
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert lines[-1].startswith("error: 1 of 4 inputs failed (first: "), err
    assert "b0.png: empty file" in lines[-1] and f"other 3 were written under {out}" in lines[-1]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["adenocarcinoma/b.png", "adenocarcinoma/c.png", "normal/a.png"]


# --- item 4: --doses of one dose --------------------------------------------------------------


def test_doses_with_one_dose_writes_its_dose_folder_in_the_inputs_format(tmp_path, capsys):
    src = write_ct(_volume(), tmp_path / "vol.nii.gz")
    rc, out, err = run(["simulate", str(src), str(tmp_path / "sv1"), "--doses", "0.1",
                        "--method", "image-poisson"], capsys)
    assert rc == 0, err
    assert out.strip() == f"wrote {tmp_path / 'sv1' / 'dose-0.1' / 'vol.nii.gz'}"
    # --dose (not --doses) of one dose still names the output itself
    rc, out, err = run(["simulate", str(src), str(tmp_path / "ld.nii.gz"), "--dose", "0.1",
                        "--method", "image-poisson"], capsys)
    assert rc == 0 and out.strip() == f"wrote {tmp_path / 'ld.nii.gz'}", err


# --- item 7: older files in an existing output tree -----------------------------------------


@pytest.mark.parametrize("command", ["denoise", "simulate"])
def test_older_files_in_an_output_tree_are_warned_about(tmp_path, capsys, command):
    tree = _png_tree(tmp_path / "t")
    out = tmp_path / "o"
    (out / "squamous").mkdir(parents=True)
    (out / "squamous" / "z.png").write_bytes(b"old")
    (out / ".DS_Store").write_bytes(b"")
    extra = ["-m", "tv"] if command == "denoise" else ["--method", "image-poisson"]
    rc, err, said = _run_warned([command, str(tree), str(out), *extra], capsys)
    assert rc == 0, err
    assert f"{out}: 1 older file(s) this run does not write stay there (e.g. " \
           "squamous/z.png)" in said, said
    assert (out / "squamous" / "z.png").read_bytes() == b"old"  # kept, never deleted


# --- item 10: progress in slices --------------------------------------------------------------


def test_simulate_of_a_series_counts_slices(tmp_path, capsys):
    series = write_ct(_volume(n=3), tmp_path / "s")
    rc, _, err = run(["simulate", str(series), str(tmp_path / "low"), "--method",
                      "image-poisson"], capsys)
    assert rc == 0, err
    assert "3/3" in err and "slice" in err, err


def test_other_dose_folders_of_an_earlier_run_are_no_strays(tmp_path, capsys):
    tree = _png_tree(tmp_path / "t")
    out = tmp_path / "sd"
    for doses in ("0.5,0.25", "0.1"):
        rc, _, err = run(["simulate", str(tree), str(out), "--doses", doses, "--method",
                          "image-poisson"], capsys)
        assert rc == 0 and "older file" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["dose-0.1", "dose-0.25", "dose-0.5"]


def test_an_interrupt_in_a_tree_still_exits_130(tmp_path, capsys, monkeypatch):
    from lowdose.models.base import Denoiser

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Denoiser, "denoise_image", stop)
    rc, _, err = run(["denoise", str(_png_tree(tmp_path / "t")), str(tmp_path / "o"), "-m",
                      "tv"], capsys)
    assert rc == 130 and "skipped" not in err, err


@pytest.mark.parametrize("command", ["denoise", "simulate"])
def test_files_of_an_image_tree_that_are_not_images_are_named(tmp_path, capsys, command):
    """A README.txt or Thumbs.db beside the images was left out silently, unlike in a DICOM
    folder, whose skipped files are said."""
    tree = _png_tree(tmp_path / "t")
    (tree / "README.txt").write_text("notes")
    (tree / "normal" / "Thumbs.db").write_bytes(b"\0")
    (tree / ".DS_Store").write_bytes(b"\0")
    extra = ["-m", "tv"] if command == "denoise" else ["--method", "image-poisson"]
    rc, err, said = _run_warned([command, str(tree), str(tmp_path / "o"), *extra], capsys)
    assert rc == 0, err
    assert f"{tree}: skipped 2 file(s) that are not images (README.txt, normal/Thumbs.db)" \
        in said, said


def test_outputs_beside_linked_images_or_a_dicom_file_are_taken(tmp_path, capsys):
    """A symlinked PNG blocked every output under its folder, and a NIfTI written beside a
    DICOM file was refused as if it joined the series: neither is read with the input."""
    home = tmp_path / "home"
    (home / "work" / "sel").mkdir(parents=True)
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(home / "scan.png")
    (home / "work" / "sel" / "scan.png").symlink_to(home / "scan.png")
    rc, _, err = run(["denoise", str(home / "work" / "sel"), str(home / "work" / "sel-out"),
                      "-m", "tv"], capsys)
    assert rc == 0, err
    series = write_ct(_volume(), tmp_path / "s")
    one = sorted(series.iterdir())[0]
    rc, _, err = run(["denoise", str(one), str(series / "one.nii.gz"), "-m", "tv"], capsys)
    assert rc == 0 and (series / "one.nii.gz").is_file(), err


def test_doses_into_a_file_name_is_refused(tmp_path, capsys):
    """`--doses 0.25` into sq.nii.gz made a folder named sq.nii.gz holding dose-0.25/."""
    src = write_ct(_volume(), tmp_path / "vol.nii.gz")
    rc, _, err = run(["simulate", str(src), str(tmp_path / "sq.nii.gz"), "--doses", "0.25",
                      "--method", "image-poisson"], capsys)
    assert_one_error_line(rc, err, "--doses writes a folder per dose")
    assert not (tmp_path / "sq.nii.gz").exists()


def test_a_tree_of_images_has_one_bar_over_its_images(tmp_path, capsys):
    """Each image drew a bar of its own slices (0/1 .. 1/1, a thousand times over a dataset)
    and none counted the images."""
    tree = _png_tree(tmp_path / "t")
    rc, _, err = run(["denoise", str(tree), str(tmp_path / "o"), "-m", "tv"], capsys)
    assert rc == 0, err
    assert "3/3" in err and "image/s" in err and "slice/s" not in err, err

"""Atomic writes: the temporary names of a killed write are removed by the next write of the
same output (and only those), and the temporary names fit the file system."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lowdose.errors import LowdoseError
from lowdose.image import CTImage
from lowdose.io import write_ct
from lowdose.io.atomic import atomic_write_text
from lowdose.io.read import check_writable


def _volume() -> CTImage:
    hu = np.random.default_rng(0).normal(0, 30, (2, 16, 16)).astype(np.float32)
    return CTImage(hu, spacing=(2.0, 0.8, 0.8))


def test_a_write_removes_the_stale_temporary_files_of_its_own_target(tmp_path):
    stale = tmp_path / ".ct.nii.ab12cd_9.partial.nii.gz"  # a SIGKILLed write of ct.nii.gz
    stale.write_bytes(b"half")
    others = [tmp_path / ".ct2.nii.ab12cd_9.partial.nii.gz",  # another output's
              tmp_path / ".ct.nii.keep.partial.nii.gz",  # not tempfile's 8 characters
              tmp_path / "ct.nii.ab12cd_9.partial.nii.gz"]  # not hidden: the user's
    for path in others:
        path.write_bytes(b"x")
    write_ct(_volume(), tmp_path / "ct.nii.gz")
    assert not stale.exists()
    assert all(path.exists() for path in others)


def test_a_series_write_removes_its_stale_temporary_folders(tmp_path):
    stale = tmp_path / ".ser.partial-ojhc5wm2"
    stale.mkdir()
    (stale / "slice0001.dcm").write_bytes(b"x" * 10)
    old = tmp_path / ".ser.old-abcdefgh"
    (old / "series").mkdir(parents=True)
    kept = tmp_path / ".ser2.partial-ojhc5wm2"
    kept.mkdir()
    write_ct(_volume(), tmp_path / "ser")
    assert not stale.exists() and not old.exists() and kept.exists()
    assert len(list((tmp_path / "ser").iterdir())) == 2


def test_temporary_names_fit_the_file_system_name_limit(tmp_path):
    from lowdose.io.atomic import temp_name_parts

    name = "a" * 248 + ".nii.gz"  # 255 bytes
    prefix, suffix = temp_name_parts(tmp_path / name)
    assert len(prefix) + 8 + len(suffix) <= 255 and suffix.endswith(".nii.gz")
    atomic_write_text(tmp_path / ("b" * 255), "ok")
    assert (tmp_path / ("b" * 255)).read_text() == "ok"


def test_check_refuses_a_folder_lowdose_would_not_replace_and_skips_hidden_files(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("hi")
    with pytest.raises(LowdoseError, match=r"holds other files \(notes.txt\)"):
        check_writable(_volume(), user)
    earlier = write_ct(_volume(), tmp_path / "earlier")
    (earlier / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    check_writable(_volume(), earlier)  # a lowdose series, a Mac's hidden file beside it
    write_ct(_volume(), earlier)
    assert sorted(p.name for p in earlier.iterdir()) == ["slice0001.dcm", "slice0002.dcm"]


def test_a_write_error_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    import nibabel as nib

    def full(img, name):
        raise OSError(28, "No space left on device", name)

    monkeypatch.setattr(nib, "save", full)
    with pytest.raises(LowdoseError) as info:
        write_ct(_volume(), tmp_path / "ct.nii.gz")
    assert str(info.value) == f"{tmp_path / 'ct.nii.gz'}: cannot write (No space left on device)"
    assert not list(tmp_path.iterdir())


def test_a_name_too_long_is_refused_by_check(tmp_path):
    from lowdose.io.atomic import check_output_place

    with pytest.raises(LowdoseError, match=r"\(257 bytes\): name too long for its file system"):
        check_output_place(tmp_path / ("c" * 250 + ".nii.gz"))
    with pytest.raises(LowdoseError, match="name too long for its file system"):
        check_output_place(tmp_path / ("d" * 256) / "ok.nii.gz")  # a folder to be made
    check_writable(_volume(), Path(tmp_path / "new" / "deeper" / "ok.nii.gz"))

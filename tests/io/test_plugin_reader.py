"""A reader plugin written from ``lowdose.io.base.Reader``: it reads its files, and neither it nor
a broken one stops the built-in formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowdose import CTImage, LowdoseError
from lowdose.io import read_ct
from lowdose.io.base import Reader, readers


class FakeCT(Reader):
    """As the base class's docstring says: ``suffixes`` and ``read``, no constructor."""

    suffixes = (".fakect",)

    def read(self, path: Path) -> CTImage:
        head, _, body = Path(path).read_bytes().partition(b"\n")
        meta = json.loads(head)
        hu = np.frombuffer(body, np.float32).reshape(meta["shape"]).copy()
        return CTImage(hu, spacing=tuple(meta["spacing"]), metadata={"format": "fakect"})


class Fussy(Reader):
    """A plugin whose constructor refuses the options read_ct gives."""

    suffixes = (".fussy",)

    def __init__(self) -> None:
        super().__init__()

    def read(self, path: Path) -> CTImage:
        raise AssertionError("never made")


@pytest.fixture
def plugin_readers(monkeypatch: pytest.MonkeyPatch):
    readers.names()  # the built-ins first, then the plugins into a copy
    monkeypatch.setattr(readers, "_entries", dict(readers._entries))
    readers.register("fakect")(FakeCT)
    readers.register("fussy")(Fussy)
    return readers


def _files(tmp_path: Path) -> tuple[Path, Path]:
    plain = tmp_path / "plain.npy"
    np.save(plain, np.full((20, 20), 40, np.float32))
    fake = tmp_path / "a.fakect"
    hu = np.full((3, 8, 10), 40, np.float32)
    fake.write_bytes(json.dumps({"shape": [3, 8, 10], "spacing": [2, 1, 1]}).encode() + b"\n"
                     + hu.tobytes())
    return plain, fake


def test_reader_from_the_base_class_reads_and_keeps_the_builtins(plugin_readers, tmp_path):
    plain, fake = _files(tmp_path)
    assert read_ct(plain).shape == (20, 20)
    image = read_ct(fake, npy_scale="hu")
    assert image.shape == (3, 8, 10) and image.metadata["format"] == "fakect"
    reader = FakeCT()
    assert reader.options.npy_scale is None and reader.can_read(Path("X.FAKECT"))


def test_a_reader_that_cannot_be_made_is_named_for_its_own_files_only(plugin_readers, tmp_path):
    plain, _ = _files(tmp_path)
    assert read_ct(plain).shape == (20, 20)
    fussy = tmp_path / "a.fussy"
    fussy.write_bytes(b"x")
    with pytest.raises(LowdoseError, match=r"a\.fussy: reader 'fussy' \(tests\.io\."
                       r"test_plugin_reader\.Fussy\) cannot be made: TypeError"):
        read_ct(fussy)
    other = tmp_path / "a.xyz"
    other.write_bytes(b"x")
    with pytest.raises(LowdoseError, match=r"unsupported file type.*8-bit PNG/JPEG, \.fakect$"):
        read_ct(other)

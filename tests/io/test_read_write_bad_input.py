"""Bad input: each case is one LowdoseError line naming the file and the reason, and the input
folder is left byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from lowdose import CTImage, LowdoseError
from lowdose.io import read_ct, write_ct
from tests.io.test_dicom import ct_slice, make_series, phantom_volume


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _dicom_bytes(tmp: Path) -> bytes:
    return ct_slice(tmp / "src.dcm", phantom_volume(1, size=32)[0]).read_bytes()


def missing(d: Path) -> Path:
    return d / "nope.dcm"


def empty_folder(d: Path) -> Path:
    (d / "empty").mkdir()
    return d / "empty"


def empty_file(d: Path) -> Path:
    (d / "zero.dcm").write_bytes(b"")
    return d / "zero.dcm"


def no_readable_image(d: Path) -> Path:
    (d / "notes").mkdir()
    (d / "notes" / "a.txt").write_text("hello")
    (d / "notes" / "b.csv").write_text("1,2")
    return d / "notes"


def unknown_file(d: Path) -> Path:
    (d / "a.txt").write_text("hello")
    return d / "a.txt"


def folder_of_pngs(d: Path) -> Path:
    (d / "pngs").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(d / "pngs" / f"{i}.png")
    return d / "pngs"


def truncated_dicom(d: Path) -> Path:
    (d / "cut.dcm").write_bytes(_dicom_bytes(d)[:-700])
    (d / "src.dcm").unlink()
    return d / "cut.dcm"


def truncated_dicom_header(d: Path) -> Path:
    (d / "cut.dcm").write_bytes(_dicom_bytes(d)[:200])
    (d / "src.dcm").unlink()
    return d / "cut.dcm"


def truncated_compressed_dicom(d: Path) -> Path:
    path = ct_slice(d / "rle.dcm", phantom_volume(1, size=32)[0], syntax=RLELossless)
    path.write_bytes(path.read_bytes()[:-60])
    return path


def undecodable_compressed_dicom(d: Path) -> Path:
    path = ct_slice(d / "rle.dcm", phantom_volume(1, size=32)[0], syntax=RLELossless)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\x07" + b"\x00" * 63 + b"not rle data"])  # 7 empty segments
    ds.save_as(path)
    return path


def corrupt_slice_in_series(d: Path) -> Path:
    folder = make_series(d / "series", phantom_volume(3))
    data = (folder / "IM002.dcm").read_bytes()
    (folder / "IM002.dcm").write_bytes(data[:-100])
    return folder


def dicom_without_pixels(d: Path) -> Path:
    return ct_slice(d / "nopix.dcm", phantom_volume(1)[0], pixels=False)


def folder_of_dicom_without_pixels(d: Path) -> Path:
    (d / "sr").mkdir()
    ct_slice(d / "sr" / "nopix.dcm", phantom_volume(1)[0], pixels=False)
    return d / "sr"


def mixed_series(d: Path) -> Path:
    make_series(d / "mixed" / "a", phantom_volume(2), series_uid="1.2.3.4")
    make_series(d / "mixed" / "b", phantom_volume(2), series_uid="1.2.3.5")
    return d / "mixed"


def npy_complex(d: Path) -> Path:
    np.save(d / "c.npy", np.ones((4, 4), np.complex64))
    return d / "c.npy"


def npy_bool(d: Path) -> Path:
    np.save(d / "b.npy", np.ones((4, 4), bool))
    return d / "b.npy"


def npy_object(d: Path) -> Path:
    np.save(d / "o.npy", np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    return d / "o.npy"


def npy_1d(d: Path) -> Path:
    np.save(d / "line.npy", np.arange(10.0))
    return d / "line.npy"


def npy_truncated(d: Path) -> Path:
    np.save(d / "t.npy", np.full((64, 64), 5.0))
    (d / "t.npy").write_bytes((d / "t.npy").read_bytes()[:-100])
    return d / "t.npy"


def png_16bit(d: Path) -> Path:
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(d / "deep.png")
    return d / "deep.png"


def png_truncated(d: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(d / "cut.png")
    (d / "cut.png").write_bytes((d / "cut.png").read_bytes()[:200])
    return d / "cut.png"


def nifti_complex(d: Path) -> Path:
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.complex64), np.eye(4)), d / "c.nii.gz")
    return d / "c.nii.gz"


def npy_nan(d: Path) -> Path:
    a = np.zeros((4, 4))
    a[1, 2] = np.nan
    np.save(d / "nan.npy", a)
    return d / "nan.npy"


def nifti_inf(d: Path) -> Path:
    a = np.zeros((4, 4, 3), np.float32)
    a[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(a, np.eye(4)), d / "inf.nii")
    return d / "inf.nii"


CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    # name: (make input, file named in the message, reason pattern)
    "missing path": (missing, "nope.dcm", "no such file or folder"),
    "empty folder": (empty_folder, "empty", "empty folder"),
    "empty file": (empty_file, "zero.dcm", "empty file"),
    "no readable image": (no_readable_image, "notes", "no readable image"),
    "unknown file type": (unknown_file, "a.txt", "unsupported file type"),
    "folder of pngs": (folder_of_pngs, "pngs", "not a volume"),
    "truncated DICOM": (truncated_dicom, "cut.dcm", "truncated DICOM pixel data"),
    "truncated DICOM header": (truncated_dicom_header, "cut.dcm", "corrupt or truncated DICOM"),
    "truncated compressed": (truncated_compressed_dicom, "rle.dcm", "corrupt or truncated DICOM"),
    "undecodable compressed": (undecodable_compressed_dicom, "rle.dcm", "cannot decode RLE"),
    "corrupt slice in series": (corrupt_slice_in_series, "IM002.dcm", "truncated DICOM"),
    "DICOM without pixel data": (dicom_without_pixels, "nopix.dcm", "DICOM without pixel data"),
    "folder of DICOM without pixels": (folder_of_dicom_without_pixels, "sr", "without pixel"),
    "mixed series": (mixed_series, "mixed", r"2 DICOM series.*--series.*1\.2\.3\.4"),
    "npy complex": (npy_complex, "c.npy", "unsupported dtype complex64"),
    "npy bool": (npy_bool, "b.npy", "unsupported dtype bool"),
    "npy object": (npy_object, "o.npy", "unsupported dtype object"),
    "npy 1d": (npy_1d, "line.npy", "not a 2D slice or 3D volume"),
    "npy truncated": (npy_truncated, "t.npy", "corrupt or truncated"),
    "png 16-bit": (png_16bit, "deep.png", "unsupported dtype"),
    "png truncated": (png_truncated, "cut.png", "corrupt or truncated image"),
    "nifti complex": (nifti_complex, "c.nii.gz", "unsupported dtype complex64"),
    "npy NaN": (npy_nan, "nan.npy", "1 of 16 values are NaN or infinite"),
    "nifti inf": (nifti_inf, "inf.nii", "1 of 48 values are NaN or infinite"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_file_and_reason(tmp_path, case):
    make, name, reason = CASES[case]
    data = tmp_path / "in"
    data.mkdir()
    path = make(data)
    before = folder_digest(data)
    with pytest.raises(LowdoseError) as info:
        read_ct(path)
    message = str(info.value)
    assert "\n" not in message
    assert name in message
    assert re.search(reason, message), message
    assert folder_digest(data) == before


def test_reading_never_modifies_the_input_folder(tmp_path):
    folder = make_series(tmp_path / "series", phantom_volume(4), reverse_files=True)
    (folder / "info").mkdir()
    (folder / "info" / "capture.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    before = folder_digest(folder)
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    with pytest.warns(UserWarning):
        img = read_ct(folder)
    write_ct(img, tmp_path / "derived")
    write_ct(img, tmp_path / "v.nii.gz")
    assert folder_digest(folder) == before
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes
    assert sorted(p.name for p in folder.iterdir()) == [
        *sorted(f"IM00{i}.dcm" for i in range(1, 5)),
        "info",
    ]


@pytest.mark.parametrize("suffix", [".npy", ".nii.gz", ".png", "/"])
def test_writing_nan_or_inf_is_refused(tmp_path, suffix):
    hu = np.zeros((4, 4), np.float32)
    hu[0, 0] = np.nan
    target = str(tmp_path / "out") + suffix
    with pytest.raises(LowdoseError, match="NaN or infinite"):
        write_ct(CTImage(hu, spacing=(1, 1)), target)
    assert list(tmp_path.iterdir()) == []


def test_dicom_colour_image_is_refused(tmp_path):
    path = ct_slice(tmp_path / "rgb.dcm", phantom_volume(1)[0])
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((16, 16, 3), np.uint8).tobytes()
    ds.save_as(path)
    with pytest.raises(LowdoseError, match=r"rgb\.dcm: RGB DICOM .* not a CT image"):
        read_ct(path)


@pytest.mark.parametrize(
    ("intercept", "said"),
    [
        (0.0, "median 1064 HU and only 1% of the pixels below"),  # rescale missing
        (None, "beyond the extended CT scale"),  # two's complement read as unsigned
    ],
)
def test_values_that_cannot_be_hu_are_said_at_read(tmp_path, intercept, said):
    """A slice whose stored values lack their rescale, or whose signed values were stored as
    unsigned, reads with one warning naming the file and what to check; real HU read quietly."""
    import warnings

    hu = np.full((16, 16), 40.0, np.float32)
    hu[:2] = -1000.0  # a little air
    path = tmp_path / "slice.dcm"
    if intercept is None:  # signed HU written as if unsigned: -1000 reads as 64536
        ct_slice(path, hu, intercept=0.0)
        ds = pydicom.dcmread(path)
        ds.PixelData = hu.astype("<i2").tobytes()
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 16, 15
        ds.save_as(path)
    else:  # stored = HU + 1024 with the intercept left out
        ct_slice(path, hu + 1024.0, intercept=intercept)
    with pytest.warns(UserWarning, match=said) as caught:
        read_ct(path)
    assert str(path) in str(caught[0].message) and "RescaleIntercept" in str(caught[0].message)
    ct_slice(tmp_path / "ok.dcm", hu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_ct(tmp_path / "ok.dcm")


def test_a_missing_rescale_with_air_around_the_body_is_said(tmp_path):
    """Stored = HU + 1024 without the intercept, on a slice where air surrounds the body: the
    air reads about 0 and keeps the median low, so it was read quietly as HU."""
    import warnings

    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2) < 24**2  # 44% of the slice
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    hu[30:34, 30:34] = 700.0  # a bone
    ct_slice(tmp_path / "raw.dcm", hu + 1024.0, intercept=0.0)
    with pytest.warns(UserWarning, match=r"as dense as bone.*without its rescale") as caught:
        image = read_ct(tmp_path / "raw.dcm")
    assert float(np.median(image.hu)) < 1000  # the earlier rule's premise: not caught by it
    assert "RescaleIntercept" in str(caught[0].message)
    lungs = np.where(body, 40.0, -1000.0).astype(np.float32)  # real HU: a body and its bones
    lungs[20:44, 20:44] = 1100.0  # 14% dense bone, air around: quiet
    ct_slice(tmp_path / "ok.dcm", lungs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_ct(tmp_path / "ok.dcm")


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ((0.0, 0.66), "a normalised scale, not HU"),  # Mayo's (HU + 1024) / 4096
        ((0.0, 255.0), "8-bit grey levels, not HU?"),  # a photo saved as NIfTI
    ],
)
def test_a_nifti_that_is_not_in_hu_is_said_at_read(tmp_path, values, said):
    """A NIfTI in a [0, 1] scale or of grey levels is read with one warning (the .npy reader
    refuses such values; a NIfTI holds no scale to state)."""
    lo, hi = values
    data = np.linspace(lo, hi, 16 * 16, dtype=np.float32).reshape(16, 16, 1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.warns(UserWarning, match=said):
        read_ct(tmp_path / "v.nii.gz")

"""Derived DICOM series tags: SliceLocation, folder permissions, exposure tags of a simulated
dose, and what a series on another in-plane grid (upscaled) keeps of its source headers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from lowdose import CTImage
from lowdose.io import read_ct, write_ct
from lowdose.io.formats.dicom import DOSE_SCALE
from tests.cli.cli_helpers import run
from tests.io.test_dicom import make_series, phantom_volume


def datasets(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f) for f in sorted(folder.iterdir())]


# ---------------------------------------------------------------------------------------------
# SliceLocation


@pytest.mark.parametrize("z_step", [-5.0, 5.0])
def test_slice_location_is_z_whichever_way_the_volume_runs(tmp_path, z_step):
    # A NIfTI volume whose slices run z = -72.5, -77.5, -82.5 has direction[:, 2] = -z; the DICOM
    # slice normal (row x column cosines) of axial slices is +z all the same.
    vol = np.zeros((3, 8, 8), np.float32)
    direction = np.diag([1.0, 1.0, np.sign(z_step)])
    img = CTImage(vol, spacing=(5.0, 1.0, 1.0), origin=(-10.0, -20.0, -72.5), direction=direction)
    out = write_ct(img, tmp_path / "out")
    files = datasets(out)
    positions = [float(ds.ImagePositionPatient[2]) for ds in files]
    assert positions == pytest.approx([-72.5 + k * z_step for k in range(3)])
    assert [float(ds.SliceLocation) for ds in files] == pytest.approx(positions)


# ---------------------------------------------------------------------------------------------
# permissions


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)], ids=["022", "027"])
def test_series_folder_gets_the_umask_permissions(tmp_path, umask, mode):
    img = read_ct(make_series(tmp_path / "in", phantom_volume(2)))
    old = os.umask(umask)
    try:
        out = write_ct(img, tmp_path / "out")
        assert out.stat().st_mode & 0o777 == mode  # was 0700 (mkdtemp's)
        assert all(f.stat().st_mode & 0o777 == mode & 0o666 for f in out.iterdir())
        write_ct(img.with_pixels(img.hu + 1), out)  # a rerun replaces the folder
        assert out.stat().st_mode & 0o777 == mode
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# exposure tags

FULL_DOSE_TAGS = {
    "CTDIvol": 21.1,
    "XRayTubeCurrent": 125,
    "Exposure": 400,
    "ExposureInuAs": 400000,
    "XRayTubeCurrentInuA": 125000.0,
    "ExposureInmAs": 400.0,
    "XRayTubeCurrentInmA": 125.0,
}


def exposure_series(folder: Path) -> Path:
    """A 2-slice 32 px series with the full-dose exposure tags set, one of them (CTDIvol)
    nested in a CTExposureSequence too, and the tags a dose does not change."""
    yy, xx = np.mgrid[:32, :32] - 16
    body = np.where((xx / 14) ** 2 + (yy / 11) ** 2 < 1, 40.0, -1000.0).astype(np.float32)
    make_series(folder, np.stack([body, body]))
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        for keyword, value in FULL_DOSE_TAGS.items():
            setattr(ds, keyword, value)
        ds.KVP = 120
        ds.ExposureTime = 500
        item = Dataset()
        item.CTDIvol = 21.1
        item.ExposureInmAs = 400.0
        ds.CTExposureSequence = [item]
        ds.save_as(path, enforce_file_format=True)
    return folder


def assert_scaled(folder: Path, scale: float) -> None:
    for ds in datasets(folder):
        assert ds.CTDIvol == pytest.approx(21.1 * scale)
        assert ds.CTExposureSequence[0].CTDIvol == pytest.approx(21.1 * scale)
        assert ds.CTExposureSequence[0].ExposureInmAs == pytest.approx(400.0 * scale)
        for keyword in ("XRayTubeCurrent", "Exposure", "ExposureInuAs"):  # IS: whole numbers
            value = ds[keyword].value
            assert value == int(np.floor(FULL_DOSE_TAGS[keyword] * scale + 0.5))
            assert "." not in str(value)
        assert float(ds.XRayTubeCurrentInuA) == pytest.approx(125000.0 * scale)
        assert ds.ExposureInmAs == pytest.approx(400.0 * scale)
        assert ds.XRayTubeCurrentInmA == pytest.approx(125.0 * scale)
        assert float(ds.KVP) == 120 and int(ds.ExposureTime) == 500  # not dose-proportional


def assert_removed(folder: Path) -> None:
    for ds in datasets(folder):
        for keyword in FULL_DOSE_TAGS:
            assert keyword not in ds
        assert "CTDIvol" not in ds.CTExposureSequence[0]
        assert "ExposureInmAs" not in ds.CTExposureSequence[0]
        assert float(ds.KVP) == 120 and int(ds.ExposureTime) == 500


def test_dose_scale_scales_the_exposure_tags_rounding_as_the_vr_needs(tmp_path):
    img = read_ct(exposure_series(tmp_path / "in"))
    out = write_ct(img.with_pixels(img.hu, metadata={DOSE_SCALE: 0.3}), tmp_path / "out")
    assert_scaled(out, 0.3)
    ds = datasets(out)[0]
    assert ds.XRayTubeCurrent == 38 and ds.Exposure == 120  # 37.5 rounds half up
    assert "exposure tags scaled by 0.3" in ds.DerivationDescription
    assert "CTDIvol" in ds.DerivationDescription


def test_dose_scale_none_removes_the_exposure_tags_and_absent_keeps_them(tmp_path):
    img = read_ct(exposure_series(tmp_path / "in"))
    out = write_ct(img.with_pixels(img.hu, metadata={DOSE_SCALE: None}), tmp_path / "out")
    assert_removed(out)
    assert "exposure tags removed" in datasets(out)[0].DerivationDescription
    kept = write_ct(img.with_pixels(img.hu + 1), tmp_path / "denoised")
    assert_scaled(kept, 1.0)
    assert "exposure" not in datasets(kept)[0].DerivationDescription


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(
    ("args", "scale"),
    [
        # The 12-bit formula's noise, not a fraction of this scan's dose (nor its dose at 1).
        (["--method", "image-poisson"], None),
        (["--relative-dose"], 0.25),  # a fraction of each slice's own dose
        ([], None),  # a fraction of the calibration's full dose: the scan's own is unknown
    ],
)
def test_simulate_scales_or_removes_the_exposure_tags(tmp_path, capsys, args, scale):
    series = exposure_series(tmp_path / "series")
    out = tmp_path / "sim"
    rc, _, err = run(["simulate", str(series), str(out), "--dose", "0.25", *args], capsys)
    assert rc == 0, err
    description = datasets(out)[0].DerivationDescription
    assert "dose 0.25" in description  # the dose stays named
    if scale is None:
        assert_removed(out)
        assert "exposure tags removed" in description
    else:
        assert_scaled(out, scale)
        assert "exposure tags scaled by 0.25" in description


# ---------------------------------------------------------------------------------------------
# another in-plane grid (upscale)


@pytest.mark.usefixtures("one_torch_thread")
def test_upscaled_series_keeps_numbers_windows_sources_and_image_type(tmp_path):
    from lowdose.models.gan_circle import CircleGenerator, GanCircleUpscaler

    src = make_series(tmp_path / "in", phantom_volume(3), reverse_files=True)  # numbers 3, 2, 1
    for path in src.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "HELIX"]
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.save_as(path, enforce_file_format=True)
    img = read_ct(src)
    up = GanCircleUpscaler(CircleGenerator(scale=2, f0=16), 2).upscale_image(img)
    out = write_ct(up, tmp_path / "up", description="lowdose gan-circle x2")
    back = read_ct(out)
    # The geometry is the upscaled image's: half the pixel size, first pixel moved in-plane.
    assert back.shape == (3, 32, 32)
    assert back.spacing == pytest.approx((2.0, 0.4, 0.35))
    assert back.origin == pytest.approx(up.origin)
    assert up.origin == pytest.approx((-100.0 - 0.175, -80.0 - 0.2, -50.0))
    sources = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in src.iterdir()}
    for ds in datasets(out):
        ref = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        source = sources[ref]
        assert float(ds.ImagePositionPatient[2]) == float(source.ImagePositionPatient[2])
        assert ds.InstanceNumber == source.InstanceNumber  # the source's numbers, not 1..N
        assert (ds.Rows, ds.Columns) == (32, 32)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.4, 0.35])
        assert float(ds.WindowCenter) == 40 and float(ds.WindowWidth) == 400
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL", "HELIX"]
        assert "in-plane grid" in ds.DerivationDescription
    assert sorted(int(ds.InstanceNumber) for ds in datasets(out)) == [1, 2, 3]


def test_slices_moved_along_the_normal_get_new_headers(tmp_path):
    # Not the source's slices any more (shifted by half a slice): geometry from the image.
    img = read_ct(make_series(tmp_path / "in", phantom_volume(3), reverse_files=True))
    moved = img.with_pixels(img.hu[:, ::2, ::2], spacing=(2.0, 1.6, 1.4),
                            origin=(-100.0, -80.0, -49.0))
    files = datasets(write_ct(moved, tmp_path / "out"))
    assert [int(ds.InstanceNumber) for ds in files] == [1, 2, 3]
    assert [float(ds.ImagePositionPatient[2]) for ds in files] == pytest.approx([-49, -47, -45])
    assert all("SourceImageSequence" not in ds for ds in files)


# ---------------------------------------------------------------------------------------------
# lossy-compression history (PS3.3 C.7.6.1.1.5: once "01", never reset)


def _lossy_source(folder: Path, how: str) -> Path:
    """A 32 x 32 series (the JPEG 2000 encoder's smallest) whose pixels went through lossy
    compression, saying so by its tags, its transfer syntax, or both ("00": lossless J2K)."""
    from pydicom.uid import JPEG2000

    make_series(folder, phantom_volume(2, size=32))
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        if how == "tags":
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionRatio = "10"
            ds.LossyImageCompressionMethod = "ISO_15444_1"
        else:
            ds.compress(JPEG2000, j2k_cr=[20] if how == "j2k lossy" else [1])
            if how == "j2k stated lossless":
                ds.LossyImageCompression = "00"
        ds.save_as(path, enforce_file_format=True)
    return folder


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("tags", ("01", "10", "ISO_15444_1")),
        ("j2k lossy", ("01", None, "ISO_15444_1")),
        ("j2k stated lossless", None),  # JPEG 2000 may be lossless: the file's "00" believed
    ],
)
def test_lossy_compression_history_is_kept_in_the_derived_series(tmp_path, how, expected):
    img = read_ct(_lossy_source(tmp_path / "in", how))
    for derived in (img.with_pixels(img.hu + 1), img.with_pixels(img.hu[:, ::2, ::2],
                    spacing=(2.0, 1.6, 1.4), origin=(-100.0, -80.0, -49.0))):  # fmt: skip
        # per-slice headers kept, and new headers (slices moved along the normal)
        out = write_ct(derived, tmp_path / "out")
        for ds in datasets(out):
            found = tuple(ds.get(k) for k in ("LossyImageCompression",
                                              "LossyImageCompressionRatio",
                                              "LossyImageCompressionMethod"))  # fmt: skip
            if expected is None:
                assert found[0] != "01"
            else:
                assert tuple(None if v is None else str(v) for v in found) == expected
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # written lossless


def test_jpeg_baseline_source_is_marked_lossy_by_its_transfer_syntax(tmp_path):
    from pydicom.uid import JPEGBaseline8Bit

    img = read_ct(make_series(tmp_path / "in", phantom_volume(2)))
    for header in img.source_headers:  # as read from JPEG baseline files (no encoder here)
        header.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        header.LossyImageCompression = "00"  # contradicted by the syntax: baseline always loses
    for ds in datasets(write_ct(img, tmp_path / "out")):
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod == "ISO_10918_1"


# ---------------------------------------------------------------------------------------------
# tags a source without DICOM headers cannot give


def test_series_without_a_source_window_gets_the_stated_default_and_no_invented_position(
    tmp_path,
):
    from lowdose.image import Window

    img = CTImage(np.zeros((2, 8, 8), np.float32), spacing=(2.5, 0.8, 0.8))  # NIfTI, PNG, ...
    for ds in datasets(write_ct(img, tmp_path / "out")):
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40.0, 400.0)
        assert "default" in ds.WindowCenterWidthExplanation
        assert "PatientPosition" in ds and ds.PatientPosition == ""  # type 2: present, unknown
    lung = Window.named("lung")
    for ds in datasets(write_ct(img, tmp_path / "lung", window=lung)):
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (-600.0, 1500.0)
        assert "WindowCenterWidthExplanation" not in ds  # it named the default replaced


def test_float32_geometry_is_written_in_its_short_form(tmp_path):
    pixel, thickness = float(np.float32(0.9766)), float(np.float32(0.6))  # as read from NIfTI
    img = CTImage(np.zeros((2, 8, 8), np.float32), spacing=(thickness, pixel, pixel))
    for ds in datasets(write_ct(img, tmp_path / "out")):
        assert ds.data_element("SliceThickness").value.original_string == "0.6"
        assert [v.original_string for v in ds.PixelSpacing] == ["0.9766", "0.9766"]

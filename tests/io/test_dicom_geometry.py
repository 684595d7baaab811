"""DICOM geometry that a regular grid does not hold: enhanced multi-frame files with uneven frame
positions, gantry-tilted series, and the slice-axis length of one slice (DICOM <-> NIfTI)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from lowdose.io import read_ct, write_ct
from lowdose.io.formats.dicom import acquired_positions
from tests.io.test_dicom import ct_slice, make_series, phantom_volume

GAP_Z = [-94.5, -92.5, -88.5, -86.5]  # one 2 mm gap: the two top frames are 2 mm above a grid


def _item(**attrs: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def multiframe(
    path: Path, vol: np.ndarray, zs: list[float], *, drift_y: float = 0.0,
    window: tuple[float, float] | None = None,
) -> Path:
    """An enhanced CT multi-frame holding ``vol[k]`` at z ``zs[k]`` (and ``k * drift_y`` mm more
    in y), its frames stored in descending z (as scanners often do); orientation, pixel
    measures, rescale (and ``window``) in the shared functional groups."""
    order = np.argsort(zs)[::-1]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "Test^Patient", "P001"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "MF", 7, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(zs)
    ds.Rows, ds.Columns = vol.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = _item(
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        PixelMeasuresSequence=[_item(PixelSpacing=[0.8, 0.7], SliceThickness=2.0)],
        PixelValueTransformationSequence=[
            _item(RescaleIntercept=0, RescaleSlope=1, RescaleType="HU")
        ],
    )
    if window is not None:
        shared.FrameVOILUTSequence = [_item(WindowCenter=window[0], WindowWidth=window[1])]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(PlanePositionSequence=[
            _item(ImagePositionPatient=[-100.0, -80.0 + k * drift_y, zs[k]])
        ])
        for k in order
    ]  # fmt: skip
    ds.PixelData = vol[order].astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _messages(caught: list[warnings.WarningMessage], word: str) -> list[str]:
    return [str(w.message) for w in caught if word in str(w.message)]


def _read(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = read_ct(path)
    return img, caught


# ---------------------------------------------------------------------------------------------
# multi-frame with uneven frame positions


def test_multiframe_with_a_gap_warns_as_a_series_of_files_does(tmp_path):
    vol = phantom_volume(4)
    img, caught = _read(multiframe(tmp_path / "mf" / "mf.dcm", vol, GAP_Z).parent)
    # the same frames as single-frame files, at the same positions
    for path in make_series(tmp_path / "files", vol).iterdir():
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [-100.0, -80.0, GAP_Z[int(ds.InstanceNumber) - 1]]
        ds.save_as(path, enforce_file_format=True)
    series, caught_series = _read(tmp_path / "files")
    notes = _messages(caught, "irregular slice spacing")
    assert len(notes) == 1
    uid = img.metadata["series_uid"]

    def wording(note: str, source: Path, uid: str) -> str:
        return note.replace(str(source), "SOURCE").replace(uid, "UID")

    [series_note] = _messages(caught_series, "irregular slice spacing")
    assert wording(notes[0], tmp_path / "mf", uid) == wording(
        series_note, tmp_path / "files", series.metadata["series_uid"]
    ) == "SOURCE: irregular slice spacing 2..4 mm in series UID; using the median 2 mm"
    for image in (img, series):
        assert image.metadata["slice_spacing_uniform"] is False
        assert image.metadata["slice_spacing_range"] == [2.0, 4.0]
    assert img.spacing == pytest.approx((2.0, 0.8, 0.7))  # read on the median grid, as before
    np.testing.assert_array_equal(img.hu, vol)  # frames sorted ascending
    even, caught_even = _read(multiframe(tmp_path / "even" / "mf.dcm", vol, [0.0, 2, 4, 6]))
    assert not _messages(caught_even, "irregular") and even.metadata["slice_spacing_uniform"]


def test_multiframe_with_a_gap_writes_each_frame_at_its_acquired_position(tmp_path):
    vol = phantom_volume(4)
    img, _ = _read(multiframe(tmp_path / "mf" / "mf.dcm", vol, GAP_Z))
    out = write_ct(img.with_pixels(img.hu + 1), tmp_path / "out")
    files = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert [float(ds.ImagePositionPatient[2]) for ds in files] == GAP_Z
    assert [float(ds.SliceLocation) for ds in files] == GAP_Z
    assert [int(ds.InstanceNumber) for ds in files] == [1, 2, 3, 4]
    for k, ds in enumerate(files):
        # each frame's pixels where that frame was acquired, marked by its level at (0, 0)
        assert ds.pixel_array[0, 0] * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept
        ) == vol[k, 0, 0] + 1
        assert [float(v) for v in ds.ImagePositionPatient[:2]] == [-100.0, -80.0]
        assert float(ds.SliceThickness) == 2.0
        assert "SpacingBetweenSlices" not in ds  # no one spacing between these frames
        assert ds.PatientID == "P001"
    back, caught = _read(out)
    assert back.origin == pytest.approx((-100.0, -80.0, -94.5))
    assert len(_messages(caught, "irregular slice spacing 2..4 mm")) == 1


def test_multiframe_with_even_frames_keeps_its_grid_and_gets_its_window(tmp_path):
    vol = phantom_volume(3)
    img, caught = _read(multiframe(tmp_path / "mf" / "mf.dcm", vol, [-50.0, -48.0, -46.0],
                                   window=(-600.0, 1500.0)))  # fmt: skip
    assert not caught
    files = [pydicom.dcmread(f) for f in sorted(write_ct(img, tmp_path / "out").iterdir())]
    assert [float(ds.ImagePositionPatient[2]) for ds in files] == [-50.0, -48.0, -46.0]
    for ds in files:
        assert float(ds.SpacingBetweenSlices) == 2.0 and float(ds.SliceThickness) == 2.0
        assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.7]
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # one CT image per file
        assert "NumberOfFrames" not in ds and "SharedFunctionalGroupsSequence" not in ds
        # the shared FrameVOILUTSequence's window, not the full range
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (-600.0, 1500.0)


def test_acquired_positions_of_a_multiframe_follow_subsets_and_upscaling(tmp_path):
    img, _ = _read(multiframe(tmp_path / "mf" / "mf.dcm", phantom_volume(4), GAP_Z))
    expected = np.array([[-100.0, -80.0, z] for z in GAP_Z])
    np.testing.assert_array_equal(acquired_positions(img), expected)
    sub = img.every_nth(2, start=1)
    np.testing.assert_array_equal(acquired_positions(sub), expected[1::2])
    # x2 in-plane: the first pixel's centre moves by -(old - new) / 2 along rows and columns
    shift = np.array([-0.175, -0.2, 0.0])
    up = img.with_pixels(img.hu.repeat(2, axis=1).repeat(2, axis=2), spacing=(2.0, 0.4, 0.35),
                         origin=tuple(np.asarray(img.origin) + shift))  # fmt: skip
    np.testing.assert_allclose(acquired_positions(up), expected + shift)
    files = [pydicom.dcmread(f) for f in sorted(write_ct(up, tmp_path / "up").iterdir())]
    np.testing.assert_allclose([[float(v) for v in ds.ImagePositionPatient] for ds in files],
                               expected + shift)  # fmt: skip
    assert all((ds.Rows, ds.Columns) == (32, 32) for ds in files)


# ---------------------------------------------------------------------------------------------
# gantry tilt


def _tilted_series(folder: Path, drift_y: float, n: int = 5) -> Path:
    folder.mkdir(parents=True)
    vol = phantom_volume(n)
    for k in range(n):
        path = ct_slice(folder / f"IM{k + 1:03d}.dcm", vol[k], z=-50.0 + 2 * k, instance=k + 1)
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [-100.0, -80.0 + k * drift_y, -50.0 + 2 * k]
        ds.GantryDetectorTilt = 19.3
        ds.save_as(path, enforce_file_format=True)
    return folder


@pytest.mark.parametrize("kind", ["series", "multiframe"])
def test_gantry_tilted_series_warns_once_at_read_with_the_measured_angle(tmp_path, kind):
    if kind == "series":
        source = _tilted_series(tmp_path / "tilt", drift_y=0.7)
    else:
        source = multiframe(tmp_path / "tilt" / "mf.dcm", phantom_volume(5),
                            [-50.0, -48, -46, -44, -42], drift_y=0.7)  # fmt: skip
    img, caught = _read(source)
    notes = _messages(caught, "tilt")
    assert len(notes) == 1
    assert "19.3 degrees" in notes[0]  # atan(0.7 / 2), measured from the positions
    assert "NIfTI output cannot place these slices exactly" in notes[0]
    assert "DICOM output keeps their positions" in notes[0]
    assert img.metadata["gantry_tilt_deg"] == pytest.approx(19.29, abs=0.01)
    # not resampled: the slices as stored, on the slice normal
    assert img.spacing == pytest.approx((2.0, 0.8, 0.7))
    np.testing.assert_array_equal(img.hu[:, 0, 0], phantom_volume(5)[:, 0, 0])
    np.testing.assert_array_equal(img.direction, np.eye(3))


def test_series_along_its_normal_or_drifting_under_a_tenth_of_a_pixel_reads_quietly(tmp_path):
    for name, drift in (("straight", 0.0), ("drift", 0.01)):  # 0.04 mm in all, < 0.07 mm
        img, caught = _read(_tilted_series(tmp_path / name, drift_y=drift))
        assert not _messages(caught, "tilt") and "gantry_tilt_deg" not in img.metadata


# ---------------------------------------------------------------------------------------------
# one slice: its slice-axis length


def test_one_dicom_slice_gives_its_thickness_to_a_nifti(tmp_path):
    path = ct_slice(tmp_path / "one.dcm", phantom_volume(1)[0])
    ds = pydicom.dcmread(path)
    ds.SliceThickness = "1.25"
    ds.save_as(path, enforce_file_format=True)
    out = nib.load(write_ct(read_ct(path), tmp_path / "one.nii.gz"))
    assert np.linalg.norm(out.affine[:3, 2]) == pytest.approx(1.25)


def test_2d_nifti_slice_length_becomes_the_dicom_slice_thickness(tmp_path):
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((16, 12), np.float32), affine), tmp_path / "2d.nii.gz")
    img = read_ct(tmp_path / "2d.nii.gz")
    assert not img.is_volume
    ds = pydicom.dcmread(write_ct(img, tmp_path / "2d.dcm"))
    assert ds.SliceThickness == "2.5" and "SpacingBetweenSlices" not in ds
    assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.8]

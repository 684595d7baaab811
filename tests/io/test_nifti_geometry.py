"""NIfTI geometry kept as the file states it: spatial units, qform/sform codes, and slices that a
regular grid cannot hold (a DICOM series with a missing slice or a gantry tilt)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from lowdose.io import read_ct, write_ct
from lowdose.io.read import describe, format_inventory
from tests.io.test_dicom import ct_slice, phantom_volume

# mm affine of the test volume (RAS): 0.8 x 0.9 x 2.5 mm voxels, x and y flipped (LPS-stored).
MM_AFFINE = np.array(
    [[-0.8, 0.0, 0.0, 100.0], [0.0, -0.9, 0.0, 120.0], [0.0, 0.0, 2.5, -50.0], [0, 0, 0, 1.0]]
)


def _volume() -> np.ndarray:
    return np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4) - 500.0


def _nifti(path: Path, affine: np.ndarray | None, *, unit: str = "mm", codes=(1, 1)) -> Path:
    img = nib.Nifti1Image(_volume(), affine)
    if affine is None:
        img.header.set_zooms((0.8, 0.9, 2.5))
    img.set_qform(affine, code=codes[0])
    img.set_sform(affine, code=codes[1])
    img.header.set_xyzt_units(unit)
    nib.save(img, path)
    return path


@pytest.mark.parametrize(("unit", "mm_per_unit"), [("meter", 1000.0), ("micron", 0.001)])
def test_metres_and_microns_are_read_as_mm_and_written_as_mm(tmp_path, unit, mm_per_unit):
    stored = MM_AFFINE.copy()
    stored[:3, :4] /= mm_per_unit
    img = read_ct(_nifti(tmp_path / "in.nii.gz", stored, unit=unit))
    assert img.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert img.origin == pytest.approx((-100.0, -120.0, -50.0))  # LPS, mm
    assert "spacing_source" not in img.metadata  # the unit was stated
    out = nib.load(write_ct(img, tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(out.affine, MM_AFFINE, rtol=1e-6, atol=1e-4)
    assert out.header.get_xyzt_units()[0] == "mm"
    dicom = write_ct(img, tmp_path / "dcm")
    ds = pydicom.dcmread(sorted(dicom.iterdir())[0])
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.9, 0.8])
    assert float(ds.SliceThickness) == pytest.approx(2.5)


def test_unknown_spatial_unit_is_taken_as_mm_and_says_so(tmp_path):
    img = read_ct(_nifti(tmp_path / "unknown.nii", MM_AFFINE, unit="unknown"))
    assert img.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert "taken as mm" in img.metadata["spacing_source"]
    stated = read_ct(_nifti(tmp_path / "mm.nii", MM_AFFINE, unit="mm"))
    assert stated.spacing == img.spacing and "spacing_source" not in stated.metadata


@pytest.mark.parametrize("codes", [(0, 2), (1, 0), (2, 4), (0, 0)])
def test_qform_and_sform_codes_are_written_back(tmp_path, codes):
    affine = None if codes == (0, 0) else MM_AFFINE
    source = nib.load(_nifti(tmp_path / "in.nii.gz", affine, codes=codes))
    img = read_ct(tmp_path / "in.nii.gz")
    assert (img.metadata["nifti_qform_code"], img.metadata["nifti_sform_code"]) == codes
    out = nib.load(write_ct(img.with_pixels(img.hu + 1), tmp_path / "out.nii.gz"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == codes
    np.testing.assert_allclose(out.affine, source.affine, atol=1e-5)


def test_info_does_not_state_the_fall_back_geometry_of_a_nifti_without_orientation(tmp_path):
    _nifti(tmp_path / "none.nii.gz", None, codes=(0, 0))
    text = format_inventory(describe(tmp_path / "none.nii.gz"))
    assert "origin:      unknown" in text and "orientation: unknown" in text
    assert "axial" not in text  # nibabel's fall-back affine looks axial; the file says nothing
    assert read_ct(tmp_path / "none.nii.gz").metadata["orientation_known"] is False
    stated = format_inventory(describe(_nifti(tmp_path / "ras.nii.gz", MM_AFFINE)))
    assert "origin:      -100, -120, -50 mm (LPS)" in stated and "orientation: axial" in stated


def _series(folder: Path, z: list[float], drift_y: float = 0.0) -> Path:
    """Axial 2 mm slices at ``z``; ``drift_y`` mm more in y per slice (a gantry tilt)."""
    folder.mkdir()
    vol = phantom_volume(len(z), size=8)
    for k, zk in enumerate(z):
        path = ct_slice(folder / f"IM{k + 1:03d}.dcm", vol[k], z=zk, instance=k + 1)
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [-100.0, -80.0 + k * drift_y, zk]
        ds.save_as(path, enforce_file_format=True)
    return folder


def _nifti_notes(image, path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_ct(image, path)
    return [str(w.message) for w in caught if "NIfTI holds a regular grid" in str(w.message)]


def test_series_with_a_missing_slice_written_to_nifti_warns_how_far_slices_move(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's irregular-spacing note
        img = read_ct(_series(tmp_path / "gap", [-50.0, -48.0, -46.0, -42.0, -40.0]))
    notes = _nifti_notes(img, tmp_path / "gap.nii.gz")
    assert len(notes) == 1
    assert "missing slice" in notes[0] and "tilt" not in notes[0]
    assert "2 of 5 slices are written up to 2 mm" in notes[0]
    assert "a DICOM output (a folder) keeps their positions" in notes[0]
    out = nib.load(tmp_path / "gap.nii.gz")  # written, not refused nor resampled
    assert out.shape == (8, 8, 5)
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 1)
    assert _nifti_notes(img, tmp_path / "gap-dcm") == []  # DICOM keeps each slice's position


def test_gantry_tilted_series_written_to_nifti_warns_how_far_slices_move(tmp_path):
    img = read_ct(_series(tmp_path / "tilt", [-50.0, -48.0, -46.0, -44.0, -42.0], drift_y=0.7))
    notes = _nifti_notes(img, tmp_path / "tilt.nii.gz")
    assert len(notes) == 1
    assert "gantry tilt" in notes[0] and "missing slice" not in notes[0]
    assert "4 of 5 slices are written up to 2.8 mm" in notes[0]


def test_regular_series_written_to_nifti_gives_no_misplacement_note(tmp_path):
    img = read_ct(_series(tmp_path / "even", [-50.0, -48.0, -46.0, -44.0]))
    assert _nifti_notes(img, tmp_path / "even.nii.gz") == []
    # a tilt under a tenth of the smallest spacing (0.7 mm pixels) is not worth a note
    small = read_ct(_series(tmp_path / "small", [-50.0, -48.0, -46.0], drift_y=0.03))
    assert _nifti_notes(small, tmp_path / "small.nii.gz") == []

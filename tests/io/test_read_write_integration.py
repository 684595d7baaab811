"""Integration: every file of the real data in ../shared/data (skipped when it is absent).

HU ranges asserted here were measured on these files first: real DICOM slices have air near
-1000 HU and padding at -1024, -2048 or -3024; the Mayo npy files hold (HU + 1024) / 4096.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lowdose.io import list_series, read_ct, write_ct
from lowdose.io.formats.dicom import MixedSeriesError

pytestmark = pytest.mark.integration

ITK_SLICES = 72


def assert_real_ct_hu(hu: np.ndarray, name: str) -> None:
    """Air near -1000 HU and soft tissue present: the rescale was applied."""
    body = hu[hu > -1500]  # drop out-of-field padding (-2048, -3024)
    assert -3024 <= hu.min() <= -1000, name
    assert 1000 <= hu.max() <= 6000, name
    assert -1100 <= np.percentile(body, 1) <= -800, name
    assert np.mean((body > -100) & (body < 100)) > 0.1, name


def test_mayo_l506_npy_pairs_with_the_mayo_scale(shared_data):
    files = sorted((shared_data / "mayo-l506-pairs" / "npy").glob("*.npy"))
    assert len(files) == 10
    for f in files:
        img = read_ct(f, npy_scale="mayo")
        assert img.shape == (512, 512)
        assert img.hu.min() == pytest.approx(-1024.0)
        assert 1300 <= img.hu.max() <= 1900, f.name
        assert -650 <= img.hu.mean() <= -450, f.name
        assert img.metadata["npy_scale"] == "mayo"
    with pytest.raises(Exception, match="--npy-scale mayo"):
        read_ct(files[0])


@pytest.mark.parametrize("folder", ["mayo-l506-pairs/dicom", "mayo-l067-full-dose"])
def test_mayo_dicom_slices(shared_data, folder):
    files = sorted((shared_data / folder).glob("*.IMA"))
    assert len(files) in (2, 3)
    for f in files:
        img = read_ct(f)
        assert img.shape == (512, 512) and img.metadata["modality"] == "CT"
        assert img.hu.min() == -1024.0
        assert_real_ct_hu(img.hu, f.name)
        assert 0.6 <= img.spacing[0] <= 0.8


def test_mayo_quarter_and_full_dose_pair_is_two_series(shared_data):
    folder = shared_data / "mayo-l506-pairs" / "dicom"
    assert len(list_series(folder)) == 2
    with pytest.raises(MixedSeriesError, match="2 DICOM series"):
        read_ct(folder)
    full = read_ct(next(folder.glob("L506_FD_*.IMA")))
    quarter = read_ct(next(folder.glob("L506_QD_*.IMA")))
    # Same slice at two doses: noise differs, anatomy does not.
    assert 0 < np.std(quarter.hu - full.hu) < 100
    assert abs(quarter.hu.mean() - full.hu.mean()) < 10


def test_chest_ct_dicom_every_file_and_every_series(shared_data):
    root = shared_data / "chest-ct-dicom"
    files = sorted(root.rglob("*.dcm"))
    assert len(files) == 62
    shapes, orientations = set(), set()
    for f in files:
        img = read_ct(f)
        assert_real_ct_hu(img.hu, str(f.relative_to(root)))
        shapes.add(img.shape)
        orientations.add(img.metadata["orientation"])
    assert shapes == {(512, 512), (568, 568), (616, 616)}
    assert orientations == {"axial", "coronal", "sagittal"}
    # Two copies at the top of A072894 repeat coronal files (same SOPInstanceUID): 60 series.
    found = list_series(root)
    assert len(found) == 60 and all(s.n_slices == 1 for s in found)
    with pytest.raises(MixedSeriesError, match="60 DICOM series"):
        read_ct(root)


def test_chest_ct_dicom_view_folders_skip_the_info_folder(shared_data):
    view = shared_data / "chest-ct-dicom" / "A002304" / "coronal"
    found = list_series(view)
    assert len(found) == 2
    with pytest.warns(UserWarning, match="info/capture.png"):
        img = read_ct(view, series=found[0].uid)
    skipped = {d["file"]: d["reason"] for d in img.metadata["skipped"]}
    assert skipped["info/capture.png"] == "not DICOM (png file)"
    assert img.metadata["orientation"] == "coronal"


def test_chest_ctscan_images_every_png_and_jpeg(shared_data):
    root = shared_data / "chest-ctscan-images"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) == 1000
    formats: dict[str, int] = {}
    for f in files:
        img = read_ct(f)
        formats[img.metadata["format"]] = formats.get(img.metadata["format"], 0) + 1
        assert img.hu.ndim == 2 and min(img.shape) >= 100
        # 8-bit through the lung window [-1350, 150]: every value inside it.
        assert img.hu.min() >= -1350.0 and img.hu.max() <= 150.0
        assert -1200 <= img.hu.mean() <= -200, f.name
        assert img.metadata["window"] == [-1350.0, 150.0]
    assert formats == {"png": 984, "jpeg": 16}  # 4 of the JPEGs are named .png
    n7 = read_ct(root / "train" / "normal" / "n7.png")
    assert n7.metadata["format"] == "jpeg"


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_itkelastix_series_one_volume_z_ascending_and_derived_round_trip(shared_data, tmp_path):
    folder = shared_data / "ct-series-itkelastix-chest"
    before = _digest(folder)
    img = read_ct(folder)  # its files carry a malformed private tag (01F1,1026)
    assert img.shape == (ITK_SLICES, 512, 512)
    assert img.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    # z ascending: first slice at z = -154.5 (file 135), last at -12.5 (file 064).
    assert img.origin == pytest.approx((-250.0, -164.0, -154.5))
    names = [Path(f).name for f in img.metadata["files"]]
    assert names == [f"00-slice{n:03d}.dcm" for n in range(135, 63, -1)]
    z = [float(h.ImagePositionPatient[2]) for h in img.source_headers]
    assert np.allclose(np.diff(z), 2.0)
    assert img.hu.min() == -1024.0 and img.hu.max() == 1317.0
    assert_real_ct_hu(img.hu, folder.name)
    str(img.source_headers[0])  # walking every element must not raise

    out = write_ct(img, tmp_path / "itk-derived", description="roundtrip")
    back = read_ct(out)
    assert back.shape == img.shape and back.spacing == pytest.approx(img.spacing)
    assert back.origin == pytest.approx(img.origin)
    assert np.abs(back.hu - img.hu).max() <= 1.0
    ds = pydicom.dcmread(next(out.iterdir()))
    assert ds.SeriesInstanceUID != img.metadata["series_uid"]
    assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert ds.SeriesDescription.endswith("roundtrip")
    assert ds.StudyInstanceUID == img.metadata["study_uid"]
    assert _digest(folder) == before

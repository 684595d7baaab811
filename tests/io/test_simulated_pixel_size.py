"""An image without a pixel size in its file (npy, PNG), simulated: the output carries the pixel
size the physics used, stated or assumed, not the 1 mm placeholder."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from lowdose import CTImage
from lowdose.io import read_ct
from lowdose.physics.api import build_simulator
from lowdose.physics.batch import simulate_path


def _mayo_npy(path, size: int = 64) -> None:
    """A body-sized disc of soft tissue in air, in the Mayo scale."""
    yy, xx = np.mgrid[:size, :size]
    hu = np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2, 40.0, -1000.0)
    np.save(path, ((hu + 1024.0) / 4096.0).astype(np.float32))


@pytest.mark.usefixtures("one_torch_thread")
def test_stated_pixel_size_is_the_simulated_dicom_pixel_spacing(tmp_path):
    _mayo_npy(tmp_path / "fd.npy")
    simulate_path(tmp_path / "fd.npy", tmp_path / "ld.dcm", [0.25], npy_scale="mayo",
                  pixel_size_mm=0.742, device="cpu", progress=False)
    ds = pydicom.dcmread(tmp_path / "ld.dcm")
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.742, 0.742])
    assert "unknown" not in ds.DerivationDescription  # not "(1 mm)" beside 0.742 mm pixels
    assert "pixel spacing stated (0.742 mm given for the simulation)" in ds.DerivationDescription


@pytest.mark.usefixtures("one_torch_thread")
def test_default_pixel_size_is_the_380_mm_field_of_view(tmp_path):
    _mayo_npy(tmp_path / "fd.npy", size=64)
    simulate_path(tmp_path / "fd.npy", tmp_path / "ld.nii.gz", [0.25], npy_scale="mayo",
                  device="cpu", progress=False)
    assert read_ct(tmp_path / "ld.nii.gz").spacing == pytest.approx((380 / 64, 380 / 64))


def test_geometry_says_stated_or_assumed_and_keeps_read_spacing():
    from lowdose.physics.batch import simulated_geometry

    unknown = {"spacing_known": False}
    img = CTImage(np.zeros((2, 512, 512), np.float32), (1.0, 1.0, 1.0), metadata=unknown)
    projection = build_simulator("projection")
    stated = simulated_geometry(img, projection, 0.7)
    assert stated["spacing"] == (1.0, 0.7, 0.7)
    assert stated["metadata"]["spacing_source"].startswith("stated")
    assert stated["metadata"]["slice_spacing_known"] is False  # the 1 mm slice axis is not
    assumed = simulated_geometry(img, projection, None)
    assert assumed["spacing"] == pytest.approx((1.0, 380 / 512, 380 / 512))
    assert assumed["metadata"]["spacing_source"].startswith("assumed")
    assert img.with_pixels(img.hu, **assumed).pixel_size_mm == pytest.approx(380 / 512)
    # image-poisson uses no pixel size: only a stated one is carried
    assert simulated_geometry(img, build_simulator("image-poisson"), None) == {}
    # a file that holds its spacing keeps it, whatever is stated
    read = CTImage(np.zeros((8, 8), np.float32), (0.5, 0.5))
    assert simulated_geometry(read, projection, 0.7) == {}

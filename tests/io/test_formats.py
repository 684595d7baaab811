"""NIfTI, .npy and PNG/JPEG readers and writers on tiny files made here; the registries."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lowdose import CTImage, LowdoseError, Window
from lowdose.io import read_ct, write_ct
from lowdose.io.base import readers, writers


def volume() -> CTImage:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 1200, size=(4, 12, 10)).astype(np.float32)
    return CTImage(hu, spacing=(2.5, 0.8, 0.6), origin=(-10.0, 20.0, -30.0), direction=np.eye(3))


def test_registries_list_every_format():
    assert readers.names() == ["dicom", "nifti", "npy", "png"]
    assert writers.names() == ["dicom", "nifti", "npy", "png"]


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("nifti", ".nii.gz"), ("nifti", ".nii"), ("npy", ".npy"), ("dicom", "/"), ("png", ".png")],
)
def test_every_writer_reads_back(tmp_path, name, suffix):
    img = volume()
    if name == "png":
        img = CTImage(img.hu[0], spacing=(0.8, 0.6))
    target = str(tmp_path / "out") + suffix
    out = write_ct(img, target)
    back = read_ct(out)
    assert back.metadata["format"] == name
    assert back.shape == img.shape
    if name == "png":  # 8-bit through the lung window: one grey level is 1500/255 HU
        lung = Window.named("lung")
        expected = lung.from_unit(lung.to_unit(img.hu))
        assert np.abs(back.hu - expected).max() <= lung.width / 255 / 2 + 1e-3
    elif name == "dicom":
        assert np.abs(back.hu - img.hu).max() <= 0.5
    else:
        np.testing.assert_array_equal(back.hu, img.hu)
    if name in ("nifti", "dicom"):
        assert back.spacing == pytest.approx(img.spacing)
        assert back.origin == pytest.approx(img.origin)
        np.testing.assert_allclose(back.direction, img.direction, atol=1e-6)


def test_nifti_geometry_from_ras_affine_and_2d_stays_2d(tmp_path):
    data = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)  # (x, y, z)
    affine = np.diag([0.7, 0.9, 3.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    img = read_ct(tmp_path / "v.nii.gz")
    assert img.shape == (3, 4, 5)  # (D, H, W): slice axis first
    assert img.hu[2, 1, 4] == data[4, 1, 2]
    assert img.spacing == pytest.approx((3.0, 0.9, 0.7))
    assert img.origin == pytest.approx((-10.0, -20.0, 30.0))  # RAS -> LPS
    np.testing.assert_allclose(img.direction, np.diag([-1.0, -1.0, 1.0]))
    nib.save(nib.Nifti1Image(data[:, :, :1].astype(np.float32), affine), tmp_path / "s.nii")
    flat = read_ct(tmp_path / "s.nii")
    assert flat.shape == (4, 5) and flat.spacing == pytest.approx((0.9, 0.7))
    # written back, the one-slice volume keeps its (X, Y, 1) shape and its affine
    write_ct(flat.with_pixels(flat.hu + 1), tmp_path / "out.nii")
    back = nib.load(tmp_path / "out.nii")
    assert back.shape == (5, 4, 1)
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_allclose(np.asarray(back.dataobj)[..., 0], data[:, :, 0] + 1)
    # a 2D NIfTI stays 2D
    nib.save(nib.Nifti1Image(data[:, :, 0].astype(np.float32), affine), tmp_path / "p.nii")
    write_ct(read_ct(tmp_path / "p.nii"), tmp_path / "p-out.nii")
    assert nib.load(tmp_path / "p-out.nii").shape == (5, 4)


def test_nifti_in_a_folder_of_its_own(tmp_path):
    write_ct(volume(), tmp_path / "only" / "v.nii.gz")
    assert read_ct(tmp_path / "only").shape == (4, 12, 10)


def test_npy_hu_by_default_and_mayo_scale_stated(tmp_path):
    hu = np.array([[-1024.0, 0.0], [40.0, 3072.0]])
    np.save(tmp_path / "hu.npy", hu)
    img = read_ct(tmp_path / "hu.npy")
    np.testing.assert_array_equal(img.hu, hu)
    assert img.metadata["npy_scale"] == "hu" and img.spacing == (1.0, 1.0)
    np.save(tmp_path / "mayo.npy", (hu + 1024) / 4096)
    mayo = read_ct(tmp_path / "mayo.npy", npy_scale="mayo")
    np.testing.assert_allclose(mayo.hu, hu, atol=1e-3)
    assert "4096" in mayo.metadata["npy_scale_rule"]
    with pytest.raises(LowdoseError, match=r"mayo.npy: values lie in \[0, 1\].*--npy-scale mayo"):
        read_ct(tmp_path / "mayo.npy")
    with pytest.raises(LowdoseError, match=r"cannot be a CT slice in HU.*--npy-scale mayo"):
        read_ct(tmp_path / "mayo.npy", npy_scale="hu")  # [0, 1] stated as HU: refused too
    with pytest.raises(LowdoseError, match="outside the Mayo"):
        read_ct(tmp_path / "hu.npy", npy_scale="mayo")
    with pytest.raises(LowdoseError, match="unknown npy scale 'x'"):
        read_ct(tmp_path / "hu.npy", npy_scale="x")


def test_npy_volume_keeps_slices(tmp_path):
    np.save(tmp_path / "v.npy", volume().hu)
    assert read_ct(tmp_path / "v.npy").shape == (4, 12, 10)


def _grey() -> np.ndarray:
    return np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))  # 8 x 16, values 0..240


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_png_modes_map_through_the_default_lung_window(tmp_path, mode):
    grey = _grey()
    Image.fromarray(grey, "L").convert(mode).save(tmp_path / "a.png")
    img = read_ct(tmp_path / "a.png")
    expected = -1350.0 + grey / 255.0 * 1500.0
    np.testing.assert_allclose(img.hu, expected, atol=1e-3)
    assert img.metadata["window"] == [-1350.0, 150.0]
    assert img.metadata["window_name"] == "lung"
    assert img.metadata["image_mode"] == mode


def test_png_given_window_and_transparent_pixels_are_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:2, ..., 3] = 255  # top half opaque grey, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    img = read_ct(tmp_path / "t.png", window=Window.named("abdomen"))
    np.testing.assert_allclose(img.hu[:2], -160.0 + 200 / 255 * 400, atol=1e-3)
    np.testing.assert_allclose(img.hu[2:], -160.0)
    assert img.metadata["window_name"] == "abdomen"


def test_jpeg_named_png_opens(tmp_path):
    Image.fromarray(_grey(), "L").convert("RGB").save(tmp_path / "really-a-jpeg.png", "JPEG")
    img = read_ct(tmp_path / "really-a-jpeg.png")
    assert img.metadata["format"] == "jpeg"
    assert np.abs(img.hu - (-1350.0 + _grey() / 255.0 * 1500.0)).max() < 1500 / 255 * 6


def test_png_writer_window_recorded_and_read_back(tmp_path):
    hu = np.linspace(-200, 300, 64, dtype=np.float32).reshape(8, 8)
    out = write_ct(CTImage(hu, spacing=(1, 1)), tmp_path / "w.png", window=Window.named("abdomen"))
    with Image.open(out) as im:
        assert im.mode == "L" and im.text["lowdose:window"] == "-160,240"
    back = read_ct(out)
    assert back.metadata["window_source"].startswith("recorded")
    np.testing.assert_allclose(back.hu, np.clip(hu, -160, 240), atol=400 / 255 / 2 + 1e-3)
    with pytest.raises(LowdoseError, match="one slice"):
        write_ct(volume(), tmp_path / "v.png")


def test_writes_are_atomic_and_never_over_the_input(tmp_path):
    np.save(tmp_path / "in.npy", volume().hu)
    img = read_ct(tmp_path / "in.npy")
    before = (tmp_path / "in.npy").read_bytes()
    with pytest.raises(LowdoseError, match="is an input file"):
        write_ct(img, tmp_path / "in.npy")
    assert (tmp_path / "in.npy").read_bytes() == before
    write_ct(img, tmp_path / "out.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.npy"]  # no temp left


def test_unknown_output_suffix(tmp_path):
    with pytest.raises(LowdoseError, match=r"out\.tif: cannot tell the output format"):
        write_ct(volume(), tmp_path / "out.tif")

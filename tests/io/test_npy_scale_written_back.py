"""``.npy`` scales: an output keeps the Mayo scale its input was read in; ``hu`` stated on
values that cannot be HU is refused."""

from __future__ import annotations

import numpy as np
import pytest

from lowdose import CTImage, LowdoseError
from lowdose.io import read_ct, write_ct


def _mayo_slice() -> np.ndarray:
    """A 16x16 slice in the Mayo scale: air around a soft-tissue square and a bone spot."""
    hu = np.full((16, 16), -1024.0)
    hu[4:12, 4:12] = 40.0
    hu[7:9, 7:9] = 1400.0
    return ((hu + 1024.0) / 4096.0).astype(np.float32)


def test_npy_read_in_the_mayo_scale_is_written_back_in_it(tmp_path):
    np.save(tmp_path / "in.npy", _mayo_slice())
    img = read_ct(tmp_path / "in.npy", npy_scale="mayo")
    shifted = img.with_pixels(img.hu + 10.0)  # a "restoration": 10 HU brighter
    write_ct(shifted, tmp_path / "out.npy")
    stored = np.load(tmp_path / "out.npy")
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, _mayo_slice() + 10.0 / 4096.0, atol=1e-6)
    # reads back under the same --npy-scale as its input, to the same HU
    back = read_ct(tmp_path / "out.npy", npy_scale="mayo")
    np.testing.assert_allclose(back.hu, shifted.hu, atol=1e-2)


def test_mayo_npy_output_clips_hu_outside_the_scale(tmp_path):
    np.save(tmp_path / "in.npy", _mayo_slice())
    img = read_ct(tmp_path / "in.npy", npy_scale="mayo")
    noisy = img.hu.copy()
    noisy[0, 0], noisy[0, 1] = -1300.0, 3500.0  # noise below air, metal above the scale
    write_ct(img.with_pixels(noisy), tmp_path / "out.npy")
    stored = np.load(tmp_path / "out.npy")
    assert stored.min() == 0.0 and stored.max() == 1.0
    read_ct(tmp_path / "out.npy", npy_scale="mayo")  # still a valid Mayo file


def test_npy_output_is_hu_for_hu_npy_other_formats_and_differences(tmp_path):
    hu = np.array([[-1000.0, 0.0], [40.0, 1200.0]], np.float32)
    np.save(tmp_path / "hu.npy", hu)
    write_ct(read_ct(tmp_path / "hu.npy"), tmp_path / "from-hu.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "from-hu.npy"), hu)
    nifti = CTImage(hu, spacing=(0.7, 0.7))
    write_ct(nifti, tmp_path / "v.nii.gz")
    write_ct(read_ct(tmp_path / "v.nii.gz"), tmp_path / "from-nifti.npy")
    np.testing.assert_allclose(np.load(tmp_path / "from-nifti.npy"), hu)
    # a difference of two Mayo images is HU offsets, not CT values: no Mayo value holds them
    np.save(tmp_path / "m.npy", _mayo_slice())
    mayo = read_ct(tmp_path / "m.npy", npy_scale="mayo")
    diff = mayo.with_pixels(mayo.hu - mayo.hu + 5.0, metadata={"difference": "image minus ref"})
    write_ct(diff, tmp_path / "diff.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "diff.npy"), 5.0)


def test_hu_stated_for_values_that_cannot_be_hu_is_refused(tmp_path):
    np.save(tmp_path / "mayo.npy", _mayo_slice())  # values in [0, 0.6]
    with pytest.raises(LowdoseError, match=r"mayo\.npy: values lie in \[0, 0\.59.*"
                       r"cannot be a CT slice in HU.*--npy-scale mayo") as info:
        read_ct(tmp_path / "mayo.npy", npy_scale="hu")
    assert "\n" not in str(info.value)
    np.save(tmp_path / "hu.npy", np.array([[-1000.0, 0.0], [0.5, 40.0]]))
    assert read_ct(tmp_path / "hu.npy", npy_scale="hu").hu.min() == -1000.0

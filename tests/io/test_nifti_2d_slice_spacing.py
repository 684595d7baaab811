"""A NIfTI holding one slice keeps its third-axis (slice) spacing through a read and write."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lowdose.io import read_ct, write_ct


@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 1)])
def test_one_slice_nifti_keeps_its_slice_spacing_and_shape(tmp_path, shape):
    data = np.random.default_rng(0).uniform(-1000, 400, size=shape).astype(np.float32)
    affine = np.diag([-0.7, -0.8, 2.0, 1.0])
    affine[:3, 3] = [5.0, -3.0, 40.0]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "slice.nii.gz")
    img = read_ct(tmp_path / "slice.nii.gz")
    assert img.shape == (10, 12) and img.spacing == pytest.approx((0.8, 0.7))
    write_ct(img.with_pixels(img.hu + 1.0), tmp_path / "out.nii.gz")
    out = nib.load(tmp_path / "out.nii.gz")
    assert out.shape == shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.dataobj), data + 1.0, atol=1e-3)

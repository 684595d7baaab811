"""``lowdose.physics.batch``: the slice thickness a file's simulation takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lowdose.image import CTImage
from lowdose.io import read_ct, write_ct
from lowdose.physics import build_simulator
from lowdose.physics.batch import simulate_image


def _thickness_used(image: CTImage) -> float | None:
    simulator = build_simulator("projection")
    simulate_image(image, 0.25, simulator, seed=0)
    return simulator.slice_thickness_mm


def _slab(n: int) -> CTImage:
    hu = np.full((n, 64, 64), -1000.0, np.float32)
    hu[:, 8:56, 8:56] = 40.0
    return CTImage(hu, spacing=(1.0, 0.7, 0.7), origin=(0.0, 0.0, 0.0), direction=np.eye(3))


def test_a_one_slice_nifti_volume_is_simulated_at_its_own_thickness(tmp_path: Path) -> None:
    """A 1 mm NIfTI of one slice took the calibration's 3 mm (a third of the noise power a
    1 mm slice gets), where the same data as two slices took 1 mm."""
    one = read_ct(write_ct(_slab(1), tmp_path / "one.nii.gz"))
    two = read_ct(write_ct(_slab(2), tmp_path / "two.nii.gz"))
    assert not one.is_volume  # the premise: one slice reads as a 2-D image
    assert _thickness_used(one) == pytest.approx(1.0) == _thickness_used(two)


def test_a_2d_nifti_has_no_thickness_of_its_own(tmp_path: Path) -> None:
    import nibabel as nib

    hu = np.full((64, 64), 40.0, np.float32)
    nib.save(nib.Nifti1Image(hu, np.diag([0.7, 0.7, 5.0, 1.0])), tmp_path / "flat.nii.gz")
    assert _thickness_used(read_ct(tmp_path / "flat.nii.gz")) is None

"""``lowdose.evaluation.score``: the image metrics of several images against one reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowdose.errors import LowdoseError
from lowdose.evaluation.score import format_scores, score_images
from lowdose.image import CTImage
from lowdose.metrics.image import TISSUES


def test_a_volume_scores_its_slices_and_pools_its_tissue_errors() -> None:
    ref_hu = np.full((2, 16, 16), 40.0, np.float32)  # SSIM's window needs 11 px
    ref_hu[:, :, :8] = -1000.0  # half outside the body
    low_hu = ref_hu.copy()
    low_hu[0, :, 8:] += 10.0  # slice 0: +10 HU in soft tissue; slice 1 exact
    ref, low = (CTImage(h, spacing=(2.0, 0.7, 0.7)) for h in (ref_hu, low_hu))
    scores = score_images(ref, {"low": low, "ref": ref})
    assert set(scores) == {"low", "ref"}
    low_s = scores["low"]
    assert low_s["rmse_hu_soft_tissue"] == pytest.approx(math.sqrt(100 / 2))  # pooled
    assert low_s["rmse_hu_outside_body"] == 0.0 and math.isnan(low_s["rmse_hu_bone"])
    # the exact slice has no finite PSNR and is left out of the mean (session 32; it made the
    # whole volume's PSNR infinite): slice 0 alone, +10 HU over half its pixels
    assert low_s["psnr_full"] == pytest.approx(10 * math.log10(2 * 4096**2 / 100))
    assert math.isinf(scores["ref"]["psnr_full"])
    assert len(TISSUES) == sum(k.startswith("rmse_hu_") for k in low_s)
    table = format_scores(scores).splitlines()
    assert table[0].split()[:3] == ["image", "PSNR", "full"] and len(table) == 3


def test_another_grid_is_refused() -> None:
    ref = CTImage(np.zeros((8, 8), np.float32), spacing=(0.7, 0.7))
    with pytest.raises(LowdoseError, match="shape"):
        score_images(ref, {"x": CTImage(np.zeros((4, 8), np.float32), spacing=(0.7, 0.7))})
    with pytest.raises(LowdoseError, match="spacing"):
        score_images(ref, {"x": CTImage(np.zeros((8, 8), np.float32), spacing=(0.7, 0.8))})


def test_rmse_hu_counts_scanner_padding_as_air() -> None:
    ref_hu = np.full((16, 16), 40.0, np.float32)
    ref_hu[:, :4] = -3024.0  # padding outside the reconstruction circle
    restored_hu = np.where(ref_hu < -1024, -1024.0, ref_hu + 5.0).astype(np.float32)
    ref, restored = (CTImage(h, spacing=(0.7, 0.7)) for h in (ref_hu, restored_hu))
    scores = score_images(ref, {"restored": restored})["restored"]
    # 5 HU in the 12 body columns, 0 in the 4 padded ones (unclipped it would be ~1000 HU)
    assert scores["rmse_hu"] == pytest.approx(math.sqrt(25 * 12 / 16))
    assert scores["rmse_hu_outside_body"] == 0.0


def _lps_volume(rng: np.random.Generator) -> CTImage:
    """Four 13x12 axial slices in LPS, z rising, as a DICOM series reads."""
    hu = rng.normal(40.0, 30.0, (4, 13, 12)).astype(np.float32)
    return CTImage(hu, spacing=(2.0, 0.8, 0.7), origin=(-10.0, -20.0, -30.0),
                   direction=np.eye(3))


@pytest.mark.parametrize("flipped_axes", [(0,), (2,), (1, 2), (0, 1, 2)])
def test_the_same_voxels_stored_flipped_score_as_the_reference(flipped_axes) -> None:
    # a NIfTI written RAS (x and y flipped) or with z falling holds the reference's voxels
    ref = _lps_volume(np.random.default_rng(0))
    axes = [np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])]
    origin, direction = np.asarray(ref.origin), np.eye(3)
    for axis in flipped_axes:  # array axis 0, 1, 2 = direction column 2, 1, 0
        origin = origin + (ref.shape[axis] - 1) * ref.spacing[axis] * axes[axis]
        direction[:, 2 - axis] *= -1
    stored = CTImage(np.flip(ref.hu, flipped_axes).copy(), spacing=ref.spacing,
                     origin=tuple(origin), direction=direction)
    scores = score_images(ref, {"stored": stored})["stored"]
    assert scores["psnr_full"] == math.inf and scores["rmse_hu"] == 0.0
    unknown = CTImage(stored.hu, spacing=ref.spacing)  # no geometry: taken as it is
    assert score_images(ref, {"unknown": unknown})["unknown"]["rmse_hu"] > 10


def test_transposed_axes_are_reordered_and_a_shift_is_refused() -> None:
    ref = _lps_volume(np.random.default_rng(1))
    swapped = CTImage(np.swapaxes(ref.hu, 1, 2).copy(), spacing=(2.0, 0.7, 0.8),
                      origin=ref.origin, direction=np.eye(3)[:, [1, 0, 2]])
    assert score_images(ref, {"swapped": swapped})["swapped"]["rmse_hu"] == 0.0
    shifted = CTImage(ref.hu, spacing=ref.spacing, origin=(-10.0, -20.0, -28.0),
                      direction=np.eye(3))  # one slice further along z
    with pytest.raises(LowdoseError, match=r"first voxel lies \(\+0.00, \+0.00, \+2.00\) mm"):
        score_images(ref, {"shifted": shifted})
    tilt = np.deg2rad(20)
    oblique = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)],
                        [0, np.sin(tilt), np.cos(tilt)]])
    tilted = CTImage(ref.hu, spacing=ref.spacing, origin=ref.origin, direction=oblique)
    with pytest.raises(LowdoseError, match="another orientation"):
        score_images(ref, {"tilted": tilted})

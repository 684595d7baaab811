from __future__ import annotations

import math

import numpy as np
import pytest

from lowdose import Window
from lowdose.metrics.image import (
    TISSUES,
    image_metrics,
    image_quality,
    psnr,
    rmse,
    rmse_hu,
    rmse_hu_by_tissue,
    ssim,
    tissue_masks,
)


def test_psnr_hand_computed_full_and_window():
    ref = np.zeros((16, 16), np.float32)
    # +40.96 HU = 1% of the 4096-HU full range -> MSE 1e-4 -> 40 dB
    assert psnr(ref + 40.96, ref, "full") == pytest.approx(40.0, abs=1e-4)
    # inside the 400-HU window, +4 HU = 1% -> 40 dB
    assert psnr(ref + 4.0, ref, "window") == pytest.approx(40.0, abs=1e-4)
    assert math.isinf(psnr(ref, ref))


def test_window_clipping_hides_out_of_window_differences():
    ref = np.full((8, 8), 1000.0, np.float32)  # bone: above the [-160, 240] window
    pred = ref + 300.0
    assert math.isinf(psnr(pred, ref, "window"))
    assert rmse(pred, ref, "full") == pytest.approx(300 / 4096, rel=1e-5)
    assert rmse_hu(pred, ref) == pytest.approx(300.0)


def test_ssim_identity_and_noise_and_custom_window():
    rng = np.random.default_rng(0)
    ref = np.tile(np.linspace(-100, 200, 64, dtype=np.float32), (64, 1))
    assert ssim(ref, ref, "window") == pytest.approx(1.0)
    noisy = ref + rng.normal(0, 50, ref.shape).astype(np.float32)
    assert 0.0 < ssim(noisy, ref, "window") < 0.9
    assert ssim(noisy, ref, Window(-200, 300)) > ssim(noisy, ref, "window")


def test_stack_is_mean_of_slices_and_shape_mismatch():
    ref = np.zeros((2, 8, 8), np.float32)
    pred = ref.copy()
    pred[0] += 40.96
    pred[1] += 4.096
    assert psnr(pred, ref, "full") == pytest.approx((40 + 60) / 2, abs=1e-3)
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(pred, ref[0])


@pytest.mark.parametrize("name", ["psnr", "rmse", "ssim"])
def test_registry_lists_metrics_and_unknown_range(name):
    assert name in image_metrics.names()
    with pytest.raises(ValueError, match="unknown data_range"):
        image_metrics.get(name)(np.zeros((4, 4)), np.zeros((4, 4)), data_range="lung")


def test_image_quality_reports_both_conventions():
    ref = np.zeros((16, 16), np.float32)
    out = image_quality(ref + 4.0, ref)
    expected = {f"{m}_{c}" for m in ("psnr", "rmse", "ssim") for c in ("full", "window")}
    assert set(out) == expected | {"rmse_hu"}
    assert out["psnr_window"] == pytest.approx(40.0, abs=1e-4)


def _body(size: int = 64) -> np.ndarray:
    """Air, a couch strip apart from the body, and a body of soft tissue holding a lung (with a
    small vessel) and a bone."""
    ref = np.full((size, size), -1000.0, np.float32)
    ref[60:62, 4:60] = -600.0  # the couch: lung-like HU, outside the body
    ref[8:56, 8:56] = 40.0
    ref[14:34, 14:34] = -800.0  # lung
    ref[23:25, 23:25] = 40.0  # a vessel inside it
    ref[44:50, 40:50] = 900.0  # bone
    return ref


def test_tissue_masks_partition_the_image_and_keep_the_couch_outside_the_body():
    masks = tissue_masks(_body())
    assert list(masks) == list(TISSUES)
    assert sum(m.astype(int) for m in masks.values()).max() == 1  # a partition
    assert masks["outside body"][60:62, 4:60].all()  # the couch is not lung
    assert masks["lung and gas"][24, 24] and masks["lung and gas"][20, 20]  # vessel stays in
    assert masks["bone"][46, 45] and masks["soft tissue"][50, 20]
    stack = tissue_masks(np.stack([_body(), np.full((64, 64), -1000.0, np.float32)]))
    assert stack["outside body"][1].all() and stack["lung and gas"].shape == (2, 64, 64)


def test_rmse_by_tissue_puts_each_error_in_the_tissue_of_the_reference():
    ref = _body()
    masks = tissue_masks(ref)
    pred = ref.copy()
    for name, error in zip(TISSUES, (0.0, 30.0, 10.0, 20.0), strict=True):
        pred[masks[name]] += error  # a tissue-specific error each
    out = rmse_hu_by_tissue(np.stack([pred, pred]), np.stack([ref, ref]))  # a stack pools
    assert list(out) == list(TISSUES)
    assert [out[t] for t in TISSUES] == pytest.approx([0.0, 30.0, 10.0, 20.0])
    # Both sides are clipped to the full range: air below -1024 HU is no error.
    deep_air = ref.copy()
    deep_air[0:4, :] = -3000.0
    assert rmse_hu_by_tissue(deep_air, ref)["outside body"] == pytest.approx(
        24.0 * math.sqrt(4 * 64 / masks["outside body"].sum()))  # -1024 vs -1000
    # An absent tissue is nan; a shape mismatch is an error.
    flat = np.full((32, 32), 40.0, np.float32)
    out = rmse_hu_by_tissue(flat - 2000.0, flat)
    assert out["soft tissue"] == pytest.approx(1064.0) and math.isnan(out["bone"])
    with pytest.raises(ValueError, match="shape mismatch"):
        rmse_hu_by_tissue(flat, ref)


def test_ssim_on_slices_smaller_than_its_window_is_one_clear_error() -> None:
    """It was skimage's 'win_size exceeds image extent'."""
    from lowdose.errors import LowdoseError
    from lowdose.metrics.image import ssim

    small = np.zeros((2, 8, 32), np.float32)
    with pytest.raises(LowdoseError, match="SSIM: slices of 8 x 32 pixels are smaller than its "
                                           "11 x 11 Gaussian window"):
        ssim(small, small)
    assert ssim(np.zeros((11, 11)), np.zeros((11, 11))) == pytest.approx(1.0)

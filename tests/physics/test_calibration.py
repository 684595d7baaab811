"""Calibration: pairing files, flat-ROI choice, NPS, and recovering a known I0 and window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.physics.calibration import (
    Pair,
    find_pair_paths,
    fit_calibration,
    load_pairs,
    noise_stats,
    radial_nps,
    select_rois,
)
from lowdose.physics.projection import Calibration, ProjectionSimulator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def body_slice(n: int = 128, seed: int = 0) -> np.ndarray:
    """A soft-tissue body with a bone and faint full-dose noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - n / 2
    hu = np.where((xx / (0.45 * n)) ** 2 + (yy / (0.36 * n)) ** 2 < 1, 40.0, -1000.0)
    hu[np.hypot(xx, yy - 0.2 * n) < 0.06 * n] = 700.0
    hu += rng.normal(0, 5, hu.shape) * (hu > -500)
    return hu.astype(np.float32)


TRUE = Calibration(i0=4e4, electronic_std=5.0, filter="hamming", cutoff=0.9)


def make_pairs(folder, n_pairs: int = 2, size: int = 128):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_pairs):
        full = body_slice(size, seed=i)
        sim = ProjectionSimulator(calibration=TRUE, pixel_size_mm=2.0)
        low = sim(torch.from_numpy(full)[None, None], 0.25,
                  torch.Generator().manual_seed(100 + i))[0, 0].numpy()
        np.save(folder / f"P1_{i}_target.npy", (full + 1024) / 4096)
        np.save(folder / f"P1_{i}_input.npy", (low + 1024) / 4096)
    return folder


def test_pairs_found_by_mayo_names_fd_qd_tokens_and_folders(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("L1_1_input.npy", "L1_1_target.npy", "L1_2_target.npy"):
        np.save(tmp_path / "a" / name, np.zeros((4, 4)))
    pairs = find_pair_paths(tmp_path / "a")
    assert [(k, f.name, low.name) for k, f, low in pairs] == [
        ("L1_1_*", "L1_1_target.npy", "L1_1_input.npy")]
    (tmp_path / "b").mkdir()
    for name in ("L506_FD_1_1.CT.0002.0087.IMA", "L506_QD_1_1.CT.0004.0087.IMA"):
        (tmp_path / "b" / name).write_bytes(b"x")
    [(_key, full, low)] = find_pair_paths(tmp_path / "b")
    assert "FD" in full.name and "QD" in low.name
    for sub in ("full", "low"):
        (tmp_path / "c" / sub).mkdir(parents=True)
        np.save(tmp_path / "c" / sub / "s1.npy", np.zeros((4, 4)))
    [(_key, full, low)] = find_pair_paths(tmp_path / "c")
    assert full.parent.name == "full" and low.parent.name == "low"
    with pytest.raises(LowdoseError, match="no full-dose/low-dose pairs"):
        find_pair_paths(tmp_path / "c" / "full")


def test_rois_are_flat_soft_tissue_and_disjoint():
    hu = body_slice(128)
    rois = select_rois(hu, roi=16, max_rois=8)
    assert len(rois) == 8
    for r, c in rois:
        patch = hu[r : r + 16, c : c + 16]
        assert -150 < patch.mean() < 250 and patch.max() < 400  # not the bone, not air
    for i, (r, c) in enumerate(rois):
        for r2, c2 in rois[i + 1 :]:
            assert abs(r - r2) >= 16 or abs(c - c2) >= 16


def test_nps_of_white_noise_is_flat_and_integrates_to_the_variance():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 10, (256, 256))
    rois = [(r, c) for r in range(0, 256, 32) for c in range(0, 256, 32)]
    stats = noise_stats(noise, rois, 32, pixel_mm=0.5)
    assert stats.std == pytest.approx(10, rel=0.02)
    inner = stats.nps[1:-1]
    assert inner.std() / inner.mean() < 0.1  # flat
    assert inner.mean() == pytest.approx(100 * 0.5**2, rel=0.05)  # sigma^2 dx dy
    freqs, _ = radial_nps(np.ones((32, 32)), 0.5)
    assert freqs[-1] == pytest.approx(1.0)  # Nyquist of 0.5 mm pixels


def test_fit_recovers_a_known_calibration(tmp_path):
    pairs = load_pairs(make_pairs(tmp_path / "pairs"), pixel_size_mm=2.0)
    assert len(pairs) == 2 and not pairs[0].pixel_assumed
    result = fit_calibration(pairs, 0.25, roi=16, filters=("hann", "hamming", "cosine"),
                             cutoffs=(0.7, 0.9, 1.1))
    cal = result.calibration
    assert cal.i0 == pytest.approx(TRUE.i0, rel=0.15)
    assert abs(result.mean["std_ratio"] - 1) < 0.05
    assert result.mean["nps_rel_l2"] < 0.15 and result.passed()
    # hann and hamming at 0.9 differ little at 16x16 ROIs; the chosen one must fit as well as
    # the true one, and a much smoother window must fit clearly worse.
    errors = {(r["filter"], r["cutoff"]): r["nps_rel_l2"] for r in result.search}
    assert errors[(cal.filter, cal.cutoff)] <= errors[("hamming", 0.9)]
    assert errors[("hamming", 0.9)] < 0.1 < errors[("hann", 0.7)]


def test_fit_refuses_images_without_soft_tissue(tmp_path):
    air = np.full((64, 64), -1000, np.float32)
    np.save(tmp_path / "x_target.npy", (air + 1024) / 4096)
    np.save(tmp_path / "x_input.npy", (air + 1 + 1024) / 4096)  # not equal: another refusal
    with pytest.raises(LowdoseError, match="soft-tissue"):
        fit_calibration(load_pairs(tmp_path, pixel_size_mm=2.0), 0.25)


@pytest.mark.integration
def test_shipped_calibration_matches_real_mayo_noise(shared_data):
    """The shipped default on one real npy pair: noise std within 25% (per slice; pooled 15%)."""
    from lowdose.physics.api import simulate_low_dose
    from lowdose.physics.calibration import prepare
    from lowdose.physics.projection import default_calibration

    folder = shared_data / "mayo-l506-pairs" / "npy"
    if not folder.is_dir():
        pytest.skip("Mayo npy pairs not present")
    pair = [p for p in load_pairs(folder, slice_thickness_mm=3.0) if p.name.startswith("L506_176")]
    [pp] = prepare(pair)
    sim = ProjectionSimulator(calibration=default_calibration(), pixel_size_mm=pp.pair.pixel_mm)
    low = simulate_low_dose(pp.pair.full, 0.25, seed=3, simulator=sim)
    stats = noise_stats(low - pp.pair.full, pp.rois, pp.roi, pp.pair.pixel_mm)
    assert stats.std / pp.real.std == pytest.approx(1.0, abs=0.25)


def test_fit_refuses_an_identical_pair_and_a_swapped_one(tmp_path):
    """A low dose equal to its full dose was a ZeroDivisionError; full and low dose swapped
    was fitted (12% off on the Mayo pairs) and reported as a pass."""
    pairs = load_pairs(make_pairs(tmp_path / "pairs"), pixel_size_mm=2.0)
    same = [Pair(p.name, p.full, p.full.copy(), p.pixel_mm) for p in pairs]
    with pytest.raises(LowdoseError, match="equals its full-dose one: no noise to fit"):
        fit_calibration(same, 0.25)
    swapped = [Pair(p.name, p.low, p.full, p.pixel_mm) for p in pairs]
    with pytest.raises(LowdoseError, match=r"full-dose images read noisier .* swapped"):
        fit_calibration(swapped, 0.25)


def test_an_unpaired_file_is_said_and_a_calibration_without_thickness_warns_on_use(tmp_path):
    """A file whose pair is missing is named, not skipped silently; a calibration fitted
    without a slice thickness says so when used on slices of a known thickness (its I0 is not
    scaled to them)."""
    folder = make_pairs(tmp_path / "pairs")
    np.save(folder / "P2_0_target.npy", np.load(folder / "P1_0_target.npy"))
    with pytest.warns(UserWarning, match=r"1 file\(s\) without their pair left out: .*P2_0"):
        assert len(load_pairs(folder, pixel_size_mm=2.0)) == 2
    sim = ProjectionSimulator(calibration=TRUE, pixel_size_mm=2.0, slice_thickness_mm=1.0)
    with pytest.warns(UserWarning, match="states no slice thickness: its I0 is used as it is"):
        assert sim.effective_i0 == TRUE.i0

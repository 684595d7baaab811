"""The projection simulator: dose 1, the 1/dose law, seeding, calibration files, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.physics import simulate_low_dose, simulators
from lowdose.physics.projection import (
    Calibration,
    Geometry,
    ProjectionSimulator,
    default_calibration,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _water_cylinder(n: int = 96, radius: float = 40.0) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = np.mgrid[:n, :n] - n / 2
    r = np.hypot(xx, yy)
    hu = np.where(r < radius, 0.0, -1000.0).astype(np.float32)
    return torch.from_numpy(hu)[None, None], torch.from_numpy(r < radius / 2)


def _smooth_body(n: int = 96) -> torch.Tensor:
    """A noiseless body with soft edges (so FBP's error is its own, not Gibbs at a step)."""
    from scipy import ndimage

    yy, xx = np.mgrid[:n, :n] - n / 2
    body = ((xx / 38) ** 2 + (yy / 30) ** 2 < 1).astype(np.float32)
    hu = -1000 + 1040 * body
    hu += 600 * (np.hypot(xx - 10, yy) < 6)  # bone
    hu -= 900 * (np.hypot(xx + 14, yy - 5) < 8)  # air pocket
    return torch.from_numpy(ndimage.gaussian_filter(hu, 1.5).astype(np.float32))[None, None]


def test_projection_is_registered_and_the_default():
    assert set(simulators.names()) >= {"projection", "image-poisson"}
    assert isinstance(simulators.get("projection")(), ProjectionSimulator)


def test_dose_one_returns_the_full_dose_image():
    hu = _smooth_body()
    out = ProjectionSimulator(pixel_size_mm=2.0)(hu, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, hu)


def test_dose_one_through_the_full_project_fbp_path_is_within_its_reconstruction_error():
    # reconstruct=True sends the object itself through projection and FBP. Measured on this
    # smooth 96x96 body: mean |error| 1.6 HU with the ramp filter, 9 HU with hann (it blurs).
    hu = _smooth_body()
    inside = hu[0, 0] > -900
    for name, bound in (("ramp", 3.0), ("hann", 15.0)):
        sim = ProjectionSimulator(pixel_size_mm=2.0, reconstruct=True, filter=name, cutoff=1.0)
        out = sim(hu, 1.0, torch.Generator().manual_seed(0))
        err = (out - hu)[0, 0][inside].abs().mean().item()
        assert err < bound, (name, err)


def test_noise_variance_grows_as_one_over_dose_from_a_noiseless_phantom():
    # Quantum noise alone: Var = 1 / (dose I0 exp(-p)). Electronic noise (a fixed variance per
    # ray) breaks the 1/dose law at low counts on purpose; it is tested below.
    hu, roi = _water_cylinder()
    hu = hu.repeat(6, 1, 1, 1)
    sim = ProjectionSimulator(pixel_size_mm=2.0, input_is_noiseless=True, i0=2e4,
                              electronic_std=0.0)
    variances = {}
    for dose in (1.0, 0.5, 0.25, 0.1, 0.05):
        out = sim(hu, dose, torch.Generator().manual_seed(1))
        variances[dose] = (out - hu)[:, 0][:, roi].var().item()
    ref = variances[1.0]
    assert ref > 1.0
    for dose, var in variances.items():
        assert var * dose == pytest.approx(ref, rel=0.10), (dose, var * dose / ref)


def test_inserted_variance_is_the_missing_part_one_over_dose_minus_one():
    hu, roi = _water_cylinder()
    hu = hu.repeat(6, 1, 1, 1)
    sim = ProjectionSimulator(pixel_size_mm=2.0, electronic_std=0.0, i0=2e4)
    noiseless = ProjectionSimulator(pixel_size_mm=2.0, electronic_std=0.0, i0=2e4,
                                    input_is_noiseless=True)
    full = (noiseless(hu, 1.0, torch.Generator().manual_seed(2)) - hu)[:, 0][:, roi].var().item()
    for dose in (0.5, 0.25, 0.1):
        inserted = (sim(hu, dose, torch.Generator().manual_seed(3)) - hu)[:, 0][:, roi].var()
        assert inserted.item() == pytest.approx(full * (1 / dose - 1), rel=0.10)


@pytest.mark.parametrize("own_hu", [8.0, 25.0])
def test_relative_dose_inserts_one_over_dose_minus_one_times_the_images_own_noise(own_hu):
    from lowdose.metrics.noise import estimate_noise_hu, noise_texture

    hu, _ = _water_cylinder(128, 56.0)
    g = torch.Generator().manual_seed(0)
    # "its own noise": white, far finer than the calibrated (smooth-kernel) texture
    scan = hu + own_hu * torch.randn(hu.shape, generator=g) * (hu > -500)
    sim = ProjectionSimulator(pixel_size_mm=1.5, relative_to_image=True, clip_min=None)
    level_only = ProjectionSimulator(pixel_size_mm=1.5, relative_to_image=True, clip_min=None,
                                     texture_tolerance=None)
    calibrated = ProjectionSimulator(pixel_size_mm=1.5, clip_min=None)
    image = scan[0, 0].numpy()
    own = estimate_noise_hu(image)
    for model in (sim, level_only):
        for dose in (0.5, 0.25):
            out = model(scan, dose, torch.Generator().manual_seed(1))
            inserted = estimate_noise_hu(out[0, 0].numpy()) ** 2 - own**2
            assert inserted == pytest.approx((1 / dose - 1) * own**2, rel=0.15)
    # by default the inserted noise takes the scan's texture (white: 0.5) ...
    matched = (sim(scan, 0.25, torch.Generator().manual_seed(1)) - scan)[0, 0].numpy()
    assert noise_texture(image) == pytest.approx(0.49, abs=0.03)
    assert noise_texture(matched, tissue_of=image) == pytest.approx(noise_texture(image), rel=0.05)
    # ... without the match it keeps the calibrated one (1.2 here), rescaled; a seed repeats
    out = level_only(scan, 0.25, torch.Generator().manual_seed(1))
    again = level_only(scan, 0.25, torch.Generator().manual_seed(1))
    base = calibrated(scan, 0.25, torch.Generator().manual_seed(1)) - scan
    assert torch.equal(again, out)
    assert noise_texture(base[0, 0].numpy(), tissue_of=image) == pytest.approx(1.2, abs=0.1)
    ratio = ((again - scan)[0, 0][hu[0, 0] > -500] / base[0, 0][hu[0, 0] > -500]).median()
    assert torch.allclose((again - scan), ratio * base, atol=1e-2 * float(base.abs().max()))
    with pytest.raises(LowdoseError, match="relative_to_image"):
        ProjectionSimulator(relative_to_image=True, input_is_noiseless=True)


def test_relative_dose_keeps_a_texture_within_the_tolerance():
    hu, _ = _water_cylinder(128, 56.0)
    calibrated = ProjectionSimulator(pixel_size_mm=1.5, clip_min=None)
    # own noise of the calibrated texture itself (another draw): nothing to reshape
    scan = calibrated(hu, 0.5, torch.Generator().manual_seed(9))
    kw = dict(pixel_size_mm=1.5, relative_to_image=True, clip_min=None)
    out = ProjectionSimulator(**kw)(scan, 0.25, torch.Generator().manual_seed(1))
    level_only = ProjectionSimulator(**kw, texture_tolerance=None)
    assert torch.allclose(out, level_only(scan, 0.25, torch.Generator().manual_seed(1)),
                          atol=1e-3)
    with pytest.raises(LowdoseError, match="texture_tolerance"):
        ProjectionSimulator(**kw, texture_tolerance=0.5)


def test_relative_dose_keeps_the_calibration_where_no_tissue_can_be_read():
    air = torch.full((1, 1, 64, 64), -1000.0)
    sim = ProjectionSimulator(pixel_size_mm=2.0, relative_to_image=True, clip_min=None)
    calibrated = ProjectionSimulator(pixel_size_mm=2.0, clip_min=None)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(sim(air, 0.25, g1), calibrated(air, 0.25, g2))


def test_more_photons_less_noise_and_electronic_noise_adds():
    hu, roi = _water_cylinder()
    def var(**kw):
        sim = ProjectionSimulator(pixel_size_mm=2.0, **kw)
        return (sim(hu, 0.25, torch.Generator().manual_seed(0)) - hu)[0, 0][roi].var().item()
    low, high = var(i0=1e4, electronic_std=0.0), var(i0=4e4, electronic_std=0.0)
    assert high * 4 == pytest.approx(low, rel=0.15)
    assert var(i0=1e4, electronic_std=30.0) > 1.05 * low


def test_electronic_noise_makes_low_doses_noisier_than_one_over_dose():
    hu, roi = _water_cylinder()
    sim = ProjectionSimulator(pixel_size_mm=2.0, input_is_noiseless=True, i0=2e4,
                              electronic_std=10.0)
    v = {d: (sim(hu, d, torch.Generator().manual_seed(0)) - hu)[0, 0][roi].var().item()
         for d in (1.0, 0.05)}
    # A 160 mm water path: about 1850 photons per sample at full dose, 93 at 5 %,
    # against an electronic variance of 2 x 100: the 5 % image is clearly noisier than 20x.
    assert v[0.05] > 1.5 * 20 * v[1.0]


def test_same_seed_same_output_other_seed_differs():
    hu = _smooth_body()
    a = simulate_low_dose(hu[0, 0].numpy(), 0.25, seed=5, pixel_size_mm=2.0)
    b = simulate_low_dose(hu[0, 0].numpy(), 0.25, seed=5, pixel_size_mm=2.0)
    c = simulate_low_dose(hu[0, 0].numpy(), 0.25, seed=6, pixel_size_mm=2.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == (96, 96)


def test_volume_slice_by_slice_matches_batches():
    vol = _smooth_body(64)[:, 0].repeat(3, 1, 1).numpy()
    before = vol.copy()
    one = simulate_low_dose(vol, 0.25, seed=1, pixel_size_mm=2.0, batch_size=1)
    three = simulate_low_dose(vol, 0.25, seed=1, pixel_size_mm=2.0, batch_size=3)
    assert one.shape == vol.shape and np.array_equal(vol, before)
    # Different batching draws the noise in another order, but the noise level is the same.
    assert np.std(one - vol) == pytest.approx(np.std(three - vol), rel=0.1)
    assert not np.array_equal(one[0], one[1])  # each slice gets its own noise


@pytest.mark.parametrize("kind", ["fan-equiangular", "fan-flat", "parallel"])
def test_geometries_give_similar_noise_near_the_centre(kind):
    hu, roi = _water_cylinder()
    sim = ProjectionSimulator(pixel_size_mm=2.0, geometry={"kind": kind}, i0=2e4,
                              electronic_std=0.0)
    std = (sim(hu, 0.25, torch.Generator().manual_seed(0)) - hu)[0, 0][roi].std().item()
    # Fan beam: each parallel ray is measured twice (direct and conjugate) with 1152 views per
    # 2 pi, i.e. 576 parallel views; parallel beam: 1152 views over pi with one measurement
    # each. Both are 1152 measurements per pi: the same noise at the centre (within 10%).
    ref = ProjectionSimulator(pixel_size_mm=2.0, i0=2e4, electronic_std=0.0)
    ref_std = (ref(hu, 0.25, torch.Generator().manual_seed(0)) - hu)[0, 0][roi].std().item()
    assert std == pytest.approx(ref_std, rel=0.1)


def test_geometry_numbers():
    g = Geometry()
    assert g.iso_spacing_mm == pytest.approx(0.70, abs=0.01)
    assert g.parallel_views == 576
    gain = g.density_gain(torch.tensor([0.0, 200.0]))
    assert gain[0] == pytest.approx(2.0) and gain[1] > gain[0]


def test_calibration_round_trip_and_loading(tmp_path):
    cal = Calibration(i0=3e4, electronic_std=2.0, filter="hamming", cutoff=0.8)
    path = cal.save(tmp_path / "cal.json")
    loaded = Calibration.load(path)
    assert loaded == cal
    sim = ProjectionSimulator(calibration=path, pixel_size_mm=2.0)
    assert sim.calibration.i0 == 3e4 and sim.calibration.filter == "hamming"
    assert default_calibration().i0 > 0
    (tmp_path / "bad.json").write_text(json.dumps({"i0": 1.0, "colour": "red"}))
    with pytest.raises(LowdoseError, match="unknown calibration keys"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(LowdoseError, match="not found"):
        Calibration.load(tmp_path / "missing.json")
    with pytest.raises(LowdoseError, match="i0"):
        Calibration(i0=-1.0)


@pytest.mark.parametrize("dose", [0.0, 1.01, -1.0, float("inf")])
def test_bad_dose(dose):
    with pytest.raises(LowdoseError, match="dose"):
        simulate_low_dose(np.zeros((32, 32), np.float32), dose, pixel_size_mm=2.0)


def test_bad_pixels_and_sizes():
    ok = np.zeros((32, 32), np.float32)
    for bad in (np.full((32, 32), -1500, np.float32), np.full((32, 32), np.nan, np.float32)):
        with pytest.raises(LowdoseError, match=r"HU|NaN"):
            simulate_low_dose(bad, 0.5, pixel_size_mm=2.0)
    with pytest.raises(LowdoseError, match="too small"):
        simulate_low_dose(np.zeros((8, 8), np.float32), 0.5)
    with pytest.raises(LowdoseError, match="too small"):
        simulate_low_dose(ok, 0.5, pixel_size_mm=0.1)  # 3.2 mm field: under 8 detector bins
    with pytest.raises(LowdoseError, match="pixel_size_mm"):
        simulate_low_dose(ok, 0.5, pixel_size_mm=-1.0)


@pytest.mark.parametrize("kind", ["fan-equiangular", "fan-flat"])
def test_fan_beam_projection_matches_analytic_chords_of_a_disc(kind):
    import math

    from lowdose.physics.projection import FanBeamProjector

    n, px, (cx, cy, r) = 96, 2.0, (15.0, -9.0, 18.0)  # disc centre (x right, y down) and radius, px
    ss = 4
    yy, xx = (np.mgrid[: n * ss, : n * ss] + 0.5) / ss - 0.5
    disc = (np.hypot(xx - n // 2 - cx, yy - n // 2 - cy) < r).reshape(n, ss, n, ss).mean((1, 3))
    g = Geometry(kind=kind, n_det=160, n_views=120, scan_fov_mm=180, source_iso_mm=400,
                 source_det_mm=700)
    fan = FanBeamProjector(g, n, n, pixel_size_mm=px)
    sino = fan.forward_project(torch.from_numpy(disc.astype(np.float32))[None])[0].double()
    j = torch.arange(g.n_det, dtype=torch.float64) - (g.n_det - 1) / 2
    if kind == "fan-equiangular":
        gamma = j * (2 * g.fan_half_angle / g.n_det)
    else:
        pitch = 2 * g.source_det_mm * math.tan(g.fan_half_angle) / g.n_det
        gamma = torch.atan(j * pitch / g.source_det_mm)
    beta = torch.arange(g.n_views, dtype=torch.float64) * 2 * math.pi / g.n_views
    theta = beta[:, None] + gamma[None]
    dist = (cx * px * torch.cos(theta) + cy * px * torch.sin(theta)
            - g.source_iso_mm * torch.sin(gamma)[None]).abs()
    chord = 2 * torch.sqrt(((r * px) ** 2 - dist**2).clamp(min=0))
    assert sino.shape == (120, 160)
    assert ((sino - chord).abs().mean() / chord.mean()).item() < 0.01  # measured 0.005


def test_one_over_dose_holds_with_the_shipped_calibration_on_a_water_phantom():
    # 180 mm of water (0.742 mm pixels, electronic noise included): at 5 % dose a central ray
    # still keeps about 1100 photons against an electronic variance of 50, so the 1/dose law
    # holds within 10 % over the sweep.
    n = 256
    yy, xx = np.mgrid[:n, :n] - n / 2
    r = np.hypot(xx, yy)
    hu = torch.from_numpy(np.where(r < 121, 0.0, -1000.0).astype(np.float32))[None, None]
    roi = torch.from_numpy(r < 60)
    sim = ProjectionSimulator(input_is_noiseless=True, pixel_size_mm=0.7421875)
    var = {d: (sim(hu.repeat(2, 1, 1, 1), d, torch.Generator().manual_seed(4)) - hu)[:, 0][:, roi]
           .var().item() for d in (1.0, 0.25, 0.05)}
    for dose in (0.25, 0.05):
        assert var[dose] * dose == pytest.approx(var[1.0], rel=0.10), (dose, var)


def test_without_a_pixel_size_the_image_spans_380_mm():
    sim = ProjectionSimulator()
    assert sim.pixel_for(512, 512) == pytest.approx(0.7421875)
    assert sim.pixel_for(874, 1200) == pytest.approx(380 / 1200)
    assert ProjectionSimulator(pixel_size_mm=0.5).pixel_for(1200, 1200) == 0.5


@pytest.mark.parametrize("target", [0.8, 2.0])
def test_match_noise_texture_sharpens_or_blurs_to_the_target(target: float) -> None:
    from scipy.ndimage import gaussian_filter

    from lowdose.metrics.noise import noise_texture
    from lowdose.physics.projection import match_noise_texture

    rng = np.random.default_rng(4)
    noise = gaussian_filter(rng.standard_normal((192, 192)), 0.9)  # reads about 1.3
    image = np.full((192, 192), 40.0)
    start = noise_texture(noise, tissue_of=image)
    shaped = match_noise_texture(noise, image, target)
    assert noise_texture(shaped, tissue_of=image) == pytest.approx(target, rel=0.02)
    assert (target - start) * (noise_texture(shaped, tissue_of=image) - start) > 0

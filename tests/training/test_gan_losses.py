"""Each GAN loss term on hand-made inputs, the history pool and the EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowdose.training.base import EMA
from lowdose.training.gan import (
    REFERENCE_PIXELS,
    HistoryPool,
    blur_downsample,
    cycle_loss,
    gaussian_blur,
    gradient_penalty,
    jst_loss,
    lowfreq_loss,
    lsgan_loss,
    total_variation,
    wgan_critic_loss,
    wgan_generator_loss,
)

torch.set_num_threads(1)


def test_tv_of_constant_is_zero_and_of_a_step_is_its_height() -> None:
    assert float(total_variation(torch.full((2, 1, 6, 6), 7.0))) == 0.0
    step = torch.zeros(1, 1, 4, 4)
    step[..., :, 2:] = 1.0  # one vertical edge of height 1 across 4 rows
    assert abs(float(total_variation(step)) - 4 / 16) < 1e-7
    assert abs(float(total_variation(step, REFERENCE_PIXELS)) - 4 / 16 * 4096) < 1e-3


def test_cycle_loss_of_identity_pair_is_zero_and_l1_otherwise() -> None:
    x = torch.rand(3, 1, 8, 8)
    assert float(cycle_loss(x, x.clone())) == 0.0
    assert abs(float(cycle_loss(x, x + 0.5)) - 0.5) < 1e-6
    assert abs(float(cycle_loss(x, x + 0.5, 64)) - 32.0) < 1e-4


def test_lowfreq_loss_sees_a_level_shift_and_not_fine_noise() -> None:
    x = torch.rand(2, 1, 32, 32) * 1000
    assert float(lowfreq_loss(x, x.clone(), sigma=4.0)) == 0.0
    assert float(lowfreq_loss(x, x - 7.0, sigma=4.0)) == pytest.approx(7.0, rel=1e-5)
    assert float(lowfreq_loss(x, x - 7.0, 4.0, REFERENCE_PIXELS)) == pytest.approx(7 * 4096,
                                                                                  rel=1e-5)
    # Removing pixel-scale noise (a checkerboard of +-20) changes the low-pass by almost nothing.
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = 20.0 * (1 - 2 * ((yy + xx) % 2)).float()
    noisy = x + checker
    assert float(lowfreq_loss(noisy, x, sigma=4.0)) < 0.5  # edges replicate: not exactly 0
    assert float(cycle_loss(noisy, x)) == pytest.approx(20.0)


def test_jst_zero_for_constant_identity_mapping_and_weights_by_tau() -> None:
    y = torch.full((1, 1, 8, 8), 0.3)
    assert float(jst_loss(y, y, 0.1)) == 0.0
    noisy = torch.rand(1, 1, 8, 8)
    smooth = torch.full_like(noisy, 0.5)
    # Mapping to a constant: only the (1 - tau) residual term is left.
    assert torch.isclose(jst_loss(noisy, smooth, 0.1), 0.9 * total_variation(noisy - smooth))


def test_wgan_losses() -> None:
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])
    assert float(wgan_critic_loss(real, fake)) == 0.0 - 3.0
    assert float(wgan_generator_loss(fake)) == 0.0
    assert float(lsgan_loss(torch.ones(4), 1.0)) == 0.0
    assert float(lsgan_loss(torch.zeros(4), 1.0)) == 1.0


def _linear_critic(slope: float) -> nn.Module:
    """score = slope * <w, x> with ||w|| = 1 over a 1x8x8 image: gradient norm = slope."""
    lin = nn.Linear(64, 1, bias=False)
    nn.init.constant_(lin.weight, 1 / 8)
    return nn.Sequential(nn.Flatten(), lin, nn.Flatten(0), _Scale(slope))


class _Scale(nn.Module):
    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s * x


def test_gp_of_a_linear_critic_with_unit_slope_is_zero() -> None:
    real, fake = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    assert abs(float(gradient_penalty(_linear_critic(1.0), real, fake).detach())) < 1e-10
    # Slope 3 everywhere: penalty (3 - 1)^2 = 4, whatever alpha is drawn.
    assert abs(float(gradient_penalty(_linear_critic(3.0), real, fake).detach()) - 4.0) < 1e-5


def test_gp_uses_per_sample_alpha_and_full_norm() -> None:
    # A critic sum(x^2)/2 has gradient x_hat: the norm depends on the interpolation point.
    critic = lambda x: 0.5 * (x**2).flatten(1).sum(1)  # noqa: E731
    real = torch.ones(64, 1, 4, 4) * 0.25  # ||real|| = 1
    fake = torch.zeros(64, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    gp = float(gradient_penalty(critic, real, fake, g).detach())
    alpha = torch.rand(64, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    expected = float(((alpha.flatten() - 1) ** 2).mean())
    assert abs(gp - expected) < 1e-6
    assert gp > 0.05  # not a constant alpha near 1


def test_gp_trains_the_critic() -> None:
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    gp = gradient_penalty(critic, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    gp.backward()
    assert critic[1].weight.grad is not None and float(critic[1].weight.grad.abs().sum()) > 0


def test_history_pool_returns_older_images_once_full() -> None:
    pool = HistoryPool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)
    later = torch.full((64, 1, 1, 1), 99.0)
    out = pool.query(later)
    assert (out != 99).any() and (out == 99).any()
    state = pool.state_dict()
    other = HistoryPool(4, seed=5)
    other.load_state_dict(state)
    assert torch.equal(torch.stack(other.images), torch.stack(pool.images))


def test_ema_tracks_the_average() -> None:
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # warm-up decay min(0.5, 2/11) -> 0.18: weight 0.82
    assert 0.8 < float(ema.module.weight) < 0.85
    assert not any(p.requires_grad for p in ema.parameters())


def test_blur_downsample_keeps_constants_and_halves_the_size() -> None:
    x = torch.full((1, 1, 16, 16), -300.0)
    out = blur_downsample(x, 2)
    assert out.shape == (1, 1, 8, 8) and torch.allclose(out, torch.full_like(out, -300.0))
    assert blur_downsample(x, 4).shape == (1, 1, 4, 4)
    assert blur_downsample(x, 1) is x


def test_gaussian_blur_keeps_the_mean_and_passes_white_noise_by_one_over_4_pi_sigma2() -> None:
    noise = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    for sigma in (1.0, 2.0):
        out = gaussian_blur(noise + 5.0, sigma)
        assert out.shape == noise.shape
        assert abs(float(out.mean()) - 5.0) < 0.02
        # A unit-area 2-D Gaussian passes a fraction 1 / (4 pi sigma^2) of white-noise power.
        expected = (1 / (4 * torch.pi * sigma**2)) ** 0.5
        assert abs(float(out.std()) / expected - 1) < 0.1


def test_gp_of_a_score_map_is_taken_on_its_mean_the_score_the_loss_uses() -> None:
    # The same unit-slope score in every cell of a 4x4 map: the mean has slope 1 (penalty 0);
    # the map's sum would have slope 16 (penalty 225).
    unit = _linear_critic(1.0)
    critic = lambda x: unit(x)[:, None, None, None].expand(-1, 1, 4, 4)  # noqa: E731
    real, fake = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    assert abs(float(gradient_penalty(critic, real, fake).detach())) < 1e-10
    with torch.no_grad():  # values only: no graph to convert to a float
        assert float(wgan_critic_loss(critic(real), critic(fake))) == pytest.approx(
            float(wgan_critic_loss(unit(real), unit(fake))), abs=1e-6)

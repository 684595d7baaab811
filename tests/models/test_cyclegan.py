"""CycleGAN networks for one-channel CT: shapes, output range, the denoiser wrapper."""

from __future__ import annotations

import pytest
import torch

from lowdose.models.base import denoisers
from lowdose.models.cyclegan import (
    CycleGanDenoiser,
    PatchDiscriminator,
    ResnetGenerator,
    UnetGenerator,
    build_generator,
    hu_to_signed,
    signed_to_hu,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("size", [32, 64])
def test_generator_shape_and_tanh_range(size: int) -> None:
    g = ResnetGenerator(ngf=8, n_blocks=2)
    out = g(torch.randn(2, 1, size, size) * 5)
    assert out.shape == (2, 1, size, size)
    assert float(out.detach().abs().max()) <= 1.0


def test_reference_layout() -> None:
    g = ResnetGenerator()
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].kernel_size == (7, 7) and convs[0].out_channels == 64
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules()) == 2
    # 1 + 2 downsampling + 9 blocks x 2 + output conv
    assert len(convs) == 1 + 2 + 18 + 1


def test_patchgan_map_size() -> None:
    assert PatchDiscriminator(ndf=8)(torch.rand(1, 1, 64, 64)).shape == (1, 1, 6, 6)
    assert PatchDiscriminator(ndf=8)(torch.rand(1, 1, 256, 256)).shape == (1, 1, 30, 30)


def test_signed_scaling() -> None:
    hu = torch.tensor([-1024.0, 1024.0, 3072.0])
    assert torch.allclose(hu_to_signed(hu), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(signed_to_hu(hu_to_signed(hu)), hu)


def test_registered_and_wrapper_runs() -> None:
    assert "cyclegan" in denoisers.names() and "gan-circle" in denoisers.names()
    d = CycleGanDenoiser.untrained({"ngf": 8, "n_blocks": 1})
    out = d.denoise(torch.full((1, 1, 30, 42), 40.0))
    assert out.shape == (1, 1, 30, 42)
    assert float(out.min()) >= -1024 and float(out.max()) <= 3072


@pytest.mark.parametrize("generator", ["resnet", "unet"])
@pytest.mark.parametrize("upsample", ["deconv", "resize"])
def test_residual_generator_is_identity_at_start_and_learns_a_correction(
    upsample: str, generator: str
) -> None:
    size = {"n_blocks": 1} if generator == "resnet" else {"num_downs": 3}
    g = build_generator(generator, ngf=8, residual=True, upsample=upsample, **size)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(g(x), x)
    assert not any(isinstance(m, torch.nn.Tanh) for m in g.modules())
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = ((g(x) - (x + 0.1)) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]  # learns the +0.1 offset as a correction


def test_resize_upsampling_has_no_transposed_conv() -> None:
    g = ResnetGenerator(ngf=8, n_blocks=1, upsample="resize")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert g(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="upsample"):
        ResnetGenerator(ngf=8, n_blocks=1, upsample="bilinear-ish")


def test_residual_wrapper_output_stays_in_hu_range() -> None:
    d = CycleGanDenoiser.untrained({"ngf": 8, "n_blocks": 1, "residual": True,
                                    "upsample": "resize"})
    hu = torch.full((1, 1, 32, 32), 40.0)
    assert torch.allclose(d.denoise(hu), hu, atol=1e-3)


@pytest.mark.parametrize("num_downs", [2, 3, 4])
def test_unet_generator_shape_range_and_reference_layout(num_downs: int) -> None:
    g = UnetGenerator(ngf=8, num_downs=num_downs)
    out = g(torch.randn(2, 1, 32, 32) * 5)
    assert out.shape == (2, 1, 32, 32) and float(out.detach().abs().max()) <= 1.0
    downs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.stride for m in downs] == [(2, 2)] * num_downs
    assert [m.out_channels for m in downs] == [8 * min(2**i, 8) for i in range(num_downs)]
    # skips concatenate: every up-conv but the innermost takes twice its level's filters
    assert ups[-1].out_channels == 1 and ups[0].in_channels == downs[-1].out_channels
    assert all(m.in_channels == 2 * d.out_channels
               for m, d in zip(ups[1:], reversed(downs[:-1]), strict=True))
    # instance norm everywhere but the outermost level and the innermost level's way down
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in g.modules()) == 2 * num_downs - 3
    with pytest.raises(ValueError, match="multiple of"):
        g(torch.zeros(1, 1, 18, 18))


def test_unet_denoiser_pads_to_its_levels_and_bad_generators_are_refused() -> None:
    d = CycleGanDenoiser.untrained({"generator": "unet", "ngf": 8, "num_downs": 3,
                                    "residual": True, "upsample": "resize"})
    assert d.multiple == 8 and CycleGanDenoiser.untrained({"ngf": 8, "n_blocks": 1}).multiple == 4
    x = torch.full((1, 1, 30, 42), 40.0)
    assert torch.allclose(d.denoise(x), x)  # residual, untrained: the identity, any size
    with pytest.raises(ValueError, match="generator"):
        build_generator("vit")

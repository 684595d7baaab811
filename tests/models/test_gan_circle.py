"""GAN-CIRCLE networks: shapes at scales 1, 2, 4, the filter rule, the residual, the wrappers."""

from __future__ import annotations

import pytest
import torch

from lowdose.models.gan_circle import (
    CircleGenerator,
    GanCircleDenoiser,
    GanCircleUpscaler,
    PatchCritic,
    dcscn_filters,
    hu_to_net,
    net_to_hu,
)

torch.set_num_threads(1)


def test_filter_rule_matches_the_fact_sheet() -> None:
    assert dcscn_filters(64) == [64, 54, 48, 43, 39, 35, 31, 28, 25, 22, 18, 16]
    assert dcscn_filters(128) == [128, 105, 92, 80, 70, 61, 53, 45, 37, 30, 22, 16]


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_generator_is_a_same_size_mapping(scale: int) -> None:
    g = CircleGenerator(scale=scale, f0=16)
    x = torch.rand(2, 1, 32, 48)
    assert g(x).shape == x.shape
    # Feature extraction: 12 layers, first strided by the internal factor.
    assert len(g.features) == 12
    assert g.features[0].stride == (g.config.stride,) * 2
    assert g.config.stride == max(2, scale)


def test_x4_uses_two_subpixel_stages_and_x2_a_transposed_conv() -> None:
    g4 = CircleGenerator(scale=4, f0=16)
    g2 = CircleGenerator(scale=2, f0=16)
    assert g4.config.upsampler == "pixelshuffle" and len(g4.upsample) == 2
    assert g2.config.upsampler == "deconv" and len(g2.upsample) == 1
    assert isinstance(g2.upsample[0].up, torch.nn.ConvTranspose2d)


def test_global_residual_zero_output_layer_gives_identity() -> None:
    g = CircleGenerator(scale=1, f0=16)
    torch.nn.init.zeros_(g.out.weight)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(g(x), x)


def test_zero_init_output_option_starts_at_identity() -> None:
    g = CircleGenerator(scale=1, f0=16, zero_init_output=True)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(g(x), x)
    assert "zero_init_output" in g.config.__dataclass_fields__
    reference = CircleGenerator(scale=1, f0=16).out.weight.detach()
    assert float(reference.abs().sum()) > 0  # the reference init


def test_generator_rejects_sizes_not_multiple_of_stride() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        CircleGenerator(scale=4, f0=16)(torch.rand(1, 1, 30, 32))


def test_generator_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="scale"):
        CircleGenerator(scale=3)
    with pytest.raises(ValueError, match="upsampler"):
        CircleGenerator(scale=2, upsampler="nearest")


@pytest.mark.parametrize("size,expected", [(64, 8), (32, 4), (48, 6)])
def test_critic_score_map_like_tf_same_padding(size: int, expected: int) -> None:
    c = PatchCritic(base=8)
    assert c(torch.rand(3, 1, size, size)).shape == (3, 1, expected, expected)


def test_critic_layout_follows_reference_code() -> None:
    c = PatchCritic()
    convs = [m for m in c.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]
    assert [m.stride[0] for m in convs] == [2, 2, 2, 1, 1]
    norms = [m for m in c.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3 and all(n.affine for n in norms)


def test_hu_scaling_round_trip() -> None:
    hu = torch.tensor([-1024.0, 0.0, 1000.0, 3072.0])
    assert torch.allclose(net_to_hu(hu_to_net(hu)), hu)
    assert float(hu_to_net(torch.tensor(-3000.0))) == 0.0


def test_denoiser_wrapper_keeps_shape_and_hu() -> None:
    d = GanCircleDenoiser.untrained({"f0": 16})
    torch.nn.init.zeros_(d.net.out.weight)
    hu = torch.full((1, 1, 40, 52), 40.0)
    out = d.denoise(hu)
    assert out.shape == hu.shape
    assert torch.allclose(out, hu, atol=1e-3)


@pytest.mark.parametrize("scale", [2, 4])
def test_upscaler_shapes_and_bicubic_when_residual_is_zero(scale: int) -> None:
    net = CircleGenerator(scale=scale, f0=16)
    torch.nn.init.zeros_(net.out.weight)
    up = GanCircleUpscaler(net, scale)
    hu = torch.linspace(-500, 500, 12 * 10).reshape(1, 1, 12, 10)
    out = up.upscale(hu)
    assert out.shape == (1, 1, 12 * scale, 10 * scale)
    # A constant image stays constant; the mean is kept (bicubic + zero residual).
    flat = up.upscale(torch.full((1, 1, 8, 8), 100.0))
    assert torch.allclose(flat, torch.full_like(flat, 100.0), atol=1e-2)


def test_upscaler_bf16_rounds_a_little_or_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import lowdose.device
    from lowdose.errors import LowdoseError

    torch.manual_seed(0)
    net = CircleGenerator(scale=2, f0=16)
    hu = 40 + 30 * torch.randn(1, 1, 16, 16)
    plain = GanCircleUpscaler(net, 2).upscale(hu)
    with pytest.raises(LowdoseError, match="precision"):
        GanCircleUpscaler(net, 2, precision="fp16")
    if lowdose.device.cpu_has_bf16():
        diff = (GanCircleUpscaler(net, 2, precision="bf16").upscale(hu) - plain).abs()
        assert 0 < float(diff.max()) < 20
    monkeypatch.setattr(lowdose.device, "cpu_has_bf16", lambda: False)
    with pytest.raises(LowdoseError, match="no native bf16"):
        GanCircleUpscaler(net, 2, precision="bf16").upscale(hu)


def test_upscale_progress_counts_slices(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from lowdose.image import CTImage

    volume = CTImage(np.zeros((3, 16, 16), np.float32), spacing=(2.0, 0.8, 0.8))
    up = GanCircleUpscaler(CircleGenerator(scale=2, f0=16), 2).upscale_image(
        volume, batch_size=2, progress=True)
    assert up.shape == (3, 32, 32)
    err = capsys.readouterr().err
    assert "3/3" in err and ("slice/s" in err or "s/slice" in err), err

"""RED-CNN and the residual U-Net: shapes, HU in/out, tiling, a few steps that lower the loss,
and the registry as a whole."""

from __future__ import annotations

import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.models.base import Denoiser, denoisers
from lowdose.models.network import NetworkDenoiser, tiled_apply
from lowdose.models.redcnn import RedCNN, RedCNNDenoiser
from lowdose.models.unet import ResUNet, ResUNetDenoiser

SMALL = {"red-cnn": {"filters": 8}, "unet": {"channels": [4, 8, 16]}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("net", [RedCNN(filters=8), ResUNet(channels=(4, 8, 16))])
@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_network_shapes(net: torch.nn.Module, size: tuple[int, int]) -> None:
    if isinstance(net, ResUNet) and size[0] % 4:
        pytest.skip("the U-Net needs multiples of 4; the wrapper pads")
    assert net(torch.rand(2, 1, *size)).shape == (2, 1, *size)


def test_paper_sizes() -> None:
    net = RedCNN()
    assert len(net.convs) == 5 and len(net.tconvs) == 5
    assert net.convs[1].weight.shape == (96, 96, 5, 5)


@pytest.mark.parametrize("cls", [RedCNNDenoiser, ResUNetDenoiser])
def test_denoiser_hu_in_hu_out_any_size(cls: type[NetworkDenoiser]) -> None:
    d = cls.untrained(SMALL[cls.name])
    hu = torch.full((2, 1, 37, 45), 40.0)
    out = d.denoise(hu)
    assert out.shape == hu.shape
    assert ((out >= -1024) & (out <= 3072)).all()
    assert d.config()["hu_range"] == [-1024.0, 3072.0]


def test_self_ensemble_commutes_with_flips_and_turns() -> None:
    torch.manual_seed(0)
    d = ResUNetDenoiser.untrained({"channels": [4, 8, 16]}, self_ensemble=True)
    hu = 40 + 30 * torch.randn(1, 1, 32, 40)
    out = d.denoise(hu)
    plain = ResUNetDenoiser(d.net, arch=d.arch).denoise(hu)
    assert out.shape == hu.shape
    assert not torch.allclose(out, plain, atol=1e-2)  # a random net is not turn-equivariant
    turned = d.denoise(hu.rot90(1, (-2, -1)).flip(-1))
    assert torch.allclose(turned, out.rot90(1, (-2, -1)).flip(-1), atol=1e-3)


def test_strength_scales_the_change() -> None:
    torch.manual_seed(0)
    net = ResUNetDenoiser.untrained({"channels": [4, 8, 16]}).net
    hu = 40 + 30 * torch.randn(1, 1, 32, 32)
    plain = ResUNetDenoiser(net, arch={"channels": [4, 8, 16]}).denoise(hu)
    for strength in (0.0, 0.5, 1.5):
        out = ResUNetDenoiser(net, arch={"channels": [4, 8, 16]}, strength=strength).denoise(hu)
        assert torch.allclose(out, hu + strength * (plain - hu), atol=1e-2)
    with pytest.raises(LowdoseError, match="strength"):
        ResUNetDenoiser(net, arch={"channels": [4, 8, 16]}, strength=-1.0)


def test_values_beyond_the_hu_range_pass_through() -> None:
    # an 8-bit image's lung window reaches -1350 HU, scanner padding -3024, metal 3500:
    # the network sees them at the range's edge and its change is added to them
    shift = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.ones_(shift.weight)
    torch.nn.init.constant_(shift.bias, 10.0 / 4096)  # 10 HU brighter everywhere
    hu = torch.tensor([[-3024.0, -1350.0, -1024.0, 40.0], [500.0, 3000.0, 3072.0, 3500.0]])
    out = NetworkDenoiser(shift, arch={}).denoise(hu[None, None])[0, 0]
    expected = hu + 10.0
    expected[1, 2:] = hu[1, 2:]  # at or above 3072 HU: the change is clipped at the range's edge
    expected[1, 1] = 3010.0
    assert torch.allclose(out, expected, atol=1e-2)


def test_bf16_on_cpu_rounds_a_little_or_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import lowdose.device

    torch.manual_seed(0)
    arch = {"channels": [4, 8, 16]}
    net = ResUNetDenoiser.untrained(arch).net
    hu = 40 + 30 * torch.randn(1, 1, 64, 64)
    plain = ResUNetDenoiser(net, arch=arch).denoise(hu)
    with pytest.raises(LowdoseError, match="precision"):
        ResUNetDenoiser(net, arch=arch, precision="fp16")
    if lowdose.device.cpu_has_bf16():
        out = ResUNetDenoiser(net, arch=arch, precision="bf16").denoise(hu)
        assert out.dtype == torch.float32
        diff = (out - plain).abs()
        # rounded (so bf16 ran), by a small part of the change the network makes
        assert 0 < float(diff.max()) < 0.05 * float((plain - hu).abs().max()) + 2.0
    monkeypatch.setattr(lowdose.device, "cpu_has_bf16", lambda: False)
    with pytest.raises(LowdoseError, match="no native bf16"):
        ResUNetDenoiser(net, arch=arch, precision="bf16").denoise(hu)


@pytest.mark.parametrize(("channels", "multiple"), [([4, 8], 2), ([4, 8, 16, 32], 8)])
def test_unet_pads_to_its_own_depth(channels: list[int], multiple: int) -> None:
    d = ResUNetDenoiser.untrained({"channels": channels})
    assert d.multiple == multiple
    hu = torch.full((1, 1, 37, 45), 40.0)
    assert d.denoise(hu).shape == hu.shape


@pytest.mark.parametrize("cls", [RedCNNDenoiser, ResUNetDenoiser])
def test_tiled_equals_whole(cls: type[NetworkDenoiser]) -> None:
    torch.manual_seed(0)
    whole = cls.untrained(SMALL[cls.name], tile_size=512)
    tiled = cls(whole.net, arch=whole.arch, tile_size=192, tile_overlap=128, tile_batch=3)
    hu = torch.randn(2, 1, 300, 280) * 200
    a, b = whole.denoise(hu), tiled.denoise(hu)
    assert (a - b).abs().max() < 1.0  # HU; the overlap covers the receptive field


def test_tiled_apply_exact_for_pointwise() -> None:
    x = torch.rand(3, 1, 70, 130)
    y = tiled_apply(lambda t: t * 3 + 1, x, tile_size=32, tile_overlap=8, multiple=4)
    assert torch.allclose(y, x * 3 + 1, atol=1e-6)


@pytest.mark.parametrize(("shape", "tile_batch", "batches"), [
    ((5, 1, 64, 64), 1, [1, 1, 1, 1, 1]),  # whole images of a full tile: tile_batch at a time
    ((5, 1, 64, 64), 2, [2, 2, 1]),
    ((9, 1, 32, 32), 1, [4, 4, 1]),  # quarter-tile images: four hold one tile's pixels
    ((2, 1, 100, 70), 3, [3, 3, 2]),  # 2 x 2 tiles per image, 3 at a time
])
def test_tiled_apply_bounds_the_pixels_run_at_once(shape, tile_batch, batches) -> None:
    seen: list[int] = []

    def record(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape[0])
        return t * 2

    x = torch.rand(shape)
    y = tiled_apply(record, x, tile_size=64, tile_overlap=16, tile_batch=tile_batch)
    assert seen == batches and torch.allclose(y, x * 2)


def test_networks_run_one_slice_at_a_time_on_a_cpu_by_default() -> None:
    from lowdose.models.network import default_tile_batch

    d = ResUNetDenoiser.untrained(SMALL["unet"], tile_size=64, tile_overlap=16)
    seen: list[int] = []
    hook = d.net.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    d.denoise(torch.zeros(3, 1, 64, 64))
    hook.remove()
    assert default_tile_batch("cpu") == 1 and seen == [1, 1, 1]
    assert default_tile_batch("cuda") == 8


@pytest.mark.parametrize("cls", [RedCNNDenoiser, ResUNetDenoiser])
def test_few_steps_lower_the_loss(cls: type[NetworkDenoiser]) -> None:
    from lowdose.training.denoising import OptimConfig, SupervisedDenoiserFamily

    torch.manual_seed(0)
    d = cls.untrained(SMALL[cls.name])
    fam = SupervisedDenoiserFamily(d, OptimConfig(lr=2e-3, warmup_steps=1), max_steps=25)
    opt = fam.configure_optimizers()["net"]
    g = torch.Generator().manual_seed(1)
    clean = torch.zeros(4, 1, 24, 24)
    clean[:, :, 6:18, 6:18] = 300.0
    batch = {"full": clean, "low": clean + 60 * torch.randn(clean.shape, generator=g)}
    losses = []
    for step in range(25):
        opt.zero_grad()
        loss = fam.training_step(batch, "net", step)["loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name", denoisers.names())
def test_every_registered_denoiser_restores_hu(name: str) -> None:
    cls = denoisers.get(name)
    if isinstance(cls, type) and issubclass(cls, NetworkDenoiser):
        d: Denoiser = cls.untrained(SMALL.get(name))
    else:
        d = cls()
    hu = torch.full((1, 1, 32, 32), -1000.0)
    hu[..., 8:24, 8:24] = 40.0
    out = d.denoise(hu)
    assert out.shape == hu.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_shipped_weights_load_when_present() -> None:
    from lowdose.models.loading import WEIGHTS_DIR, load_denoiser

    for cls in (RedCNNDenoiser, ResUNetDenoiser):
        if not (WEIGHTS_DIR / f"{cls.shipped}.safetensors").is_file():
            pytest.skip(f"{cls.shipped} weights not shipped yet")
        d = load_denoiser(cls.name, device="cpu")
        assert isinstance(d, cls) and d.metadata.get("dose") == 0.25


@pytest.mark.parametrize("name", denoisers.names())
def test_pixel_size_note_needs_a_known_training_scale(name: str) -> None:
    """Nothing known, nothing said; a learned model that records its training pixel sizes
    warns beyond 1.5 times them, on either side."""
    cls = denoisers.get(name)
    learned = isinstance(cls, type) and issubclass(cls, NetworkDenoiser)
    d: Denoiser = cls.untrained(SMALL.get(name)) if learned else cls()
    assert d.pixel_size_note(3.1) is None and d.pixel_size_note(None) is None
    if not learned:
        return
    d.metadata["train_pixel_mm"] = [0.6, 0.8]
    for inside in (0.41, 0.6, 0.74, 1.19):
        assert d.pixel_size_note(inside) is None
    for outside in (0.39, 1.21, 3.1):
        assert f"{outside:.2f} mm pixels, outside its training scale" in d.pixel_size_note(outside)
    assert d.pixel_size_note(0.0) is None  # no usable pixel size, no claim


def test_shipped_learned_weights_record_their_training_pixel_sizes() -> None:
    """Every shipped scale-1 learned model knows the pixel sizes it was trained on (0.62 mm up
    to 0.98 mm, one 1.69 mm slice for the unet), so the Kaggle study's 3.1 mm slices warn."""
    from lowdose.models.loading import load_denoiser, shipped_learned

    names = shipped_learned()
    if not names:
        pytest.skip("no learned weights shipped")
    for name in names:
        d = load_denoiser(name, device="cpu")
        lo, hi = d.metadata["train_pixel_mm"]
        assert 0.5 < lo <= hi < 2.0
        assert d.pixel_size_note(0.74) is None and "3.10 mm" in d.pixel_size_note(3.1)

"""GAN-CIRCLE (You et al., IEEE TMI 2019): generators, critic and the denoiser/upscaler wrappers.

The networks follow the reference code (charlesyou999648/GAN-CIRCLE, TF1) layer by layer; the
places where it was broken or silent are resolved as follows (see also the model card):

* **Same-size mapping.** As in the released code, a generator maps an image on the high-resolution
  grid to an image of the same size: the feature branch starts with a stride-``s`` convolution and
  the upsampling brings it back by ``s``; the output is ``input + residual`` (global residual).
  For super-resolution by ``s`` the low-resolution image is first put on the fine grid by bicubic
  interpolation (:func:`to_fine_grid`), so both generators (``G``: low->high quality, ``F``: back)
  have the same structure, as the paper states.
* **Stride and upsampling.** The release ties the first-layer stride to ``n_stride = 2`` and
  upsamples with a 4x4 transposed convolution (stride 2). Its x4 path calls an undefined
  ``pixelShuffler``; we implement what it names: sub-pixel convolution, two x2 stages (the DCSCN
  pixel shuffler the generator derives from). Scale 1 (denoising) uses the released stride-2
  same-size network.
* **Filters.** Feature layer ``i`` of 12 has ``int((F0 - 16) * (1 - (i / 11) ** (1 / 1.5)) + 16)``
  filters (DCSCN rule). ``F0 = 64`` (the paper-likely list 64, 54, ..., 16) is the default; the
  release used ``F0 = 128``; both are a config value.
* **Dropout** is a no-op in the release (TF1 ``training`` defaults to False): none here.

Example:
    >>> g = CircleGenerator(scale=2)
    >>> g(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 1, 64, 64])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as nnf
from torch import nn

from lowdose.models.base import denoisers, reformat_note, training_scale_note
from lowdose.models.network import (
    NetworkDenoiser,
    checked_precision,
    default_tile_batch,
    precision_context,
    tiled_apply,
)

# HU range every GAN network of this module works in: HU clipped to [-1024, 3072] scaled to
# [0, 1] (the project's `full` convention; the reference code fed data "roughly in [0, 1]").
NET_HU_LO = -1024.0
NET_HU_HI = 3072.0

SCALES = (1, 2, 4)


def hu_to_net(hu: torch.Tensor) -> torch.Tensor:
    """HU -> the networks' [0, 1] range (HU clipped to [-1024, 3072])."""
    return ((hu - NET_HU_LO) / (NET_HU_HI - NET_HU_LO)).clamp(0.0, 1.0)


def net_to_hu(x: torch.Tensor) -> torch.Tensor:
    """The networks' [0, 1] range -> HU."""
    return x * (NET_HU_HI - NET_HU_LO) + NET_HU_LO


def dcscn_filters(f0: int, n_layers: int = 12, fmin: int = 16, gamma: float = 1.5) -> list[int]:
    """Filters per feature-extraction layer by the DCSCN rule used in GAN-CIRCLE.

    Example:
        >>> dcscn_filters(64)
        [64, 54, 48, 43, 39, 35, 31, 28, 25, 22, 18, 16]
    """
    last = n_layers - 1
    return [int((f0 - fmin) * (1 - (i / last) ** (1 / gamma)) + fmin) for i in range(n_layers)]


@dataclass
class CircleGeneratorConfig:
    """Hyper-parameters of one GAN-CIRCLE generator.

    Attributes:
        scale: super-resolution factor the network is trained for (1 = denoising).
        f0: filters of the first feature layer (64 paper-likely, 128 as released).
        n_layers: feature-extraction layers (12).
        fmin: filters of the last feature layer (16).
        gamma: decay exponent of the DCSCN filter rule (1.5).
        stride: stride of the first feature layer = internal upsampling factor
            (default: 2 for scale 1 and 2, as released; 4 for scale 4).
        nin_a: filters of the 1x1 A branch of the network-in-network (64).
        nin_b1: filters of the 1x1 first layer of the B branch (32).
        nin_b2: filters of the 3x3 second layer of the B branch (8, as released).
        up_filters: channels after upsampling (36).
        upsampler: ``deconv`` (4x4 transposed conv per x2, as released) or ``pixelshuffle``
            (sub-pixel conv per x2; the release's intended x4 path). Default: deconv for a
            stride of 2, pixelshuffle for 4.
        leaky: negative slope of the leaky ReLUs (0.1).
        zero_init_output: start the last (residual) convolution at zero, so the untrained
            generator is the identity (not in the reference code, which initialises it like the
            other layers; a short training then starts from "change nothing" instead of spending
            its first hundreds of steps undoing a random residual of tens of HU).
    """

    scale: int = 1
    f0: int = 64
    n_layers: int = 12
    fmin: int = 16
    gamma: float = 1.5
    stride: int | None = None
    nin_a: int = 64
    nin_b1: int = 32
    nin_b2: int = 8
    up_filters: int = 36
    upsampler: str | None = None
    leaky: float = 0.1
    zero_init_output: bool = False

    def resolved(self) -> CircleGeneratorConfig:
        """A copy with ``stride`` and ``upsampler`` filled in and the values checked."""
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale}")
        stride = self.stride if self.stride is not None else max(2, self.scale)
        if stride not in (1, 2, 4):
            raise ValueError(f"stride must be 1, 2 or 4, got {stride}")
        upsampler = self.upsampler or ("deconv" if stride <= 2 else "pixelshuffle")
        if upsampler not in ("deconv", "pixelshuffle"):
            raise ValueError(f"upsampler must be deconv or pixelshuffle, got {upsampler!r}")
        return CircleGeneratorConfig(**{**asdict(self), "stride": stride, "upsampler": upsampler})


class _Upsample2(nn.Module):
    """One x2 stage: 3x3 conv (no activation), then x2 up to ``out_ch`` channels, leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kind: str, leaky: float) -> None:
        super().__init__()
        self.pre = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        if kind == "deconv":
            # 4x4 kernel, stride 2, padding 1: exactly doubles the size (TF 'SAME').
            self.up: nn.Module = nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)
        else:
            self.up = nn.Sequential(nn.Conv2d(in_ch, out_ch * 4, 3, padding=1), nn.PixelShuffle(2))
        self.act = nn.LeakyReLU(leaky)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.up(self.pre(x)))


class CircleGenerator(nn.Module):
    """One GAN-CIRCLE generator (``G`` or ``F``): same-size mapping on the fine grid.

    Input and output are ``(B, 1, H, W)`` in the networks' [0, 1] range; ``H`` and ``W`` must be
    multiples of the stride. Feature extraction: 12 sequential 3x3 convs (first one strided),
    leaky ReLU 0.1, all 12 outputs concatenated; reconstruction: network-in-network (A: 1x1 conv
    64; B: 1x1 conv 32 -> 3x3 conv 8), concatenated (72 channels); upsampling back by the stride;
    a bias-free 3x3 conv to one channel; plus the input (global residual).

    Example:
        >>> CircleGenerator(scale=4)(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, config: CircleGeneratorConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = CircleGeneratorConfig(**{**asdict(config or CircleGeneratorConfig()), **overrides})
        self.config = cfg.resolved()
        cfg = self.config
        assert cfg.stride is not None and cfg.upsampler is not None
        act = nn.LeakyReLU(cfg.leaky)
        filters = dcscn_filters(cfg.f0, cfg.n_layers, cfg.fmin, cfg.gamma)
        layers = []
        in_ch = 1
        for i, out_ch in enumerate(filters):
            stride = cfg.stride if i == 0 else 1
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1))
            in_ch = out_ch
        self.features = nn.ModuleList(layers)
        self.act = act
        total = sum(filters)
        self.nin_a = nn.Conv2d(total, cfg.nin_a, 1)
        self.nin_b1 = nn.Conv2d(total, cfg.nin_b1, 1)
        self.nin_b2 = nn.Conv2d(cfg.nin_b1, cfg.nin_b2, 3, padding=1)
        rec = cfg.nin_a + cfg.nin_b2
        stages: list[nn.Module] = []
        ch = rec
        for _ in range(round(math.log2(cfg.stride))):
            stages.append(_Upsample2(ch, cfg.up_filters, cfg.upsampler, cfg.leaky))
            ch = cfg.up_filters
        self.upsample = nn.Sequential(*stages)
        self.out = nn.Conv2d(ch, 1, 3, padding=1, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # TF1 variance_scaling_initializer defaults: scale 1, fan_in, truncated normal.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = nn.init._calculate_correct_fan(m.weight, "fan_in")
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
                nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.config.zero_init_output:
            nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.config.stride or 1
        if x.shape[-1] % stride or x.shape[-2] % stride:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of {stride}")
        feats = []
        h = x
        for conv in self.features:
            h = self.act(conv(h))
            feats.append(h)
        h = torch.cat(feats, dim=1)
        a = self.act(self.nin_a(h))
        b = self.nin_b2(self.act(self.nin_b1(h)))
        h = self.upsample(torch.cat([a, b], dim=1))
        return x + self.out(h)


class _SamePad(nn.Module):
    """TF 'SAME' padding for a 4x4 kernel (asymmetric when the total is odd)."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            out = -(-size // self.stride)
            total = max((out - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return nnf.pad(x, pads)


class PatchCritic(nn.Module):
    """The reference-code critic: a PatchGAN of 4x4 convs giving a raw (WGAN) score map.

    64(s2, no norm) - 128(s2, IN) - 256(s2, IN) - 512(s1, IN) - 1(s1), leaky ReLU 0.2, TF 'SAME'
    padding (a 64x64 patch gives an 8x8 map), weights N(0, 0.02), instance-norm scale N(1, 0.02).
    No sigmoid: the WGAN loss takes the mean of the map.

    Example:
        >>> PatchCritic()(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self, base: int = 64, n_down: int = 3, leaky: float = 0.2, norm: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        widths = [base * 2**i for i in range(n_down + 1)]
        for i, out_ch in enumerate(widths):
            stride = 2 if i < n_down else 1
            layers += [_SamePad(4, stride), nn.Conv2d(in_ch, out_ch, 4, stride=stride)]
            if i > 0 and norm:
                layers.append(nn.InstanceNorm2d(out_ch, affine=True, eps=1e-5))
            layers.append(nn.LeakyReLU(leaky))
            in_ch = out_ch
        layers += [_SamePad(4, 1), nn.Conv2d(in_ch, 1, 4)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, 0.0, 0.02, -0.04, 0.04)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.InstanceNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def to_fine_grid(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic interpolation of a coarse ``(B, 1, h, w)`` image to ``(B, 1, h*s, w*s)``."""
    if scale == 1:
        return x
    return nnf.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


# ---------------------------------------------------------------- denoiser and upscaler


@denoisers.register("gan-circle")
class GanCircleDenoiser(NetworkDenoiser):
    """GAN-CIRCLE generator ``G`` (low->full dose), trained unpaired, as a :class:`Denoiser`.

    Example:
        >>> d = GanCircleDenoiser.untrained({"f0": 16})
        >>> d.denoise(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    name = "gan-circle"
    arch_class: ClassVar[type[nn.Module] | None] = CircleGenerator
    default_arch: ClassVar[dict[str, Any]] = {"scale": 1, "f0": 64}
    multiple: ClassVar[int] = 4
    shipped: ClassVar[str | None] = "gan-circle"


@denoisers.register("gan-circle-semi")
class GanCircleSemiDenoiser(GanCircleDenoiser):
    """GAN-CIRCLE generator ``G`` trained semi-supervised (a fraction of aligned pairs).

    Same network as ``gan-circle``; its shipped weights come from the semi-supervised mode
    (``--paired-fraction``), so the benchmarks list it as its own row.
    """

    name = "gan-circle-semi"
    shipped: ClassVar[str | None] = "gan-circle-semi"


class GanCircleUpscaler:
    """Super-resolution by 2 or 4 with a GAN-CIRCLE generator trained for that scale.

    The coarse slice is put on the fine grid by bicubic interpolation and refined by ``G``
    (the same-size mapping of the reference code), tiled like the denoisers.

    Args:
        net: a :class:`CircleGenerator` built for ``scale``.
        scale: 2 or 4.
        precision: ``"fp32"`` or ``"bf16"`` (see
            :class:`lowdose.models.network.NetworkDenoiser`).
        metadata: facts about the weights (from the model card / config).

    Example:
        >>> up = GanCircleUpscaler(CircleGenerator(scale=2, f0=16), 2)
        >>> up.upscale(torch.zeros(1, 1, 20, 30)).shape
        torch.Size([1, 1, 40, 60])
    """

    name = "gan-circle"

    def __init__(
        self,
        net: CircleGenerator,
        scale: int,
        *,
        tile_size: int = 512,
        tile_overlap: int = 64,
        tile_batch: int | None = None,
        precision: str = "fp32",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if scale not in (2, 4):
            raise ValueError(f"upscaling scale must be 2 or 4, got {scale}")
        self.net = net.eval()
        self.scale = scale
        self.precision = checked_precision(precision)
        self.tile_size, self.tile_overlap, self.tile_batch = tile_size, tile_overlap, tile_batch
        self.metadata = dict(metadata or {})

    @property
    def device(self) -> torch.device:
        return next(iter(self.net.parameters())).device

    def pixel_size_note(self, pixel_mm: float | None) -> str | None:
        """A warning when input slices of ``pixel_mm`` lie beyond the pixel sizes of the
        coarse slices it was trained on (``metadata["train_pixel_mm"]``: the full-dose pixel
        sizes times the scale, as the degradation bins them) by more than
        :data:`~lowdose.models.base.PIXEL_TOLERANCE` times. Its quality is measured only at
        that scale (``benchmarks/upscale.py``).

        Example:
            >>> up = GanCircleUpscaler(CircleGenerator(scale=2, f0=16), 2,
            ...                        metadata={"train_pixel_mm": [1.24, 1.95]})
            >>> up.pixel_size_note(1.4) is None, up.pixel_size_note(0.7)[:45]
            (True, 'gan-circle x2 was trained on 1.24-1.95 mm pix')
        """
        return training_scale_note(
            f"{self.name} x{self.scale}", self.metadata.get("train_pixel_mm"), pixel_mm,
            f"it learned x{self.scale} from full-dose slices blurred and binned to those sizes, "
            "and its quality on others is not measured (benchmarks/upscale.py)")

    def plane_note(self, orientation: str | None) -> str | None:
        """A warning when the slices are coronal, sagittal or oblique: it was trained on axial
        slices, whose blur and noise are alike along both in-plane axes, unlike a reformat's.

        Example:
            >>> up = GanCircleUpscaler(CircleGenerator(scale=2, f0=16), 2)
            >>> up.plane_note("axial") is None, up.plane_note("sagittal")[:36]
            (True, 'gan-circle x2: these slices are sagi')
        """
        return reformat_note(
            f"{self.name} x{self.scale}", orientation,
            "it was trained on axial slices, and a reformat's resolution and noise differ "
            "along the head-foot axis (not measured): where you have the axial series, "
            "upscale it and reformat the result")

    def upscale(self, hu: torch.Tensor) -> torch.Tensor:
        """``(B, 1, h, w)`` HU -> ``(B, 1, h * scale, w * scale)`` HU."""
        if hu.ndim != 4 or hu.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) HU tensor, got shape {tuple(hu.shape)}")
        with torch.inference_mode():
            fine = to_fine_grid(hu_to_net(hu.to(self.device, torch.float32)), self.scale)

            def run(x: torch.Tensor) -> torch.Tensor:
                with precision_context(self.precision, x.device):
                    return self.net(x).float()

            out = tiled_apply(run, fine, self.tile_size, self.tile_overlap, 4,
                              self.tile_batch or default_tile_batch(self.device))
            return net_to_hu(out.clamp(0.0, 1.0)).to(hu.device)

    def upscale_image(self, image: Any, batch_size: int = 4, progress: bool = False) -> Any:
        """Upscale a slice or volume in-plane; returns a new :class:`lowdose.CTImage`.

        In-plane spacing is divided by ``scale``; the slice spacing is kept. The field of view is
        unchanged: the first pixel's centre moves by ``-(s - 1) / (2 s)`` of an old pixel along
        rows and columns (bicubic with ``align_corners=False`` keeps pixel edges aligned), so
        ``origin`` is moved along the image's row and column directions.
        """
        import numpy as np

        s = self.scale
        stack = image.slices()
        out = np.empty((stack.shape[0], stack.shape[1] * s, stack.shape[2] * s), np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=stack.shape[0], desc=f"upscale x{s} ({self.name})", unit="slice")
        for start in range(0, stack.shape[0], max(1, batch_size)):
            chunk = torch.from_numpy(np.ascontiguousarray(stack[start : start + batch_size]))
            out[start : start + batch_size] = self.upscale(chunk[:, None])[:, 0].cpu().numpy()
            if bar is not None:
                bar.update(chunk.shape[0])
        if bar is not None:
            bar.close()
        spacing = list(image.spacing)
        dy, dx = spacing[-2], spacing[-1]
        spacing[-2], spacing[-1] = dy / s, dx / s
        origin = image.origin
        if origin is not None:
            direction = np.eye(3) if image.direction is None else np.asarray(image.direction)
            shift = (s - 1) / (2 * s)
            # direction[:, 0]: along a row (column index), direction[:, 1]: down a column.
            new = np.asarray(origin) - shift * dx * direction[:, 0] - shift * dy * direction[:, 1]
            origin = tuple(float(v) for v in new)
        pixels = out if image.is_volume else out[0]
        return image.with_pixels(
            pixels,
            spacing=tuple(spacing),
            origin=origin,
            metadata={"upscaler": f"{self.name} x{s}", "upscale": s},
        )


#: Shipped upscaler names, each with weights ``<name>-x<scale>.safetensors`` for some scales:
#: ``gan-circle`` (the default; every training sample an aligned pair) and
#: ``gan-circle-unpaired`` (trained unpaired, as in the study; x2 only).
SHIPPED_UPSCALERS = ("gan-circle", "gan-circle-unpaired")
DEFAULT_UPSCALER = "gan-circle"


def shipped_upscaler_path(name: str, scale: int) -> Any:
    """Where the shipped weights of upscaler ``name`` at ``scale`` live (they may be absent).

    Example:
        >>> shipped_upscaler_path("gan-circle", 2).name
        'gan-circle-x2.safetensors'
    """
    from lowdose.models.loading import WEIGHTS_DIR

    return WEIGHTS_DIR / f"{name}-x{scale}.safetensors"


def shipped_upscalers() -> list[tuple[str, int]]:
    """``(name, scale)`` of every shipped upscaler whose weights are installed.

    Example:
        >>> ("gan-circle", 2) in shipped_upscalers()
        True
    """
    return [(name, scale) for name in SHIPPED_UPSCALERS for scale in (2, 4)
            if shipped_upscaler_path(name, scale).is_file()]


def load_upscaler(
    name_or_path: str | None = None,
    scale: int = 2,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> GanCircleUpscaler:
    """A ready GAN-CIRCLE upscaler: shipped weights for ``scale`` or a file.

    Args:
        name_or_path: a shipped name (:data:`SHIPPED_UPSCALERS`; default ``gan-circle``, the
            weights ``gan-circle-x{scale}``), a ``.safetensors`` weight file or a training
            checkpoint folder of a x2/x4 model.
        scale: 2 or 4; must match the weights.
        device: where the network runs (default: a CUDA GPU if present, else the CPU).
        precision: ``"fp32"`` or ``"bf16"`` (see :class:`GanCircleUpscaler`).

    Raises:
        LowdoseError: unknown name, missing weights, or weights for another scale or model.

    Example:
        >>> load_upscaler(scale=2).scale  # doctest: +SKIP
        2
    """
    from pathlib import Path

    from lowdose.device import pick_device
    from lowdose.errors import LowdoseError
    from lowdose.models.loading import read_weights

    if scale not in (2, 4):
        raise LowdoseError(f"--scale must be 2 or 4, got {scale}")
    name = str(name_or_path or DEFAULT_UPSCALER)
    if name in SHIPPED_UPSCALERS:
        path = shipped_upscaler_path(name, scale)
        if not path.is_file():
            have = [f"x{s}" for n, s in shipped_upscalers() if n == name]
            raise LowdoseError(f"{name}: no shipped x{scale} weights (shipped: "
                               f"{', '.join(have) or 'none'}); pass --model FILE")
    else:
        path = Path(name)
        if not path.exists():
            raise LowdoseError(f"{name}: neither a shipped upscaler "
                               f"({', '.join(SHIPPED_UPSCALERS)}) nor a weight file")
    state, config = read_weights(path)
    if config.get("model") != "gan-circle":
        raise LowdoseError(f"{path}: a {config.get('model')!r} model, not a GAN-CIRCLE upscaler")
    if int(config.get("scale", 1)) != scale:
        raise LowdoseError(f"{path}: weights are for x{config.get('scale', 1)}, not x{scale}")
    prefix = config.get("module_prefix", "")
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    net = CircleGenerator(**dict(config.get("arch", {})))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise LowdoseError(f"{path}: weights do not fit the GAN-CIRCLE generator: {exc}") from None
    net.to(pick_device(str(device) if device else None))
    return GanCircleUpscaler(net, scale, precision=precision,
                             metadata=dict(config.get("metadata", {})))

"""CycleGAN (Zhu et al. 2017) for one-channel CT patches: ResNet generator, PatchGAN, denoiser.

Adapted from the reference defaults (junyanz/pytorch-CycleGAN-and-pix2pix): ``resnet_9blocks``
generator (reflect-padded 7x7 conv, two stride-2 downsamplings, residual blocks, two transposed
upsamplings, 7x7 conv, tanh) and the 70x70 PatchGAN (``basic``, 3 layers), instance norm,
weights N(0, 0.02). One channel in and out; HU in [-1024, 3072] are mapped to [-1, 1] for the
tanh output. ``ngf`` and ``n_blocks`` are settings (64 and 9 in the paper's setup).

Two optional deviations, off by default, exist because the reference network trained for a few
hundred CPU steps gave a -150 HU offset and checkerboard artefacts on the real Mayo pairs:

* ``residual=True``: the output is ``input + conv(...)`` (a global skip, its last convolution
  starting at zero, no tanh; the denoiser clips to the HU range), so the untrained generator is
  the identity and the network learns only the correction. The reference generator must
  re-synthesise every HU value through a tanh, and any bias in it is a global HU shift.
* ``upsample="resize"``: x2 nearest-neighbour upsampling then a 3x3 convolution instead of the
  stride-2 transposed convolution, whose uneven kernel overlap is the classic source of
  checkerboard patterns (Odena et al., Distill 2016).

Example:
    >>> ResnetGenerator(ngf=8, n_blocks=1)(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lowdose.models.base import denoisers
from lowdose.models.network import NetworkDenoiser

HU_LO = -1024.0
HU_HI = 3072.0


def hu_to_signed(hu: torch.Tensor) -> torch.Tensor:
    """HU clipped to [-1024, 3072] -> [-1, 1]."""
    return (2 * (hu - HU_LO) / (HU_HI - HU_LO) - 1).clamp(-1.0, 1.0)


def signed_to_hu(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> HU."""
    return (x + 1) / 2 * (HU_HI - HU_LO) + HU_LO


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _upsampling(in_ch: int, out_ch: int, upsample: str) -> list[nn.Module]:
    """x2 upsampling: a 4x4 stride-2 transposed conv (``deconv``, the U-Net reference) or
    nearest x2 + 3x3 conv (``resize``)."""
    if upsample == "deconv":
        return [nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)]
    if upsample == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                nn.Conv2d(in_ch, out_ch, 3)]
    raise ValueError(f"upsample must be deconv or resize, got {upsample!r}")


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator, one channel, output in [-1, 1] (tanh).

    Input height and width must be multiples of 4. Instance norm without affine parameters
    (the reference's ``instance`` norm). ``residual`` and ``upsample`` are the deviations
    described in the module docstring.

    Example:
        >>> g = ResnetGenerator(ngf=8, n_blocks=1, residual=True, upsample="resize")
        >>> x = torch.rand(1, 1, 16, 16) * 2 - 1
        >>> bool(torch.equal(g(x), x))  # starts as the identity
        True
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9, residual: bool = False,
                 upsample: str = "deconv") -> None:
        super().__init__()
        if upsample not in ("deconv", "resize"):
            raise ValueError(f"upsample must be deconv or resize, got {upsample!r}")
        self.residual = residual
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(1, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True),
        ]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2),
                       nn.ReLU(True)]
            ch *= 2
        layers += [_ResBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):
            # The ResNet reference's transposed conv is 3x3 (the U-Net's 4x4): its own here.
            up = ([nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1)]
                  if upsample == "deconv" else _upsampling(ch, ch // 2, upsample))
            layers += [*up, nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        last = nn.Conv2d(ch, 1, 7)
        layers += [nn.ReflectionPad2d(3), last]
        if not residual:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        _init(self)
        if residual:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of 4")
        out = self.net(x)
        return x + out if self.residual else out


class _UnetLevel(nn.Module):
    """One level of the reference U-Net: down (4x4 stride-2 conv), the inner levels, up; the
    level's input is concatenated to its output (except at the outermost level)."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, outermost: bool,
                 upsample: str, norm: bool) -> None:
        super().__init__()
        def nrm(ch: int) -> list[nn.Module]:
            return [nn.InstanceNorm2d(ch)] if norm else []

        down: list[nn.Module] = [nn.Conv2d(outer, inner, 4, stride=2, padding=1)]
        if not outermost:
            down = [nn.LeakyReLU(0.2, True), *down]
            if sub is not None:  # the innermost level has no norm on its way down
                down += nrm(inner)
        up_in = inner if sub is None else 2 * inner
        out_ch = 1 if outermost else outer
        up = [nn.ReLU(True), *_upsampling(up_in, out_ch, upsample)]
        if not outermost:
            up += nrm(outer)
        self.outermost = outermost
        self.block = nn.Sequential(*down, *([sub] if sub is not None else []), *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out if self.outermost else torch.cat([x, out], 1)


class UnetGenerator(nn.Module):
    """The CycleGAN reference's U-Net generator (``--netG unet_*``, from pix2pix), one channel.

    ``num_downs`` stride-2 levels (the reference's ``unet_256``: 8 for 256x256 crops; 4 suits
    64x64 patches, a 4x4 bottleneck), filters ``ngf * min(2**i, 8)`` at level ``i``, skip
    connections by concatenation, leaky ReLU 0.2 down and ReLU up, instance norm (``norm``).
    Unlike the ResNet generator its finest skip is at half resolution, the path pixel-level
    detail such as CT noise takes (the ResNet generator has to rebuild it from a 4x smaller
    grid). ``residual`` and ``upsample`` as in :class:`ResnetGenerator`; no dropout (the
    reference's is off for CycleGAN by default).

    Example:
        >>> g = UnetGenerator(ngf=8, num_downs=3, residual=True, upsample="resize")
        >>> x = torch.rand(1, 1, 32, 32) * 2 - 1
        >>> bool(torch.equal(g(x), x))  # starts as the identity
        True
    """

    def __init__(self, ngf: int = 64, num_downs: int = 4, residual: bool = False,
                 upsample: str = "deconv", norm: bool = True) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2, got {num_downs}")
        self.residual, self.num_downs = residual, num_downs
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]
        level: nn.Module | None = None
        for i in reversed(range(1, num_downs)):
            level = _UnetLevel(widths[i - 1], widths[i], level, False, upsample, norm)
        self.net = _UnetLevel(1, widths[0], level, True, upsample, norm)
        if not residual:
            self.net = nn.Sequential(self.net, nn.Tanh())
        _init(self)
        if residual:  # the last convolution starts at zero: the identity
            last = [m for m in self.net.modules() if isinstance(m, (nn.Conv2d,
                                                                    nn.ConvTranspose2d))][-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 2**self.num_downs
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of {m}")
        out = self.net(x)
        return x + out if self.residual else out


#: CycleGAN's generators by the ``generator`` key of an architecture.
GENERATORS: dict[str, type[nn.Module]] = {"resnet": ResnetGenerator, "unet": UnetGenerator}


def build_generator(generator: str = "resnet", **arch: Any) -> nn.Module:
    """The CycleGAN generator named ``generator`` (``resnet`` or ``unet``) with ``arch``.

    Example:
        >>> type(build_generator("unet", ngf=8, num_downs=2)).__name__
        'UnetGenerator'
    """
    if generator not in GENERATORS:
        raise ValueError(f"generator {generator!r}: unknown; known: {', '.join(GENERATORS)}")
    return GENERATORS[generator](**arch)


def generator_multiple(arch: dict[str, Any]) -> int:
    """The size a generator with ``arch`` needs its inputs padded to.

    Example:
        >>> generator_multiple({"generator": "unet", "num_downs": 4})
        16
    """
    if arch.get("generator", "resnet") == "unet":
        return 2 ** int(arch.get("num_downs", 4))
    return 4


class PatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN: 4x4 convs 64(s2)-128(s2)-256(s2)-512(s1)-1(s1), padding 1.

    Example:
        >>> PatchDiscriminator(ndf=8)(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 6, 6])
    """

    def __init__(self, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), nn.InstanceNorm2d(out),
                       nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@denoisers.register("cyclegan")
class CycleGanDenoiser(NetworkDenoiser):
    """The CycleGAN low->high-dose generator as a :class:`Denoiser` (tiled, HU in and out).

    Example:
        >>> d = CycleGanDenoiser.untrained({"ngf": 8, "n_blocks": 1})
        >>> d.denoise(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    name = "cyclegan"
    arch_class = staticmethod(build_generator)
    default_arch: ClassVar[dict[str, Any]] = {"ngf": 64, "n_blocks": 9}
    shipped: ClassVar[str | None] = "cyclegan"

    @property
    def multiple(self) -> int:  # type: ignore[override]
        """Inputs are padded to what the generator needs (4 for ResNet, 2**num_downs U-Net)."""
        return generator_multiple(self.arch)

    @classmethod
    def full_arch(cls, arch: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ResNet defaults complete only a ResNet's architecture."""
        arch = dict(arch or {})
        return super().full_arch(arch) if arch.get("generator", "resnet") == "resnet" else arch

    def _run(self, unit: torch.Tensor) -> torch.Tensor:
        # The shared wrapper works in [0, 1] (HU -1024..3072); the tanh generator in [-1, 1].
        return (super()._run(unit * 2 - 1) + 1) / 2

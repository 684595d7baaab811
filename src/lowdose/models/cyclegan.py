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
            if upsample == "deconv":
                up: list[nn.Module] = [
                    nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1)]
            else:
                up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                      nn.Conv2d(ch, ch // 2, 3)]
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
    arch_class: ClassVar[type[nn.Module] | None] = ResnetGenerator
    default_arch: ClassVar[dict[str, Any]] = {"ngf": 64, "n_blocks": 9}
    multiple: ClassVar[int] = 4
    shipped: ClassVar[str | None] = "cyclegan"

    def _run(self, unit: torch.Tensor) -> torch.Tensor:
        # The shared wrapper works in [0, 1] (HU -1024..3072); the tanh generator in [-1, 1].
        return (super()._run(unit * 2 - 1) + 1) / 2

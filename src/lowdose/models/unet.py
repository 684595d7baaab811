"""A compact residual U-Net (DRUNet-style, Zhang et al., TPAMI 2021) sized for CPU inference.

Three scales; at each, residual blocks (conv3x3-ReLU-conv3x3 + identity) without
normalisation or biases, strided 2x2 convolutions down, 2x2 transposed convolutions up, skip
connections by addition (cheaper than concatenation), and a global residual: the network
predicts the noise to subtract. Input: HU clipped to [-1024, 3072] and scaled to [0, 1].

Two shipped weights: ``unet`` (the default: four scales, 24-48-96-192 channels, one block per
scale) and ``unet-fast`` (three scales, 24-48-96, about 20% less time per slice and 0.8 dB less
on the real Mayo pairs, not fine-tuned at the relative dose), sized for the budget of 0.25 s per
512x512 slice on two CPU cores (``benchmarks/denoise_speed.py``).

Example:
    >>> import torch
    >>> ResUNet(channels=(8, 16, 32))(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from lowdose.models.base import denoisers
from lowdose.models.network import NetworkDenoiser


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResUNet(nn.Module):
    """Residual U-Net on [0, 1]-scaled images whose sides are multiples of ``2**(len-1)``.

    Args:
        channels: feature maps per scale, finest first.
        blocks: residual blocks per scale in the encoder and in the decoder.
        bottom_blocks: residual blocks at the coarsest scale.
    """

    def __init__(
        self, channels: Sequence[int] = (24, 48, 96), blocks: int = 1, bottom_blocks: int = 2
    ) -> None:
        super().__init__()
        channels = list(channels)
        self.head = nn.Conv2d(1, channels[0], 3, padding=1, bias=False)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for c_in, c_out in itertools.pairwise(channels):
            self.encoders.append(nn.Sequential(*[ResBlock(c_in) for _ in range(blocks)]))
            self.downs.append(nn.Conv2d(c_in, c_out, 2, stride=2, bias=False))
            self.ups.append(nn.ConvTranspose2d(c_out, c_in, 2, stride=2, bias=False))
            self.decoders.append(nn.Sequential(*[ResBlock(c_in) for _ in range(blocks)]))
        self.bottom = nn.Sequential(*[ResBlock(channels[-1]) for _ in range(bottom_blocks)])
        self.tail = nn.Conv2d(channels[0], 1, 3, padding=1, bias=False)
        self.levels = len(channels) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        out = self.head(x)
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            out = encoder(out)
            skips.append(out)
            out = down(out)
        out = self.bottom(out)
        for up, decoder, skip in zip(
            reversed(self.ups), reversed(self.decoders), reversed(skips), strict=True
        ):
            out = decoder(up(out) + skip)
        return x - self.tail(out)


@denoisers.register("unet")
class ResUNetDenoiser(NetworkDenoiser):
    """Residual U-Net (DRUNet-style), the strongest shipped model; HU [-1024, 3072] -> [0, 1]."""

    name = "unet"
    arch_class = ResUNet
    default_arch: ClassVar[dict[str, Any]] = {
        "channels": [24, 48, 96, 192], "blocks": 1, "bottom_blocks": 2,
    }
    shipped = "unet"

    @property
    def multiple(self) -> int:  # type: ignore[override]
        """Inputs are padded to a multiple of 2 per downsampling (one fewer than the scales)."""
        return 2 ** (len(self.arch.get("channels", self.default_arch["channels"])) - 1)


@denoisers.register("unet-fast")
class FastResUNetDenoiser(ResUNetDenoiser):
    """The same residual U-Net with three scales instead of four: faster, a little weaker."""

    name = "unet-fast"
    default_arch: ClassVar[dict[str, Any]] = {
        "channels": [24, 48, 96], "blocks": 1, "bottom_blocks": 2,
    }
    shipped = "unet-fast"

"""RED-CNN (Chen et al., IEEE TMI 36(12), 2017): residual encoder-decoder CNN.

Ten layers: five 5x5 convolutions (96 filters, no padding) and five 5x5 transposed
convolutions back to the input size, ReLU activations, and three shortcuts (input -> output,
conv2 -> tconv3, conv4 -> tconv1), as in the PyTorch reference SSinyu/RED-CNN (commit
c5adfcb). Input: HU clipped to [-1024, 3072] and scaled to [0, 1] (the reference's range).

Example:
    >>> import torch
    >>> RedCNN(filters=8)(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lowdose.models.base import denoisers
from lowdose.models.network import NetworkDenoiser


class RedCNN(nn.Module):
    """The RED-CNN network on [0, 1]-scaled images, any size (valid convs, full deconvs).

    Args:
        filters: feature maps per layer (96 in the paper).
        kernel: kernel size (5 in the paper).
    """

    def __init__(self, filters: int = 96, kernel: int = 5) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(1 if i == 0 else filters, filters, kernel) for i in range(5)]
        )
        self.tconvs = nn.ModuleList(
            [nn.ConvTranspose2d(filters, 1 if i == 4 else filters, kernel) for i in range(5)]
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual_1 = x
        out = self.relu(self.convs[0](x))
        out = self.relu(self.convs[1](out))
        residual_2 = out
        out = self.relu(self.convs[2](out))
        out = self.relu(self.convs[3](out))
        residual_3 = out
        out = self.relu(self.convs[4](out))
        out = self.tconvs[0](out) + residual_3
        out = self.tconvs[1](self.relu(out))
        out = self.tconvs[2](self.relu(out)) + residual_2
        out = self.tconvs[3](self.relu(out))
        out = self.tconvs[4](self.relu(out)) + residual_1
        return self.relu(out)


@denoisers.register("red-cnn")
class RedCNNDenoiser(NetworkDenoiser):
    """RED-CNN (Chen et al. 2017), supervised baseline; input HU [-1024, 3072] -> [0, 1]."""

    name = "red-cnn"
    arch_class = RedCNN
    default_arch: ClassVar[dict[str, Any]] = {"filters": 96, "kernel": 5}
    multiple = 1
    shipped = "red-cnn"

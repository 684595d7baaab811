"""``LowDoseSimulator.forward(hu, dose, generator) -> hu``: the one hook of the physics."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from lowdose.registry import Registry

simulators: Registry[type[LowDoseSimulator]] = Registry(
    "simulator", autoload=["lowdose.physics.image_poisson", "lowdose.physics.projection"]
)


class LowDoseSimulator(nn.Module, ABC):
    """Turns full-dose HU slices into simulated lower-dose HU slices.

    ``hu`` is a ``(B, 1, H, W)`` float32 tensor in HU on any device; ``dose`` is the fraction of
    the full dose in (0, 1]; ``generator`` seeds every random draw (same seed, same noise).
    """

    @abstractmethod
    def forward(
        self, hu: torch.Tensor, dose: float, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

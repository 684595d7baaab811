"""``lowdose.physics.api.simulate_low_dose``: what it refuses from a caller or a simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.physics.api import simulate_low_dose
from lowdose.physics.base import LowDoseSimulator


class _Transposing(LowDoseSimulator):
    """A plugin's bug: returns (B, 1, W, H)."""

    name = "transposing"

    def forward(self, hu: torch.Tensor, dose: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return hu.transpose(-1, -2).contiguous()


def test_a_simulator_returning_another_shape_is_refused_naming_it() -> None:
    """Its output used to be reshaped into the input's shape: pixels scrambled, silently."""
    hu = np.zeros((16, 24), np.float32)
    with pytest.raises(LowdoseError, match=r"simulator transposing: returned \(1, 1, 24, 16\) "
                                           r"for a batch of shape \(1, 1, 16, 24\)"):
        simulate_low_dose(hu, 0.5, simulator=_Transposing())


def test_batch_size_below_one_is_refused() -> None:
    """batch_size 0 used to end in 'image: empty image', blaming the image."""
    with pytest.raises(LowdoseError, match="batch_size 0: must be at least 1"):
        simulate_low_dose(np.zeros((2, 8, 8), np.float32), 0.5, method="image-poisson",
                          batch_size=0)

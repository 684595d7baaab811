"""What a model family supplies to the one trainer (``lowdose.training.trainer``).

A family owns its networks and losses; the trainer owns everything else (data loop, devices, AMP,
DDP, logs, checkpoints, resume). A supervised denoiser or a classifier has one optimiser; a GAN has
one per player and supplies one loss per optimiser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn


class TrainingFamily(ABC):
    """The one hook set a learned model family implements for the trainer.

    Attributes:
        modules: every network whose weights are trained and checkpointed, by name
            (e.g. ``{"generator": g}`` or ``{"g_lh": g, "g_hl": f, "d_h": dy, "d_l": dx}``).
            The trainer moves them to the device and wraps them for DDP.
    """

    modules: dict[str, nn.Module]

    @abstractmethod
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by name, stepped in this order on every batch."""

    @abstractmethod
    def training_step(self, batch: Any, optimizer_name: str, step: int) -> dict[str, torch.Tensor]:
        """Losses for one optimiser on one batch.

        Returns a dict whose ``"loss"`` entry is back-propagated and stepped with
        ``optimizer_name``'s optimiser; other entries are logged (detached by the trainer).
        """

    def validation_step(self, batch: Any) -> dict[str, float]:
        """Validation metrics for one batch (averaged by the trainer); none by default."""
        return {}

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description written beside every checkpoint."""
        return {}

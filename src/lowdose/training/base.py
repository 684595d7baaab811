"""What a model family supplies to the one trainer (``lowdose.training.trainer``).

A family owns its networks and losses; the trainer owns everything else (data loop, devices, AMP,
DDP, logs, checkpoints, resume). A supervised denoiser or a classifier has one optimiser; a GAN has
one per player and supplies one loss per optimiser.
"""

from __future__ import annotations

import copy
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

    def lr_factor(self, optimizer_name: str, step: int) -> float:
        """The learning-rate multiplier of ``optimizer_name`` at optimiser step ``step``.

        The trainer sets every parameter group's rate to the rate the family configured it with
        times this factor, before each step. A function of the step alone (no scheduler state):
        a resumed run, even one resumed with another schedule, stays on the curve. Constant
        (1.0) unless a family overrides it.
        """
        return 1.0

    def validation_step(self, batch: Any) -> dict[str, float]:
        """Validation metrics for one batch (averaged by the trainer); none by default."""
        return {}

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description written beside every checkpoint."""
        return {}


class EMA(nn.Module):
    """An exponential moving average of a module's weights (kept as a module to checkpoint).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> ema = EMA(net, decay=0.0)
        >>> _ = nn.init.zeros_(net.weight); ema.update(net)
        >>> float(ema.module.weight.abs().sum())
        0.0
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        self.module = copy.deepcopy(module).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        source = getattr(source, "module", source)  # unwrap DDP
        self.updates += 1
        # Warm-up (as in timm / TF): early averages do not drag the initial weights along.
        decay = min(self.decay, (1 + float(self.updates)) / (10 + float(self.updates)))
        for ema_p, p in zip(self.module.parameters(), source.parameters(), strict=True):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1 - decay)
        for ema_b, b in zip(self.module.buffers(), source.buffers(), strict=True):
            ema_b.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

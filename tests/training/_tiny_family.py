"""A tiny regression family and dataset for trainer tests (also run as a subprocess script)."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from lowdose.training.base import TrainingFamily


class NoisyPairs(torch.utils.data.Dataset):
    """``x`` noise, ``y = 0.5 * x`` smoothed: learnable by a 3x3 conv."""

    def __init__(self, n: int = 64, size: int = 16) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 1, size, size, generator=g)
        self.y = 0.5 * nn.functional.avg_pool2d(self.x, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class TinyFamily(TrainingFamily):
    def __init__(self, lr: float = 0.05) -> None:
        torch.manual_seed(0)
        self.modules = {"net": nn.Conv2d(1, 1, 3, padding=1)}
        self.lr = lr

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": torch.optim.Adam(self.modules["net"].parameters(), lr=self.lr)}

    def training_step(self, batch: Any, optimizer_name: str, step: int) -> dict[str, torch.Tensor]:
        pred = self.modules["net"](batch["x"])
        return {"loss": ((pred - batch["y"]) ** 2).mean()}

    def validation_step(self, batch: Any) -> dict[str, float]:
        pred = self.modules["net"](batch["x"])
        return {"mse": float(((pred - batch["y"]) ** 2).mean().detach())}

    def config(self) -> dict[str, Any]:
        return {"family": "tiny", "model": "tiny"}


def main(out: str, steps: int, resume: bool, delay: float = 0.0) -> None:
    import time

    from lowdose.training.trainer import Trainer, TrainerConfig

    family = TinyFamily()
    if delay:  # slow every step so a test can kill the process mid-run
        step_fn = family.training_step

        def slow(batch: Any, name: str, step: int) -> dict[str, torch.Tensor]:
            time.sleep(delay)
            return step_fn(batch, name, step)

        family.training_step = slow  # type: ignore[method-assign]
    cfg = TrainerConfig(max_steps=steps, batch_size=4, checkpoint_every=2, log_every=1,
                        tensorboard=False, progress=False, num_threads=1)
    Trainer(family, NoisyPairs(), cfg, out, resume=resume).fit()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4]))

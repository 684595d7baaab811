"""``Denoiser.denoise(hu_batch) -> hu_batch`` and ``Classifier`` (logits): the model hooks."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from lowdose.registry import Registry

denoisers: Registry[type[Denoiser]] = Registry(
    "denoiser",
    autoload=[
        "lowdose.models.classical",
        "lowdose.models.redcnn",
        "lowdose.models.unet",
        "lowdose.models.gan_circle",
        "lowdose.models.cyclegan",
    ],
)
classifiers: Registry[type[nn.Module]] = Registry(
    "classifier", autoload=["lowdose.models.classifiers"]
)


class Denoiser(ABC):
    """Restores low-dose CT slices. Input and output are ``(B, 1, H, W)`` float32 HU tensors.

    A network scales HU to its own range inside :meth:`denoise`; nothing outside knows it.
    """

    name: str = ""

    @abstractmethod
    def denoise(self, hu: torch.Tensor) -> torch.Tensor: ...

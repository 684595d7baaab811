"""Classical baselines: BM3D and total-variation denoising, with strengths stated in HU.

Both work slice by slice on the CPU (numpy). Their strength is a HU quantity, so it does not
depend on how the image is scaled internally:

- ``bm3d``: ``sigma_hu`` is the standard deviation of the noise to remove, in HU. BM3D runs on
  HU scaled to the full range, ``(HU + 1024) / 4096``, with ``sigma_psd = sigma_hu / 4096``.
- ``tv``: ``weight_hu`` is the Chambolle TV weight expressed in HU: the image is divided by
  ``TV_UNIT_HU`` (1000 HU) and the weight by the same factor, which leaves the minimiser the same
  for any unit.

Defaults were tuned on the six real AAPM-Mayo quarter/full-dose pairs of patient L506
(``benchmarks/denoise_mayo.py``: grid search, best mean PSNR under the full-range convention):
TV weight 20 HU (grid 8-38), BM3D sigma 60 HU (grid 16-72). BM3D's best sigma is well above the
measured noise (about 30-40 HU at quarter dose, 3 mm) because the full-dose reference is noisy
too: smoothing more than the noise level pays off against a noisy target.

Example:
    >>> import torch
    >>> from lowdose.models.base import denoisers
    >>> tv = denoisers.get("tv")()
    >>> tv.denoise(torch.full((1, 1, 16, 16), 40.0)).shape
    torch.Size([1, 1, 16, 16])
"""

from __future__ import annotations

import numpy as np
import torch

from lowdose.image import HU_MAX, HU_MIN
from lowdose.models.base import Denoiser, denoisers

# Units the classical methods work in (stated so the HU strengths are unambiguous).
BM3D_SCALE_HU = HU_MAX - HU_MIN  # 4096 HU -> 1 (full range: (HU + 1024) / 4096)
TV_UNIT_HU = 1000.0

# Tuned on the L506 pairs (benchmarks/results/denoise_mayo.json, "tuning").
DEFAULT_BM3D_SIGMA_HU = 60.0
DEFAULT_TV_WEIGHT_HU = 20.0


class _SliceDenoiser(Denoiser):
    """Applies a 2D numpy function to every slice of a ``(B, 1, H, W)`` HU tensor."""

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        if hu.ndim != 4 or hu.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) HU tensor, got shape {tuple(hu.shape)}")
        slices = hu.detach().to("cpu", torch.float32).numpy()
        out = np.stack([self._denoise_slice(s[0])[None] for s in slices])
        return torch.from_numpy(out.astype(np.float32)).to(hu.device)


@denoisers.register("bm3d")
class BM3D(_SliceDenoiser):
    """BM3D (Dabov et al. 2007; the ``bm3d`` package, Mäkinen et al. 2020), white-noise model.

    Args:
        sigma_hu: noise standard deviation to remove, in HU.
        profile: the ``bm3d`` profile (``"np"`` normal, ``"refilter"``, ...).

    Example:
        >>> BM3D(sigma_hu=30.0).sigma_psd
        0.00732421875
    """

    name = "bm3d"

    def __init__(self, sigma_hu: float = DEFAULT_BM3D_SIGMA_HU, profile: str = "np") -> None:
        if not sigma_hu > 0:
            raise ValueError(f"bm3d sigma_hu must be positive, got {sigma_hu}")
        self.sigma_hu = float(sigma_hu)
        self.profile = profile

    @property
    def sigma_psd(self) -> float:
        """The noise level BM3D sees, in its unit ``(HU + 1024) / 4096``."""
        return self.sigma_hu / BM3D_SCALE_HU

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        import bm3d

        unit = (hu.astype(np.float64) - HU_MIN) / BM3D_SCALE_HU
        out = bm3d.bm3d(unit, sigma_psd=self.sigma_psd, profile=self.profile)
        return np.asarray(out) * BM3D_SCALE_HU + HU_MIN


@denoisers.register("tv")
class TotalVariation(_SliceDenoiser):
    """Isotropic total variation (Chambolle 2004; ``skimage.restoration.denoise_tv_chambolle``).

    Args:
        weight_hu: TV weight in HU (larger removes more noise and more texture).
        max_num_iter: Chambolle iterations at most.

    Example:
        >>> TotalVariation(weight_hu=20.0).weight_hu
        20.0
    """

    name = "tv"

    def __init__(self, weight_hu: float = DEFAULT_TV_WEIGHT_HU, max_num_iter: int = 200) -> None:
        if not weight_hu > 0:
            raise ValueError(f"tv weight_hu must be positive, got {weight_hu}")
        self.weight_hu = float(weight_hu)
        self.max_num_iter = int(max_num_iter)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_tv_chambolle

        unit = hu.astype(np.float64) / TV_UNIT_HU
        out = denoise_tv_chambolle(
            unit, weight=self.weight_hu / TV_UNIT_HU, max_num_iter=self.max_num_iter
        )
        return out * TV_UNIT_HU

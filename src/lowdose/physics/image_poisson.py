"""The original study's low-dose method: 12-bit quantisation plus Poisson noise with a dose factor.

Kept for comparison only: the noise it adds lives in the image domain and grows with the pixel
value (bone gets the most noise, air the least), which is the opposite of real CT, where noise
comes from the projections and is roughly uniform in a uniform object. Use ``projection`` for
physics.

Our reading of "convert to 12 bits and add Poisson noise with a dose factor of 0.25"
(the study gives no formula; this is the natural one, stated so it can be checked):

1. ``unit = clip((HU + 1024) / 4096, 0, 1)`` (the usual HU-to-[0, 1] scaling of [-1024, 3072]).
2. ``counts = round(unit * 4095)``: the 12-bit integer image, read as photon counts.
3. ``noisy = Poisson(counts * dose) / dose``: the counts a scan at ``dose`` times the exposure
   would see, scaled back to full-dose units, so the mean is kept and the variance is
   ``counts / dose``.
4. ``HU = noisy / 4095 * 4096 - 1024``. There is no clipping after the noise.

So the study's method adds noise even at ``dose = 1`` (variance ``counts``), and at ``dose =
0.25`` a soft-tissue pixel (about 1064 counts) gets a standard deviation of about 65 HU.
"""

from __future__ import annotations

import torch

from lowdose.physics.base import LowDoseSimulator, simulators
from lowdose.physics.checks import check_dose, check_hu_tensor

BITS_LEVELS = 4095.0
HU_OFFSET = 1024.0
HU_SPAN = 4096.0


@simulators.register("image-poisson")
class ImagePoissonSimulator(LowDoseSimulator):
    """The study's method: 12-bit quantisation, then Poisson noise with a dose factor.

    See the module docstring for the exact formula.

    Example:
        >>> sim = ImagePoissonSimulator()
        >>> hu = torch.full((1, 1, 8, 8), 40.0)
        >>> out = sim(hu, 0.25, torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.std() > 20)
        (torch.Size([1, 1, 8, 8]), True)
    """

    def forward(
        self, hu: torch.Tensor, dose: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        dose = check_dose(dose)
        check_hu_tensor(hu)
        unit = ((hu.float() + HU_OFFSET) / HU_SPAN).clamp(0.0, 1.0)
        counts = torch.round(unit * BITS_LEVELS)
        noisy = torch.poisson(counts * dose, generator=generator) / dose
        return noisy / BITS_LEVELS * HU_SPAN - HU_OFFSET

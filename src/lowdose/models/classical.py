"""Classical baselines: BM3D and total-variation denoising, with strengths stated in HU.

Both work slice by slice on the CPU (numpy). Their strength is a HU quantity, so it does not
depend on how the image is scaled internally:

- ``bm3d``: ``sigma_hu`` is the standard deviation of the noise to remove, in HU. BM3D runs on
  HU scaled to the full range, ``(HU + 1024) / 4096``, with ``sigma_psd = sigma_hu / 4096``.
- ``tv``: ``weight_hu`` is the Chambolle TV weight expressed in HU: the image is divided by
  ``TV_UNIT_HU`` (1000 HU) and the weight by the same factor, which leaves the minimiser the same
  for any unit.

By default the strength follows each slice's noise: a factor times the slice's reference-free
noise reading (:func:`lowdose.metrics.noise.estimate_noise_hu`, the high-frequency part of the
noise, in HU). Real slices differ in noise (tube-current modulation, thickness), and one fixed
strength over- or under-smooths most of them. The reading is all of white noise but only about
a quarter of a smooth reconstruction kernel's, so one factor cannot serve both: the reading is
split by the noise's texture (:func:`lowdose.metrics.noise.noise_texture`) into a white part
and a part correlated like the L506 reconstructions
(:func:`lowdose.metrics.noise.split_noise`), and the strength is the two parts times their
factors, added in quadrature: ``noise_factor`` for the correlated part (tuned on L506),
``white_noise_factor`` for the white part (tuned on the study's image-poisson low dose, which
is white). A low dose simulated in the image domain from a reconstructed scan is a mixture of
the two. With the correlated factor on white noise, BM3D lost 4.7 dB and TV 3.6 dB
(``benchmarks/classical_texture.py``). A fixed ``sigma_hu`` / ``weight_hu`` turns this off; a
slice without flat tissue to measure falls back to the fixed default, and one whose texture
cannot be read takes the correlated factor.

BM3D also takes CT's own noise model (``noise_model="ct"``, ``lowdose denoise -m bm3d --set
noise_model=ct``; Mäkinen et al. 2020, BM3D for correlated noise): instead of one sigma it gets
the noise's power spectrum. The correlated part is shaped like the projection physics' noise
(:class:`lowdose.physics.projection.ProjectionSimulator`) simulated on the slice itself at its
pixel size, the white part is flat; the reading is split between them by the texture of that
simulated noise (not the fixed L506 one: the same physics reads finer at larger pixels), and
each part is scaled to its share of the reading. On the real L506 pairs it gains 0.08 / 0.18 dB
more than the one-sigma default (full range / window); on simulated low doses it is below it:
level in full range but 0.3 dB in the window on the 2 mm chest series, 0.1 dB on white noise,
0.5 dB on the sharp-kernel L067 slices (``benchmarks/classical_texture.py``), where a noise
that is neither white nor like the physics' is split into the two and neither fits. So it is a
setting, not the default.

Defaults were tuned on the six real AAPM-Mayo quarter/full-dose pairs of patient L506
(``benchmarks/denoise_mayo.py``: grid search, best mean PSNR under the full-range convention).
BM3D's best sigma is well above the noise standard deviation (about 30-40 HU at quarter dose,
3 mm) because the full-dose reference is noisy too: smoothing more than the noise level pays off
against a noisy target.

Example:
    >>> import torch
    >>> from lowdose.models.base import denoisers
    >>> tv = denoisers.get("tv")()
    >>> tv.denoise(torch.full((1, 1, 16, 16), 40.0)).shape
    torch.Size([1, 1, 16, 16])
"""

from __future__ import annotations

import copy
import types
from typing import TYPE_CHECKING

import numpy as np
import torch

from lowdose.image import HU_MAX, HU_MIN
from lowdose.models.base import Denoiser, denoisers

if TYPE_CHECKING:
    from lowdose.image import CTImage

# Units the classical methods work in (stated so the HU strengths are unambiguous).
BM3D_SCALE_HU = HU_MAX - HU_MIN  # 4096 HU -> 1 (full range: (HU + 1024) / 4096)
TV_UNIT_HU = 1000.0

# Tuned on the L506 pairs (benchmarks/results/denoise_mayo.json, "tuning").
DEFAULT_BM3D_SIGMA_HU = 60.0
DEFAULT_TV_WEIGHT_HU = 20.0
DEFAULT_BM3D_NOISE_FACTOR = 6.0
DEFAULT_TV_NOISE_FACTOR = 2.5
# Tuned on white noise: the study's image-poisson low dose of the L506 full-dose slices
# (benchmarks/results/classical_texture.json).
DEFAULT_BM3D_WHITE_FACTOR = 1.15
DEFAULT_TV_WHITE_FACTOR = 0.8
# noise_model="ct": the correlated part's spectrum per HU of its reading (L506 pairs).
DEFAULT_BM3D_CT_FACTOR = 1.0
BM3D_NOISE_MODELS = ("white", "ct")
# The correlated part's spectrum: the mean periodogram of this many simulated noise images,
# smoothed by a Gaussian of this many frequency bins.
_CT_PSD_REALISATIONS = 2
_CT_PSD_SMOOTHING_BINS = 2.0


def _positive(value: float | None, name: str) -> float | None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return None if value is None else float(value)


class _SliceDenoiser(Denoiser):
    """Applies a 2D numpy function to every slice of a ``(B, 1, H, W)`` HU tensor.

    A subclass's strength is ``fixed`` HU when given, else the slice's noise reading split into
    its white and correlated parts (:func:`lowdose.metrics.noise.split_noise`), each times its
    factor (``white_factor``, ``noise_factor``), added in quadrature; ``fallback`` HU where
    nothing can be read.
    """

    # 2: the noise reading finds a slice's own tissue and reads small slices; the strength
    # splits the reading into white and correlated parts.
    revision = "2"
    batches_slices = False

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _strength(self, hu: np.ndarray, fixed: float | None, noise_factor: float,
                  white_factor: float, fallback: float) -> float:
        if fixed is not None:
            return fixed
        from lowdose.metrics.noise import read_noise

        noise = read_noise(hu)
        if not (np.isfinite(noise["reading_hu"]) and noise["reading_hu"] > 0):
            return fallback
        if not np.isfinite(noise["texture"]):
            return noise_factor * noise["reading_hu"]
        return float(np.hypot(white_factor * noise["white_hu"],
                              noise_factor * noise["correlated_hu"]))

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        if hu.ndim != 4 or hu.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) HU tensor, got shape {tuple(hu.shape)}")
        slices = hu.detach().to("cpu", torch.float32).numpy()
        out = np.stack([self._denoise_slice(s[0])[None] for s in slices])
        return torch.from_numpy(out.astype(np.float32)).to(hu.device)


@denoisers.register("bm3d")
class BM3D(_SliceDenoiser):
    """BM3D (Dabov et al. 2007; the ``bm3d`` package, Mäkinen et al. 2020).

    Args:
        sigma_hu: noise standard deviation to remove, in HU; ``None`` (default) follows each
            slice: a factor x its noise reading (see the module doc). White noise model only.
        noise_factor: BM3D sigma per HU of the noise reading, for correlated (reconstructed
            CT) noise; ``None``: 6 for the white noise model, 1 for the CT one (whose spectrum
            already holds the correlation).
        white_noise_factor: the same for white noise (the study's image-poisson low dose).
        profile: the ``bm3d`` profile (``"np"`` normal, ``"refilter"``, ...).
        noise_model: ``"white"`` (one sigma) or ``"ct"`` (the noise's power spectrum: a flat
            white part and a correlated part shaped by the projection physics; module doc).
        pixel_size_mm: the CT noise model's pixel size; ``None``: the image's own in
            :meth:`denoise_image` where known, else the physics' default (a 380 mm field of
            view: 0.742 mm at 512 pixels).

    Example:
        >>> BM3D(sigma_hu=30.0).sigma_for(np.zeros((8, 8)))
        30.0
        >>> rng = np.random.default_rng(0)
        >>> white = 40 + 20 * rng.standard_normal((64, 64))  # white noise: the white factor
        >>> 38 < BM3D(white_noise_factor=2.0).sigma_for(white) < 42
        True
    """

    name = "bm3d"

    def __init__(self, sigma_hu: float | None = None,
                 noise_factor: float | None = None,
                 white_noise_factor: float = DEFAULT_BM3D_WHITE_FACTOR,
                 profile: str = "np", noise_model: str = "white",
                 pixel_size_mm: float | None = None) -> None:
        if noise_model not in BM3D_NOISE_MODELS:
            raise ValueError(f"bm3d noise_model must be one of {', '.join(BM3D_NOISE_MODELS)}, "
                             f"got {noise_model!r}")
        if noise_model == "ct" and sigma_hu is not None:
            raise ValueError("bm3d sigma_hu applies to the white noise model; the CT noise "
                             "model follows each slice's noise reading")
        if noise_factor is None:
            noise_factor = DEFAULT_BM3D_CT_FACTOR if noise_model == "ct" else \
                DEFAULT_BM3D_NOISE_FACTOR
        self.sigma_hu = _positive(sigma_hu, "bm3d sigma_hu")
        self.noise_factor = float(_positive(noise_factor, "bm3d noise_factor"))
        self.white_noise_factor = float(_positive(white_noise_factor, "bm3d white_noise_factor"))
        self.profile = profile
        self.noise_model = noise_model
        self.pixel_size_mm = _positive(pixel_size_mm, "bm3d pixel_size_mm")

    def sigma_for(self, hu: np.ndarray) -> float:
        """The sigma used on one HU slice by the white noise model, in HU."""
        return self._strength(hu, self.sigma_hu, self.noise_factor, self.white_noise_factor,
                              DEFAULT_BM3D_SIGMA_HU)

    def noise_psd(self, hu: np.ndarray) -> np.ndarray | None:
        """The CT noise model's power spectrum of one slice's noise, in HU^2 (``E|fft2(n)|^2``,
        unshifted), or None where its noise cannot be read (the white model applies there).

        Example:
            >>> rng = np.random.default_rng(0)
            >>> white = 40 + 20 * rng.standard_normal((64, 64))
            >>> psd = BM3D(noise_model="ct", white_noise_factor=1.0).noise_psd(white)
            >>> 18 < float(np.sqrt(psd.mean() / white.size)) < 22  # flat: sigma^2 per bin
            True
        """
        from lowdose.metrics.noise import WHITE_TEXTURE, read_noise, split_noise

        noise = read_noise(hu)
        if not (np.isfinite(noise["reading_hu"]) and noise["reading_hu"] > 0
                and np.isfinite(noise["texture"])):
            return None
        physics = _physics_noise(hu, self.pixel_size_mm)
        readings = [read_noise(n, tissue_of=hu) for n in physics]
        reading = float(np.mean([r["reading_hu"] for r in readings]))
        texture = float(np.mean([r["texture"] for r in readings]))
        if not (np.isfinite(reading) and reading > 0 and texture > 1.1 * WHITE_TEXTURE):
            return None  # the physics' noise is unreadable here, or as fine as white noise
        # The correlated part is noise like the physics' at this pixel size: split by its texture.
        white, correlated = split_noise(noise["reading_hu"], noise["texture"], texture)
        flat = np.full(hu.shape, (self.white_noise_factor * white) ** 2 * hu.size)
        shaped = (self.noise_factor * correlated / reading) ** 2 * _smoothed_periodogram(physics)
        return flat + shaped

    def denoise_image(self, image: CTImage, batch_size: int = 8,
                      progress: bool = False) -> CTImage:
        """As :meth:`Denoiser.denoise_image`; the CT noise model takes the image's pixel size
        (its noise's spectrum in pixels depends on it) where it is known and none was set."""
        if self.noise_model == "ct" and self.pixel_size_mm is None and image.pixel_size_mm:
            sized = copy.copy(self)
            sized.pixel_size_mm = image.pixel_size_mm
            return Denoiser.denoise_image(sized, image, batch_size, progress)
        return super().denoise_image(image, batch_size, progress)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        import bm3d

        unit = (hu.astype(np.float64) - HU_MIN) / BM3D_SCALE_HU
        psd = self.noise_psd(hu) if self.noise_model == "ct" else None
        if psd is None:
            # BM3D's unit is the full range: sigma_psd = sigma in HU / 4096 HU.
            out = bm3d.bm3d(unit, sigma_psd=self.sigma_for(hu) / BM3D_SCALE_HU,
                            profile=self.profile)
        else:
            _let_bm4d_integrate()
            out = bm3d.bm3d(unit, sigma_psd=psd / BM3D_SCALE_HU**2, profile=self.profile)
        return np.asarray(out).reshape(hu.shape) * BM3D_SCALE_HU + HU_MIN


def _physics_noise(hu: np.ndarray, pixel_size_mm: float | None) -> list[np.ndarray]:
    """Noise images of the projection physics on this slice (fixed seeds: the same slice gets
    the same spectrum), in HU; only their shape is used."""
    from lowdose.physics.projection import ProjectionSimulator

    simulator = ProjectionSimulator(pixel_size_mm=pixel_size_mm, clip_min=None)
    image = torch.from_numpy(np.asarray(hu, np.float32))[None, None]
    out = []
    for seed in range(_CT_PSD_REALISATIONS):
        low = simulator(image, 0.25, torch.Generator().manual_seed(seed))
        out.append((low - image)[0, 0].double().numpy())
    return out


def _smoothed_periodogram(noise: list[np.ndarray]) -> np.ndarray:
    """Mean ``|fft2(n)|^2`` of the images, smoothed across frequencies (one periodogram is an
    exponential draw per bin); unshifted, periodic."""
    from scipy import ndimage

    power = np.mean([np.abs(np.fft.fft2(n)) ** 2 for n in noise], axis=0)
    return ndimage.gaussian_filter(power, _CT_PSD_SMOOTHING_BINS, mode="wrap")


class _NumpyWithTrapz(types.ModuleType):
    """numpy as ``bm4d`` 4.2 expects it: it calls ``np.trapz`` (removed in numpy 2.0) when
    given a noise spectrum."""

    def __getattr__(self, name: str) -> object:
        return np.trapezoid if name == "trapz" else getattr(np, name)


def _let_bm4d_integrate() -> None:
    import bm4d

    if not hasattr(np, "trapz") and not isinstance(bm4d.np, _NumpyWithTrapz):
        bm4d.np = _NumpyWithTrapz("numpy")


@denoisers.register("tv")
class TotalVariation(_SliceDenoiser):
    """Isotropic total variation (Chambolle 2004; ``skimage.restoration.denoise_tv_chambolle``).

    Args:
        weight_hu: TV weight in HU (larger removes more noise and more texture); ``None``
            (default) follows each slice: a factor x its noise reading (see the module doc).
        noise_factor: TV weight per HU of the noise reading, for correlated (reconstructed CT)
            noise.
        white_noise_factor: the same for white noise (the study's image-poisson low dose).
        max_num_iter: Chambolle iterations at most.

    Example:
        >>> TotalVariation(weight_hu=20.0).weight_for(np.zeros((8, 8)))
        20.0
    """

    name = "tv"

    def __init__(self, weight_hu: float | None = None,
                 noise_factor: float = DEFAULT_TV_NOISE_FACTOR,
                 white_noise_factor: float = DEFAULT_TV_WHITE_FACTOR,
                 max_num_iter: int = 200) -> None:
        self.weight_hu = _positive(weight_hu, "tv weight_hu")
        self.noise_factor = float(_positive(noise_factor, "tv noise_factor"))
        self.white_noise_factor = float(_positive(white_noise_factor, "tv white_noise_factor"))
        self.max_num_iter = int(max_num_iter)

    def weight_for(self, hu: np.ndarray) -> float:
        """The TV weight used on one HU slice, in HU."""
        return self._strength(hu, self.weight_hu, self.noise_factor, self.white_noise_factor,
                              DEFAULT_TV_WEIGHT_HU)

    def _denoise_slice(self, hu: np.ndarray) -> np.ndarray:
        from skimage.restoration import denoise_tv_chambolle

        unit = hu.astype(np.float64) / TV_UNIT_HU
        out = denoise_tv_chambolle(
            unit, weight=self.weight_for(hu) / TV_UNIT_HU, max_num_iter=self.max_num_iter
        )
        return out * TV_UNIT_HU

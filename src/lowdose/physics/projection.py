"""Projection-domain low-dose simulation: attenuation, projection, counts, noise, log, FBP, HU.

The physics, step by step (``a`` is the dose fraction, all in float32 torch, batched):

1. **Attenuation.** ``mu = mu_water * (1 + HU / 1000)`` clipped at 0, with
   ``mu_water = 0.0192 / mm`` (water at about 70 keV, the effective energy of a 120 kV
   spectrum; NIST XCOM gives 0.01929 / mm at 70 keV). The calibration absorbs the difference
   for other tube voltages (the Mayo pairs are 100 kV): I0 is an *effective* photon count.
2. **Geometry.** Third-generation fan beam like a Siemens SOMATOM Definition (the Mayo
   scanner; the DICOM says source-isocentre 595 mm, source-detector 1085.6 mm): 736 detector
   channels over a 500 mm scan field, equiangular (or flat) detector, 1152 views per rotation.
   The image's pixel size sets its field of view. Parallel beam is also available.
3. **Full-dose sinogram.** Line integrals ``p`` of the full-dose image on the parallel grid the
   scanner rebins to (Siemens reconstructs after fan-to-parallel rebinning): views over
   ``[0, pi)`` at the fan's view step, bins at the fan's spacing at isocentre. A fan ray
   ``(beta, gamma)`` is the parallel ray ``(theta = beta + gamma, s = R sin gamma)``, so its
   attenuation is ``p(theta, s)``; a full rotation measures each parallel ray twice (direct
   and conjugate), and the fan samples ``s`` with density ``1 / cos(gamma)`` (equiangular;
   ``1 / cos^3`` for flat). Each parallel sample therefore stands for
   ``I0_par(s) = 2 I0 / cos(gamma)`` photons (``cos^3`` for flat) at full dose and electronic
   variance ``sigma_e^2 * 2 / cos(gamma)``; for parallel beam ``I0_par = I0``. The noise is
   then drawn independently per parallel sample. (:class:`FanBeamProjector` gives the
   fan-beam sinogram itself, checked against analytic chord lengths in the tests; the
   simulation needs only these rebinned, statistically equivalent samples.)
4. **Counts and noise (noise insertion, Yu et al. 2012, Zeng et al. 2016).** Expected
   full-dose counts ``N = I0_par exp(-p)``. A scan at dose ``a`` measures
   ``Poisson(a N) + Normal(0, sigma_e^2)``; the full-dose scan already holds
   ``Poisson(N) + Normal(0, sigma_e^2)``, whose scaled copy ``a * N_fd`` has variance
   ``a^2 (N + sigma_e^2)``. The missing variance is inserted in the count domain:
   ``N_ld = a N + sqrt(a (1 - a) N + (1 - a^2) sigma_e^2) * z``, ``z ~ Normal(0, 1)``.
   After the log, ``dp = -log(max(N_ld, 1) / (a N))``; to first order its variance is
   ``(1 - a) / (a N) * (1 + (1 + a) / a * sigma_e^2 / N)``, Zeng's formula.
   With ``input_is_noiseless=True`` (phantoms) the whole low-dose noise is simulated instead:
   ``N_ld = Poisson(a N) + sigma_e z``, so the variance grows as ``1 / a``.
5. **Reconstruction.** FBP is linear, so the low-dose image is
   ``HU_fd + 1000 / mu_water * FBP(dp)``: only the noise goes through the FBP and the object is
   never re-projected and re-reconstructed (no reconstruction error on the anatomy; at
   ``dose = 1`` the image is returned unchanged). ``reconstruct=True`` instead returns
   ``FBP(p + dp)``, the full project-then-reconstruct path (its error against the input is
   measured in ``benchmarks/simulate.py``). The FBP filter is a ramp times a window
   (ramp, shepp-logan, cosine, hamming, hann, gaussian) with a cutoff; the calibration picks
   the window that matches the noise texture of the real scans (their kernel, B30f, is smooth).
6. Output HU are clipped below at -1024, as scanners store them.

**Dose relative to the image** (``relative_to_image=True``). The calibration's I0 is an absolute
photon count, fitted on one protocol's pairs; a scan of another protocol, thickness or patient
carries its own dose, and a calibrated "quarter dose" of it is not a quarter of *its* dose. The
noise of a dose ``a`` of the image's own dose has ``1 / a`` times its power, so the inserted noise
has ``(1 - a) / a`` times the image's own (3 times at a quarter dose, as in the Mayo pairs, whose
quarter dose was made by noise insertion into the full-dose projections). In this mode the
inserted noise image of each slice is scaled so that its power in the slice's flat soft tissue
(the reference-free reading of :func:`lowdose.metrics.noise.estimate_noise_hu`, of the noise
image and of the slice) is ``(1 - a) / a`` times the slice's own; to first order that is the same
as setting I0 from the slice's own noise. A slice with too little flat tissue to read keeps the
calibration's I0. The reading is a high-pass one, so levels compare only between noises of like
texture: a real dose reduction keeps the scan's kernel, so its extra noise has the scan's own
texture. Where the two textures (:func:`lowdose.metrics.noise.noise_texture`, the 2 x 2-binned
over the unbinned reading) differ by more than ``texture_tolerance`` (1.5), the inserted noise
is first reshaped to the scan's texture (:func:`match_noise_texture`: its spectrum tilted up,
or blurred), then scaled. Without that step the 1 mm sharp-kernel Mayo L067 slices (texture
0.8, against 2.7-2.8 for the calibrated noise) got smooth noise of 370-440 HU standard deviation in
the body; with it, sharp noise of 110-135 HU at three times their own noise power. Scans near
the calibration's texture (measured: the L506 B30f full dose 2.4-2.5 against 2.2 inserted, a
2 mm chest series 1.5 against 1.5, chest CT 1.8 against 1.9-2.3) keep the calibrated texture.

The projector is :class:`lowdose.physics.projector.ParallelProjector` (Fourier-slice NUFFT,
torch, CPU or GPU).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowdose.errors import LowdoseError
from lowdose.image import DEFAULT_FOV_MM, HU_MIN
from lowdose.physics.base import LowDoseSimulator, simulators
from lowdose.physics.checks import check_dose, check_hu_tensor
from lowdose.physics.projector import FILTERS, ParallelProjector

MU_WATER_PER_MM = 0.0192
DEFAULT_PIXEL_MM = 0.7421875  # the Mayo L506 pixel size (DICOM PixelSpacing)
DEFAULT_CALIBRATION = Path(__file__).with_name("calibration_default.json")
GEOMETRY_KINDS = ("fan-equiangular", "fan-flat", "parallel")
MIN_SIZE = 16


@dataclass(frozen=True)
class Geometry:
    """The scanner geometry the noise is simulated for.

    Attributes:
        kind: ``fan-equiangular`` (default, like the Siemens Definition), ``fan-flat`` or
            ``parallel``.
        source_iso_mm: source to isocentre distance (fan beam).
        source_det_mm: source to detector distance (fan beam).
        n_det: detector channels.
        scan_fov_mm: diameter of the scan field the channels cover.
        n_views: views per rotation (2 pi for fan beam, pi for parallel beam).

    Example:
        >>> g = Geometry()
        >>> round(g.iso_spacing_mm, 2), g.parallel_views
        (0.7, 576)
    """

    kind: str = "fan-equiangular"
    source_iso_mm: float = 595.0
    source_det_mm: float = 1085.6
    n_det: int = 736
    scan_fov_mm: float = 500.0
    n_views: int = 1152

    def __post_init__(self) -> None:
        if self.kind not in GEOMETRY_KINDS:
            raise LowdoseError(
                f"geometry: unknown kind {self.kind!r}; known: {', '.join(GEOMETRY_KINDS)}"
            )
        if self.n_det < 16 or self.n_views < 16:
            raise LowdoseError("geometry: needs at least 16 detector channels and 16 views")
        if self.kind != "parallel" and not (
            0 < self.scan_fov_mm / 2 < self.source_iso_mm < self.source_det_mm
        ):
            raise LowdoseError(
                "geometry: need scan_fov/2 < source-isocentre < source-detector distance"
            )

    @property
    def fan_half_angle(self) -> float:
        """Half fan angle (rad) covering the scan field."""
        return math.asin(self.scan_fov_mm / 2 / self.source_iso_mm)

    @property
    def iso_spacing_mm(self) -> float:
        """Spacing of the rebinned parallel samples at isocentre (mm)."""
        if self.kind == "parallel":
            return self.scan_fov_mm / self.n_det
        if self.kind == "fan-equiangular":
            return self.source_iso_mm * 2 * self.fan_half_angle / self.n_det
        flat_pitch = 2 * self.source_det_mm * math.tan(self.fan_half_angle) / self.n_det
        return self.source_iso_mm * flat_pitch / self.source_det_mm

    @property
    def parallel_views(self) -> int:
        """Views over [0, pi) after rebinning."""
        return self.n_views if self.kind == "parallel" else self.n_views // 2

    def density_gain(self, s_mm: torch.Tensor) -> torch.Tensor:
        """Photons per parallel sample per photon per fan ray, ``I0_par / I0``, at offset s."""
        if self.kind == "parallel":
            return torch.ones_like(s_mm)
        sin_gamma = (s_mm / self.source_iso_mm).clamp(
            -math.sin(self.fan_half_angle), math.sin(self.fan_half_angle)
        )
        cos_gamma = torch.sqrt(1 - sin_gamma**2)
        power = 1 if self.kind == "fan-equiangular" else 3
        return 2.0 / cos_gamma**power


@dataclass
class Calibration:
    """Dose-independent noise parameters of a scanner and protocol, as a JSON-able record.

    Attributes:
        i0: incident photons per fan ray per view at full dose (effective, for ``geometry``
            and ``mu_water``).
        electronic_std: electronic noise standard deviation per ray, in photons.
        filter: FBP window (``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann``,
            ``gaussian``).
        cutoff: window cutoff as a fraction of the detector Nyquist frequency, in (0, 2] (above 1
            the window is stretched beyond the Nyquist frequency: a gentler roll-off); for
            ``gaussian`` the window's sigma in the same unit.
        mu_water: attenuation of water in 1/mm used to turn HU into attenuation.
        slice_thickness_mm: slice thickness of the images the fit was made on, if known. A
            2D simulation's effective I0 counts the photons of one slice, so it grows with the
            thickness: images of another known thickness get ``i0 * t / slice_thickness_mm``.
        geometry: the scanner geometry.
        source: where the numbers come from (free text and fit statistics).

    Example:
        >>> Calibration(i0=2e5).geometry.kind
        'fan-equiangular'
    """

    i0: float = 1.0e5
    electronic_std: float = 5.0
    filter: str = "hann"
    cutoff: float = 1.0
    mu_water: float = MU_WATER_PER_MM
    slice_thickness_mm: float | None = None
    geometry: Geometry = field(default_factory=Geometry)
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.geometry, dict):
            self.geometry = Geometry(**self.geometry)
        if not (self.i0 > 0 and math.isfinite(self.i0)):
            raise LowdoseError(f"calibration: i0 must be positive, got {self.i0}")
        if not self.electronic_std >= 0:
            raise LowdoseError(
                f"calibration: electronic_std must be >= 0, got {self.electronic_std}"
            )
        if self.filter not in FILTERS:
            raise LowdoseError(
                f"calibration: unknown filter {self.filter!r}; known: {', '.join(FILTERS)}"
            )
        if not 0 < self.cutoff <= 2:
            raise LowdoseError(f"calibration: cutoff must be in (0, 2], got {self.cutoff}")
        if not self.mu_water > 0:
            raise LowdoseError(f"calibration: mu_water must be positive, got {self.mu_water}")
        if self.slice_thickness_mm is not None and not self.slice_thickness_mm > 0:
            raise LowdoseError(
                f"calibration: slice_thickness_mm must be positive, got {self.slice_thickness_mm}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (atomically)."""
        from lowdose.io.atomic import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "calibration") -> Calibration:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LowdoseError(f"{source}: unknown calibration keys {unknown}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise LowdoseError(f"{source}: bad calibration: {exc}") from None

    @classmethod
    def load(cls, path: str | Path | None = None) -> Calibration:
        """Read a calibration JSON (default: the shipped fit on the Mayo pairs)."""
        path = Path(path) if path is not None else DEFAULT_CALIBRATION
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LowdoseError(f"{path}: calibration file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LowdoseError(f"{path}: not a calibration JSON ({exc})") from None
        if not isinstance(data, dict):
            raise LowdoseError(f"{path}: not a calibration JSON object")
        return cls.from_dict(data, source=str(path))


def default_calibration() -> Calibration:
    """The shipped calibration, or the uncalibrated defaults (with a warning) when it is missing."""
    if DEFAULT_CALIBRATION.is_file():
        return Calibration.load(DEFAULT_CALIBRATION)
    import warnings

    warnings.warn(
        f"{DEFAULT_CALIBRATION} is missing (package data not installed?): using uncalibrated "
        "defaults, whose noise level is not matched to real scans", stacklevel=2
    )
    return Calibration(source={"note": "uncalibrated defaults"})


TEXTURE_TOLERANCE = 1.5
"""Relative dose: the factor by which the inserted noise's texture may differ from the scan's own
(:func:`lowdose.metrics.noise.noise_texture`) before it is reshaped to match."""


def match_noise_texture(noise: np.ndarray, image: np.ndarray, target: float) -> np.ndarray:
    """``noise`` (a 2D noise image of the scan ``image``) made as coarse as ``target`` by
    :func:`lowdose.metrics.noise.noise_texture`: its spectrum tilted towards high frequencies
    (times ``|f| ** gamma``) when the scan's own noise is finer, blurred (a Gaussian of ``sigma``
    px) when coarser; ``gamma`` or ``sigma`` found by bisection. Both filters are short, so
    where the noise is strong stays where it was.

    Example:
        >>> from lowdose.metrics.noise import noise_texture
        >>> rng = np.random.default_rng(0)
        >>> image = np.full((128, 128), 40.0)
        >>> smooth = match_noise_texture(rng.standard_normal((128, 128)), image, 1.5)
        >>> round(noise_texture(smooth, tissue_of=image), 2)
        1.5
    """
    from scipy.ndimage import gaussian_filter

    from lowdose.metrics.noise import noise_texture

    coarser = noise_texture(noise, tissue_of=image) < target
    spectrum = np.fft.rfft2(noise)
    fy = np.fft.fftfreq(noise.shape[0])[:, None]
    fx = np.fft.rfftfreq(noise.shape[1])[None, :]
    radius = np.hypot(fy, fx) / 0.5  # 1 at the Nyquist frequency along an axis

    def shaped(t: float) -> np.ndarray:
        if coarser:
            return gaussian_filter(noise, t)
        return np.fft.irfft2(spectrum * radius**t, s=noise.shape)

    lo, hi = 0.0, 6.0
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        reading = noise_texture(shaped(mid), tissue_of=image)
        if (reading < target) == coarser:
            lo = mid
        else:
            hi = mid
    return shaped(0.5 * (lo + hi))


class FanBeamProjector:
    """Fan-beam forward projection ``(B, H, W)`` -> ``(B, n_views, n_det)`` for a geometry.

    A fan ray ``(beta, gamma)`` (view angle, ray angle from the central ray) is the parallel
    ray with normal angle ``theta = beta + gamma`` and offset ``s = R sin(gamma)``
    (``R`` = source-isocentre distance); for a flat detector ``gamma = atan(u / D_sd)``. So the
    fan sinogram is read off a finely sampled parallel sinogram (half the fan's view step, half
    its bin spacing) by bilinear interpolation, using ``p(theta + pi, s) = p(theta, -s)``
    for the second half turn. Views cover ``[0, 2 pi)``. Line integrals in physical units
    (image values per mm times mm) given the pixel size.

    Example:
        >>> g = Geometry(n_det=64, n_views=90, scan_fov_mm=60.0)
        >>> fan = FanBeamProjector(g, 64, 64, pixel_size_mm=1.0)
        >>> fan.forward_project(torch.zeros(1, 64, 64)).shape
        torch.Size([1, 90, 64])
    """

    def __init__(self, geometry: Geometry, height: int, width: int, pixel_size_mm: float,
                 device: str | torch.device = "cpu") -> None:
        if geometry.kind == "parallel":
            raise LowdoseError("geometry: FanBeamProjector needs a fan-beam geometry")
        self.geometry, self.pixel_size_mm = geometry, float(pixel_size_mm)
        spacing_px = geometry.iso_spacing_mm / 2 / self.pixel_size_mm
        diagonal = math.hypot(height, width) / spacing_px
        n_det = 2 * math.ceil(diagonal / 2) + 3  # odd: s -> -s maps bins onto bins
        self.parallel = ParallelProjector(height, width, geometry.n_views, n_det=n_det,
                                          det_spacing=spacing_px, device=device)
        g = geometry
        j = torch.arange(g.n_det, dtype=torch.float64) - (g.n_det - 1) / 2
        if g.kind == "fan-equiangular":
            gamma = j * (2 * g.fan_half_angle / g.n_det)
        else:
            pitch = 2 * g.source_det_mm * math.tan(g.fan_half_angle) / g.n_det
            gamma = torch.atan(j * pitch / g.source_det_mm)
        beta = torch.arange(g.n_views, dtype=torch.float64) * (2 * math.pi / g.n_views)
        theta = torch.remainder(beta[:, None] + gamma[None, :], 2 * math.pi)
        s_mm = g.source_iso_mm * torch.sin(gamma)[None, :].expand_as(theta)
        second = theta >= math.pi
        theta = torch.where(second, theta - math.pi, theta)
        s_mm = torch.where(second, -s_mm, s_mm)
        view_index = theta / (math.pi / g.n_views)  # 0 .. n_views (the appended flipped view)
        bin_index = s_mm / (spacing_px * self.pixel_size_mm) + n_det // 2
        # grid_sample coordinates (align_corners=True): x along bins, y along views.
        gx = 2 * bin_index / (n_det - 1) - 1
        gy = 2 * view_index / g.n_views - 1
        self._grid = torch.stack([gx, gy], -1)[None].float().to(self.parallel.device)

    def forward_project(self, images: torch.Tensor) -> torch.Tensor:
        """Fan-beam line integrals of ``(B, H, W)`` images (values per mm)."""
        sino = self.parallel.forward_project(images) * self.pixel_size_mm
        closed = torch.cat([sino, sino[:, :1].flip(-1)], dim=1)  # theta = pi is theta = 0, -s
        grid = self._grid.expand(sino.shape[0], -1, -1, -1)
        out = torch.nn.functional.grid_sample(
            closed[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        return out[:, 0]


@simulators.register("projection")
class ProjectionSimulator(LowDoseSimulator):
    """Low dose by noise insertion in the projections of a fan-beam scanner, then FBP.

    See the module docstring for the physics. The projector for each image size is built on
    first use and cached.

    Args:
        calibration: a :class:`Calibration`, a dict, a JSON path, or None for the shipped
            Mayo calibration.
        pixel_size_mm: in-plane pixel size; sets the field of view. None: the image's larger
            side spans 380 mm (the Mayo reconstruction diameter; 0.742 mm for 512 pixels).
        slice_thickness_mm: the images' slice thickness, if known: scales I0 by
            ``t / calibration.slice_thickness_mm`` (when the calibration states one).
        input_is_noiseless: the input is a noiseless object (a phantom): simulate the whole
            noise of the lower dose instead of inserting the extra noise into a full-dose scan.
        reconstruct: return ``FBP(p + dp)`` (project and reconstruct the object too) instead
            of ``HU + FBP(dp)``.
        clip_min: lowest output HU (scanners store -1024); None keeps every value.
        relative_to_image: the dose is a fraction of each image's own dose, read from its noise
            (module doc), instead of the calibration's full dose.
        texture_tolerance: with ``relative_to_image``, the factor by which the inserted noise's
            texture may differ from the image's own before it is reshaped to match (module doc);
            None never reshapes it (the behaviour before session 8).
        **overrides: fields of the calibration to override (``i0``, ``electronic_std``,
            ``filter``, ``cutoff``, ``mu_water``, ``geometry``).

    Example:
        >>> sim = ProjectionSimulator(pixel_size_mm=1.0, i0=1e5)
        >>> hu = torch.zeros(1, 1, 64, 64)
        >>> out = sim(hu, 0.25, torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.std() > 0)
        (torch.Size([1, 1, 64, 64]), True)
    """

    def __init__(
        self,
        calibration: Calibration | dict[str, Any] | str | Path | None = None,
        pixel_size_mm: float | None = None,
        slice_thickness_mm: float | None = None,
        input_is_noiseless: bool = False,
        reconstruct: bool = False,
        clip_min: float | None = HU_MIN,
        relative_to_image: bool = False,
        texture_tolerance: float | None = TEXTURE_TOLERANCE,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if texture_tolerance is not None and not texture_tolerance >= 1.0:
            raise LowdoseError(f"texture_tolerance {texture_tolerance}: a factor >= 1 (or None)")
        if relative_to_image and (input_is_noiseless or reconstruct):
            raise LowdoseError("relative_to_image: needs a full-dose scan's own noise; it does not "
                               "combine with input_is_noiseless or reconstruct")
        if calibration is None:
            cal = default_calibration()
        elif isinstance(calibration, Calibration):
            cal = calibration
        elif isinstance(calibration, dict):
            cal = Calibration.from_dict(calibration)
        else:
            cal = Calibration.load(calibration)
        if overrides:
            data = cal.to_dict()
            if isinstance(overrides.get("geometry"), Geometry):
                overrides["geometry"] = asdict(overrides["geometry"])
            data.update(overrides)
            cal = Calibration.from_dict(data, source="simulator options")
        self.calibration = cal
        if pixel_size_mm is not None:
            pixel_size_mm = float(pixel_size_mm)
            if not (math.isfinite(pixel_size_mm) and pixel_size_mm > 0):
                raise LowdoseError(f"pixel_size_mm: must be positive, got {pixel_size_mm}")
        self.pixel_size_mm = pixel_size_mm
        self.slice_thickness_mm = slice_thickness_mm
        self.input_is_noiseless = bool(input_is_noiseless)
        self.reconstruct = bool(reconstruct)
        self.clip_min = clip_min
        self.relative_to_image = bool(relative_to_image)
        self.texture_tolerance = texture_tolerance
        self._projectors: dict[tuple, ParallelProjector] = {}

    def pixel_for(self, height: int, width: int) -> float:
        """The pixel size (mm) used for an image of this size."""
        if self.pixel_size_mm is not None:
            return self.pixel_size_mm
        return DEFAULT_FOV_MM / max(height, width)

    def projector(self, height: int, width: int, device: torch.device) -> ParallelProjector:
        """The cached parallel projector for an image size on ``device``.

        It carries ``pixel_size_mm``, the pixel size its line integrals are scaled with.
        """
        geometry = self.calibration.geometry
        pixel = self.pixel_for(height, width)
        det_spacing_px = geometry.iso_spacing_mm / pixel
        fov_mm = min(height, width) * pixel
        if min(height, width) < MIN_SIZE or fov_mm < 8 * geometry.iso_spacing_mm:
            raise LowdoseError(
                f"image: {height}x{width} pixels of {pixel:g} mm "
                f"({fov_mm:.1f} mm) is too small for the scanner geometry (needs at least "
                f"{MIN_SIZE} pixels and {8 * geometry.iso_spacing_mm:.1f} mm, 8 detector bins)"
            )
        key = (height, width, str(device), pixel, geometry)
        if key not in self._projectors:
            proj = ParallelProjector(
                height, width, geometry.parallel_views, det_spacing=det_spacing_px, device=device
            )
            proj.pixel_size_mm = pixel
            self._projectors[key] = proj
        return self._projectors[key]

    @property
    def effective_i0(self) -> float:
        """I0 for these images: the calibration's, scaled by slice thickness when both known."""
        cal, t = self.calibration, self.slice_thickness_mm
        if t is not None and cal.slice_thickness_mm is None:
            warnings.warn(f"the calibration states no slice thickness: its I0 is used as it is "
                          f"for these {t:g} mm slices, not scaled to them (calibrate with "
                          "--slice-thickness)", stacklevel=2)
        if t is None or cal.slice_thickness_mm is None:
            return cal.i0
        if not (math.isfinite(t) and t > 0):
            raise LowdoseError(f"slice_thickness_mm: must be positive, got {t}")
        return cal.i0 * t / cal.slice_thickness_mm

    def _ray_gain(self, proj: ParallelProjector, device: torch.device) -> torch.Tensor:
        s_px = (torch.arange(proj.n_det, device=device) - proj.n_det // 2) * proj.det_spacing
        return self.calibration.geometry.density_gain(s_px * proj.pixel_size_mm)

    def noise_sinogram(
        self, hu: torch.Tensor, dose: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, ParallelProjector]:
        """Full-dose line integrals ``p`` and the post-log noise ``dp`` of the lower dose.

        Both are ``(B, V, D)`` in physical units (line integrals of 1/mm over mm) on the
        rebinned parallel grid; steps 1-4 of the module docstring.
        """
        dose = check_dose(dose)
        check_hu_tensor(hu)
        cal = self.calibration
        proj = self.projector(hu.shape[-2], hu.shape[-1], hu.device)
        mu = (cal.mu_water * (1.0 + hu[:, 0].float() / 1000.0)).clamp(min=0.0)
        p = (proj.forward_project(mu) * proj.pixel_size_mm).clamp(min=0.0)
        gain = self._ray_gain(proj, hu.device)
        counts = (self.effective_i0 * gain) * torch.exp(-p)  # expected full-dose counts per sample
        electronic_var = cal.electronic_std**2 * gain
        low = dose * counts
        noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        if self.input_is_noiseless:
            measured = torch.poisson(low, generator=generator)
            measured = measured + torch.sqrt(electronic_var) * noise
        else:
            extra = dose * (1 - dose) * counts + (1 - dose**2) * electronic_var
            measured = low + torch.sqrt(extra) * noise
        dp = -torch.log(measured.clamp(min=1.0) / low)
        return p, dp, proj

    def sinogram_to_hu(
        self, sinogram: torch.Tensor, proj: ParallelProjector, filter_name: str | None = None,
        cutoff: float | None = None,
    ) -> torch.Tensor:
        """FBP of physical line integrals to HU *differences* ``(B, H, W)`` (no -1000 offset)."""
        cal = self.calibration
        mu = proj.fbp(
            sinogram / proj.pixel_size_mm,
            filter_name or cal.filter,
            cal.cutoff if cutoff is None else cutoff,
        )
        return mu * (1000.0 / cal.mu_water)

    @staticmethod
    def relative_noise(hu: torch.Tensor, noise: torch.Tensor, dose: float,
                       texture_tolerance: float | None = TEXTURE_TOLERANCE) -> torch.Tensor:
        """``noise`` ``(B, 1, H, W)`` scaled per slice to ``(1 - dose) / dose`` times the power
        of each slice's own noise, its texture first matched to the slice's own where the two
        differ by more than ``texture_tolerance`` (None: never; a slice with too little flat
        tissue to read keeps its noise unchanged).

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> hu = 40 + 10 * torch.randn(1, 1, 128, 128, generator=g)  # own noise 10 HU
            >>> n = 5 * torch.randn(1, 1, 128, 128, generator=g)
            >>> # sqrt(3) * 10 = 17.3 HU, the own noise level read from the image
            >>> from lowdose.metrics.noise import estimate_noise_hu
            >>> out = ProjectionSimulator.relative_noise(hu, n, 0.25)
            >>> round(estimate_noise_hu(out[0, 0].numpy()))
            17
        """
        from lowdose.metrics.noise import estimate_noise_hu, read_noise

        out = noise.clone()
        for b in range(hu.shape[0]):
            image = hu[b, 0].double().cpu().numpy()
            inserted = noise[b, 0].double().cpu().numpy()
            scan = read_noise(image)  # one flat-tissue mask for the reading and the texture
            own = scan["reading_hu"]
            if not (math.isfinite(own) and own > 0):
                continue
            noise_read = read_noise(inserted, tissue_of=image)
            level = noise_read["reading_hu"]
            if texture_tolerance is not None:
                own_texture, texture = scan["texture"], noise_read["texture"]
                if (own_texture > 0 and texture > 0  # False for nan (unreadable) too
                        and max(texture / own_texture, own_texture / texture) > texture_tolerance):
                    inserted = match_noise_texture(inserted, image, own_texture)
                    level = estimate_noise_hu(inserted, tissue_of=image)
            if math.isfinite(level) and level > 0:
                scaled = inserted * (math.sqrt((1.0 - dose) / dose) * own / level)
                out[b, 0] = torch.from_numpy(scaled).to(noise.dtype)
        return out

    def forward(
        self, hu: torch.Tensor, dose: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        dose = check_dose(dose)
        check_hu_tensor(hu)
        hu = hu.float()
        self.projector(hu.shape[-2], hu.shape[-1], hu.device)  # size checks first
        if dose == 1.0 and not (self.input_is_noiseless or self.reconstruct):
            return hu.clone()  # nothing to insert: the full-dose image, bit for bit
        p, dp, proj = self.noise_sinogram(hu, dose, generator)
        if self.reconstruct:
            out = (self.sinogram_to_hu(p + dp, proj) - 1000.0)[:, None]
        else:
            noise = self.sinogram_to_hu(dp, proj)[:, None]
            if self.relative_to_image:
                noise = self.relative_noise(hu, noise, dose, self.texture_tolerance)
            out = hu + noise
        if self.clip_min is not None:
            out = out.clamp(min=self.clip_min)
        return out

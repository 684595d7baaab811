"""Batched parallel-beam projection and FBP in torch by the Fourier-slice theorem (NUFFT).

Why Fourier: a pixel-driven back-projection of a 512x512 slice from 720 views touches
720 x 512^2 = 189 M (pixel, view) pairs; on a 2-core CPU that took 2.9 s with
``grid_sample`` and 7 s with ``gather`` (measured), slower than scikit-image. By the
Fourier-slice theorem the 1D Fourier transform of a projection at angle theta is the 2D
Fourier transform of the image on a line through the origin. So

- forward projection = 2D FFT of the (pre-compensated) image on a 2x oversampled grid,
  interpolation at the polar points ``rho * (cos theta, sin theta)`` with a Kaiser-Bessel
  kernel (type-2 NUFFT), then a 1D inverse FFT per view;
- filtered back-projection = ramp (x window) filter per view, 1D FFT, spreading of the polar
  points onto the oversampled grid with the same kernel (type-1 NUFFT, the adjoint), one 2D
  inverse FFT and de-apodisation.

Cost is O(V D K^2 + M^2 log M) instead of O(V N^2): about 0.1 s per 512x512 slice on 2 CPU cores
(see ``benchmarks/simulate.py``), on any torch device. The accuracy is set by the kernel width
``K`` (6 gives about 1e-4 relative error against the exact NUFFT); the projections are those of
the band-limited image (sinc interpolation), which agree with scikit-image's ``radon``
(bilinear rotation) to the stated tolerance in ``tests/physics``.

Conventions (pixel units inside): the image ``f[row, col]`` sits at ``x = col - W // 2``,
``y = row - H // 2``; view angle ``theta`` measures ``s = x cos(theta) + y sin(theta)``;
detector bin ``n`` sits at ``s = (n - D // 2) * det_spacing``; ``theta`` covers ``[0, pi)``.
Line integrals are in units of (image value) x (pixel length); multiply by the pixel size in mm
to get physical line integrals.

Example:
    >>> proj = ParallelProjector(64, 64, n_views=90)
    >>> img = torch.zeros(1, 64, 64); img[:, 24:40, 24:40] = 1.0
    >>> sino = proj.forward_project(img)
    >>> sino.shape, round(float(sino[0, 0].sum()))  # each view integrates the whole mass
    (torch.Size([1, 90, 94]), 256)
"""

from __future__ import annotations

import math

import numpy as np
import torch

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann", "gaussian")


def _kaiser_bessel(width: int, oversampling: float) -> tuple[float, callable]:
    """The Kaiser-Bessel kernel of Beatty et al. (2005) for a given width and oversampling."""
    beta = math.pi * math.sqrt((width / oversampling) ** 2 * (oversampling - 0.5) ** 2 - 0.8)

    def kernel(u: torch.Tensor) -> torch.Tensor:
        arg = (1.0 - (2.0 * u / width) ** 2).clamp(min=0.0)
        out = torch.special.i0(beta * torch.sqrt(arg))
        return torch.where(u.abs() <= width / 2, out, torch.zeros_like(out))

    return beta, kernel


def _kernel_transform(kernel, width: int, xi: np.ndarray) -> np.ndarray:
    """``phi_hat(xi) = integral phi(t) exp(-2 pi i t xi) dt`` by dense quadrature (phi is even)."""
    t = np.linspace(-width / 2, width / 2, 4001)
    phi = kernel(torch.from_numpy(t)).numpy()
    dt = t[1] - t[0]
    return (phi[None, :] * np.cos(2 * np.pi * t[None, :] * xi[:, None])).sum(1) * dt


def filter_response(name: str, freqs: torch.Tensor, cutoff: float = 1.0) -> torch.Tensor:
    """Apodisation window ``A(rho)`` multiplying the ramp; ``freqs`` in units of the Nyquist.

    ``cutoff`` in (0, 2] stretches the window: it reaches zero (hann, cosine) or its end value
    at ``cutoff`` x Nyquist and removes everything above. A cutoff above 1 puts the window's
    end beyond the Nyquist frequency (a gentler roll-off); the detector's sampling ends the
    filter at the Nyquist frequency anyway. For ``gaussian``, ``exp(-rho^2 / (2 sigma^2))``,
    ``cutoff`` is ``sigma`` in units of the Nyquist frequency (no truncation below Nyquist):
    a smooth kernel whose response, unlike hann's, does not vanish at the Nyquist frequency.

    Example:
        >>> [round(v, 3) for v in filter_response("hann", torch.tensor([0.0, 0.5, 1.0])).tolist()]
        [1.0, 0.5, 0.0]
    """
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; known: {', '.join(FILTERS)}")
    if name == "gaussian":
        return torch.exp(-0.5 * (freqs / cutoff) ** 2)
    x = freqs.abs() / cutoff
    if name == "ramp":
        window = torch.ones_like(x)
    elif name == "shepp-logan":
        window = torch.sinc(x / 2)
    elif name == "cosine":
        window = torch.cos(math.pi * x / 2)
    elif name == "hamming":
        window = 0.54 + 0.46 * torch.cos(math.pi * x)
    else:  # hann
        window = 0.5 * (1 + torch.cos(math.pi * x))
    return torch.where(x <= 1.0, window, torch.zeros_like(window))


class ParallelProjector:
    """Parallel-beam forward projection and FBP of ``(B, H, W)`` images, batched, any device.

    Args:
        height, width: image size in pixels.
        n_views: views evenly spaced over ``[0, pi)``.
        n_det: detector bins (default: enough to cover the image diagonal).
        det_spacing: detector bin spacing in pixel units (1 = one pixel).
        kernel_width: Kaiser-Bessel kernel width in grid points (accuracy vs speed).
        device: where the precomputed interpolation tables live.

    Example:
        >>> proj = ParallelProjector(32, 32, n_views=64)
        >>> img = torch.zeros(2, 32, 32); img[:, 12:20, 10:22] = 0.02
        >>> rec = proj.fbp(proj.forward_project(img))
        >>> bool((rec - img).abs().mean() < 2e-3)
        True
    """

    oversampling = 2.0

    def __init__(
        self,
        height: int,
        width: int,
        n_views: int,
        n_det: int | None = None,
        det_spacing: float = 1.0,
        kernel_width: int = 4,
        device: str | torch.device = "cpu",
    ) -> None:
        self.height, self.width = int(height), int(width)
        self.n_views = int(n_views)
        self.det_spacing = float(det_spacing)
        size = max(self.height, self.width)
        self.size = size + (size % 2)  # square, even grid holding the image
        diagonal = math.hypot(self.height, self.width) / self.det_spacing
        self.n_det = int(n_det) if n_det else 2 * math.ceil(diagonal / 2) + 2
        self.device = torch.device(device)
        self.pixel_size_mm = 1.0  # set by users that work in mm; the projector works in pixels
        self.kernel_width = int(kernel_width)
        self.grid = int(self.oversampling * self.size)
        # Polar sampling length: the periodic copies of a projection (period L * det_spacing)
        # must not reach the detector's or the image's extent: L >= (n_det + diagonal) / 2.
        self.n_fft = 1 << math.ceil(math.log2((self.n_det + diagonal) / 2 + 2))
        self.thetas = torch.arange(self.n_views, dtype=torch.float64) * math.pi / self.n_views
        self._build_tables()

    # -- precomputation ------------------------------------------------------------------
    def _build_tables(self) -> None:
        K, M = self.kernel_width, self.grid
        _, kernel = _kaiser_bessel(K, self.oversampling)
        # Polar points rho_j = j / (L * ds) cycles/pixel for j = 0..L/2; points above the image
        # Nyquist (0.5 cycles/pixel) carry no information and are dropped.
        j = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)
        rho = j / (self.n_fft * self.det_spacing)
        self.n_rho = int((rho <= 0.5).sum())
        rho = rho[: self.n_rho]
        ux = (M * rho[None, :] * torch.cos(self.thetas)[:, None]).reshape(-1)
        uy = (M * rho[None, :] * torch.sin(self.thetas)[:, None]).reshape(-1)
        offsets = torch.arange(K, dtype=torch.float64) - (K // 2 - 1)

        def axis(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = torch.floor(u)[:, None] + offsets[None, :]
            return torch.remainder(m, M).long(), kernel(u[:, None] - m)

        ix, wx = axis(ux)
        iy, wy = axis(uy)
        self._index = (iy[:, :, None] * M + ix[:, None, :]).reshape(-1).to(self.device)
        self._weight = (wy[:, :, None] * wx[:, None, :]).reshape(-1, K * K).float().to(self.device)
        # De-apodisation over the image pixels: divide by phi_hat(x / M) on each axis.
        coords_y = np.arange(self.size) - self.size // 2
        coords_x = coords_y
        phy = _kernel_transform(kernel, K, coords_y / M)
        phx = _kernel_transform(kernel, K, coords_x / M)
        self._deapod = torch.from_numpy(1.0 / (phy[:, None] * phx[None, :])).float().to(self.device)
        # Positions of the image pixels on the periodic M x M grid.
        self._rows = torch.remainder(torch.from_numpy(coords_y), M).to(self.device)
        self._cols = torch.remainder(torch.from_numpy(coords_x), M).to(self.device)
        # Phase that moves the DFT origin from bin 0 to the detector centre s_0.
        s0 = -(self.n_det // 2) * self.det_spacing
        phase = torch.exp(2j * math.pi * rho * s0)
        self._phase = phase.to(torch.complex64).to(self.device)
        self._rho = rho.float().to(self.device)

    def to(self, device: str | torch.device) -> ParallelProjector:
        """Move the precomputed tables to ``device`` (returns self)."""
        device = torch.device(device)
        if device != self.device:
            for name in ("_index", "_weight", "_deapod", "_rows", "_cols", "_phase", "_rho"):
                setattr(self, name, getattr(self, name).to(device))
            self.device = device
        return self

    # -- helpers ---------------------------------------------------------------------------
    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        """Place ``(B, H, W)`` images on the square even grid (zeros around)."""
        B, H, W = images.shape
        if self.size == H and self.size == W:
            return images
        out = images.new_zeros(B, self.size, self.size)
        top = self.size // 2 - H // 2
        left = self.size // 2 - W // 2
        out[:, top : top + H, left : left + W] = images
        return out

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        top = self.size // 2 - self.height // 2
        left = self.size // 2 - self.width // 2
        return images[:, top : top + self.height, left : left + self.width]

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 3 or tuple(images.shape[1:]) != (self.height, self.width):
            raise ValueError(
                f"expected (B, {self.height}, {self.width}) images, got {tuple(images.shape)}"
            )

    # -- the two operators -------------------------------------------------------------------
    def forward_project(self, images: torch.Tensor) -> torch.Tensor:
        """Line integrals ``(B, V, D)`` of ``(B, H, W)`` images (pixel-length units)."""
        self._check(images)
        B, M = images.shape[0], self.grid
        f = self._pad(images.float()) * self._deapod
        grid = images.new_zeros(B, M, M)
        grid[:, self._rows[:, None], self._cols[None, :]] = f
        spectrum = torch.fft.fft2(grid).reshape(B, -1)
        values = spectrum[:, self._index].reshape(B, -1, self._weight.shape[1])
        polar = (values * self._weight).sum(-1).reshape(B, self.n_views, self.n_rho)
        # p(s_n) = d_rho * sum_j P(rho_j) exp(2 pi i rho_j s_n), real by Hermitian symmetry.
        half = polar.new_zeros(B, self.n_views, self.n_fft // 2 + 1)
        half[..., : self.n_rho] = polar * self._phase
        sino = torch.fft.irfft(half, n=self.n_fft) * (1.0 / self.det_spacing)
        return sino[..., : self.n_det].contiguous()

    def ramp_kernel(self, n: int, filter_name: str = "ramp", cutoff: float = 1.0) -> torch.Tensor:
        """The rfft of the band-limited ramp (Kak & Slaney) times a window, length ``n``."""
        k = torch.arange(-(n // 2), n // 2, dtype=torch.float64)
        h = torch.zeros_like(k)
        h[k == 0] = 0.25
        odd = k.remainder(2) == 1
        h[odd] = -1.0 / (math.pi * k[odd]) ** 2
        h = torch.fft.ifftshift(h) / self.det_spacing**2
        response = torch.fft.rfft(h).real * self.det_spacing
        nyquist_units = torch.linspace(0.0, 1.0, n // 2 + 1, dtype=torch.float64)
        response = response * filter_response(filter_name, nyquist_units, cutoff)
        return response.float().to(self.device)

    def fbp(
        self, sinograms: torch.Tensor, filter_name: str = "ramp", cutoff: float = 1.0
    ) -> torch.Tensor:
        """Filtered back-projection of ``(B, V, D)`` sinograms to ``(B, H, W)`` images."""
        if sinograms.ndim != 3 or tuple(sinograms.shape[1:]) != (self.n_views, self.n_det):
            raise ValueError(
                f"expected (B, {self.n_views}, {self.n_det}) sinograms, got "
                f"{tuple(sinograms.shape)}"
            )
        B, M = sinograms.shape[0], self.grid
        # 1. Ramp filter by linear convolution (padding to >= 2 D avoids wrap-around).
        n_filter = 1 << math.ceil(math.log2(2 * self.n_det))
        kernel = self.ramp_kernel(n_filter, filter_name, cutoff)
        spec = torch.fft.rfft(sinograms.float(), n=n_filter) * kernel
        filtered = torch.fft.irfft(spec, n=n_filter)[..., : self.n_det]
        # 2. Polar samples of the filtered projections: Q(rho_j) = ds * DFT * exp(2 pi i rho s0).
        q = torch.fft.rfft(filtered, n=self.n_fft)[..., : self.n_rho] * torch.conj(self._phase)
        # f(x) = d_theta * d_rho * sum Q exp(2 pi i rho n.x); negative rho by Hermitian
        # symmetry (factor 2 on rho > 0, real part at the end). d_rho * ds = 1 / L.
        scale = (math.pi / self.n_views) / self.n_fft
        q = q * scale
        q[..., 1:] *= 2.0
        contrib = (q.reshape(B, -1, 1) * self._weight).reshape(B, -1)
        grid = torch.zeros(B, M * M, dtype=contrib.dtype, device=contrib.device)
        try:
            grid.index_add_(1, self._index, contrib)
        except (RuntimeError, NotImplementedError):  # a device without complex index_add_
            pairs = torch.zeros(B, M * M, 2, dtype=torch.float32, device=contrib.device)
            pairs.index_add_(1, self._index, torch.view_as_real(contrib))  # 30x slower on CPU
            grid = torch.view_as_complex(pairs)
        image = torch.fft.ifft2(grid.reshape(B, M, M)) * (M * M)
        image = image[:, self._rows[:, None], self._cols[None, :]].real * self._deapod
        return self._crop(image)

"""The shared wrapper that turns an image-to-image ``nn.Module`` into a :class:`Denoiser`.

It owns what every learned denoiser needs and nothing model-specific:

- **HU scaling**: the network sees HU clipped to ``hu_range`` and scaled to [0, 1] (the range is
  written in the model's config); its output is mapped back to HU, and what the input holds
  beyond the range (an 8-bit image's window reaching below -1024 HU, a scanner's -3024 HU
  padding, metal above 3072 HU) is added back, so it passes through with the network's change
  at the range's edge. Nothing outside knows the range.
- **Tiling**: slices larger than ``tile_size`` are cut into overlapping tiles; each tile's outer
  border inside the overlap is discarded and the rest blended with a short linear ramp, so a
  512x512 slice or a whole volume runs in bounded memory; tiled and whole results agree
  within a fraction of a HU when half the overlap covers the network's receptive field.
- **Batching**: tiles of several slices run ``tile_batch`` at a time.
- **Self-ensemble** (optional, ``self_ensemble=True``): the mean of the network's outputs on
  the 8 flips and quarter turns of the input, each turned back (Timofte et al., CVPR 2016);
  about 8x the time. Measured on the real L506 pairs in ``benchmarks/denoise_mayo.py``.
- **Strength** (``strength``, default 1): the output is ``input + strength * (network output -
  input)``; below 1 keeps more of the input's noise and texture, above 1 removes more (the
  adjustable level readers know from iterative reconstruction).
- **Weights**: a config dict (``FORMAT``) that names the model, its architecture and the range,
  saved as JSON beside a safetensors file (see :mod:`lowdose.models.loading`).

Example:
    >>> import torch
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)
    >>> d = NetworkDenoiser(net, arch={}, tile_size=32, tile_overlap=8)
    >>> d.denoise(torch.zeros(2, 1, 40, 50)).shape
    torch.Size([2, 1, 40, 50])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lowdose.errors import LowdoseError
from lowdose.image import HU_MAX, HU_MIN
from lowdose.models.base import PIXEL_TOLERANCE, Denoiser, training_scale_note

FORMAT = "lowdose.denoiser"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "bf16")


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1D blending weights of a tile: a partition of unity across overlapping tiles.

    At an inner edge the weight is 0 for the outer ``overlap/2 - overlap/8`` pixels (where a
    network sees the tile's artificial border), rises linearly over the next ``overlap/4`` and is
    1 beyond; two tiles overlapping by ``overlap`` sum to 1 everywhere.
    """
    w = torch.ones(length)
    if overlap > 0:
        width = max(1.0, overlap / 4)
        i = torch.arange(length, dtype=torch.float32) + 0.5
        rise = ((i - (overlap / 2 - width / 2)) / width).clamp(1e-6, 1.0)
        if not at_start:
            w = torch.minimum(w, rise)
        if not at_end:
            w = torch.minimum(w, rise.flip(0))
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph <= 0 and pw <= 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, max(pw, 0), 0, max(ph, 0)), mode=mode)


def dihedral_mean(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The mean of ``fn`` over the 8 flips and quarter turns of ``x`` ``(B, C, H, W)``, each
    output turned back, so the result commutes with those transforms.

    Example:
        >>> x = torch.rand(1, 1, 6, 4)
        >>> torch.allclose(dihedral_mean(lambda t: t.cumsum(-1), x).rot90(1, (-2, -1)),
        ...                dihedral_mean(lambda t: t.cumsum(-1), x.rot90(1, (-2, -1))))
        True
    """
    total = torch.zeros_like(x)
    for flip in (False, True):
        base = x.flip(-1) if flip else x
        for k in range(4):
            out = fn(base.rot90(k, (-2, -1))).rot90(-k, (-2, -1))
            total += out.flip(-1) if flip else out
    return total / 8


def default_tile_batch(device: torch.device | str) -> int:
    """How many full tiles a network runs at once by default: 1 on a CPU, 8 on a GPU.

    On a CPU a batch buys no speed and costs memory: one 512x512 slice at a time ran 15-60%
    faster than eight at once for every shipped network, at a quarter to a seventh of the
    memory (session 32; `gan-circle-semi` 2.0 GB against 13.6 GB). A GPU needs batches to
    be busy.

    Example:
        >>> default_tile_batch("cpu")
        1
    """
    return 1 if torch.device(device).type == "cpu" else 8


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile_size: int = 512,
    tile_overlap: int = 128,
    multiple: int = 1,
    tile_batch: int = 4,
) -> torch.Tensor:
    """Apply an image-to-image ``fn`` to ``x`` ``(B, C, H, W)`` tile by tile.

    Tiles are ``tile_size`` square (padded to a multiple of ``multiple``, for networks that
    downsample), overlap by ``tile_overlap`` pixels, and are blended with linear ramps. Memory
    stays bounded: at most ``tile_batch`` tiles run at once, and images no larger than a tile
    run whole, as many at once as hold ``tile_batch`` full tiles' pixels.

    Example:
        >>> x = torch.rand(1, 1, 100, 70)
        >>> torch.allclose(tiled_apply(lambda t: 2 * t, x, tile_size=32, tile_overlap=8), 2 * x)
        True
    """
    if tile_overlap >= tile_size:
        raise ValueError(f"tile_overlap {tile_overlap} must be smaller than tile_size {tile_size}")
    b, _, h, w = x.shape
    th, tw = min(tile_size, h), min(tile_size, w)
    # Padded size of one tile: a multiple of `multiple`.
    ph, pw = -(-th // multiple) * multiple, -(-tw // multiple) * multiple
    ys, xs = _starts(h, th, tile_overlap), _starts(w, tw, tile_overlap)
    if len(ys) == 1 and len(xs) == 1:
        at_once = max(1, tile_batch * tile_size * tile_size // (ph * pw))
        return torch.cat([fn(_pad_to(x[i:i + at_once], ph, pw))[..., :h, :w]
                          for i in range(0, b, at_once)])

    out: torch.Tensor | None = None
    weight_sum = torch.zeros(1, 1, h, w, device=x.device)
    boxes = [(y, xx) for y in ys for xx in xs]
    for i in range(0, len(boxes) * b, tile_batch):
        chunk = [(k // len(boxes), boxes[k % len(boxes)])
                 for k in range(i, min(i + tile_batch, len(boxes) * b))]
        tiles = torch.stack([x[n, :, y:y + th, xx:xx + tw] for n, (y, xx) in chunk])
        result = fn(_pad_to(tiles, ph, pw))[..., :th, :tw].float()
        if out is None:
            out = torch.zeros(b, result.shape[1], h, w, device=x.device)
        for (n, (y, xx)), tile_out in zip(chunk, result, strict=True):
            wy = _ramp(th, tile_overlap, y == 0, y + th >= h).to(x.device)
            wx = _ramp(tw, tile_overlap, xx == 0, xx + tw >= w).to(x.device)
            weight = wy[:, None] * wx[None, :]
            out[n, :, y:y + th, xx:xx + tw] += tile_out * weight
            if n == 0:
                weight_sum[0, 0, y:y + th, xx:xx + tw] += weight
    assert out is not None
    return out / weight_sum


def checked_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`LowdoseError`."""
    if precision not in PRECISIONS:
        raise LowdoseError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def precision_context(precision: str, device: torch.device) -> Any:
    """The context a network runs in: nothing for fp32, bf16 autocast for ``"bf16"``.

    bf16 runs on a CUDA GPU or on a CPU that computes bf16 natively (AVX512-BF16 / AMX); on
    another CPU it would be emulated and slower than fp32, so it is refused.

    Example:
        >>> with precision_context("fp32", torch.device("cpu")):
        ...     torch.ones(1).dtype
        torch.float32
    """
    import contextlib

    if checked_precision(precision) == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu":
        from lowdose.device import cpu_has_bf16

        if not cpu_has_bf16():
            raise LowdoseError("precision bf16: this CPU has no native bf16 (AVX512-BF16 or "
                               "AMX); use fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


class NetworkDenoiser(Denoiser):
    """A learned denoiser: an ``nn.Module`` on [0, 1]-scaled HU, tiled and batched.

    Subclasses set ``name``, ``arch_class`` (the network), ``default_arch`` (its keyword
    arguments), ``multiple`` (the size the network needs inputs padded to) and ``shipped``
    (the stem of the weights shipped in ``lowdose/weights``). Constructed with no network, a
    subclass loads its shipped weights; :meth:`untrained` builds a freshly initialised one.

    Args:
        net: the network; ``None`` loads the shipped weights.
        arch: keyword arguments that rebuild ``net`` (written in the config).
        hu_range: HU interval mapped to [0, 1] before the network (its outputs are clipped to
            it; what the input holds beyond it passes through).
        tile_size, tile_overlap, tile_batch: tiling (see :func:`tiled_apply`); ``tile_batch``
            ``None``: :func:`default_tile_batch` of the device it runs on.
        device: where the network runs (``None``: its current device).
        precision: ``"fp32"`` or ``"bf16"``: autocast to bfloat16 on a CUDA GPU, or on a CPU
            that computes bf16 natively (AVX512-BF16 / AMX; refused on others). 2-3x faster
            on such a CPU, at a measured cost in PSNR (``benchmarks/denoise_mayo.py``).
        self_ensemble: average over the 8 flips and quarter turns of each slice (8x the time).
        strength: scale of the change the network makes (1: as trained; 0: the input).
        metadata: free-form facts about the weights (training data, dose, steps).
    """

    pixel_tolerance: ClassVar[float] = PIXEL_TOLERANCE
    """Pixel sizes up to this factor beyond the training range count as inside it."""
    arch_class: ClassVar[Callable[..., nn.Module] | None] = None
    default_arch: ClassVar[dict[str, Any]] = {}
    multiple: ClassVar[int] = 1
    shipped: ClassVar[str | None] = None

    def __init__(
        self,
        net: nn.Module | None = None,
        *,
        arch: dict[str, Any] | None = None,
        hu_range: tuple[float, float] = (HU_MIN, HU_MAX),
        tile_size: int = 512,
        tile_overlap: int = 128,
        tile_batch: int | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        self_ensemble: bool = False,
        strength: float = 1.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if net is None:
            from lowdose.models.loading import load_shipped

            loaded = load_shipped(type(self), device=device)
            net, arch, hu_range = loaded.net, loaded.arch, loaded.hu_range
            metadata = {**loaded.metadata, **(metadata or {})}
        self.arch = dict(self.default_arch if arch is None else arch)
        self.hu_range = (float(hu_range[0]), float(hu_range[1]))
        if not self.hu_range[1] > self.hu_range[0]:
            raise ValueError(f"hu_range {self.hu_range} is empty")
        self.tile_size, self.tile_overlap, self.tile_batch = tile_size, tile_overlap, tile_batch
        self.precision = checked_precision(precision)
        self.self_ensemble = self_ensemble
        if not 0.0 <= strength <= 3.0:
            raise LowdoseError(f"strength must lie in [0, 3], got {strength}")
        self.strength = float(strength)
        self.metadata = dict(metadata or {})
        # channels-last: about 3x faster convolutions on CPU (oneDNN) and on tensor cores
        self.net = net.eval().to(memory_format=torch.channels_last)
        if device is not None:
            self.net.to(torch.device(device))

    @classmethod
    def build_network(cls, arch: dict[str, Any] | None = None) -> nn.Module:
        """A freshly initialised network with ``arch`` (default: ``default_arch``)."""
        if cls.arch_class is None:
            raise TypeError(f"{cls.__name__} sets no arch_class")
        kwargs = cls.full_arch(arch)
        try:
            return cls.arch_class(**kwargs)
        except (TypeError, ValueError) as exc:
            raise LowdoseError(f"{cls.name}: bad architecture settings {kwargs}: {exc}") from None

    @classmethod
    def full_arch(cls, arch: dict[str, Any] | None = None) -> dict[str, Any]:
        """``arch`` with the settings it leaves out taken from ``default_arch``."""
        return {**cls.default_arch, **(arch or {})}

    @classmethod
    def untrained(cls, arch: dict[str, Any] | None = None, **kwargs: Any) -> NetworkDenoiser:
        """A denoiser around a freshly initialised network (for training and tests)."""
        arch = cls.full_arch(arch)
        return cls(cls.build_network(arch), arch=arch, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(iter(self.net.parameters())).device

    def pixel_size_note(self, pixel_mm: float | None) -> str | None:
        """A warning when ``pixel_mm`` lies beyond the training slices' pixel sizes
        (``metadata["train_pixel_mm"]``, [smallest, largest]) by more than
        ``pixel_tolerance`` times. A network learns noise at the scale it was shown: on much
        coarser pixels it can take fine anatomy for noise and smooth it away
        (``benchmarks/results/study_clean_input.md``).

        Example:
            >>> from lowdose.models.unet import ResUNetDenoiser
            >>> den = ResUNetDenoiser.untrained(metadata={"train_pixel_mm": [0.66, 0.78]})
            >>> den.pixel_size_note(0.74) is None, den.pixel_size_note(3.1)[:39]
            (True, 'unet was trained on 0.66-0.78 mm pixels')
        """
        return training_scale_note(
            self.name, self.metadata.get("train_pixel_mm"), pixel_mm,
            "it may remove fine anatomy as if it were noise, or leave noise behind",
            self.pixel_tolerance)

    def to_unit(self, hu: torch.Tensor) -> torch.Tensor:
        """HU -> the network's [0, 1] range (clipped)."""
        lo, hi = self.hu_range
        return ((hu - lo) / (hi - lo)).clamp(0.0, 1.0)

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """The network's [0, 1] range -> HU."""
        lo, hi = self.hu_range
        return unit * (hi - lo) + lo

    def config(self) -> dict[str, Any]:
        """The JSON config saved with the weights (enough to rebuild the network)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "arch": self.arch,
            "hu_range": list(self.hu_range),
            "input_scaling": "HU clipped to hu_range, scaled to [0, 1]",
            "scale": 1,
            "metadata": self.metadata,
        }

    def _run(self, unit: torch.Tensor) -> torch.Tensor:
        unit = unit.contiguous(memory_format=torch.channels_last)
        with precision_context(self.precision, unit.device):
            return self.net(unit).float()

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        if hu.ndim != 4 or hu.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) HU tensor, got shape {tuple(hu.shape)}")
        device = self.device
        with torch.inference_mode():
            hu32 = hu.to(device, torch.float32)
            unit = self.to_unit(hu32)
            def tiled(x: torch.Tensor) -> torch.Tensor:
                return tiled_apply(
                    self._run, x, self.tile_size, self.tile_overlap, self.multiple,
                    self.tile_batch or default_tile_batch(device))

            out = dihedral_mean(tiled, unit) if self.self_ensemble else tiled(unit)
            if self.strength != 1.0:
                out = unit + self.strength * (out - unit)
            # What lies beyond hu_range passes through, the network's change added to it: an
            # 8-bit image's window may reach below -1024 HU, a scanner pads with -3024 HU.
            beyond = hu32 - hu32.clamp(*self.hu_range)  # exactly 0 inside the range
            return (self.from_unit(out.clamp(0.0, 1.0)) + beyond).to(hu.device)

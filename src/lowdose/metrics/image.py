"""Image metrics in a stated range: PSNR, SSIM and RMSE of HU images against a reference.

Two conventions, both reported by the project (``data_range``):

- ``"full"``: HU clipped to [-1024, 3072] and scaled to [0, 1] (the AAPM-Mayo convention);
- ``"window"``: HU clipped to the soft-tissue window [-160, 240] and scaled to [0, 1].

A :class:`lowdose.Window` may be passed instead of a name. Stacks ``(N, H, W)`` give the mean
of the per-slice values.

A plugin metric is a function ``metric(pred, target) -> float`` of two HU arrays of one shape,
registered by name in :data:`image_metrics` (see :class:`MetricRegistry` for how it is
reported): ``@image_metrics.register("mae")``.

Example:
    >>> import numpy as np
    >>> ref = np.zeros((32, 32), np.float32)
    >>> round(psnr(ref + 40.96, ref, data_range="full"), 2)  # 0.01 of the full range
    40.0
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from lowdose.image import Window
from lowdose.registry import Registry, RegistryError, defined_at

MetricFn = Callable[..., float]


def takes_data_range(metric: MetricFn) -> bool:
    """Whether ``metric`` takes a ``data_range`` keyword (by name, or through ``**kwargs``).

    Example:
        >>> takes_data_range(psnr), takes_data_range(lambda pred, target: 0.0)
        (True, False)
    """
    try:
        params = inspect.signature(metric).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: called the plain way
        return False
    return any((p.name == "data_range" and p.kind is not p.POSITIONAL_ONLY)
               or p.kind is p.VAR_KEYWORD for p in params)


class MetricRegistry(Registry[MetricFn]):
    """The image metrics. Each is ``metric(pred, target) -> float``: ``pred`` and ``target``
    are HU arrays of one shape, a slice ``(H, W)`` or a stack ``(N, H, W)``.

    A metric that also takes ``data_range`` (``"full"``, ``"window"`` or a
    :class:`~lowdose.image.Window`; :func:`resolve_range` reads it) is computed under each
    convention and reported as ``<name>_full`` and ``<name>_window``, as PSNR, SSIM and RMSE
    are. One that does not states its range in its name (an HU metric, say) and is reported
    once, as ``<name>``. A callable that cannot be called as ``metric(pred, target)`` (and
    ``data_range=`` where it takes it) is refused at registration.

    Example:
        >>> metrics = MetricRegistry("image metric")
        >>> @metrics.register("mae_hu")
        ... def mae_hu(pred, target):
        ...     return float(np.mean(np.abs(np.asarray(pred) - target)))
        >>> try:
        ...     metrics.register("bad")(lambda pred: 0.0)
        ... except RegistryError as exc:
        ...     print(str(exc)[:49])
        image metric 'bad' (lowdose.metrics.image.<lambda
    """

    def check(self, name: str, obj: MetricFn) -> None:
        if not callable(obj):
            raise RegistryError(f"{self.kind} {name!r}: {obj!r} is not callable; a metric is "
                                "metric(pred, target) -> float")
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):  # a callable without a signature: trusted
            return
        extra = {"data_range": "full"} if takes_data_range(obj) else {}
        try:
            signature.bind(None, None, **extra)
        except TypeError:
            raise RegistryError(
                f"{self.kind} {name!r} ({defined_at(obj)}) takes {signature}; a metric is "
                "metric(pred, target) -> float, with data_range=... where its value depends "
                "on a range (see lowdose.metrics.image.MetricRegistry)") from None


image_metrics: MetricRegistry = MetricRegistry("image metric")

RANGES = {"full": Window.named("full"), "window": Window.named("abdomen")}


def resolve_range(data_range: str | Window) -> Window:
    """The HU window of a named convention (``"full"``, ``"window"``) or a given Window."""
    if isinstance(data_range, Window):
        return data_range
    try:
        return RANGES[data_range]
    except KeyError:
        known = ", ".join(sorted(RANGES))
        raise ValueError(f"unknown data_range {data_range!r}; use one of {known}") from None


def _unit_stacks(pred: np.ndarray, target: np.ndarray, data_range: str | Window):
    pred, target = np.asarray(pred, np.float32), np.asarray(target, np.float32)
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs reference {target.shape}")
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
    window = resolve_range(data_range)
    return window.to_unit(pred), window.to_unit(target)


@image_metrics.register("rmse")
def rmse(pred: np.ndarray, target: np.ndarray, data_range: str | Window = "full") -> float:
    """Root-mean-square error in units of the range (a fraction of its width), mean over slices."""
    p, t = _unit_stacks(pred, target, data_range)
    return float(np.mean(np.sqrt(np.mean((p - t) ** 2, axis=(1, 2)))))


@image_metrics.register("psnr")
def psnr(pred: np.ndarray, target: np.ndarray, data_range: str | Window = "full") -> float:
    """Peak signal-to-noise ratio in dB with peak 1 on the scaled range, mean over slices.

    Slices identical in the range (an all-air slice at the end of a volume, clipped to a
    window) have no finite PSNR and are left out of the mean; identical images give ``inf``.

    Example:
        >>> ref = np.zeros((2, 4, 4), np.float32) - 1000  # two air slices
        >>> noisy = ref.copy()
        >>> noisy[1, 0, 0] = 0  # one pixel of the second slice differs
        >>> round(psnr(noisy, ref, "window"), 2), psnr(ref, ref, "window")
        (20.0, inf)
    """
    p, t = _unit_stacks(pred, target, data_range)
    mse = np.mean((p.astype(np.float64) - t) ** 2, axis=(1, 2))
    differ = mse > 0
    if not differ.any():
        return float("inf")
    return float(np.mean(10.0 * np.log10(1.0 / mse[differ])))


#: The side of SSIM's Gaussian window (sigma 1.5, truncated at 3.5 sigma, as skimage does).
SSIM_WINDOW_PX = 11


@image_metrics.register("ssim")
def ssim(pred: np.ndarray, target: np.ndarray, data_range: str | Window = "full") -> float:
    """Structural similarity (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03).

    Computed on the scaled range with data range 1, mean over slices.

    Raises:
        LowdoseError: slices smaller than the 11 x 11 Gaussian window.
    """
    from skimage.metrics import structural_similarity

    from lowdose.errors import LowdoseError

    p, t = _unit_stacks(pred, target, data_range)
    if min(p.shape[-2:]) < SSIM_WINDOW_PX:
        raise LowdoseError(f"SSIM: slices of {p.shape[-2]} x {p.shape[-1]} pixels are smaller "
                           f"than its {SSIM_WINDOW_PX} x {SSIM_WINDOW_PX} Gaussian window")
    values = [
        structural_similarity(
            a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        for a, b in zip(p, t, strict=True)
    ]
    return float(np.mean(values))


def rmse_hu(pred: np.ndarray, target: np.ndarray,
            hu_range: tuple[float, float] | None = None) -> float:
    """Root-mean-square error in HU over all pixels, unclipped, or with both images clipped to
    ``hu_range`` (``(-1024, 3072)``: a scanner's -3024 HU padding counts as air).

    Example:
        >>> rmse_hu(np.array([-3024.0, 10.0]), np.array([-1024.0, 10.0]), (-1024, 3072))
        0.0
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if hu_range is not None:
        pred, target = np.clip(pred, *hu_range), np.clip(target, *hu_range)
    return float(np.sqrt(np.mean((pred - target) ** 2)))


#: The tissues an error is split into (:func:`tissue_masks`), in this order.
TISSUES = ("outside body", "lung and gas", "soft tissue", "bone")
BODY_HU = -400.0  # the body: the largest connected region above this, its holes filled
GAS_HU = -400.0  # lung and gas: inside the body, where the smoothed reference is below this
GAS_SMOOTHING_PX = 2.0  # Gaussian sigma, so that small vessels and septa stay in the lung
BONE_HU = 300.0  # bone: the rest of the body at or above this


def tissue_masks(reference: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of :data:`TISSUES` in a reference slice or stack (slice by slice).

    - ``outside body``: everything outside the body (air around the patient, the couch);
    - ``lung and gas``: inside the body where the reference smoothed (Gaussian, sigma
      ``GAS_SMOOTHING_PX``) lies below ``GAS_HU``: the lungs with their small vessels and
      septa, airways and bowel gas;
    - ``soft tissue`` and ``bone``: the rest of the body, below and from ``BONE_HU``.

    The body is the largest connected region of the reference above ``BODY_HU``, its holes
    (the lungs) filled. The masks partition the image.

    Example:
        >>> ref = np.full((32, 32), -1000.0); ref[4:28, 4:28] = 40.0; ref[10:20, 8:16] = -800.0
        >>> # 10 x 8 px of lung; the smoothed boundary takes in some of the wall around it
        >>> {k: int(v.sum()) for k, v in tissue_masks(ref).items()}
        {'outside body': 448, 'lung and gas': 104, 'soft tissue': 472, 'bone': 0}
    """
    from scipy import ndimage

    ref = np.asarray(reference, np.float64)
    stack = ref[None] if ref.ndim == 2 else ref
    masks = {name: np.zeros(stack.shape, bool) for name in TISSUES}
    for i, hu in enumerate(stack):
        labels, count = ndimage.label(hu > BODY_HU)
        if count == 0:
            masks["outside body"][i] = True
            continue
        largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))  # label 0: outside
        body = ndimage.binary_fill_holes(labels == largest)
        gas = body & (ndimage.gaussian_filter(hu, GAS_SMOOTHING_PX) < GAS_HU)
        masks["outside body"][i] = ~body
        masks["lung and gas"][i] = gas
        masks["soft tissue"][i] = body & ~gas & (hu < BONE_HU)
        masks["bone"][i] = body & ~gas & (hu >= BONE_HU)
    return {k: v[0] if ref.ndim == 2 else v for k, v in masks.items()}


def rmse_hu_by_tissue(pred: np.ndarray, target: np.ndarray,
                      masks: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """RMSE in HU within each tissue of the reference (:func:`tissue_masks`), both images
    clipped to the full range [-1024, 3072] HU (the ``"full"`` convention, so air below
    -1024 HU counts as -1024). A stack pools its slices; a tissue without pixels gives ``nan``.
    ``masks``: ``tissue_masks(target)`` when already made (scoring several images against one
    reference).

    Example:
        >>> ref = np.full((32, 32), -1000.0); ref[4:28, 4:28] = 40.0
        >>> out = rmse_hu_by_tissue(ref + np.where(ref > 0, 10.0, 0.0), ref)
        >>> out["outside body"], out["soft tissue"]
        (0.0, 10.0)
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs reference {target.shape}")
    full = resolve_range("full")
    diff = np.clip(pred, full.lo, full.hi) - np.clip(target, full.lo, full.hi)
    return {name: float(np.sqrt(np.mean(diff[mask] ** 2))) if mask.any() else float("nan")
            for name, mask in (tissue_masks(target) if masks is None else masks).items()}


def image_quality(pred: np.ndarray, target: np.ndarray,
                  rmse_hu_range: tuple[float, float] | None = None) -> dict[str, float]:
    """Every registered metric, under both conventions where it takes a ``data_range``
    (``psnr_full``, ``ssim_window``, ...) and once under its name where it does not
    (:class:`MetricRegistry`), and ``rmse_hu`` (unclipped, or both images clipped to
    ``rmse_hu_range``).

    Example:
        >>> ref = np.zeros((16, 16), np.float32)
        >>> round(image_quality(ref + 4.0, ref)["psnr_window"], 2)
        40.0
    """
    out: dict[str, float] = {}
    for name in image_metrics.names():
        metric = image_metrics.get(name)
        if takes_data_range(metric):
            for convention in RANGES:
                out[f"{name}_{convention}"] = float(metric(pred, target, data_range=convention))
        else:
            out[name] = float(metric(pred, target))
    return out | {"rmse_hu": rmse_hu(pred, target, rmse_hu_range)}

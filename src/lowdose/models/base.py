"""``Denoiser.denoise(hu_batch) -> hu_batch`` and ``Classifier`` (logits): the model hooks."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lowdose.errors import LowdoseError
from lowdose.registry import Registry

if TYPE_CHECKING:
    from lowdose.image import CTImage


class _OptionalAutoloadRegistry(Registry):
    """A registry whose autoload modules may not exist yet (models that later issues add).

    Only a ``ModuleNotFoundError`` for exactly that module is tolerated: an import error inside
    an existing module still surfaces.
    """

    def _import(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


class _DenoiserRegistry(_OptionalAutoloadRegistry):
    """The denoisers: a :class:`Denoiser` class registered without a ``name`` of its own is
    labelled by its registry name (rather than its class name)."""

    def register(self, name: str, *, replace: bool = False) -> Any:
        add = super().register(name, replace=replace)

        def decorator(obj: Any) -> Any:
            obj = add(obj)
            if isinstance(obj, type) and obj.__dict__.get("_name_from_class"):
                obj.name = name
                obj._name_from_class = False  # a second registration keeps the first name
            return obj

        return decorator


denoisers: Registry[type[Denoiser]] = _DenoiserRegistry(
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


PIXEL_TOLERANCE = 1.5
"""Pixel sizes up to this factor beyond a model's training range count as inside it."""


def training_scale_note(name: str, trained_mm: Any, pixel_mm: float | None, risk: str,
                        tolerance: float = PIXEL_TOLERANCE) -> str | None:
    """A warning when input slices of ``pixel_mm`` lie beyond the pixel sizes a model was
    trained on (``trained_mm``: [smallest, largest] of its inputs) by more than ``tolerance``
    times; ``None`` inside, or when either size is unknown. ``risk`` says what may go wrong.

    Example:
        >>> training_scale_note("unet", [0.66, 0.78], 0.74, "it may blur") is None
        True
        >>> training_scale_note("unet", [0.66, 0.78], 3.1, "it may blur")[:39]
        'unet was trained on 0.66-0.78 mm pixels'
    """
    if not trained_mm or pixel_mm is None or not pixel_mm > 0:
        return None
    lo, hi = float(min(trained_mm)), float(max(trained_mm))
    if lo / tolerance <= pixel_mm <= hi * tolerance:
        return None
    return (f"{name} was trained on {lo:.2f}-{hi:.2f} mm pixels; these slices have "
            f"{pixel_mm:.2f} mm pixels, outside its training scale: {risk}")


def reformat_note(name: str, orientation: str | None, consequence: str) -> str | None:
    """A warning when the slices are not axial (``orientation``: :attr:`CTImage.orientation
    <lowdose.image.CTImage.orientation>`): ``"{name}: these slices are {orientation};
    {consequence}"``; ``None`` for axial or unknown slices.

    Example:
        >>> reformat_note("tv", "coronal", "careful")
        'tv: these slices are coronal; careful'
    """
    if orientation in (None, "axial", "unknown"):
        return None
    return f"{name}: these slices are {orientation}; {consequence}"


class Denoiser(ABC):
    """Restores low-dose CT slices. Input and output are ``(B, 1, H, W)`` float32 HU tensors.

    A network scales HU to its own range inside :meth:`denoise`; nothing outside knows it.

    ``name`` labels the denoiser's output (``metadata["denoiser"]``, the rows of ``lowdose
    compare``): a class that sets none is labelled by its registry name once registered
    (``denoisers.register("identity")``), by its class name before. Register a class, or a
    function that returns a denoiser (its keyword arguments are then the ``--set`` settings).

    :meth:`denoise_image` (and so ``lowdose denoise``, ``compare`` and the study) calls
    :meth:`denoise` under ``torch.inference_mode()``: no autograd graph is recorded, and its
    input tensors cannot take part in one. A denoiser that needs gradients (one that optimises
    its output, say) enables them itself, on clones of its input::

        with torch.inference_mode(False), torch.enable_grad():
            target = hu.clone()  # an inference tensor cannot be saved for backward: clone it
            x = hu.clone().requires_grad_(True)
            ...  # the optimisation steps on x against target
        return x.detach()

    Example:
        >>> class Identity(Denoiser):
        ...     def denoise(self, hu):
        ...         return hu
        >>> Identity().denoise(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
        >>> Identity.name
        'Identity'
    """

    name: str = ""
    _name_from_class: bool = False
    #: Changes when new code makes a denoiser of this class return other output for the same
    #: settings and weights (a study's cached cells of it are then recomputed).
    revision: str = ""
    #: False for a method that works slice by slice whatever it is given (the classical ones):
    #: :meth:`denoise_image` then hands it one slice at a time, so progress shows every slice.
    batches_slices: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            cls._name_from_class = False
        elif not cls.name or cls._name_from_class:  # none of its own: its class name, until
            cls.name = cls.__name__  # it is registered (a named base's name is inherited)
            cls._name_from_class = True

    @abstractmethod
    def denoise(self, hu: torch.Tensor) -> torch.Tensor: ...

    def pixel_size_note(self, pixel_mm: float | None) -> str | None:
        """A warning when slices of ``pixel_mm`` (in-plane) lie outside what the method was
        made for; ``None`` when they are inside, or when nothing is known (the default)."""
        return None

    def plane_note(self, orientation: str | None) -> str | None:
        """A warning when the slices are not axial (``orientation``: :attr:`CTImage.orientation
        <lowdose.image.CTImage.orientation>`). CT noise is made in the axial plane: every axial
        slice has its own draw, correlated within the slice by the reconstruction, so a
        reformat shows another texture along z, and every denoiser here, learned or classical,
        removed less of it (``benchmarks/results/denoise_orientation.md``).

        Example:
            >>> from lowdose.models.classical import TotalVariation
            >>> tv = TotalVariation()
            >>> tv.plane_note("axial") is None, tv.plane_note("coronal")[:28]
            (True, 'tv: these slices are coronal')
        """
        # The 1.0-3.1 dB: benchmarks/denoise_orientation.py (session 32; BM3D and TV rerun in
        # session 34), every denoiser.
        return reformat_note(
            self.name, orientation, "CT noise is made in the axial plane, and on a simulated "
            "quarter dose every denoiser gained 1.0-3.1 dB less on reformats than on the axial "
            "slices reformatted after denoising (benchmarks/results/denoise_orientation.md): "
            "where you have the axial series, denoise it and reformat the result")

    def denoise_image(
        self, image: CTImage, batch_size: int = 8, progress: bool = False
    ) -> CTImage:
        """Denoise a slice or a volume slice by slice, ``batch_size`` slices at a time.

        Returns a copy of ``image`` (same geometry and headers) with restored HU and
        ``metadata["denoiser"]`` naming the method. :meth:`denoise` runs under
        ``torch.inference_mode()`` (see the class for a denoiser that needs gradients).
        """
        import numpy as np

        stack = image.slices()
        out = np.empty_like(stack)
        step = max(1, batch_size) if self.batches_slices else 1
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=stack.shape[0], desc=f"denoise ({self.name})", unit="slice")
        with torch.inference_mode():
            for start in range(0, stack.shape[0], step):
                chunk = torch.from_numpy(np.ascontiguousarray(stack[start : start + step]))
                restored = self.denoise(chunk[:, None])
                # A denoiser (a plugin's) returning another shape: one error naming it, not
                # numpy's broadcast error.
                if not isinstance(restored, torch.Tensor) \
                        or tuple(restored.shape) != (chunk.shape[0], 1, *chunk.shape[1:]):
                    got = (tuple(restored.shape) if isinstance(restored, torch.Tensor)
                           else type(restored).__name__)
                    raise LowdoseError(
                        f"denoiser {self.name or type(self).__name__}: returned {got} for "
                        f"input of shape {(chunk.shape[0], 1, *chunk.shape[1:])}; denoise must "
                        "return a tensor of its input's shape, in HU")
                out[start : start + step] = restored[:, 0].detach().cpu().float().numpy()
                if bar is not None:
                    bar.update(chunk.shape[0])
        if bar is not None:
            bar.close()
        in_span, out_span = float(np.ptp(stack)), float(np.ptp(out))
        if in_span > 100.0 and out_span <= 1.0:  # a [0, 1] network output not mapped back
            import warnings

            warnings.warn(f"denoiser {self.name or type(self).__name__}: returned values in "
                          f"[{out.min():.3g}, {out.max():.3g}] for HU spanning {in_span:.0f}; "
                          "denoise must return HU", stacklevel=2)
        return image.with_pixels(out, metadata={"denoiser": self.name})

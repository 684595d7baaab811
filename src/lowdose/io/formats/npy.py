"""``.npy`` arrays: HU by default, or a stated scale such as the Mayo ``HU = 4096*v - 1024``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import CTImage
from lowdose.io.atomic import atomic_path
from lowdose.io.base import readers, writers
from lowdose.io.formats.common import (
    NPY_SCALES,
    FormatReader,
    FormatWriter,
    check_finite,
    check_real_dtype,
    one_line,
    refuse_input_overwrite,
)


def looks_normalised(lo: float, hi: float) -> bool:
    """Whether values spanning ``[lo, hi]`` cannot be a CT slice in HU: all within [0, 1].

    A CT slice in HU spans hundreds of HU (air -1000, tissue 0..100); values that all lie in
    [0, 1] are a normalised convention such as the Mayo one. The one rule behind the refusal
    of unstated and of wrongly stated (``hu``) scales.

    Example:
        >>> looks_normalised(0.0, 0.6), looks_normalised(-1024.0, 1441.0)
        (True, False)
    """
    return lo >= 0.0 and hi <= 1.0


def npy_to_hu(values: np.ndarray, scale: str | None, path: Path | str) -> np.ndarray:
    """Map stored ``.npy`` values to HU under a stated ``scale`` (None means HU).

    Values that all lie in [0, 1] (:func:`looks_normalised`) are refused unless the scale is
    ``mayo``: with no scale given they are almost certainly a normalised convention, and
    guessing one silently would give wrong HU; with ``hu`` stated they cannot be HU.

    Example:
        >>> npy_to_hu(np.array([0.0, 0.25]), "mayo", "x.npy").tolist()
        [-1024.0, 0.0]
    """
    if scale is not None and scale not in NPY_SCALES:
        raise LowdoseError(
            f"{path}: unknown npy scale {scale!r}; known: {', '.join(sorted(NPY_SCALES))}"
        )
    v = values.astype(np.float64)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if scale is None and looks_normalised(lo, hi):
        raise LowdoseError(
            f"{path}: values lie in [{lo:g}, {hi:g}], not HU; state the scale: "
            f"--npy-scale mayo (HU = 4096*v - 1024) or --npy-scale hu"
        )
    if scale == "hu" and looks_normalised(lo, hi):
        raise LowdoseError(
            f"{path}: values lie in [{lo:g}, {hi:g}], which cannot be a CT slice in HU (air is "
            f"-1000); if they are the Mayo scale, use --npy-scale mayo (HU = 4096*v - 1024)"
        )
    if scale == "mayo":
        if lo < -0.01 or hi > 1.01:
            raise LowdoseError(
                f"{path}: values lie in [{lo:g}, {hi:g}], outside the Mayo [0, 1] scale"
            )
        v = 4096.0 * v - 1024.0
    return v.astype(np.float32)


def hu_to_npy(hu: np.ndarray, scale: str) -> np.ndarray:
    """HU as stored ``.npy`` values in ``scale``, the inverse of :func:`npy_to_hu` (float32).

    The Mayo scale holds [-1024, 3072] HU as [0, 1]; HU outside it are clipped, as in the Mayo
    data, so that the file reads back under ``--npy-scale mayo``.

    Example:
        >>> hu_to_npy(np.array([-1100.0, 0.0, 3072.0]), "mayo").tolist()
        [0.0, 0.25, 1.0]
    """
    if scale == "mayo":
        return np.clip((np.asarray(hu, np.float64) + 1024.0) / 4096.0, 0.0, 1.0).astype(
            np.float32
        )
    return np.asarray(hu, np.float32)


def written_scale(image: CTImage) -> str:
    """The scale an ``.npy`` output of ``image`` is written in: the one its ``.npy`` input was
    read in (``mayo`` or ``hu``), so an output reads back under the same ``--npy-scale`` as its
    input; ``hu`` for an image from another format, or a difference image (HU offsets, not CT
    values, so no Mayo value stands for them).

    Example:
        >>> img = CTImage(np.zeros((2, 2)), (1.0, 1.0), metadata={"format": "npy",
        ...                                                       "npy_scale": "mayo"})
        >>> written_scale(img), written_scale(CTImage(np.zeros((2, 2)), (1.0, 1.0)))
        ('mayo', 'hu')
    """
    meta = image.metadata
    if meta.get("format") == "npy" and meta.get("npy_scale") == "mayo" and (
        "difference" not in meta
    ):
        return "mayo"
    return "hu"


@readers.register("npy")
class NpyReader(FormatReader):
    """A 2D ``(H, W)`` or 3D ``(D, H, W)`` NumPy array, no pickles; spacing is unknown (1 mm)."""

    suffixes = (".npy",)
    sniffed_as = ("npy",)

    def read(self, path: Path) -> CTImage:
        path = Path(path)
        try:
            values = np.load(path, allow_pickle=False, mmap_mode=None)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                reason = "unsupported dtype object (pickled arrays are never loaded)"
            else:
                reason = f"corrupt or truncated .npy file ({one_line(exc)})"
            raise LowdoseError(f"{path}: {reason}") from None
        except (OSError, EOFError) as exc:
            reason = f"corrupt or truncated .npy file ({one_line(exc)})"
            raise LowdoseError(f"{path}: {reason}") from None
        if not isinstance(values, np.ndarray):
            raise LowdoseError(f"{path}: holds an archive, not one array")
        check_real_dtype(values.dtype, path)
        if values.ndim == 3 and values.shape[0] == 1:
            values = values[0]
        if values.ndim not in (2, 3) or min(values.shape) < 2:
            raise LowdoseError(f"{path}: shape {values.shape} is not a 2D slice or 3D volume")
        check_finite(values, path)
        scale = self.options.npy_scale
        hu = npy_to_hu(values, scale, path)
        return CTImage(
            hu,
            spacing=(1.0,) * hu.ndim,
            metadata={
                "format": "npy",
                "source": str(path.resolve()),
                "npy_scale": scale or "hu",
                "npy_scale_rule": NPY_SCALES[scale or "hu"],
                "stored_dtype": str(values.dtype),
                "spacing_known": False,
            },
        )


@writers.register("npy")
class NpyWriter(FormatWriter):
    """float32 ``.npy`` in the scale its input was read in (no geometry: use NIfTI or DICOM
    to keep spacing).

    An image read from an ``.npy`` in the Mayo scale (``--npy-scale mayo``) is written back in
    it, ``(HU + 1024) / 4096`` clipped to [0, 1], so the output and its input read and score
    under one ``--npy-scale``; any other image (HU ``.npy``, DICOM, NIfTI, PNG) is written in
    HU. The scale comes from the image's ``npy_scale`` metadata (see :func:`written_scale`).

    Example:
        >>> img = read_ct("L506_86_input.npy", npy_scale="mayo")  # doctest: +SKIP
        >>> write_ct(img.with_pixels(img.hu), "out.npy")  # values in [0, 1]  # doctest: +SKIP
    """

    suffixes = (".npy",)

    def write(self, image: CTImage, path: Path) -> Path:
        path = Path(path)
        refuse_input_overwrite(image, path, is_folder=False)
        check_finite(image.hu, path)
        values = hu_to_npy(image.hu, written_scale(image))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, values, allow_pickle=False)
        return path

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


def npy_to_hu(values: np.ndarray, scale: str | None, path: Path | str) -> np.ndarray:
    """Map stored ``.npy`` values to HU under a stated ``scale`` (None means HU).

    Values that all lie in [0, 1] with no scale given are refused: they are almost certainly a
    normalised convention, and guessing one silently would give wrong HU.

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
    if scale is None:
        if lo >= 0.0 and hi <= 1.0:
            raise LowdoseError(
                f"{path}: values lie in [{lo:g}, {hi:g}], not HU; state the scale: "
                f"--npy-scale mayo (HU = 4096*v - 1024) or --npy-scale hu"
            )
        scale = "hu"
    if scale == "mayo":
        if lo < -0.01 or hi > 1.01:
            raise LowdoseError(
                f"{path}: values lie in [{lo:g}, {hi:g}], outside the Mayo [0, 1] scale"
            )
        v = 4096.0 * v - 1024.0
    return v.astype(np.float32)


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
    """HU as float32 ``.npy`` (no geometry: use NIfTI or DICOM to keep spacing)."""

    suffixes = (".npy",)

    def write(self, image: CTImage, path: Path) -> Path:
        path = Path(path)
        refuse_input_overwrite(image, path, is_folder=False)
        check_finite(image.hu, path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, image.hu.astype(np.float32), allow_pickle=False)
        return path

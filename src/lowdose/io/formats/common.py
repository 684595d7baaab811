"""What every CT format shares: read/write options, content sniffing, input protection, checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import CTImage, Window
from lowdose.io.base import Reader, Writer

DEFAULT_WINDOW_NAME = "lung"
NPY_SCALES = {
    "hu": "values are Hounsfield units",
    "mayo": "HU = 4096 * v - 1024 (AAPM-Mayo npy convention, v in [0, 1])",
}


@dataclass(frozen=True)
class ReadOptions:
    """Options a reader may need; each reader uses the ones that apply to it.

    Attributes:
        window: HU window that 8-bit PNG/JPEG values are mapped through (default: lung).
        npy_scale: how ``.npy`` values map to HU: ``"hu"`` or ``"mayo"``.
        series: SeriesInstanceUID (or a unique part of it) to pick in a folder of several series.
    """

    window: Window | None = None
    npy_scale: str | None = None
    series: str | None = None


@dataclass(frozen=True)
class WriteOptions:
    """Options a writer may need.

    Attributes:
        window: display window for PNG output (default: lung) and DICOM WindowCenter/Width.
        description: suffix added to the derived DICOM SeriesDescription.
    """

    window: Window | None = None
    description: str = "lowdose"


def default_window() -> Window:
    return Window.named(DEFAULT_WINDOW_NAME)


def window_name(window: Window) -> str | None:
    """The registered name of ``window`` (``"lung"``, ...) or None."""
    from lowdose.image import NAMED_WINDOWS

    for name, known in NAMED_WINDOWS.items():
        if known == window:
            return name
    return None


def describe_window(window: Window) -> str:
    name = window_name(window)
    span = f"[{window.lo:g}, {window.hi:g}] HU"
    return f"{name} {span}" if name else span


def head_bytes(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def sniff(path: Path) -> str | None:
    """The format a file's first bytes announce: dicom, npy, png, jpeg, nifti (or None)."""
    try:
        head = head_bytes(path, 352)
    except OSError as exc:
        raise LowdoseError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if head.startswith(b"\x1f\x8b") and path.name.lower().endswith(".nii.gz"):
        return "nifti"
    return None


def check_finite(hu: np.ndarray, path: Path | str) -> None:
    """Raise when ``hu`` holds NaN or infinite values."""
    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(hu.size - np.count_nonzero(finite))
        raise LowdoseError(f"{path}: {bad} of {hu.size} values are NaN or infinite")


def check_real_dtype(dtype: np.dtype, path: Path | str) -> None:
    """Raise unless ``dtype`` is a real integer or float type."""
    if dtype.kind not in "iuf":
        raise LowdoseError(
            f"{path}: unsupported dtype {dtype} (need integer or floating-point pixel values)"
        )


def input_paths(image: CTImage) -> tuple[Path | None, list[Path]]:
    """The source (file or folder) and the input files an image was read from, resolved."""
    source = image.metadata.get("source")
    files = [Path(f).resolve() for f in image.metadata.get("files", []) or []]
    src = Path(source).resolve() if source else None
    if src is not None and not files and not src.is_dir():
        files = [src]
    return src, files


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def refuse_input_overwrite(image: CTImage, target: Path, *, is_folder: bool) -> None:
    """Raise if writing ``target`` would touch the input the image was read from.

    Never over an input file, never into an input folder (a DICOM series folder read as a
    whole stays untouched), never a folder that holds input files.
    """
    target = Path(target).resolve()
    src, files = input_paths(image)
    if target in files:
        raise LowdoseError(f"{target}: is an input file; choose another output path")
    if src is not None and src.is_dir() and _inside(target, src):
        raise LowdoseError(
            f"{target}: is inside the input folder {src}; write next to it, not into it"
        )
    if is_folder and any(_inside(f, target) for f in files):
        raise LowdoseError(f"{target}: holds the input files; choose a new folder next to it")


def one_line(exc: BaseException) -> str:
    """An exception as one line (its lines joined), cut at 300 characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def is_close(a: float, b: float, tol: float = 1e-3) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


class FormatReader(Reader):
    """A reader holding :class:`ReadOptions` that recognises its files by content.

    Subclasses name the :func:`sniff` kinds they accept in ``sniffed_as``.
    """

    sniffed_as: tuple[str, ...] = ()

    def __init__(self, options: ReadOptions | None = None) -> None:
        self.options = options or ReadOptions()

    def sniff(self, path: Path) -> bool:
        return sniff(path) in self.sniffed_as


class FormatWriter(Writer):
    """A writer holding :class:`WriteOptions`."""

    def __init__(self, options: WriteOptions | None = None) -> None:
        self.options = options or WriteOptions()

"""What ``denoise`` and ``upscale`` share: the images one input names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lowdose.image import CTImage


def input_jobs(src: Path, dst: Path, series: str | None, npy_scale: str | None
               ) -> list[tuple[Path, Callable[[], CTImage]]]:
    """``(output, read)`` pairs: one for a file or a DICOM series, one per image in a folder of
    images (NIfTI, npy, PNG; written under ``dst`` with the same names), one per series with
    ``series="all"`` (``dst/<series name>/``).

    Raises:
        LowdoseError: ``src`` does not exist, or ``dst`` is ``src`` (never written over).

    Example:
        >>> jobs = input_jobs(Path("pngs"), Path("out"), None, None)  # doctest: +SKIP
        >>> [out.name for out, _ in jobs]  # doctest: +SKIP
        ['a.png', 'b.png']
    """
    from lowdose.errors import LowdoseError
    from lowdose.io import read_ct
    from lowdose.io.formats.dicom import DICOM_SUFFIXES
    from lowdose.io.read import ALL_SERIES, IMAGE_FILE_SUFFIXES, each_series

    if not src.exists():
        raise LowdoseError(f"{src}: no such file or folder")
    if dst.resolve() == src.resolve():
        raise LowdoseError(f"{dst}: output would overwrite the input")
    if series == ALL_SERIES:
        return [(dst / name, read) for name, read in each_series(src)]

    def reader(path: Path) -> Callable[[], CTImage]:
        return lambda: read_ct(path, series=series, npy_scale=npy_scale)

    if src.is_dir():
        files = sorted(p for p in src.iterdir()
                       if p.is_file() and p.name.lower().endswith(IMAGE_FILE_SUFFIXES))
        non_dicom = [p for p in files if not p.name.lower().endswith(DICOM_SUFFIXES)]
        if non_dicom and len(non_dicom) == len(files):
            return [(dst / p.name, reader(p)) for p in non_dicom]
    return [(dst, reader(src))]

"""What ``denoise`` and ``upscale`` share: the images one input names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lowdose.image import CTImage


def input_jobs(src: Path, dst: Path, series: str | None, npy_scale: str | None
               ) -> list[tuple[Path, Callable[[], CTImage]]]:
    """``(output, read)`` pairs: one for a file or a DICOM series, one per image in a folder or
    folder tree of images without DICOM (NIfTI, npy, PNG/JPEG; written under ``dst`` with the
    same relative names and class folders, JPEG as PNG), one per series with ``series="all"``
    (``dst/<series name>/``).

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
    from lowdose.io.read import ALL_SERIES, IMAGE_FILE_SUFFIXES, each_series, written_name

    if not src.exists():
        raise LowdoseError(f"{src}: no such file or folder")
    if dst.resolve() == src.resolve():
        raise LowdoseError(f"{dst}: output would overwrite the input")
    if series == ALL_SERIES:
        return [(dst / name, read) for name, read in each_series(src)]

    def reader(path: Path) -> Callable[[], CTImage]:
        return lambda: read_ct(path, series=series, npy_scale=npy_scale)

    if src.is_dir() and series is None:
        images = _image_tree(src, IMAGE_FILE_SUFFIXES, DICOM_SUFFIXES)
        if images:
            return [(dst / written_name(p.relative_to(src)), reader(p)) for p in images]
    return [(dst, reader(src))]


def _image_tree(src: Path, suffixes: tuple[str, ...], dicom_suffixes: tuple[str, ...]
                ) -> list[Path]:
    """The images under ``src`` when it holds images and no DICOM (else ``[]``: a series, or an
    exam of several). Files named as DICOM decide at once, as does a flat folder of images
    alone; otherwise (subfolders, or other files beside the images, where a series may hide in
    files without a suffix) the headers are read."""
    own = [p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")]
    if any(p.name.lower().endswith(dicom_suffixes) for p in own):
        return []
    images = [p for p in own if p.name.lower().endswith(suffixes)]
    if images and len(images) == len(own) and not any(p.is_dir() for p in src.iterdir()):
        return sorted(images)
    from lowdose.io.formats.dicom import scan_folder

    scan = scan_folder(src)
    if scan.series or scan.corrupt:
        return []
    return sorted(p for p, _ in scan.skipped
                  if p.name.lower().endswith(suffixes)
                  and not any(part.startswith(".") for part in p.relative_to(src).parts))

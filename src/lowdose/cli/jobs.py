"""What ``denoise`` and ``upscale`` share: the images one input names (where their outputs may
go: :mod:`lowdose.io.outputs`, which ``simulate`` shares)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lowdose.errors import LowdoseError
from lowdose.io.outputs import check_outputs, refuse_output_inside_input, warn_skipped_files

if TYPE_CHECKING:
    from lowdose.image import CTImage, Window


def input_jobs(src: Path, dst: Path, series: str | None, npy_scale: str | None,
               window: Window | Callable[[], Window | None] | None = None
               ) -> list[tuple[Path, Callable[[], CTImage]]]:
    """``(output, read)`` pairs: one for a file or a DICOM series, one per image in a folder or
    folder tree of images without DICOM (NIfTI, npy, PNG/JPEG; written under ``dst`` with the
    same relative names and class folders, JPEG as PNG), one per series with ``series="all"``
    (``dst/<series name>/``); ``window``: the HU window 8-bit PNG/JPEG images are read
    through (:func:`lowdose.io.read_ct`), or a function giving it when they are read. The
    outputs of several are checked now (names, a folder that can be written), and older files
    under ``dst`` that the run will not write are warned about.

    Raises:
        LowdoseError: ``src`` does not exist, or ``dst`` is ``src``, lies inside it (symlinks
            resolved), or inside the folder of a DICOM file's own series.

    Example:
        >>> jobs = input_jobs(Path("pngs"), Path("out"), None, None)  # doctest: +SKIP
        >>> [out.name for out, _ in jobs]  # doctest: +SKIP
        ['a.png', 'b.png']
    """
    from lowdose.io import read_ct
    from lowdose.io.atomic import check_output_place
    from lowdose.io.formats.dicom import DICOM_SUFFIXES
    from lowdose.io.read import ALL_SERIES, IMAGE_FILE_SUFFIXES, each_series, written_name

    if not src.exists():
        raise LowdoseError(f"{src}: no such file or folder")
    if dst.resolve() == src.resolve():
        raise LowdoseError(f"{dst}: output would overwrite the input")
    refuse_output_inside_input(src, dst)
    check_output_place(dst)  # a name too long, a folder not writable: said before the work
    if series == ALL_SERIES:
        jobs = [(dst / name, read) for name, read in each_series(src)]
        check_outputs(dst, [out for out, _ in jobs], folders=True)
        return jobs

    def reader(path: Path) -> Callable[[], CTImage]:
        return lambda: read_ct(path, series=series, npy_scale=npy_scale,
                               window=window() if callable(window) else window)

    if src.is_dir() and series is None:
        images = _image_tree(src, IMAGE_FILE_SUFFIXES, DICOM_SUFFIXES)
        if images:
            warn_skipped_files(src, images)
            jobs = [(dst / written_name(p.relative_to(src)), reader(p)) for p in images]
            check_outputs(dst, [out for out, _ in jobs])
            return jobs
    return [(dst, reader(src))]


def windowed_input_jobs(src: Path, dst: Path, series: str | None, npy_scale: str | None,
                        window: str | None) -> list[tuple[Path, Callable[[], CTImage]]]:
    """:func:`input_jobs` with the ``--window`` of 8-bit inputs (``'lo,hi'`` or a name): the
    one given, else (checked after the inputs and outputs, so their errors come first) the lung
    window, said where assumed (:func:`lowdose.cli.simulate.default_8bit_window`).

    Example:
        >>> jobs = windowed_input_jobs(Path("pngs"), Path("out"), None, None,
        ...                            "lung")  # doctest: +SKIP
    """
    import contextlib

    from lowdose.cli.options import parse_window
    from lowdose.cli.simulate import default_8bit_window
    from lowdose.errors import LowdoseError

    hu_window = [parse_window(window)]  # read when the images are: the default found below
    jobs = input_jobs(src, dst, series, npy_scale, lambda: hu_window[0])
    if hu_window[0] is None and series is None:
        with contextlib.suppress(LowdoseError):  # input_jobs said what is wrong with src
            hu_window[0] = default_8bit_window(src)
    return jobs


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

"""Read any CT input into a :class:`CTImage`, write one out, and say what a path holds.

The reader is picked by content first (DICOM preamble, PNG/JPEG/npy/NIfTI magic), then by suffix;
a folder is a DICOM series (or a folder of one NIfTI file). The writer is picked by suffix:
``.png``, ``.nii``/``.nii.gz``, ``.npy``, ``.dcm`` (one slice) or a folder (a DICOM series).

Example:
    >>> img = read_ct("series/")                      # doctest: +SKIP
    >>> write_ct(img, "series-denoised/", description="denoised")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lowdose.errors import LowdoseError
from lowdose.image import DEFAULT_FOV_MM, HU_EXTENDED_MAX, CTImage, Window
from lowdose.io.base import Reader, Writer, readers, writers
from lowdose.io.formats.common import ReadOptions, WriteOptions
from lowdose.io.formats.dicom import DICOM_SUFFIXES, DicomScan, SeriesInfo
from lowdose.io.formats.npy import looks_normalised
from lowdose.registry import defined_at

#: Files that hold one image each, as the commands that walk a folder of images look for them.
IMAGE_FILE_SUFFIXES = (".nii.gz", ".nii", ".npy", ".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)

#: ``--series all``: every DICOM series of a folder, each written to a subfolder of the output.
ALL_SERIES = "all"


def _pick_reader(path: Path, options: ReadOptions) -> Reader:
    """The registered reader for ``path``: by content first (a reader's ``sniff``), then by
    suffix. A reader that cannot be made (a plugin's constructor that refuses the options) is
    left out, and named only where its suffixes match ``path``."""
    candidates: list[Reader] = []
    broken: list[tuple[str, type[Reader], Exception]] = []
    for name in readers.names():
        cls = readers.get(name)
        try:
            candidates.append(cls(options))
        except Exception as exc:  # a plugin's fault must not stop the other formats
            broken.append((name, cls, exc))
    for reader in candidates:
        sniff = getattr(reader, "sniff", None)
        if sniff is not None and sniff(path):
            return reader
    for reader in candidates:
        if reader.can_read(path):
            return reader
    for name, cls, exc in broken:
        if path.name.lower().endswith(tuple(getattr(cls, "suffixes", ()))):
            raise LowdoseError(
                f"{path}: reader {name!r} ({defined_at(cls)}) cannot be made: "
                f"{type(exc).__name__}: {exc} (a reader takes the ReadOptions: "
                "__init__(self, options=None), see lowdose.io.base.Reader)")
    plugins = "".join(f", {', '.join(r.suffixes)}" for r in candidates
                      if not type(r).__module__.startswith("lowdose.") and r.suffixes)
    raise LowdoseError(
        f"{path}: unsupported file type ({path.suffix or 'no suffix'}); readable: DICOM, "
        f"NIfTI (.nii, .nii.gz), .npy, 8-bit PNG/JPEG{plugins}"
    )


def read_ct(
    path: str | os.PathLike[str],
    *,
    window: Window | None = None,
    npy_scale: str | None = None,
    series: str | None = None,
) -> CTImage:
    """Read a CT file or DICOM series folder into float32 HU with geometry and metadata.

    Args:
        path: a DICOM file, a folder holding a DICOM series (or one NIfTI), a ``.nii``/``.nii.gz``,
            a ``.npy`` or an 8-bit PNG/JPEG.
        window: HU window 8-bit images are mapped through (default lung [-1350, 150] HU, stated
            in ``metadata["window"]``).
        npy_scale: how ``.npy`` values map to HU: ``"hu"`` (default) or ``"mayo"``
            (HU = 4096*v - 1024). Values in [0, 1] without a stated scale are refused.
        series: SeriesInstanceUID (or a unique part) to read from a folder of several series.

    Raises:
        LowdoseError: one line naming the file and the reason.

    Example:
        >>> read_ct("L506_86_target.npy", npy_scale="mayo").shape  # doctest: +SKIP
        (512, 512)
    """
    path = Path(path)
    _refuse_all_series(path, series)
    options = ReadOptions(window=window, npy_scale=npy_scale, series=series)
    if not path.exists():
        raise LowdoseError(f"{path}: no such file or folder")
    if path.is_dir():
        image = _read_folder(path, options)
    else:
        if path.stat().st_size == 0:
            raise LowdoseError(f"{path}: empty file")
        image = _pick_reader(path, options).read(path)
        if series is not None and not image.metadata.get("series_uid"):
            # (a DICOM file of another series is refused by its reader) not ignored
            raise LowdoseError(f"{path}: --series {series} picks a DICOM series of a folder; "
                               f"this is a {image.metadata.get('format')} file")
    if note := implausible_hu_note(image):
        warnings.warn(f"{path}: {note}", stacklevel=2)
    return image


def implausible_hu_note(image: CTImage) -> str | None:
    """A note when an image's values cannot be a CT's HU as read: beyond the extended CT scale,
    or most pixels denser than 1000 HU with nothing below -200 HU (no air, lung or fat): stored
    values read with the wrong sign (PixelRepresentation), or without their rescale
    (RescaleIntercept -1024) on a slice filled by the body; or nothing below -200 HU with a
    fifth of the pixels in [900, 1300] HU, as dense as bone: soft tissue stored without that
    rescale, with air around the body at about 0; or all in [0, 1] (a normalised scale) or
    spanning [0, 255] (grey levels). 8-bit display images (mapped through a window) are left
    out. A heuristic: a note, never a refusal.

    Example:
        >>> import numpy as np
        >>> implausible_hu_note(CTImage(np.full((8, 8), 40.0, np.float32), (1.0, 1.0))) is None
        True
        >>> implausible_hu_note(CTImage(np.full((8, 8), 1064.0, np.float32), (1.0, 1.0)))[:33]
        'median 1064 HU and only 1% of the'
    """
    import numpy as np

    if "window" in image.metadata:
        return None
    sample = image.slices()[:, ::4, ::4]  # a quantile of a volume: every 16th pixel is plenty
    low, median, top = (float(v) for v in np.percentile(sample, [1, 50, 100]))
    hint = ("is it in HU? check the file's rescale (RescaleSlope/RescaleIntercept) and sign "
            "(PixelRepresentation)")
    if top > HU_EXTENDED_MAX:
        return (f"values up to {top:.0f} lie beyond the extended CT scale "
                f"({HU_EXTENDED_MAX:.0f} HU): {hint}")
    if median > 1000.0 and low > -200.0:
        return (f"median {median:.0f} HU and only 1% of the pixels below {low:.0f} HU (a CT "
                f"holds air, lung or fat below -200 HU): {hint}")
    dense = float(np.mean((sample >= 900.0) & (sample <= 1300.0)))
    if low > -200.0 and dense >= 0.2:
        return (f"{100 * dense:.0f}% of the pixels lie in [900, 1300] HU, as dense as bone, and "
                f"only 1% below {low:.0f} HU (a CT holds air, lung or fat below -200 HU): soft "
                f"tissue stored without its rescale? {hint}")
    bottom = float(sample.min())
    if looks_normalised(bottom, top) and bottom < top:  # a constant 0 HU image says nothing
        return (f"values lie in [{bottom:.3g}, {top:.3g}]: a normalised scale, not HU (for "
                "Mayo's (HU + 1024) / 4096, HU = 4096 v - 1024); convert the file to HU")
    if 0.0 <= bottom <= 5.0 and 200.0 <= top <= 255.0:  # spans the 8-bit range, no negatives
        return (f"values lie in [{bottom:.0f}, {top:.0f}] and none below 0 HU: 8-bit grey levels, "
                "not HU? (a CT holds air at -1000 HU; a PNG or JPEG is read through a window)")
    return None


def _refuse_all_series(path: Path, series: str | None) -> None:
    if series == ALL_SERIES:
        raise LowdoseError(f"{path}: --series {ALL_SERIES} is for the commands that write each "
                           "series apart (denoise, upscale, simulate) or describe each (info); "
                           "here name one series")


def read_ct_picking(path: str | os.PathLike[str], series: str | None, *,
                    window: Window | None = None, npy_scale: str | None = None) -> CTImage:
    """:func:`read_ct`, where ``series`` is used only if ``path`` is a folder of several
    DICOM series: a folder of one series (a restored series lowdose wrote, say) reads as it
    is. The folder's headers are scanned once.

    Example:
        >>> read_ct_picking("restored/", series="1.3.6.1.4.1.9328.50").shape  # doctest: +SKIP
        (243, 512, 512)
    """
    from lowdose.io.formats.dicom import DicomReader, MixedSeriesError

    _refuse_all_series(Path(path), series)
    try:
        return read_ct(path, window=window, npy_scale=npy_scale)
    except MixedSeriesError as exc:
        if series is None:
            raise
        picked = ReadOptions(window=window, npy_scale=npy_scale, series=series)
        return DicomReader(picked).read_folder(exc.scan.folder, exc.scan)


def _read_folder(folder: Path, options, scan: DicomScan | None = None) -> CTImage:
    from lowdose.io.formats.dicom import DicomReader, scan_folder

    scan = scan if scan is not None else scan_folder(folder)
    if scan.series or scan.corrupt:
        return DicomReader(options).read_folder(folder, scan)
    skipped = [p for p, _ in scan.skipped]
    niftis = [p for p in skipped if p.name.lower().endswith((".nii", ".nii.gz"))]
    if len(niftis) == 1:
        return readers.get("nifti")(options).read(niftis[0])
    if len(niftis) > 1:
        raise LowdoseError(
            f"{folder}: {len(niftis)} NIfTI files and no DICOM series; read one file at a time"
        )
    images = [p for p in skipped if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    if images and len(images) == len(skipped):
        raise LowdoseError(
            f"{folder}: holds {len(images)} PNG/JPEG images and no DICOM series; a folder of "
            "8-bit images is not a volume: read the images one by one"
        )
    return DicomReader(options).read_folder(folder, scan)


def _writer_name(raw: str, path: Path, folder_if_unknown: bool = False) -> str:
    name = path.name.lower()
    if raw.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        return "dicom"
    for writer in writers.names():
        if name.endswith(writers.get(writer).suffixes):
            return writer
    if folder_if_unknown:
        return "dicom"
    known = sorted({s for w in writers.names() for s in writers.get(w).suffixes})
    raise LowdoseError(
        f"{path}: cannot tell the output format from {path.suffix!r}; use one of "
        f"{', '.join(known)} or a folder (a DICOM series)"
    )


def from_series_folder(image: CTImage) -> bool:
    """``image`` was read from a folder of DICOM files, so it is written back as a folder
    (whatever dots the output's name holds: see ``write_ct(folder_if_unknown=...)``).

    Example:
        >>> import numpy as np
        >>> from_series_folder(CTImage(np.zeros((2, 2), np.float32), (1.0, 1.0)))
        False
    """
    source = image.metadata.get("source")
    return image.metadata.get("format") == "dicom" and source is not None and Path(
        source).is_dir()


def write_ct(
    image: CTImage,
    path: str | os.PathLike[str],
    *,
    window: Window | None = None,
    description: str = "lowdose",
    folder_if_unknown: bool = False,
) -> Path:
    """Write ``image`` by the path's suffix; atomic, never over (or into) the input.

    ``.png``: one slice, 8-bit through ``window`` (default lung), window recorded in the file.
    ``.nii``/``.nii.gz``: float32 HU with the geometry. ``.npy``: float32 HU.
    A folder (existing, ending in ``/``, or without suffix): a derived DICOM series;
    ``.dcm``: one derived slice. DICOM pixels are int16 HU (within 0.5 HU).
    ``folder_if_unknown``: a name whose suffix no writer knows (``dose-0.5``, ``out.v2``) is a
    folder too, as where a DICOM series is written back as one; otherwise it is an error.

    Example:
        >>> write_ct(img, "out.nii.gz")  # doctest: +SKIP
        PosixPath('out.nii.gz')
    """
    raw = os.fspath(path)
    target = Path(raw)
    writer_cls = writers.get(_writer_name(raw, target, folder_if_unknown))
    writer: Writer = writer_cls(WriteOptions(window=window, description=description))
    return writer.write(image, target)


def written_name(relative: Path) -> Path:
    """The output's name for an input image: the same, but 8-bit JPEG written as PNG (lossless:
    a restoration is not recompressed) and a DICOM file as ``.dcm``.

    Example:
        >>> written_name(Path("adenocarcinoma/n9 (2).jpg")).as_posix()
        'adenocarcinoma/n9 (2).png'
    """
    name = relative.name.lower()
    if name.endswith((".jpg", ".jpeg")):
        return relative.with_suffix(".png")
    if name.endswith(DICOM_SUFFIXES):
        return relative.with_suffix(".dcm")
    return relative


def check_writable(image: CTImage, path: str | os.PathLike[str], *,
                   folder_if_unknown: bool = False) -> None:
    """Raise :class:`LowdoseError` now if :func:`write_ct` would refuse ``image`` (or an
    output of as many slices) at ``path``: an unknown suffix, a volume into a one-slice format.
    For a command to call before it spends minutes making the output.

    Example:
        >>> import numpy as np
        >>> volume = CTImage(np.zeros((3, 8, 8), np.float32), (1.0, 1.0, 1.0))
        >>> check_writable(volume, "out.nii.gz")  # fine: nothing raised
        >>> try:
        ...     check_writable(volume, "a.png")
        ... except LowdoseError as exc:
        ...     print(str(exc)[:41])
        a.png: a .png file holds one slice, the i
    """
    raw = os.fspath(path)
    target = Path(raw)
    writer = writers.get(_writer_name(raw, target, folder_if_unknown))(WriteOptions())
    writer.check(image.n_slices, target)


def list_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM series under ``folder`` (searched recursively), largest first.

    Example:
        >>> [(s.n_slices, s.orientation) for s in list_series("series/")]  # doctest: +SKIP
        [(72, 'axial')]
    """
    from lowdose.io.formats.dicom import list_series as dicom_series

    return dicom_series(folder)


def each_series(folder: str | os.PathLike[str], scan: DicomScan | None = None
                ) -> list[tuple[str, Callable[[], CTImage]]]:
    """Every DICOM series under ``folder`` (searched recursively, largest first) as
    ``(folder name, read)`` pairs: the headers are scanned once, a series' pixels are read when
    its ``read()`` is called (as ``read_ct(folder, series=uid)`` would). The names are unique
    (:func:`lowdose.io.formats.dicom.series_folder_names`): where ``--series all`` writes each.
    ``scan``: the folder's scan where the caller has it already (as a
    :class:`~lowdose.io.formats.dicom.MixedSeriesError` carries it).

    Raises:
        LowdoseError: ``folder`` is not a folder, or holds no readable DICOM series.

    Example:
        >>> [name for name, _ in each_series("exam/")]  # doctest: +SKIP
        ['2-CHEST_2_5_MM_ABD_PEL_2_5MM', '4-CHEST_1_25_MM']
    """
    from lowdose.io.formats.dicom import (
        DicomReader,
        scan_folder,
        series_folder_names,
        skipped_note,
    )

    folder = Path(folder)
    if not folder.is_dir():
        raise LowdoseError(f"{folder}: --series {ALL_SERIES} reads a folder of DICOM series, "
                           "not a file")
    scan = scan if scan is not None else scan_folder(folder)
    if scan.corrupt or not scan.series:
        DicomReader(ReadOptions()).read_folder(folder, scan)  # raises the reader's own error
    infos = scan.infos()

    def reader(uid: str, first: bool, name: str) -> Callable[[], CTImage]:
        def read() -> CTImage:
            # The folder's skipped files belong to no series: said once, as they are.
            if first and (note := skipped_note(folder, scan)):
                warnings.warn(note, stacklevel=2)
            # The reader's own warnings (a gap, a tilt, ...) name the series: several are read
            # in turn, and the path in a warning names only the folder they share.
            caught: list[warnings.WarningMessage] = []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    return DicomReader(ReadOptions(series=uid)).read_folder(folder, scan, False)
            finally:  # after the block: to the caller's own filters
                for w in caught:
                    warnings.warn(f"series {name}: {w.message}", w.category, stacklevel=2)

        return read

    return [(name, reader(info.uid, i == 0, name))
            for i, (name, info) in enumerate(zip(series_folder_names(infos), infos, strict=True))]


# ---------------------------------------------------------------------------------------------
# `lowdose info`


@dataclass
class Inventory:
    """What a path holds: the image read from it, the DICOM series found, files skipped."""

    path: Path
    kind: str
    image: CTImage
    series: list[SeriesInfo] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def describe(
    path: str | os.PathLike[str],
    *,
    window: Window | None = None,
    npy_scale: str | None = None,
    series: str | None = None,
) -> Inventory:
    """Read ``path`` and list what it holds (series, skipped files); errors as in read_ct."""
    from lowdose.io.formats.dicom import scan_folder

    path = Path(path)
    if not path.is_dir():
        image = read_ct(path, window=window, npy_scale=npy_scale, series=series)
        found = list_series(path) if image.metadata.get("format") == "dicom" else []
        return _inventory(path, image, found)
    _refuse_all_series(path, series)
    scan = scan_folder(path)  # once, for the image and the list of series
    image = _read_folder(path, ReadOptions(window=window, npy_scale=npy_scale, series=series),
                         scan)
    found = scan.infos() if image.metadata.get("format") == "dicom" else []
    return _inventory(path, image, found)


def describe_each_series(path: str | os.PathLike[str], scan: DicomScan | None = None
                         ) -> tuple[list[SeriesInfo], list[tuple[str, Inventory]]]:
    """Every DICOM series of a folder (largest first): the series found, and each one read and
    described as a ``(folder name, inventory)`` pair named as ``--series all`` names it. Each
    inventory lists the files the scan skipped (not DICOM, copies), not the other series'
    files. ``scan``: as for :func:`each_series`.

    Example:
        >>> [(name, inv.image.shape) for name, inv in describe_each_series("exam/")[1]]
        ... # doctest: +SKIP
        [('2-CHEST_2_5_MM', (121, 512, 512)), ('4-CHEST_1_25_MM', (243, 512, 512))]
    """
    from lowdose.io.formats.dicom import scan_folder

    path = Path(path)
    if not path.is_dir():
        each_series(path)  # raises: --series all reads a folder
    scan = scan if scan is not None else scan_folder(path)
    skipped = [(str(p.relative_to(path)), reason) for p, reason in scan.skipped]
    described = [(name, _inventory(path, read(), [], skipped))
                 for name, read in each_series(path, scan)]
    return scan.infos(), described


def _inventory(path: Path, image: CTImage, found: list[SeriesInfo],
               skipped: list[tuple[str, str]] | None = None) -> Inventory:
    """``skipped``: the files to list as skipped (default: those the image's reader skipped)."""
    fmt = image.metadata.get("format", "?")
    if skipped is None:
        skipped = [(d["file"], d["reason"]) for d in image.metadata.get("skipped", [])]
    if path.is_dir() and fmt == "dicom":
        kind = f"folder: DICOM series ({image.metadata.get('n_files', '?')} files read)"
    elif path.is_dir():
        kind = f"folder holding one {fmt} file: {Path(image.metadata['source']).name}"
    else:
        kind = {"dicom": "DICOM file", "nifti": "NIfTI file", "npy": "NumPy .npy file"}.get(
            fmt, f"{fmt.upper()} image file"
        )
    return Inventory(path, kind, image, found, skipped)


def _fmt_number(x: float) -> str:
    return f"{x:.1f}"


def format_series_table(found: list[SeriesInfo]) -> list[str]:
    """The series of a folder, a line each; with several, where ``--series all`` writes each."""
    from lowdose.io.formats.dicom import series_folder_names

    lines = [f"  {'UID':<66} {'slices':>6}  {'size':>9}  {'orientation':<11} description"]
    for s in found:
        lines.append(
            f"  {s.uid:<66} {s.n_slices:>6}  {f'{s.rows}x{s.cols}':>9}  {s.orientation:<11} "
            f"{s.description}"
        )
    if len(found) > 1:
        folders = ", ".join(f"{name}/" for name in series_folder_names(found))
        lines.append(f"  --series {ALL_SERIES} (denoise, upscale, simulate) writes them to: "
                     f"{folders}")
    return lines


def format_inventory(inv: Inventory, with_path: bool = True) -> str:
    """The human-readable report ``lowdose info`` prints (``with_path``: its first line
    names the path)."""
    img, meta = inv.image, inv.image.metadata
    axes = "slices x rows x cols" if img.is_volume else "rows x cols"
    hu = img.hu
    lines = [
        *([f"path:        {inv.path}"] if with_path else []),
        f"kind:        {inv.kind}",
        f"format:      {meta.get('format')}"
        + (f" ({meta['transfer_syntax']})" if meta.get("transfer_syntax") else ""),
        f"shape:       {' x '.join(str(n) for n in img.shape)} ({axes})",
        f"spacing:     {' x '.join(f'{s:.4g}' for s in img.spacing)} mm ({axes})"
        + ("" if meta.get("spacing_known", True) else
           " (unknown: not stored in the file; simulate takes the larger side as "
           f"{DEFAULT_FOV_MM:g} mm, {DEFAULT_FOV_MM / max(img.shape[-2:]):.3g} mm pixels, "
           "unless given --pixel-size)"),
    ]
    # A NIfTI whose qform and sform codes are 0 states no orientation: its origin and plane are
    # nibabel's fall-back, not the file's.
    orientation_known = meta.get("orientation_known", True)
    if not orientation_known:
        lines.append("origin:      unknown (not stored in the file: NIfTI qform and sform "
                     "codes 0)")
    elif img.origin is not None:
        lines.append(f"origin:      {', '.join(f'{x:.4g}' for x in img.origin)} mm (LPS)")
    # A DICOM header states its plane; a NIfTI volume's affine gives it (image.orientation).
    plane = meta.get("orientation") or img.orientation
    if not orientation_known:
        lines.append("orientation: unknown (not stored in the file)")
    elif plane:
        order = meta.get("slice_order")
        lines.append(
            f"orientation: {plane}"
            + (f"; slice order: {order}" if order and img.is_volume else "")
        )
    lines.append(
        f"HU:          min {_fmt_number(float(hu.min()))}  mean {_fmt_number(float(hu.mean()))}"
        f"  max {_fmt_number(float(hu.max()))}"
    )
    if meta.get("units") and meta["units"] != "HU":
        lines.append(f"units:       {meta['units']}")
    if "window" in meta:
        lo, hi = meta["window"]
        name = f"{meta['window_name']} " if meta.get("window_name") else ""
        lines.append(
            f"window:      {name}[{lo:g}, {hi:g}] HU ({meta.get('window_source', 'given')}): "
            "8-bit values mapped to HU through it"
        )
    if "npy_scale" in meta:
        lines.append(f"npy scale:   {meta['npy_scale']}: {meta.get('npy_scale_rule', '')}")
    if meta.get("format") == "dicom":
        desc = meta.get("series_description") or ""
        lines.append(
            f"series read: {meta.get('series_uid')}"
            + (f" {desc!r}" if desc else "")
            + f", {meta.get('n_files', 1)} file(s), modality {meta.get('modality')}"
        )
    if inv.series:
        lines.append(f"series found: {len(inv.series)}")
        lines.extend(format_series_table(inv.series))
    lines.append(f"skipped:     {len(inv.skipped)} file(s)")
    lines.extend(f"  {f}: {r}" for f, r in inv.skipped)
    return "\n".join(lines)


__all__ = [
    "Inventory",
    "SeriesInfo",
    "describe",
    "format_inventory",
    "format_series_table",
    "list_series",
    "read_ct",
    "write_ct",
]

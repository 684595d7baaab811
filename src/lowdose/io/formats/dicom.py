"""DICOM through pydicom: single files, series folders (grouped, sorted), derived-series writing.

Slice order: slices are sorted by ImagePositionPatient projected on the slice normal
(row cosines x column cosines of ImageOrientationPatient), ascending, then InstanceNumber. For an
axial series that is z ascending: the first slice is the most inferior (feet) one, as in ITK.
``CTImage.direction[:, 2]`` is that normal, and ``origin`` is the first slice's position. The
frames of an enhanced multi-frame file are sorted the same way, and each gets a header of its own
(its position, orientation, pixel measures and window from its functional groups).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import CTImage, plane_of
from lowdose.io.atomic import (
    atomic_path,
    current_umask,
    remove_stale_temps,
    temp_name_parts,
)
from lowdose.io.base import readers, writers
from lowdose.io.formats.common import (
    FormatReader,
    FormatWriter,
    WriteOptions,
    check_finite,
    is_close,
    one_line,
    refuse_input_overwrite,
    sniff,
)

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Tags whose values describe stored pixel values we re-encode, so they cannot be copied over.
STALE_PIXEL_TAGS = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "ModalityLUTSequence",
    "NumberOfFrames",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
    "PlanarConfiguration",
    "PixelAspectRatio",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
# Not stale: LossyImageCompression (+Ratio, +Method). Once "01" it shall not be reset (DICOM
# PS3.3 C.7.6.1.1.5): a derived series keeps the source's history, and gets "01" where the
# source's transfer syntax was lossy (see LOSSY_TRANSFER_SYNTAXES).
#: Transfer syntaxes whose compression may lose information, with the LossyImageCompressionMethod
#: term of each (DICOM PS3.3 C.7.6.1.1.5.1).
LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended (Process 2 and 4)
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000 (lossy or lossless)
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # HTJ2K (lossy or lossless)
    "1.2.840.10008.1.2.4.111": "ISO_10918_1",  # JPEG XL recompression of a JPEG
    "1.2.840.10008.1.2.4.112": "ISO_18181_1",  # JPEG XL (lossy or lossless)
}
# Of those, the ones that may hold a lossless encoding too: a file's own LossyImageCompression
# "00" is believed for them.
MAYBE_LOSSLESS_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.112",
})
#: The window (center, width in HU) written to a derived series whose source states none: soft
#: tissue, named in WindowCenterWidthExplanation, so that a viewer does not open it at full range.
DEFAULT_DICOM_WINDOW = (40.0, 400.0)
DEFAULT_WINDOW_EXPLANATION = "SOFT TISSUE (lowdose default)"
# Per-frame attributes of an enhanced multi-frame (functional group sequence, attribute) that
# each frame's own header gets (see _frame_headers).
FRAME_ATTRIBUTES = (
    ("PlanePositionSequence", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ("PixelMeasuresSequence", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices"),
    ("FrameVOILUTSequence", "WindowCenter"),
    ("FrameVOILUTSequence", "WindowWidth"),
    ("FrameVOILUTSequence", "WindowCenterWidthExplanation"),
)
#: ``CTImage.metadata`` key: how the image's dose relates to the dose that the exposure tags of
#: its source headers describe. A number ``f``: the image is ``f`` times the source's dose (a
#: simulated lower dose of that scan), so the derived series gets those tags scaled by ``f``.
#: ``None``: the relation is unknown, so they are removed rather than left stating the source's
#: dose. Absent: the image has the source's dose (denoised, upscaled) and they are kept.
DOSE_SCALE = "dose_scale"
# Tags proportional to the tube current-time product at a fixed kV and collimation: a dose
# fraction f is f times each (read as a lower tube current at the same rotation time, so
# ExposureTime stays). Searched in nested sequences too (CTExposureSequence, ExposureDoseSequence).
DOSE_TAGS = (
    "CTDIvol",
    "Exposure",
    "ExposureInuAs",
    "ExposureInmAs",
    "XRayTubeCurrent",
    "XRayTubeCurrentInuA",
    "XRayTubeCurrentInmA",
    "GeneratorPower",
    "ImageAndFluoroscopyAreaDoseProduct",
    "EntranceDose",
    "EntranceDoseInmGy",
    "OrganDose",
)


def _pydicom():
    """Import pydicom, configured so a malformed element cannot crash reading or writing."""
    import pydicom

    # Malformed elements (e.g. the private (01F1,1026) of the itkelastix set) become UN
    # instead of raising when a dataset is walked (str(), iteration, writing).
    pydicom.config.convert_wrong_length_to_UN = True
    return pydicom


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's per-element warnings; what matters is reported in metadata."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Setting VR to 'UN'")
        warnings.filterwarnings("ignore", message=r".*[Ii]nvalid value for VR")
        warnings.filterwarnings("ignore", module=r"pydicom\..*", category=UserWarning)
        yield


# ---------------------------------------------------------------------------------------------
# scanning a folder


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes:
        uid: SeriesInstanceUID.
        description: SeriesDescription ('' when absent).
        n_slices: images with pixel data in the series (frames for a multi-frame file).
        modality: Modality ('CT', 'MR', ...).
        rows, cols: image size.
        orientation: 'axial', 'coronal', 'sagittal', 'oblique' or 'unknown'.
        series_number: SeriesNumber, if present.
        study_uid: StudyInstanceUID.
        files: the files of the series, in the order they were found.
    """

    uid: str
    description: str
    n_slices: int
    modality: str
    rows: int
    cols: int
    orientation: str
    series_number: int | None
    study_uid: str
    files: list[Path] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        desc = f" {self.description!r}" if self.description else ""
        return (
            f"{self.uid}{desc} ({self.n_slices} slice{'s' * (self.n_slices != 1)}, "
            f"{self.rows}x{self.cols}, {self.orientation})"
        )


@dataclass
class DicomScan:
    """What a folder holds: series with their header datasets, and files skipped and why."""

    folder: Path
    series: dict[str, list[tuple[Path, Any]]]
    skipped: list[tuple[Path, str]]
    corrupt: list[tuple[Path, str]]
    n_files: int

    def infos(self) -> list[SeriesInfo]:
        """The series found, largest first (then by UID)."""
        found = [_series_info(uid, items) for uid, items in self.series.items()]
        return sorted(found, key=lambda s: (-s.n_slices, s.uid))


def _orientation_label(iop: Any) -> str:
    try:
        row, col = np.asarray(iop[:3], float), np.asarray(iop[3:6], float)
    except (TypeError, ValueError, IndexError):
        return "unknown"
    if row.shape != (3,) or col.shape != (3,):
        return "unknown"
    return plane_of(row, col)


def _n_frames(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _series_info(uid: str, items: list[tuple[Path, Any]]) -> SeriesInfo:
    ds = items[0][1]
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        iop = _shared_item(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    number = ds.get("SeriesNumber")
    return SeriesInfo(
        uid=uid,
        description=str(ds.get("SeriesDescription", "") or ""),
        n_slices=sum(_n_frames(d) for _, d in items),
        modality=str(ds.get("Modality", "") or ""),
        rows=int(ds.get("Rows", 0) or 0),
        cols=int(ds.get("Columns", 0) or 0),
        orientation=_orientation_label(iop) if iop is not None else "unknown",
        series_number=int(number) if number not in (None, "") else None,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        files=[p for p, _ in items],
    )


#: The Media Storage Directory SOP class: a DICOMDIR.
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"


def _read_header(path: Path) -> tuple[Any | None, str | None, bool]:
    """(dataset with large values deferred, reason it is not usable, is it corrupt)."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        if path.stat().st_size == 0:
            return None, "empty file", False
    except OSError as exc:
        return None, f"unreadable ({one_line(exc)})", False
    kind = sniff(path)
    try:
        with _quiet():
            ds = pydicom.dcmread(path, defer_size=4096)
    except InvalidDicomError:
        if kind is not None or path.suffix.lower() not in (*DICOM_SUFFIXES, ""):
            return None, f"not DICOM ({kind or 'unknown'} file)", False
        # DICOM written without the 128-byte preamble: accept only if it parses as an image.
        try:
            with _quiet():
                ds = pydicom.dcmread(path, defer_size=4096, force=True)
            if "SOPClassUID" not in ds and not any(t in ds for t in PIXEL_TAGS):
                return None, "not DICOM", False
        except Exception:
            return None, "not DICOM", False
    except Exception as exc:
        if kind == "dicom":
            return None, f"corrupt or truncated DICOM ({one_line(exc)})", True
        return None, f"not DICOM ({type(exc).__name__})", False
    media = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    if str(media or "") == MEDIA_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in ds:
        # A CD/USB export's index of its files: the images are the files it lists.
        return None, "DICOMDIR (the index of a media export; its images are read directly)", \
            False
    if "SOPClassUID" not in ds and "Modality" not in ds:
        # Every DICOM object has a SOP class; a file cut short after the preamble has none.
        return None, "corrupt or truncated DICOM (no SOPClassUID or Modality)", True
    if not any(t in ds for t in PIXEL_TAGS):
        sop = ds.get("SOPClassUID")
        what = getattr(sop, "name", None) or str(ds.get("Modality", "") or sop)
        return ds, f"DICOM without pixel data ({what})", False
    return ds, None, False


def scan_folder(folder: Path) -> DicomScan:
    """Read the headers of every file under ``folder`` (recursively) and group them by series.

    Hidden files are skipped, as is anything that is not DICOM with pixel data; copies of
    one instance (same SOPInstanceUID) are kept once.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    series: dict[str, list[tuple[Path, Any]]] = {}
    skipped: list[tuple[Path, str]] = []
    corrupt: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    for path in files:
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            skipped.append((path, "hidden file"))
            continue
        ds, reason, is_corrupt = _read_header(path)
        if is_corrupt:
            corrupt.append((path, reason or "corrupt"))
            continue
        if reason is not None:
            skipped.append((path, reason))
            continue
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if sop and sop in seen:
            skipped.append((path, f"copy of {seen[sop].relative_to(folder)} (same SOPInstanceUID)"))
            continue
        if sop:
            seen[sop] = path
        uid = str(ds.get("SeriesInstanceUID", "") or "") or "(no SeriesInstanceUID)"
        series.setdefault(uid, []).append((path, ds))
    return DicomScan(folder, series, skipped, corrupt, len(files))


def list_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM series under ``folder`` (or in one file), largest first.

    Example:
        >>> [s.n_slices for s in list_series("series/")]  # doctest: +SKIP
        [72]
    """
    path = Path(folder)
    if not path.exists():
        raise LowdoseError(f"{path}: no such file or folder")
    if path.is_file():
        ds, reason, _ = _read_header(path)
        if ds is None or reason is not None:
            return []
        uid = str(ds.get("SeriesInstanceUID", "") or "") or "(no SeriesInstanceUID)"
        return [_series_info(uid, [(path, ds)])]
    return scan_folder(path).infos()


def series_folder_names(infos: list[SeriesInfo]) -> list[str]:
    """A folder name for each series, unique among ``infos``: its SeriesNumber and description
    with anything but letters, digits, ``_`` and ``-`` made ``_`` (at most 60 characters; no
    ``.``, which would read as a file suffix), else ``series``; where two names coincide, the end
    of the UID is added.

    Example:
        >>> a = SeriesInfo("1.2.31", "CHEST 1.25 MM", 1, "CT", 8, 8, "axial", 4, "1.2")
        >>> b = SeriesInfo("1.2.32", "", 1, "CT", 8, 8, "axial", None, "1.2")
        >>> series_folder_names([a, b])
        ['4-CHEST_1_25_MM', 'series']
    """
    import re

    names = []
    for info in infos:
        words = re.sub(r"[^A-Za-z0-9-]+", "_", info.description).strip("_-")[:60]
        number = str(info.series_number) if info.series_number is not None else ""
        names.append("-".join(part for part in (number, words) if part) or "series")
    names = [f"{name}-{info.uid.rsplit('.', 1)[-1][-12:]}" if names.count(name) > 1 else name
             for name, info in zip(names, infos, strict=True)]
    # UIDs that end alike (or none): the position in the list keeps the names apart
    return [name if names.count(name) == 1 else f"{name}-{i + 1}" for i, name in enumerate(names)]


# ---------------------------------------------------------------------------------------------
# decoding


def _shared_item(ds: Any, seq: str, attr: str) -> Any:
    """``attr`` from the shared functional groups of an enhanced multi-frame dataset."""
    try:
        return getattr(ds.SharedFunctionalGroupsSequence[0][seq][0], attr)
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def _frame_item(ds: Any, index: int, seq: str, attr: str) -> Any:
    try:
        return getattr(ds.PerFrameFunctionalGroupsSequence[index][seq][0], attr)
    except (AttributeError, KeyError, IndexError, TypeError):
        return _shared_item(ds, seq, attr)


def _decode(path: Path, ds: Any) -> np.ndarray:
    """Stored pixels through the modality LUT (RescaleSlope/Intercept): float32, HU for CT."""
    from pydicom.pixels import apply_modality_lut

    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise LowdoseError(
            f"{path}: {ds.get('PhotometricInterpretation', 'colour')} DICOM with "
            f"{ds.SamplesPerPixel} samples per pixel is not a CT image"
        )
    try:
        with _quiet():
            arr = ds.pixel_array
    except NotImplementedError as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise LowdoseError(
            f"{path}: cannot decode transfer syntax {name} ({one_line(exc)}); "
            "install its pydicom plugin"
        ) from None
    except LowdoseError:
        raise
    except Exception as exc:
        reason = one_line(exc).split(" - ")[0]
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and getattr(syntax, "is_compressed", False):
            what = f"cannot decode {syntax.name} pixel data (corrupt, or no plugin handles it)"
        else:
            what = "corrupt or truncated DICOM pixel data"
        raise LowdoseError(f"{path}: {what} ({reason})") from None
    if arr.dtype.kind not in "iuf":
        raise LowdoseError(f"{path}: unsupported pixel dtype {arr.dtype}")
    frames = _n_frames(ds)
    if frames > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        out = np.empty(arr.shape, np.float32)
        for i in range(frames):
            slope = _frame_item(ds, i, "PixelValueTransformationSequence", "RescaleSlope")
            inter = _frame_item(ds, i, "PixelValueTransformationSequence", "RescaleIntercept")
            out[i] = arr[i] * float(slope if slope is not None else 1.0) + float(inter or 0.0)
        hu = out
    elif "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        hu = arr.astype(np.float32)
    else:
        hu = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    check_finite(hu, path)
    return hu


def _vec(value: Any, n: int) -> np.ndarray | None:
    try:
        v = np.asarray([float(x) for x in value], float)
    except (TypeError, ValueError):
        return None
    return v if v.shape == (n,) else None


def _number(value: Any, default: float | None = None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _json(value: Any) -> Any:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _slice_geometry(path: Path, ds: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    return _vec(ds.get("ImageOrientationPatient"), 6), _vec(ds.get("ImagePositionPatient"), 3)


def _pixel_spacing(ds: Any) -> tuple[float, float]:
    for value in (
        ds.get("PixelSpacing"),
        _shared_item(ds, "PixelMeasuresSequence", "PixelSpacing"),
        ds.get("ImagerPixelSpacing"),
    ):
        v = _vec(value, 2) if value is not None else None
        if v is not None and (v > 0).all():
            return float(v[0]), float(v[1])
    return 1.0, 1.0


def _direction(iop: np.ndarray | None) -> np.ndarray:
    if iop is None:
        return np.eye(3)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    return np.stack([row, col, normal / (np.linalg.norm(normal) or 1.0)], axis=1)


def _base_metadata(source: Path, ds: Any) -> dict[str, Any]:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return {
        "format": "dicom",
        "source": str(source.resolve()),
        "series_uid": _json(ds.get("SeriesInstanceUID")),
        "study_uid": _json(ds.get("StudyInstanceUID")),
        "series_description": _json(ds.get("SeriesDescription")) or "",
        "series_number": _json(ds.get("SeriesNumber")),
        "modality": _json(ds.get("Modality")),
        "manufacturer": _json(ds.get("Manufacturer")),
        "kvp": _json(ds.get("KVP")),
        "convolution_kernel": _json(ds.get("ConvolutionKernel")),
        "slice_thickness": _number(ds.get("SliceThickness")),
        "transfer_syntax": getattr(syntax, "name", None) if syntax else None,
        "rescale": [_number(ds.get("RescaleSlope"), 1.0), _number(ds.get("RescaleIntercept"), 0.0)],
        "units": "HU" if str(ds.get("Modality", "CT")) == "CT" else "modality LUT output",
    }


def evenly_spaced(steps: np.ndarray, step: float) -> bool:
    """Whether slice ``steps`` (mm) are all ``step``, within 1% and 1 um (decimal strings).

    Example:
        >>> evenly_spaced(np.array([2.0, 2.0005]), 2.0), evenly_spaced(np.array([2.0, 4.0]), 2.0)
        (True, False)
    """
    return bool(np.all(np.abs(steps - step) <= 0.01 * step + 1e-3))


def _slice_steps(source: Path, uid: str, proj: np.ndarray, meta: dict[str, Any]) -> float:
    """The median step (mm) between slices at ``proj`` (ascending positions along the normal).

    Sets ``slice_spacing_uniform`` in ``meta`` (and ``slice_spacing_range`` where the steps
    differ by over 1%), and warns of uneven steps: a regular grid of the median step misplaces
    the slices after a gap. Slices at one position are refused: they are not one volume.
    """
    steps = np.diff(proj)
    spacing_k = float(np.median(steps))
    if spacing_k <= 1e-4 or (np.abs(steps) <= 1e-4).any():
        raise LowdoseError(
            f"{source}: series {uid} has several slices at one position "
            "(several acquisitions or phases in one series); it is not one volume"
        )
    uniform = evenly_spaced(steps, spacing_k)
    meta["slice_spacing_uniform"] = uniform
    if not uniform:
        meta["slice_spacing_range"] = [float(steps.min()), float(steps.max())]
        warnings.warn(
            f"{source}: irregular slice spacing {steps.min():.4g}..{steps.max():.4g} mm in "
            f"series {uid}; using the median {spacing_k:.4g} mm",
            stacklevel=4,
        )
    meta["slice_order"] = "position along the slice normal, ascending"
    return spacing_k


def tilt_angle(positions: np.ndarray, normal: np.ndarray) -> tuple[float, float]:
    """How far slice positions step off the slice normal, as a gantry tilt does: the angle
    (degrees) between the normal and the least-squares line of the positions through the first,
    and the largest distance (mm) of a position from the normal through the first.

    Example:
        >>> z = np.arange(4) * 2.0
        >>> positions = np.stack([np.zeros(4), 0.7 * np.arange(4), z], axis=1)  # 0.7 mm in y
        >>> angle, off = tilt_angle(positions, np.array([0.0, 0.0, 1.0]))
        >>> round(angle, 2), round(off, 2)
        (19.29, 2.1)
    """
    offsets = np.asarray(positions, float) - np.asarray(positions[0], float)
    along = offsets @ normal
    across = offsets - np.outer(along, normal)
    off = float(np.linalg.norm(across, axis=1).max())
    span = float(along @ along)
    if span == 0.0:
        return 0.0, off
    slope = across.T @ along / span  # in-plane move per mm along the normal
    return float(np.degrees(np.arctan(np.linalg.norm(slope)))), off


def _warn_tilt(
    source: Path, uid: str, positions: np.ndarray, direction: np.ndarray,
    spacing: tuple[float, ...], meta: dict[str, Any], stated: Any,
) -> None:
    """Warn once where the slices (``positions`` in slice order) step off the slice normal by
    over a tenth of the smallest ``spacing`` (a gantry tilt); records ``gantry_tilt_deg``. The
    image is not resampled: its slice axis stays the normal."""
    angle, off = tilt_angle(positions, direction[:, 2])
    if off <= 0.1 * min(spacing):
        return
    meta["gantry_tilt_deg"] = round(angle, 4)
    tilt = _number(stated)
    header = f"; GantryDetectorTilt {tilt:g}" if tilt is not None else ""
    warnings.warn(
        f"{source}: series {uid} is gantry tilted: its slice positions step {angle:.3g} degrees "
        f"off the slice normal (measured from ImagePositionPatient{header}), up to "
        f"{off:.3g} mm from the normal through the first slice; a NIfTI output cannot place these "
        "slices exactly (its slice axis is the normal), a DICOM output keeps their positions; "
        "not resampled",
        stacklevel=4,
    )


def _frame_headers(ds: Any, order: np.ndarray) -> list[Any]:
    """One header per frame of an enhanced multi-frame ``ds`` (without pixel data), in ``order``.

    Each holds the top-level attributes (patient, study, series, transfer syntax), shared, and the
    frame's own :data:`FRAME_ATTRIBUTES` (position, orientation, pixel measures, window) from its
    functional groups, so that per-slice code (subsetting, :func:`acquired_positions`, the
    derived series) sees one header per slice. ``_lowdose_frame`` holds its 1-based frame number.
    """
    from pydicom.dataset import Dataset

    skip = {*PIXEL_TAGS, "NumberOfFrames", "PerFrameFunctionalGroupsSequence",
            "SharedFunctionalGroupsSequence"}  # fmt: skip
    shared = [elem for elem in ds if elem.keyword not in skip]
    headers = []
    for index in order:
        header = Dataset()
        for elem in shared:
            header.add(copy.copy(elem))
        if hasattr(ds, "file_meta"):
            header.file_meta = ds.file_meta
        for seq, attr in FRAME_ATTRIBUTES:
            value = _frame_item(ds, int(index), seq, attr)
            if value is not None:
                setattr(header, attr, copy.deepcopy(value))
        header._lowdose_frame = int(index) + 1
        headers.append(header)
    return headers


def _frame_number(ds: Any) -> int | None:
    """The frame number of a header :func:`_frame_headers` made, else None."""
    return getattr(ds, "_lowdose_frame", None)


def _read_multiframe(path: Path, ds: Any, source: Path) -> CTImage:
    hu = _decode(path, ds)
    frames = hu.shape[0]
    uid = str(ds.get("SeriesInstanceUID", "") or "?")
    iop = _vec(_shared_item(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    if iop is None:
        iop = _vec(_frame_item(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    direction = _direction(iop)
    positions = [
        _vec(_frame_item(ds, i, "PlanePositionSequence", "ImagePositionPatient"), 3)
        for i in range(frames)
    ]
    order = np.arange(frames)
    spacing_k = _number(_shared_item(ds, "PixelMeasuresSequence", "SpacingBetweenSlices"))
    spacing_k = spacing_k or _number(_shared_item(ds, "PixelMeasuresSequence", "SliceThickness"))
    pixel = _pixel_spacing(ds)
    meta = _base_metadata(source, ds)
    origin = None
    if all(p is not None for p in positions):
        proj = np.array([p @ direction[:, 2] for p in positions])
        order = np.argsort(proj, kind="stable")
        if frames > 1:
            spacing_k = _slice_steps(source, uid, proj[order], meta)
            stated = ds.get("GantryDetectorTilt")
            if stated is None:
                stated = _frame_item(ds, 0, "CTAcquisitionDetailsSequence", "GantryDetectorTilt")
            _warn_tilt(source, uid, np.array([positions[i] for i in order]), direction,
                       (spacing_k, *pixel), meta, stated)  # fmt: skip
        origin = tuple(float(x) for x in positions[order[0]])
    meta.update(files=[str(path.resolve())], n_files=1, multiframe=True)
    return CTImage(
        hu[order],
        spacing=(abs(spacing_k or 1.0), *pixel),
        origin=origin,
        direction=direction,
        metadata=meta,
        source_headers=_frame_headers(_strip_pixels(ds), order),
    )


def _strip_pixels(ds: Any) -> Any:
    """``ds`` without pixel data, every element parsed (malformed ones become UN here, quietly)."""
    for tag in PIXEL_TAGS:
        if tag in ds:
            delattr(ds, tag)
    with _quiet():
        for _ in ds:
            pass
    return ds


def read_dicom_series(
    items: list[tuple[Path, Any]], source: Path, skipped: list[tuple[Path, str]] | None = None
) -> CTImage:
    """One series (files with their header datasets) as a 2D slice or a ``(D, H, W)`` volume."""
    uid = str(items[0][1].get("SeriesInstanceUID", "") or "?")
    if len(items) == 1 and _n_frames(items[0][1]) > 1:
        return _read_multiframe(items[0][0], items[0][1], source)
    if any(_n_frames(ds) > 1 for _, ds in items):
        raise LowdoseError(f"{source}: series {uid} mixes multi-frame and single-frame files")
    shapes = {(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for _, ds in items}
    if len(shapes) > 1:
        raise LowdoseError(
            f"{source}: series {uid} mixes image sizes {sorted(shapes)}; it is not one volume"
        )
    geometry = [_slice_geometry(p, ds) for p, ds in items]
    iop0 = geometry[0][0]
    direction = _direction(iop0)
    have_positions = iop0 is not None and all(
        iop is not None and pos is not None for iop, pos in geometry
    )
    if have_positions and len(items) > 1:
        for (path, _), (iop, _) in zip(items, geometry, strict=True):
            if not np.allclose(iop, iop0, atol=1e-3):
                raise LowdoseError(
                    f"{path}: orientation {iop.round(4).tolist()} differs from the rest of "
                    f"series {uid} ({iop0.round(4).tolist()}); it is not one volume"
                )
    normal = direction[:, 2]
    keys = []
    for (path, ds), (_, pos) in zip(items, geometry, strict=True):
        proj = float(pos @ normal) if have_positions else 0.0
        inst = _number(ds.get("InstanceNumber"), 0.0)
        keys.append((proj, inst, str(path)))
    order = sorted(range(len(items)), key=lambda i: keys[i])
    items = [items[i] for i in order]
    proj = np.array([keys[i][0] for i in order])
    meta = _base_metadata(source, items[0][1])
    pixel = _pixel_spacing(items[0][1])
    spacing_k = None
    if have_positions and len(items) > 1:
        spacing_k = _slice_steps(source, uid, proj, meta)
        _warn_tilt(source, uid, np.array([geometry[i][1] for i in order]), direction,
                   (spacing_k, *pixel), meta, items[0][1].get("GantryDetectorTilt"))  # fmt: skip
    elif len(items) > 1:
        meta["slice_order"] = "InstanceNumber (no ImagePositionPatient)"
        ds0 = items[0][1]
        spacing_k = abs(
            _number(ds0.get("SpacingBetweenSlices")) or _number(ds0.get("SliceThickness")) or 1.0
        )
        meta["slice_spacing_known"] = False
    slices = [_decode(path, ds) for path, ds in items]
    hu = np.stack(slices) if len(slices) > 1 else slices[0]
    spacing = (spacing_k, *pixel) if hu.ndim == 3 else pixel
    if hu.ndim == 2:
        from lowdose.io.formats.nifti import SINGLE_SLICE_SPACING  # nifti imports this module

        thickness = _number(items[0][1].get("SliceThickness"))
        if thickness is not None and np.isfinite(thickness) and thickness > 0:
            meta[SINGLE_SLICE_SPACING] = thickness  # a NIfTI's slice axis: the slice's thickness
    pos0 = geometry[order[0]][1]
    syntaxes = sorted(
        {
            getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "?")
            for _, ds in items
            if hasattr(ds, "file_meta")
        }
    )
    meta.update(
        files=[str(p.resolve()) for p, _ in items],
        n_files=len(items),
        transfer_syntax=", ".join(syntaxes) or None,
        orientation=_orientation_label(iop0) if iop0 is not None else "unknown",
    )
    if skipped:
        meta["skipped"] = [{"file": str(p), "reason": r} for p, r in skipped]
    return CTImage(
        hu,
        spacing=spacing,
        origin=tuple(float(x) for x in pos0) if pos0 is not None else None,
        direction=direction,
        metadata=meta,
        source_headers=[_strip_pixels(ds) for _, ds in items],
    )


class MixedSeriesError(LowdoseError):
    """A folder holds several series and none (or no unique one) was picked.

    Attributes:
        series: the series found, largest first.
        scan: the folder's scan, so that a caller can pick a series without scanning again.
    """

    def __init__(self, message: str, series: list[SeriesInfo], scan: DicomScan) -> None:
        super().__init__(message)
        self.series = series
        self.scan = scan


def pick_series(scan: DicomScan, wanted: str | None) -> str:
    """The UID of the series to read: the only one, or the one ``wanted`` names."""
    found = scan.infos()
    uids = [s.uid for s in found]
    listing = "; ".join(s.summary() for s in found[:8])
    if len(uids) > 8:
        listing += f"; and {len(uids) - 8} more (lowdose info lists them)"
    if wanted:
        if wanted in scan.series:
            return wanted
        hits = [u for u in uids if wanted in u]
        if len(hits) == 1:
            return hits[0]
        reason = "matches several series" if hits else "is not here"
        raise MixedSeriesError(
            f"{scan.folder}: series {wanted!r} {reason}; found: {listing}", found, scan,
        )
    if len(uids) > 1:
        raise MixedSeriesError(
            f"{scan.folder}: {len(uids)} DICOM series in one folder; pick one with "
            f"--series UID: {listing}", found, scan,
        )
    return uids[0]


@readers.register("dicom")
class DicomReader(FormatReader):
    """One DICOM file (a slice, or a multi-frame volume) or a folder holding a series."""

    suffixes = DICOM_SUFFIXES

    def sniff(self, path: Path) -> bool:
        return path.is_dir() or sniff(path) == "dicom"

    def can_read(self, path: Path) -> bool:
        return path.is_dir() or super().can_read(path)

    def read(self, path: Path) -> CTImage:
        path = Path(path)
        if path.is_dir():
            return self.read_folder(path, scan_folder(path))
        ds, reason, corrupt = _read_header(path)
        if ds is None or corrupt:
            if reason and reason.startswith("not DICOM"):
                reason = "not a DICOM file (no DICM preamble, does not parse)"
            raise LowdoseError(f"{path}: {reason}")
        if reason is not None:
            raise LowdoseError(f"{path}: {reason}")
        # A unique part of the UID names the series, as it does for a folder (pick_series).
        if self.options.series and self.options.series not in str(
                ds.get("SeriesInstanceUID", "")):
            raise LowdoseError(
                f"{path}: belongs to series {ds.get('SeriesInstanceUID')}, "
                f"not {self.options.series}"
            )
        return read_dicom_series([(path, ds)], path)

    def read_folder(self, folder: Path, scan: DicomScan, warn_skipped: bool = True) -> CTImage:
        """The series of ``scan`` that the options pick; ``warn_skipped``: warn of the files
        skipped (once per folder, where several series of one scan are read)."""
        if scan.corrupt:
            bad, why = scan.corrupt[0]
            more = f" (and {len(scan.corrupt) - 1} more)" if len(scan.corrupt) > 1 else ""
            raise LowdoseError(f"{bad}: {why}{more}")
        if not scan.series:
            raise LowdoseError(_nothing_readable(folder, scan))
        uid = pick_series(scan, self.options.series)
        others = [
            (p, f"other series {u}")
            for u, items in scan.series.items()
            if u != uid
            for p, _ in items
        ]
        skipped = [(p.relative_to(folder), r) for p, r in scan.skipped + others]
        if warn_skipped and (note := skipped_note(folder, scan)):
            warnings.warn(note, stacklevel=3)
        return read_dicom_series(scan.series[uid], folder, skipped)


def skipped_note(folder: Path, scan: DicomScan) -> str | None:
    """The warning naming the files of ``folder`` that hold no series (the first five), or
    ``None``: said once per folder, whichever of its series are read.

    Example:
        >>> skipped_note(Path("exam"), DicomScan(Path("exam"), {}, [], [], 0)) is None
        True
    """
    if not scan.skipped:
        return None
    names = ", ".join(f"{p.relative_to(folder)} ({r})" for p, r in scan.skipped[:5])
    more = f" and {len(scan.skipped) - 5} more" if len(scan.skipped) > 5 else ""
    return f"{folder}: skipped {names}{more}"


def _nothing_readable(folder: Path, scan: DicomScan) -> str:
    if scan.n_files == 0:
        return f"{folder}: empty folder (no files)"
    reasons: dict[str, int] = {}
    for _, r in scan.skipped:
        reasons[r] = reasons.get(r, 0) + 1
    summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:4])
    return f"{folder}: no readable image: no DICOM series among {scan.n_files} files ({summary})"


# ---------------------------------------------------------------------------------------------
# writing


def _encode(hu: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values with (slope, intercept): HU rounded to 1 HU when the range allows."""
    lo, hi = float(hu.min()), float(hu.max())
    if lo >= -32768 and hi <= 32767:
        return np.round(hu).astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65535.0
    stored = np.round((hu - lo) / slope) - 32768
    return np.clip(stored, -32768, 32767).astype(np.int16), slope, lo + 32768 * slope


def _ds_string(value: float) -> str:
    """A DICOM DS string (at most 16 characters): 10 significant digits where they hold the value
    exactly, else, for a value read from float32, its shortest float32 form.

    Example:
        >>> _ds_string(-94.5), _ds_string(1 / 3), _ds_string(float(np.float32(0.9766)))
        ('-94.5', '0.3333333333', '0.9766')
    """
    value = float(value)
    text = f"{value:.10g}"
    if float(text) != value and value == float(np.float32(value)):
        text = str(np.float32(value))
    if len(text) > 16:
        text = f"{value:.6g}"
    return text


def _headers_match(image: CTImage) -> bool:
    headers = image.source_headers
    if not headers or len(headers) != image.n_slices:
        return False
    rows, cols = image.slices().shape[1:]
    pixel = image.spacing[-2:]
    for ds in headers:
        if not hasattr(ds, "get") or "ImagePositionPatient" not in ds:
            return False
        if int(ds.get("Rows", -1)) != rows or int(ds.get("Columns", -1)) != cols:
            return False
        ps = _vec(ds.get("PixelSpacing"), 2)
        if ps is None or not (is_close(ps[0], pixel[0]) and is_close(ps[1], pixel[1])):
            return False
    return True


def _inplane_shift(image: CTImage) -> np.ndarray | None:
    """The in-plane move of the first pixel from the source headers to ``image``, when the image
    holds the same slices as its headers on another in-plane grid (upscaled, cropped, binned).

    That is: one header per slice, each with the image's orientation, and the image's first
    slice in the plane of the first header (the move has no part along the slice normal). Then
    each header keeps its slice's identity and position along the normal; only ``Rows``,
    ``Columns``, ``PixelSpacing`` and ``ImagePositionPatient`` (moved by the returned vector)
    change. ``None`` otherwise.
    """
    headers = image.source_headers
    if not headers or len(headers) != image.n_slices or image.origin is None:
        return None
    direction = np.eye(3) if image.direction is None else np.asarray(image.direction, float)
    iop = np.concatenate([direction[:, 0], direction[:, 1]])
    first = None
    for ds in headers:
        if not hasattr(ds, "get"):
            return None
        ds_iop = _vec(ds.get("ImageOrientationPatient"), 6)
        ds_pos = _vec(ds.get("ImagePositionPatient"), 3)
        if ds_iop is None or ds_pos is None or not np.allclose(ds_iop, iop, atol=1e-3):
            return None
        first = ds_pos if first is None else first
    shift = np.asarray(image.origin, float) - first
    normal = np.cross(direction[:, 0], direction[:, 1])
    if abs(float(shift @ normal)) > 1e-2:  # the slices moved along the normal: other slices
        return None
    return shift


def acquired_positions(image: CTImage) -> np.ndarray | None:
    """Where each slice's first pixel was acquired (LPS, mm, one row per slice in the image's
    order), from its source DICOM headers moved onto the image's in-plane grid; ``None`` where
    the headers do not say (no DICOM source, or slices no longer one per header). A multi-frame
    source gives each frame's own position (its PlanePositionSequence).

    A writer of a regular grid (NIfTI) compares them with the positions its affine gives: a
    series with a gap or a gantry tilt does not lie on one.

    Example:
        >>> acquired_positions(CTImage(np.zeros((2, 4, 4), np.float32), (1.0, 0.5, 0.5))) is None
        True
    """
    shift = _inplane_shift(image)
    if shift is None:
        return None
    return np.array([_vec(ds.get("ImagePositionPatient"), 3) for ds in image.source_headers]
                    ) + shift


def _drop_overlays(ds: Any) -> None:
    """Remove overlay planes (groups 6000-601E): they are drawn on the source's pixel grid."""
    for elem in [e for e in ds if 0x6000 <= e.tag.group <= 0x601E and e.tag.group % 2 == 0]:
        del ds[elem.tag]


def _scaled_value(value: Any, vr: str, scale: float) -> Any:
    """``value`` times ``scale`` in the form its VR takes (IS and the binary integers whole)."""
    from pydicom.multival import MultiValue

    if isinstance(value, list | tuple | MultiValue):
        return [_scaled_value(v, vr, scale) for v in value]
    x = float(value) * scale
    if not np.isfinite(x):
        raise ValueError(value)
    if vr in ("IS", "US", "UL", "SS", "SL", "SV", "UV"):
        return int(np.floor(x + 0.5))  # half up, not Python's half to even
    if vr == "DS":
        return _ds_string(x)
    if vr in ("FD", "FL"):
        return x
    raise ValueError(vr)  # UN (malformed) or another VR: no number to scale


def _rescale_exposure(ds: Any, scale: float | None) -> set[str]:
    """Scale the :data:`DOSE_TAGS` of ``ds`` (and of its sequences' items) by ``scale``, or
    remove them where ``scale`` is None; returns the keywords changed.

    An empty value stays (it states no dose); one that cannot be read as a number is removed.
    """
    changed: set[str] = set()
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                changed |= _rescale_exposure(item, scale)
            continue
        if elem.keyword not in DOSE_TAGS:
            continue
        if scale is None:
            del ds[elem.tag]
            changed.add(elem.keyword)
            continue
        if elem.value is None or elem.value == "" or scale == 1.0:
            continue
        try:
            elem.value = _scaled_value(elem.value, elem.VR, scale)
        except (TypeError, ValueError, OverflowError):
            del ds[elem.tag]
        changed.add(elem.keyword)
    return changed


def _exposure_note(image: CTImage, datasets: list[Any]) -> str | None:
    """Apply the image's :data:`DOSE_SCALE` to the datasets' exposure tags; what was done."""
    if DOSE_SCALE not in image.metadata:
        return None
    scale = image.metadata[DOSE_SCALE]
    if scale is not None:
        scale = _number(scale)
        if scale is None or not (np.isfinite(scale) and scale > 0):
            raise LowdoseError(
                f"metadata {DOSE_SCALE}={image.metadata[DOSE_SCALE]!r}: need a positive number "
                "(the image's dose over the source's) or None (unknown)"
            )
    changed: set[str] = set()
    for ds in datasets:
        changed |= _rescale_exposure(ds, scale)
    names = ", ".join(sorted(changed))
    if not names:
        return None
    if scale is None:
        return (
            f"exposure tags removed ({names}): the image's dose relative to the source "
            "scan's is unknown"
        )
    if scale == 1.0:
        return f"exposure tags kept ({names}): the source scan's dose"
    return f"exposure tags scaled by {scale:g}, the fraction of the source scan's dose ({names})"


def _new_dataset(template: Any | None, now: _dt.datetime) -> tuple[Any, str]:
    """A CT dataset with patient/study tags from ``template`` or, without one, new ones."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    if template is not None:
        for keyword in (
            "SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
            "PatientAge", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
            "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
            "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer", "KVP",
            "ConvolutionKernel", "BodyPartExamined", "PatientPosition",
        ):  # fmt: skip
            if keyword in template:
                setattr(ds, keyword, copy.deepcopy(template.data_element(keyword).value))
        note = "patient and study tags copied from the source; geometry from the image"
    else:
        note = "not from DICOM: new patient ID and study/frame-of-reference UIDs"
    defaults = {
        "PatientName": "lowdose^anonymous",
        "PatientID": "LOWDOSE-" + generate_uid().rsplit(".", 1)[-1][:12],
        "PatientBirthDate": "",
        "PatientSex": "",
        "StudyInstanceUID": generate_uid(),
        "StudyDate": now.strftime("%Y%m%d"),
        "StudyTime": now.strftime("%H%M%S"),
        "StudyID": "1",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "FrameOfReferenceUID": generate_uid(),
        "PositionReferenceIndicator": "",
        "Manufacturer": "lowdose",
        "KVP": "",
        # Type 2 for CT Image Storage (no PatientOrientationCodeSequence): present, empty where
        # the source does not say (HFS would be a guess).
        "PatientPosition": "",
    }
    for keyword, value in defaults.items():
        if keyword not in ds:
            setattr(ds, keyword, value)
    ds.Modality = "CT"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    return ds, note


def _lossy_history(sources: list[Any]) -> tuple[Any, Any] | None:
    """(ratio, method) of the lossy compression the pixels of ``sources`` went through (either may
    be None: not known), or None where there was none: a LossyImageCompression "01" stated, else
    a lossy transfer syntax (:data:`LOSSY_TRANSFER_SYNTAXES`; one that may be lossless too is
    believed where the file states "00").

    Example:
        >>> from pydicom.dataset import Dataset
        >>> ds = Dataset()
        >>> ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_15444_1"
        >>> _lossy_history([ds]), _lossy_history([Dataset()])
        ((None, 'ISO_15444_1'), None)
    """
    for src in sources:
        if str(src.get("LossyImageCompression", "") or "").strip() == "01":
            return src.get("LossyImageCompressionRatio"), src.get("LossyImageCompressionMethod")
    for src in sources:
        meta = getattr(src, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
        if syntax not in LOSSY_TRANSFER_SYNTAXES:
            continue
        stated = str(src.get("LossyImageCompression", "") or "").strip()
        if stated == "00" and syntax in MAYBE_LOSSLESS_SYNTAXES:
            continue
        return None, LOSSY_TRANSFER_SYNTAXES[syntax]
    return None


def _keep_lossy_history(ds: Any, sources: list[Any]) -> None:
    """Mark ``ds`` LossyImageCompression "01" (with the ratio and method known) where its
    ``sources`` went through lossy compression: once "01", never reset (PS3.3 C.7.6.1.1.5)."""
    history = _lossy_history([src for src in sources if hasattr(src, "get")])
    if history is None:
        return
    ds.LossyImageCompression = "01"
    for keyword, value in zip(
        ("LossyImageCompressionRatio", "LossyImageCompressionMethod"), history, strict=True
    ):
        if value not in (None, ""):
            setattr(ds, keyword, copy.deepcopy(value))
        elif keyword in ds:
            delattr(ds, keyword)


def _set_window(ds: Any, src: Any | None) -> None:
    """The window of ``src`` (WindowCenter, WindowWidth and their explanation) where it states
    one, else :data:`DEFAULT_DICOM_WINDOW` named as the default in WindowCenterWidthExplanation.

    Example:
        >>> from pydicom.dataset import Dataset
        >>> ds = Dataset()
        >>> _set_window(ds, None)
        >>> ds.WindowCenter, ds.WindowWidth, ds.WindowCenterWidthExplanation
        ('40', '400', 'SOFT TISSUE (lowdose default)')
    """
    keywords = ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation")
    known = src is not None and all(src.get(k) not in (None, "") for k in keywords[:2])
    for keyword in keywords:
        if keyword in ds and (not known or keyword not in src):
            delattr(ds, keyword)
        elif known and keyword in src:
            setattr(ds, keyword, copy.deepcopy(src.data_element(keyword).value))
    if not known:
        center, width = DEFAULT_DICOM_WINDOW
        ds.WindowCenter, ds.WindowWidth = _ds_string(center), _ds_string(width)
        ds.WindowCenterWidthExplanation = DEFAULT_WINDOW_EXPLANATION


def _derived_datasets(image: CTImage, options: WriteOptions) -> tuple[list[Any], str]:
    """One dataset per slice, without pixel data, for a derived series."""
    from pydicom.uid import generate_uid

    now = _dt.datetime.now()
    series_uid = generate_uid()
    n = image.n_slices
    headers = image.source_headers or []
    template = headers[0] if headers and hasattr(headers[0], "get") else None
    # The frames of a multi-frame source: no per-slice file to copy, but each frame's position.
    frames = bool(headers) and all(_frame_number(h) is not None for h in headers)
    same = not frames and _headers_match(image)
    shift = None if same or frames else _inplane_shift(image)
    reuse = same or shift is not None
    datasets = []
    if reuse:
        note = "original per-slice headers kept (patient, study, geometry); private tags dropped"
        if shift is not None:
            note = (
                "original per-slice headers kept (patient, study, slice positions) on the image's "
                "in-plane grid (pixel spacing, position); private tags and overlays dropped"
            )
            if image.metadata.get("spacing_known") is False:
                note += "; source pixel spacing unknown, written as stored in the image (1 mm)"
        for src in headers:
            ds = copy.deepcopy(src)
            _strip_pixels(ds)
            ds.remove_private_tags()
            for tag in STALE_PIXEL_TAGS:
                if tag in ds:
                    delattr(ds, tag)
            if "ReferencedSOPInstanceUID" in ds:
                del ds.ReferencedSOPInstanceUID
            image_type = list(src.get("ImageType", []) or [])
            ds.ImageType = ["DERIVED", "SECONDARY", *(image_type[2:] or ["AXIAL"])]
            if shift is not None:
                # Same slice, other pixel grid (Rows/Columns come with the pixels): the first
                # pixel moves in-plane only, so SliceLocation and the slice's identity hold.
                pixel = image.spacing[-2:]
                pos = _vec(src.get("ImagePositionPatient"), 3) + shift
                ds.ImagePositionPatient = [_ds_string(x) for x in pos]
                ds.PixelSpacing = [_ds_string(pixel[0]), _ds_string(pixel[1])]
                _drop_overlays(ds)
            _set_window(ds, src)
            _keep_lossy_history(ds, [src])
            datasets.append(ds)
        description = str(template.get("SeriesDescription", "") or "")
        number = _number(template.get("SeriesNumber"))
    else:
        base, note = _new_dataset(template, now)
        # Each frame at its acquired position (on the image's in-plane grid), where the image
        # still holds the source's frames; else the image's regular grid.
        positions = acquired_positions(image) if frames else None
        if positions is not None:
            note = (
                "patient and study tags copied from the source multi-frame; orientation and pixel "
                "spacing from the image, each frame at its acquired position (its "
                "PlanePositionSequence)"
            )
        if image.metadata.get("spacing_known") is False:
            note += "; source pixel spacing unknown, written as stored in the image (1 mm)"
        elif image.metadata.get("spacing_source"):  # stated or assumed, not read from a file
            note += f"; pixel spacing {image.metadata['spacing_source']}"
        _keep_lossy_history(base, headers)
        description = str(template.get("SeriesDescription", "") or "") if template else ""
        number = _number(template.get("SeriesNumber")) if template is not None else None
        direction = np.eye(3) if image.direction is None else np.asarray(image.direction, float)
        origin = np.zeros(3) if image.origin is None else np.asarray(image.origin, float)
        pixel = image.spacing[-2:]
        step = image.spacing[0] if image.is_volume else _one_slice_length(image)
        iop = [*direction[:, 0].tolist(), *direction[:, 1].tolist()]
        # SliceLocation is the position along the DICOM slice normal, row x column cosines (z
        # for axial slices), not along the volume's third axis, which may run the other way.
        normal = np.cross(direction[:, 0], direction[:, 1])
        normal = normal / (np.linalg.norm(normal) or 1.0)
        even = True  # the image's grid; the source's frames may have a gap
        if positions is None:
            positions = origin + np.outer(np.arange(n) * step, direction[:, 2])
        else:
            steps = np.abs(np.diff(positions @ normal))
            even = evenly_spaced(steps, step)
        for k in range(n):
            ds = copy.deepcopy(base)
            src = headers[k] if frames and len(headers) == n else template
            pos = positions[k]
            thickness = (_number(src.get("SliceThickness")) if src is not None else None) or step
            ds.ImagePositionPatient = [_ds_string(x) for x in pos]
            ds.ImageOrientationPatient = [_ds_string(x) for x in iop]
            ds.PixelSpacing = [_ds_string(pixel[0]), _ds_string(pixel[1])]
            ds.SliceThickness = _ds_string(thickness)
            if image.is_volume and even:  # no one spacing between unevenly spaced frames
                ds.SpacingBetweenSlices = _ds_string(step)
            ds.SliceLocation = _ds_string(float(pos @ normal))
            ds.InstanceNumber = k + 1
            _set_window(ds, src)
            datasets.append(ds)
    suffix = options.description.strip()
    series_description = f"{description} {suffix}".strip() if suffix else description
    series_number = int(number) + 1000 if number is not None else 1000
    what = suffix.removeprefix("lowdose").strip()
    derivation = f"lowdose {what}" if what else "lowdose"
    exposure = _exposure_note(image, datasets)
    if exposure:
        note = f"{note}; {exposure}"
    for k, ds in enumerate(datasets):
        src = headers[k] if reuse else None
        ds.SOPClassUID = ds.get("SOPClassUID", CT_IMAGE_STORAGE)
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = series_description[:64]
        ds.SeriesNumber = series_number
        ds.SeriesDate = now.strftime("%Y%m%d")
        ds.SeriesTime = now.strftime("%H%M%S")
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.ContentTime = now.strftime("%H%M%S")
        ds.DerivationDescription = f"{derivation}; {note}"[:1024]
        if src is not None and "SOPInstanceUID" in src:
            from pydicom.dataset import Dataset

            ref = Dataset()
            ref.ReferencedSOPClassUID = src.get("SOPClassUID", CT_IMAGE_STORAGE)
            ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
            ds.SourceImageSequence = [ref]
        if "InstanceNumber" not in ds:
            ds.InstanceNumber = k + 1
    return datasets, note


def _one_slice_length(image: CTImage) -> float:
    """The slice-axis length (mm) of a 2D image: the one its source stated (a one-slice NIfTI's
    slice axis, a DICOM slice's thickness), else 1 mm."""
    from lowdose.io.formats.nifti import SINGLE_SLICE_SPACING  # nifti imports this module

    length = _number(image.metadata.get(SINGLE_SLICE_SPACING))
    return length if length is not None and np.isfinite(length) and length > 0 else 1.0


def _set_pixels(ds: Any, hu: np.ndarray, options: WriteOptions) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    stored, slope, intercept = _encode(hu)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(hu.shape[0]), int(hu.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = _ds_string(slope)
    ds.RescaleIntercept = _ds_string(intercept)
    ds.RescaleType = "HU"
    if options.window is not None:
        ds.WindowCenter = _ds_string((options.window.lo + options.window.hi) / 2)
        ds.WindowWidth = _ds_string(options.window.width)
        if "WindowCenterWidthExplanation" in ds:  # it named the window replaced
            del ds.WindowCenterWidthExplanation
    ds.add_new(0x7FE00010, "OW", stored.astype("<i2").tobytes())  # PixelData, 16-bit words
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def _save(ds: Any, path: Path) -> None:
    pydicom = _pydicom()
    with _quiet():
        pydicom.dcmwrite(path, ds, enforce_file_format=True)


@contextlib.contextmanager
def _atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` that replaces it on success; the temporary
    folders of earlier, killed writes of ``target`` are removed then."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix, _ = temp_name_parts(target, folder=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    except OSError as exc:  # named as the user named it, not by a hidden temporary name
        raise LowdoseError(f"{target}: cannot write ({exc.strerror or exc})") from None
    try:
        try:
            yield tmp
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=prefix.removesuffix("partial-") + "old-",
                                            dir=target.parent))
                os.replace(target, old / "series")
            # mkdtemp makes 0700 folders; give the series the usual permissions, as
            # atomic_path gives files.
            os.chmod(tmp, 0o777 & ~current_umask())
            os.replace(tmp, target)
        except OSError as exc:
            raise LowdoseError(f"{target}: cannot write ({exc.strerror or exc})") from exc
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        remove_stale_temps(target, folder=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(path: Path) -> None:
    """An existing output folder may be replaced only when it holds a series lowdose wrote
    (hidden files beside it, a Mac's ``.DS_Store``, go with the folder it replaces)."""
    if not path.is_dir():
        raise LowdoseError(f"{path}: exists and is not a folder")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    others = [p for p in entries if not (p.is_file() and p.name.lower().endswith(".dcm"))]
    if others:
        raise LowdoseError(
            f"{path}: folder exists and holds other files ({others[0].name}); "
            "choose a new folder for the derived series"
        )
    for entry in entries:
        ds, _, _ = _read_header(entry)
        if ds is None or not str(ds.get("DerivationDescription", "")).startswith("lowdose"):
            raise LowdoseError(
                f"{path}: folder holds DICOM files lowdose did not write ({entry.name}); "
                "choose a new folder for the derived series"
            )


@writers.register("dicom")
class DicomWriter(FormatWriter):
    """A derived CT series: a folder of slices (``out/``), or one slice (``out.dcm``).

    New SeriesInstanceUID and SOPInstanceUIDs, ImageType DERIVED\\SECONDARY, the
    SeriesDescription plus a suffix, the original geometry and patient/study tags, int16 pixels
    with RescaleSlope/Intercept (HU rounded to 1 HU), explicit VR little endian. The same slices
    on another in-plane grid (upscaled) keep their source headers too, with the image's pixel
    spacing and position. Exposure tags follow the image's :data:`DOSE_SCALE`. Never into the
    input folder; an existing target folder is replaced only when it holds a series lowdose wrote.
    """

    suffixes = (".dcm",)
    one_slice_suffixes = (".dcm",)

    def check(self, n_slices: int, path: Path) -> None:
        """:meth:`Writer.check`, and an existing series folder at ``path`` must be one lowdose
        wrote (else refused now, before the work, not when writing)."""
        super().check(n_slices, path)
        path = Path(path)
        one_file = path.suffix.lower() == ".dcm" and not path.is_dir()
        if not one_file and path.exists():
            _check_replaceable(path)

    def write(self, image: CTImage, path: Path) -> Path:
        path = Path(path)
        check_finite(image.hu, path)
        one_file = path.suffix.lower() == ".dcm" and not path.is_dir()
        refuse_input_overwrite(image, path, is_folder=not one_file)
        datasets, _ = _derived_datasets(image, self.options)
        slices = image.slices()
        if one_file:
            self.check(image.n_slices, path)
            _set_pixels(datasets[0], slices[0], self.options)
            with atomic_path(path) as tmp:
                _save(datasets[0], tmp)
            return path
        if path.exists():
            _check_replaceable(path)
        width = max(4, len(str(len(datasets))))
        with _atomic_folder(path) as tmp:
            for k, (ds, pixels) in enumerate(zip(datasets, slices, strict=True)):
                _set_pixels(ds, pixels, self.options)
                _save(ds, tmp / f"slice{k + 1:0{width}d}.dcm")
        return path

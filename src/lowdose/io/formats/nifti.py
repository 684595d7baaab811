"""NIfTI volumes through nibabel: RAS affine <-> spacing, origin and direction (LPS, DICOM)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import CTImage
from lowdose.io.atomic import atomic_path
from lowdose.io.base import readers, writers
from lowdose.io.formats.common import (
    FormatReader,
    FormatWriter,
    check_finite,
    check_real_dtype,
    one_line,
    refuse_input_overwrite,
)

#: Metadata key of a 2D image read from a one-slice NIfTI, stored (X, Y, 1) or (X, Y): its
#: third-axis (slice) spacing (mm), so that the writer gives back the same affine.
SINGLE_SLICE_SPACING = "nifti_single_slice_spacing"
#: Metadata key, True for a 2D image read from a NIfTI stored 2D (X, Y): written back 2D, where
#: one read from (X, Y, 1) is written back (X, Y, 1).
STORED_2D = "nifti_stored_2d"
#: Metadata keys of an image read from a NIfTI: its qform and sform codes (0 unknown, 1 scanner,
#: 2 aligned, 3 Talairach, 4 MNI), written back as they were.
QFORM_CODE = "nifti_qform_code"
SFORM_CODE = "nifti_sform_code"
#: Metadata key, False where the file states no orientation (qform and sform codes both 0): its
#: origin and direction are then nibabel's fall-back (centred, x flipped), not the file's.
ORIENTATION_KNOWN = "orientation_known"
#: Codes written for an image that did not come from a NIfTI (DICOM positions are scanner's).
SCANNER = 1
# NIfTI affines map voxels to RAS+; DICOM (and CTImage.origin/direction) use LPS+.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
#: mm per unit of the NIfTI ``xyzt_units`` spatial codes that are not mm (1 metre, 3 micron).
MM_PER_UNIT = {1: 1000.0, 3: 0.001}


def affine_to_geometry(
    affine: np.ndarray,
) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """Spacing (i, j, k), origin (LPS) and direction columns (LPS) of a voxel-to-RAS affine.

    Example:
        >>> sp, origin, d = affine_to_geometry(np.diag([2.0, 3.0, 4.0, 1.0]))
        >>> sp, origin, d[:, 0].tolist()
        ((2.0, 3.0, 4.0), (0.0, 0.0, 0.0), [-1.0, 0.0, 0.0])
    """
    lps = RAS_TO_LPS @ np.asarray(affine, np.float64)[:3, :4]
    axes = lps[:, :3]
    spacing = np.linalg.norm(axes, axis=0)
    spacing[spacing == 0] = 1.0
    direction = axes / spacing
    origin = lps[:, 3] + 0.0  # no negative zeros from the LPS flip
    return (
        tuple(float(s) for s in spacing),
        tuple(float(o) for o in origin),
        direction,
    )


def affine_in_mm(affine: np.ndarray, xyzt_units: int) -> tuple[np.ndarray, str | None]:
    """``affine`` converted to mm by the spatial unit of a NIfTI's ``xyzt_units`` (as ITK does),
    with a note where the unit is not stated (code 0, or not a spatial one): taken as mm.

    Example:
        >>> metres = np.diag([0.0008, 0.0009, 0.0025, 1.0])
        >>> metres[:3, 3] = [0.1, 0.12, -0.05]
        >>> mm, note = affine_in_mm(metres, 1 | 8)  # metres, seconds
        >>> np.round(np.diag(mm)[:3], 6).tolist(), np.round(mm[:3, 3], 6).tolist(), note
        ([0.8, 0.9, 2.5], [100.0, 120.0, -50.0], None)
        >>> affine_in_mm(metres, 0)[1]
        'taken as mm (the NIfTI states no spatial unit)'
    """
    code = int(xyzt_units) & 0x07
    out = np.array(affine, dtype=np.float64)
    if code in MM_PER_UNIT:
        # In float32, as the file stores it: 0.0025 m gives 2.5 mm, not 2.499999944.
        out[:3, :4] = (out[:3, :4].astype(np.float32) * np.float32(MM_PER_UNIT[code])
                       ).astype(np.float64)
    note = None if code in (2, *MM_PER_UNIT) else "taken as mm (the NIfTI states no spatial unit)"
    return out, note


def geometry_to_affine(image: CTImage) -> np.ndarray:
    """The voxel-to-RAS affine of ``image`` (index order i=column, j=row, k=slice).

    Example:
        >>> vol = CTImage(np.zeros((3, 4, 5), np.float32), (2.5, 0.9, 0.8), origin=(1, 2, 3))
        >>> geometry_to_affine(vol)[:3].tolist()
        [[-0.8, 0.0, 0.0, -1.0], [0.0, -0.9, 0.0, -2.0], [0.0, 0.0, 2.5, 3.0]]
    """
    if image.is_volume:
        sk, sj, si = image.spacing
    else:
        (sj, si), sk = image.spacing, float(image.metadata.get(SINGLE_SLICE_SPACING, 1.0))
    direction = np.eye(3) if image.direction is None else np.asarray(image.direction, float)
    origin = np.zeros(3) if image.origin is None else np.asarray(image.origin, float)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array([si, sj, sk])
    lps[:3, 3] = origin
    to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return to_ras @ lps


@readers.register("nifti")
class NiftiReader(FormatReader):
    """``.nii``/``.nii.gz``: values taken as HU; volumes become ``(D, H, W)``, 2D stays 2D."""

    suffixes = (".nii", ".nii.gz")
    sniffed_as = ("nifti",)

    def read(self, path: Path) -> CTImage:
        import nibabel as nib

        path = Path(path)
        try:
            img = nib.load(str(path))
            stored = img.get_data_dtype()
            check_real_dtype(np.dtype(stored), path)
            data = np.asarray(img.dataobj, dtype=np.float32)
        except LowdoseError:
            raise
        except Exception as exc:
            raise LowdoseError(f"{path}: corrupt or unreadable NIfTI ({one_line(exc)})") from None
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim > 3:
            raise LowdoseError(f"{path}: {data.ndim}D NIfTI {data.shape}; only 2D/3D is supported")
        if data.ndim == 1 or min(data.shape[:2]) < 2:
            raise LowdoseError(f"{path}: shape {data.shape} is not a 2D slice or 3D volume")
        check_finite(data, path)
        header = img.header
        affine, unit_note = affine_in_mm(img.affine, int(header["xyzt_units"]))
        codes = {QFORM_CODE: int(header["qform_code"]), SFORM_CODE: int(header["sform_code"])}
        spacing_ijk, origin, direction = affine_to_geometry(affine)
        si, sj, sk = spacing_ijk
        if data.ndim == 3 and data.shape[2] > 1:
            hu = np.ascontiguousarray(data.transpose(2, 1, 0))
            spacing: tuple[float, ...] = (sk, sj, si)
        else:
            hu = np.ascontiguousarray(data.reshape(data.shape[0], data.shape[1]).T)
            spacing = (sj, si)
        metadata: dict[str, object] = {
            "format": "nifti",
            "source": str(path.resolve()),
            "stored_dtype": str(stored),
            "units": "values taken as HU (NIfTI stores no units)",
            # A slice, stored (X, Y, 1) or (X, Y), has no third spacing of its own, but its
            # affine holds one (the slice thickness); kept so the writer gives it back.
            SINGLE_SLICE_SPACING: sk,
            STORED_2D: data.ndim == 2,
            **codes,
        }
        if unit_note is not None:
            metadata["spacing_source"] = unit_note
        if not any(codes.values()):  # nibabel's fall-back affine, not the file's geometry
            metadata[ORIENTATION_KNOWN] = False
        return CTImage(hu, spacing=spacing, origin=origin, direction=direction, metadata=metadata)


@writers.register("nifti")
class NiftiWriter(FormatWriter):
    """float32 HU with the image's spacing, origin and direction (mm) in the qform and sform.

    The qform and sform codes are those of the NIfTI the image was read from (0 where it stated
    no orientation), else 1 (scanner). A NIfTI holds a regular grid: a series whose slices were
    acquired off one (a missing slice, a gantry tilt) is written on it with a warning naming how
    far its slices are moved; a DICOM output keeps their positions.
    """

    suffixes = (".nii", ".nii.gz")

    def write(self, image: CTImage, path: Path) -> Path:
        import nibabel as nib

        path = Path(path)
        refuse_input_overwrite(image, path, is_folder=False)
        check_finite(image.hu, path)
        data = image.hu.transpose(2, 1, 0) if image.is_volume else image.hu.T
        one_slice_volume = SINGLE_SLICE_SPACING in image.metadata and not image.metadata.get(
            STORED_2D, False
        )
        if not image.is_volume and one_slice_volume:
            data = data[:, :, None]  # the reader's one-slice volume keeps its shape
        affine = geometry_to_affine(image)
        warn_misplaced_slices(image, affine, path)
        meta = image.metadata if image.metadata.get("format") == "nifti" else {}
        nii = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
        # the source NIfTI's codes (0: no orientation stated, as it read); else scanner's
        nii.set_qform(affine, code=int(meta.get(QFORM_CODE, SCANNER)))
        nii.set_sform(affine, code=int(meta.get(SFORM_CODE, SCANNER)))
        nii.header.set_xyzt_units("mm")
        with atomic_path(path) as tmp:
            nib.save(nii, str(tmp))
        return path


def misplaced_slices(image: CTImage, affine: np.ndarray) -> np.ndarray | None:
    """Where the voxel-to-RAS ``affine`` puts each slice's first pixel less where it was acquired
    (:func:`lowdose.io.formats.dicom.acquired_positions`): an ``(n, 3)`` LPS array (mm), or
    ``None`` where the acquired positions are not known (no DICOM source).

    Example:
        >>> vol = CTImage(np.zeros((2, 4, 4), np.float32), (1.0, 0.5, 0.5))
        >>> misplaced_slices(vol, geometry_to_affine(vol)) is None  # no source headers
        True
    """
    from lowdose.io.formats.dicom import acquired_positions  # dicom imports this module

    acquired = acquired_positions(image)
    if acquired is None:
        return None
    acquired = np.asarray(acquired, dtype=np.float64).reshape(-1, 3)
    k = np.arange(len(acquired), dtype=np.float64)
    placed_ras = affine[:3, 3][None, :] + k[:, None] * affine[:3, 2][None, :]
    return placed_ras @ RAS_TO_LPS.T - acquired


def warn_misplaced_slices(image: CTImage, affine: np.ndarray, path: Path) -> None:
    """Warn (once) where ``affine`` moves a slice by over a tenth of the smallest spacing from
    where it was acquired: a series with a missing slice or a gantry tilt is not a regular grid.

    Example:
        >>> vol = CTImage(np.zeros((2, 4, 4), np.float32), (1.0, 0.5, 0.5))
        >>> warn_misplaced_slices(vol, geometry_to_affine(vol), Path("out.nii"))  # nothing known
    """
    moves = misplaced_slices(image, affine)
    if moves is None:
        return
    tolerance = 0.1 * min(image.spacing)
    off = np.linalg.norm(moves, axis=1)
    if not (off > tolerance).any():
        return
    direction = np.eye(3) if image.direction is None else np.asarray(image.direction, float)
    normal = np.cross(direction[:, 0], direction[:, 1])
    along = moves @ normal
    across = np.linalg.norm(moves - along[:, None] * normal[None, :], axis=1)
    causes = [
        *(["its spacing is uneven (a missing slice?)"] if (np.abs(along) > tolerance).any()
          else []),
        *(["its positions step off the slice normal (a gantry tilt?)"]
          if (across > tolerance).any() else []),
    ]
    cause = " and ".join(causes) or "its positions are uneven"
    warnings.warn(
        f"{path}: a NIfTI holds a regular grid of slices, and this series was not acquired on "
        f"one: {cause}; {int((off > tolerance).sum())} of {len(off)} slices are written up to "
        f"{off.max():.3g} mm from where they were acquired; a DICOM output (a folder) keeps "
        "their positions",
        stacklevel=3,
    )

"""NIfTI volumes through nibabel: RAS affine <-> spacing, origin and direction (LPS, DICOM)."""

from __future__ import annotations

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
# NIfTI affines map voxels to RAS+; DICOM (and CTImage.origin/direction) use LPS+.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


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


def geometry_to_affine(image: CTImage) -> np.ndarray:
    """The voxel-to-RAS affine of ``image`` (index order i=column, j=row, k=slice)."""
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
        spacing_ijk, origin, direction = affine_to_geometry(img.affine)
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
        }
        return CTImage(hu, spacing=spacing, origin=origin, direction=direction, metadata=metadata)


@writers.register("nifti")
class NiftiWriter(FormatWriter):
    """float32 HU with the image's spacing, origin and direction in the qform and sform."""

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
        nii = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
        nii.set_qform(affine, code=1)
        nii.set_sform(affine, code=1)
        nii.header.set_xyzt_units("mm")
        with atomic_path(path) as tmp:
            nib.save(nii, str(tmp))
        return path

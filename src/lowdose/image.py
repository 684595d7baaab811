"""The in-memory CT image: float32 Hounsfield units plus geometry and source metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

HU_AIR = -1000.0
HU_MIN = -1024.0
HU_MAX = 3072.0
#: The top of the extended CT scale: values above it are not HU (stored values misread).
HU_EXTENDED_MAX = 30720.0


@dataclass(frozen=True)
class Window:
    """A HU interval ``[lo, hi]``, used for display, 8-bit mapping and metric ranges.

    Example:
        >>> Window.named("abdomen").lo, Window.from_center_width(40, 400).hi
        (-160.0, 240.0)
    """

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not self.hi > self.lo:
            raise ValueError(f"window upper bound {self.hi} must exceed lower bound {self.lo}")

    @classmethod
    def from_center_width(cls, center: float, width: float) -> Window:
        return cls(float(center - width / 2), float(center + width / 2))

    @classmethod
    def named(cls, name: str) -> Window:
        try:
            return NAMED_WINDOWS[name]
        except KeyError:
            raise ValueError(
                f"unknown window {name!r}; known: {', '.join(sorted(NAMED_WINDOWS))}"
            ) from None

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def to_unit(self, hu: np.ndarray) -> np.ndarray:
        """Clip HU to the window and scale to [0, 1] (float32)."""
        return np.clip((np.asarray(hu, np.float32) - self.lo) / self.width, 0.0, 1.0)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Map [0, 1] values back to HU inside the window (float32)."""
        return (np.asarray(unit, np.float32) * self.width + self.lo).astype(np.float32)


#: Images without a pixel size are taken to span the Mayo scans' reconstruction diameter
#: (380 mm; 512 px -> 0.742 mm) by the projection physics, so an 8-bit screenshot of any size
#: keeps a body-sized object; ``info`` says so.
DEFAULT_FOV_MM = 380.0


NAMED_WINDOWS: dict[str, Window] = {
    # The metric conventions of the project: `full` is HU clipped to [-1024, 3072].
    "full": Window(HU_MIN, HU_MAX),
    "abdomen": Window(-160.0, 240.0),
    "lung": Window(-1350.0, 150.0),
    "mediastinum": Window(-125.0, 225.0),
    "bone": Window(-450.0, 1050.0),
}


def plane_of(row: np.ndarray, col: np.ndarray) -> str:
    """The plane of slices whose rows and columns run along ``row`` and ``col`` (patient LPS
    directions, as DICOM's ImageOrientationPatient): ``axial``, ``coronal``, ``sagittal``, or
    ``oblique`` when no patient axis lies within 37 degrees of the normal (or the directions
    are degenerate).

    Example:
        >>> plane_of(np.array([1.0, 0, 0]), np.array([0.0, 0, -1]))
        'coronal'
    """
    normal = np.abs(np.cross(np.asarray(row, float), np.asarray(col, float)))
    axis = int(np.argmax(normal))
    length = float(np.linalg.norm(normal))
    if length == 0 or normal[axis] < 0.8 * length:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]  # normal along x (L), y (P), z (S)


@dataclass
class CTImage:
    """A 2D slice ``(H, W)`` or 3D volume ``(D, H, W)`` in HU.

    Attributes:
        hu: float32 pixels in Hounsfield units.
        spacing: pixel spacing in mm, one value per axis of ``hu`` (slice axis first for volumes).
        origin: position of the first voxel in patient coordinates (mm), if known.
        direction: 3x3 matrix whose columns are the patient-space directions of the column, row
            and slice axes (DICOM convention), if known.
        metadata: where the image came from (``source``, ``format``, the window used for 8-bit
            input, series UIDs, ...). Free-form, JSON-friendly values.
        source_headers: per-slice source headers (e.g. pydicom Datasets) that writers may use to
            write a derived series; not part of equality or serialisation.

    Example:
        >>> img = CTImage(np.full((2, 8, 8), -1000, np.float32), spacing=(2.0, 0.7, 0.7))
        >>> img.is_volume, img.n_slices
        (True, 2)
    """

    hu: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, float, float] | None = None
    direction: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source_headers: list[Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if hasattr(self.hu, "detach"):  # a torch tensor, maybe on a GPU or taking gradients
            self.hu = self.hu.detach().cpu().numpy()
        self.hu = np.asarray(self.hu, dtype=np.float32)
        if self.hu.ndim not in (2, 3):
            raise ValueError(f"CTImage must be 2D or 3D, got shape {self.hu.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != self.hu.ndim:
            raise ValueError(f"spacing {self.spacing} does not match shape {self.hu.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.hu.shape)

    @property
    def is_volume(self) -> bool:
        return self.hu.ndim == 3

    @property
    def n_slices(self) -> int:
        return self.hu.shape[0] if self.is_volume else 1

    @property
    def pixel_size_mm(self) -> float | None:
        """The in-plane pixel size (mean of the two in-plane spacings), or ``None`` when the
        file stores no spacing (npy, PNG: ``metadata["spacing_known"]`` is False).

        Example:
            >>> CTImage(np.zeros((8, 8), np.float32), spacing=(0.7, 0.8)).pixel_size_mm
            0.75
        """
        if self.metadata.get("spacing_known") is False:
            return None
        return float(np.mean(self.spacing[-2:]))

    @property
    def orientation(self) -> str | None:
        """The plane of the slices, from ``direction``: ``axial``, ``coronal``, ``sagittal``, or
        ``oblique`` (no patient axis within 37 degrees of the normal); ``None`` when unknown.

        Example:
            >>> coronal = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns: x, -z, y
            >>> CTImage(np.zeros((8, 8), np.float32), (0.7, 0.7), direction=coronal).orientation
            'coronal'
        """
        if self.direction is None:
            return None
        d = np.asarray(self.direction, dtype=float)
        return plane_of(d[:, 0], d[:, 1])

    def axial_axis(self) -> int | None:
        """The array axis of a volume that runs head to foot (the patient's z), from
        ``direction``: 0 for an axial stack, 1 for a coronal or sagittal one (its image rows);
        ``None`` for a 2D slice or an unknown direction.

        Example:
            >>> coronal = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
            >>> CTImage(np.zeros((3, 8, 8)), (1, 0.7, 0.7), direction=coronal).axial_axis()
            1
        """
        if self.direction is None or not self.is_volume:
            return None
        along_z = np.abs(np.asarray(self.direction, dtype=float)[2])
        # direction columns: the column (array axis 2), row (1) and slice (0) axes
        return (2, 1, 0)[int(np.argmax(along_z))]

    def slices(self) -> np.ndarray:
        """The pixels as a ``(N, H, W)`` stack (a 2D slice becomes ``N = 1``)."""
        return self.hu if self.is_volume else self.hu[None]

    def every_nth(self, step: int, start: int = 0) -> CTImage:
        """Slices ``start``, ``start + step``, ... of a volume, with the geometry that makes
        them one: slice spacing times ``step``, origin moved to slice ``start`` along the slice
        axis, per-slice headers kept for the slices kept. A 2D image is returned as it is.

        Example:
            >>> vol = CTImage(np.zeros((9, 4, 4), np.float32), spacing=(2.0, 0.7, 0.7),
            ...               origin=(0.0, 0.0, 10.0), direction=np.eye(3))
            >>> sub = vol.every_nth(4, start=1)
            >>> sub.n_slices, sub.spacing[0], sub.origin
            (2, 8.0, (0.0, 0.0, 12.0))
        """
        if step < 1 or start < 0:
            raise ValueError(f"every_nth: step >= 1 and start >= 0, got {step}, {start}")
        if not self.is_volume:
            return self
        keep = range(start, self.n_slices, step)
        if not len(keep):
            raise ValueError(f"every_nth: start {start} is past the last of {self.n_slices} slices")
        origin = self.origin
        if origin is not None:
            axis = np.eye(3) if self.direction is None else np.asarray(self.direction, float)
            moved = np.asarray(origin, float) + start * self.spacing[0] * axis[:, 2]
            origin = tuple(float(v) for v in moved)
        headers = None
        if self.source_headers is not None and len(self.source_headers) == self.n_slices:
            headers = [self.source_headers[k] for k in keep]
        return replace(self, hu=np.ascontiguousarray(self.hu[start::step]),
                       spacing=(self.spacing[0] * step, *self.spacing[1:]), origin=origin,
                       metadata=dict(self.metadata), source_headers=headers)

    def with_pixels(self, hu: np.ndarray, **changes: Any) -> CTImage:
        """A copy with new pixels (same geometry unless ``changes`` say otherwise).

        A 2D image given a ``(1, H, W)`` stack stays 2D, so ``img.with_pixels(f(img.slices()))``
        works for slices and volumes alike.
        """
        hu = np.asarray(hu, np.float32)
        if not self.is_volume and hu.ndim == 3 and hu.shape[0] == 1:
            hu = hu[0]
        meta = dict(self.metadata)
        meta.update(changes.pop("metadata", {}))
        return replace(self, hu=hu, metadata=meta, **changes)

"""The CT formats: importing this package registers every reader and writer.

``dicom`` (files and series folders), ``nifti`` (.nii, .nii.gz), ``npy`` and ``png``
(8-bit PNG/JPEG through a window). The registries in :mod:`lowdose.io.base` load it on first use.
"""

from __future__ import annotations

from lowdose.io.formats import dicom, nifti, npy, png
from lowdose.io.formats.common import ReadOptions, WriteOptions
from lowdose.io.formats.dicom import SeriesInfo, list_series

__all__ = [
    "ReadOptions",
    "SeriesInfo",
    "WriteOptions",
    "dicom",
    "list_series",
    "nifti",
    "npy",
    "png",
]

"""Reading and writing CT (DICOM, NIfTI, npy, PNG/JPEG), class-folder datasets, audit, phantoms."""

from lowdose.io.formats.dicom import SeriesInfo
from lowdose.io.read import list_series, read_ct, write_ct

__all__ = ["SeriesInfo", "list_series", "read_ct", "write_ct"]

"""Reading and writing CT (DICOM, NIfTI, npy, PNG/JPEG), class-folder datasets, audit, phantoms."""

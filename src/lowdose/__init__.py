"""lowdose: low-dose CT simulation, restoration, classification and task-based evaluation.

Example:
    >>> from lowdose import CTImage
    >>> import numpy as np
    >>> CTImage(np.zeros((4, 4), np.float32), spacing=(1.0, 1.0)).shape
    (4, 4)
"""

from __future__ import annotations

from lowdose.errors import LowdoseError
from lowdose.image import HU_AIR, HU_MAX, HU_MIN, CTImage, Window

__version__ = "0.1.0"
__all__ = ["HU_AIR", "HU_MAX", "HU_MIN", "CTImage", "LowdoseError", "Window", "__version__"]

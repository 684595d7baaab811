"""One base per direction: ``Reader.read(path) -> CTImage``, ``Writer.write(image, path)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from lowdose.image import CTImage
from lowdose.registry import Registry

if TYPE_CHECKING:
    from lowdose.io.formats.common import ReadOptions

readers: Registry[type[Reader]] = Registry("reader", autoload=["lowdose.io.formats"])
writers: Registry[type[Writer]] = Registry("writer", autoload=["lowdose.io.formats"])


class Reader(ABC):
    """Reads one kind of CT input into a :class:`CTImage` in HU.

    Subclasses set ``suffixes`` and implement :meth:`read`; :meth:`can_read` may sniff content.
    Every failure is a :class:`lowdose.LowdoseError` naming the file and the reason.
    :func:`lowdose.io.read_ct` makes each registered reader as ``Reader(options)``, with the
    :class:`~lowdose.io.formats.common.ReadOptions` of the call (``window``, ``npy_scale``,
    ``series``), kept as ``self.options``; a subclass that defines its own ``__init__`` takes
    that argument too and passes it on.

    Example:
        >>> import numpy as np
        >>> class RawReader(Reader):  # register it with @readers.register("raw")
        ...     suffixes = (".raw",)
        ...     def read(self, path):
        ...         hu = np.fromfile(path, np.float32).reshape(64, 64)
        ...         return CTImage(hu, spacing=(0.7, 0.7), metadata={"source": str(path)})
        >>> RawReader().can_read(Path("slice.RAW")), RawReader().options.npy_scale is None
        (True, True)
    """

    suffixes: tuple[str, ...] = ()

    def __init__(self, options: ReadOptions | None = None) -> None:
        from lowdose.io.formats.common import ReadOptions

        self.options = options if options is not None else ReadOptions()

    def can_read(self, path: Path) -> bool:
        return path.name.lower().endswith(self.suffixes)

    @abstractmethod
    def read(self, path: Path) -> CTImage: ...


class Writer(ABC):
    """Writes a :class:`CTImage` to one format; writes are atomic and never over the input."""

    suffixes: tuple[str, ...] = ()
    one_slice_suffixes: tuple[str, ...] = ()
    """Files of these suffixes hold one slice: a volume written to one is refused."""

    @abstractmethod
    def write(self, image: CTImage, path: Path) -> Path: ...

    def check(self, n_slices: int, path: Path) -> None:
        """Raise :class:`LowdoseError` if an image of ``n_slices`` cannot be written to
        ``path``: a volume into a one-slice format, a name too long for the file system, a
        folder this process may not write (:func:`lowdose.io.atomic.check_output_place`).
        :meth:`write` calls it, and a command before it spends time making the image.

        Example:
            >>> from lowdose.io.formats.nifti import NiftiWriter
            >>> NiftiWriter().check(3, Path("out/ct.nii.gz"))  # fine: nothing raised
        """
        from lowdose.errors import LowdoseError
        from lowdose.io.atomic import check_output_place

        one_file = path.name.lower().endswith(self.one_slice_suffixes) and not path.is_dir()
        if one_file and n_slices != 1:
            raise LowdoseError(
                f"{path}: a {path.suffix} file holds one slice, the image has {n_slices}; write "
                "a .nii.gz or a folder (a DICOM series), or one slice at a time")
        check_output_place(path)

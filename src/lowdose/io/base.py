"""One base per direction: ``Reader.read(path) -> CTImage``, ``Writer.write(image, path)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from lowdose.image import CTImage
from lowdose.registry import Registry

readers: Registry[type[Reader]] = Registry("reader", autoload=["lowdose.io.formats"])
writers: Registry[type[Writer]] = Registry("writer", autoload=["lowdose.io.formats"])


class Reader(ABC):
    """Reads one kind of CT input into a :class:`CTImage` in HU.

    Subclasses set ``suffixes`` and implement :meth:`read`; :meth:`can_read` may sniff content.
    Every failure is a :class:`lowdose.LowdoseError` naming the file and the reason.
    """

    suffixes: tuple[str, ...] = ()

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
        ``path``; :meth:`write` calls it, and a command before it spends time making the image.
        """
        from lowdose.errors import LowdoseError

        one_file = path.name.lower().endswith(self.one_slice_suffixes) and not path.is_dir()
        if one_file and n_slices != 1:
            raise LowdoseError(
                f"{path}: a {path.suffix} file holds one slice, the image has {n_slices}; write "
                "a .nii.gz or a folder (a DICOM series), or one slice at a time")

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

    @abstractmethod
    def write(self, image: CTImage, path: Path) -> Path: ...

"""Registries by name: the CLI, configs, the study and the tests list what exists from here."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of thing.

    Modules that register entries are imported on first lookup (``autoload``), so heavy
    dependencies load only when something is asked for.

    Example:
        >>> shapes = Registry[type]("shape")
        >>> @shapes.register("square")
        ... class Square: ...
        >>> shapes.names(), shapes.get("square") is Square
        (['square'], True)
    """

    def __init__(self, kind: str, autoload: Iterable[str] = ()) -> None:
        self.kind = kind
        self._autoload = list(autoload)
        self._loaded = False
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._autoload:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            from lowdose.errors import LowdoseError

            raise LowdoseError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

"""Registries by name: the CLI, configs, the study and the tests list what exists from here."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from lowdose.errors import LowdoseError

T = TypeVar("T")

#: Characters a registered name may not hold: ``:`` separates a name from its settings
#: (``--model bm3d:sigma_hu=40``) and ``,`` separates names in a list (``compare -m a,b``).
RESERVED_CHARACTERS = (":", ",")


class RegistryError(LowdoseError, ValueError):
    """A registration refused: a name registered twice, or a name the CLI cannot spell.

    A :class:`~lowdose.errors.LowdoseError` (the CLI prints it as one ``error:`` line) and a
    ``ValueError``.
    """


def defined_at(obj: Any) -> str:
    """Where a registered entry is defined: ``module.QualName`` (or its ``repr``).

    Example:
        >>> defined_at(Registry)
        'lowdose.registry.Registry'
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(obj)


def _same_definition(a: Any, b: Any) -> bool:
    """``a`` and ``b`` come from the same source definition: a module imported again (after a
    failed import, or reloaded) defines its classes again, and their registration is no clash."""
    return defined_at(a) == defined_at(b) and getattr(a, "__qualname__", None) is not None


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of thing.

    Modules that register entries are imported on first lookup (``autoload``), so heavy
    dependencies load only when something is asked for. Loading is retried at the next lookup
    when an import fails, so a registry is never left half-loaded by a failure.

    A name is registered once: a second entry under it (a plugin's ``"tv"`` beside the built-in
    one, whether it was registered before or after the built-ins loaded) is a
    :class:`RegistryError` naming both. A plugin replaces an entry only deliberately, with
    ``register(name, replace=True)``: the built-ins load first, then the plugin's entry
    replaces theirs. Names must not be empty or hold whitespace, ``:`` or ``,``
    (:data:`RESERVED_CHARACTERS`). :meth:`check` is the hook a registry of one kind overrides
    to refuse an entry that breaks its contract.

    Example:
        >>> shapes = Registry[type]("shape")
        >>> @shapes.register("square")
        ... class Square: ...
        >>> shapes.names(), shapes.get("square") is Square
        (['square'], True)
        >>> @shapes.register("square", replace=True)
        ... class BigSquare: ...
        >>> shapes.get("square") is BigSquare
        True
    """

    def __init__(self, kind: str, autoload: Iterable[str] = ()) -> None:
        self.kind = kind
        self._autoload = list(autoload)
        self._loaded = False
        self._loading = False
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """A decorator that registers its argument under ``name`` and returns it unchanged.

        Args:
            name: the name the CLI, configs and the study use.
            replace: replace an entry already registered under ``name`` (a built-in one is
                loaded first), rather than refuse the clash.

        Raises:
            RegistryError: a bad name; or ``name`` already taken by another entry without
                ``replace``; or an entry :meth:`check` refuses.
        """
        self._check_name(name)

        def decorator(obj: T) -> T:
            self.check(name, obj)
            if replace:
                self._load()  # the built-in first, so that it does not replace the plugin later
            old = self._entries.get(name, obj)
            if old is not obj and not replace and not _same_definition(old, obj):
                raise RegistryError(
                    f"{self.kind} {name!r} is registered twice: first by {defined_at(old)}, "
                    f"then by {defined_at(obj)}; rename one, or register the replacement with "
                    f"register({name!r}, replace=True)")
            self._entries[name] = obj
            return obj

        return decorator

    def check(self, name: str, obj: T) -> None:
        """Raise :class:`RegistryError` if ``obj`` cannot be registered as ``name`` (the hook
        a registry of one kind overrides; the default accepts everything)."""

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise RegistryError(f"{self.kind} name {name!r} refused: a name is a non-empty "
                                "string without whitespace")
        if bad := [c for c in RESERVED_CHARACTERS if c in name]:
            raise RegistryError(
                f"{self.kind} name {name!r} refused: it holds {' and '.join(map(repr, bad))}, "
                "which the CLI reads as a separator (--model NAME:key=value, -m NAME1,NAME2)")

    def _load(self) -> None:
        if self._loaded or self._loading:  # loading: a lookup from a module being imported
            return
        self._loading = True
        try:
            for module in self._autoload:
                self._import(module)
        finally:  # a failed import leaves _loaded False: the next lookup tries again
            self._loading = False
        self._loaded = True

    def _import(self, module: str) -> None:
        importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise LowdoseError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

"""The one exception type the CLI turns into a single ``error:`` line, and notes said once."""

from __future__ import annotations

from collections.abc import Callable, Iterable


class LowdoseError(Exception):
    """A user-facing error: bad input, a missing file, a mismatched checkpoint.

    The message must name the file (or option) and the reason, in one line; the CLI prints it
    as ``error: <message>`` and shows a traceback only with ``--debug``.

    Example:
        >>> raise LowdoseError("scan.dcm: no pixel data")  # doctest: +SKIP
    """


class OnceEach:
    """Passes each distinct warning to ``warn`` once (default: :func:`warnings.warn`); ``None``
    notes are dropped. A run over many images says what applies to all of them once.

    Example:
        >>> said = []
        >>> once = OnceEach(said.append)
        >>> once(["a", None, "b"]); once(["a"])
        >>> said, sorted(once.said)
        (['a', 'b'], ['a', 'b'])
    """

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.warn = warn or _warn
        self.said: set[str] = set()

    def __call__(self, notes: Iterable[str | None]) -> None:
        for note in notes:
            if note and note not in self.said:
                self.said.add(note)
                self.warn(note)


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=4)

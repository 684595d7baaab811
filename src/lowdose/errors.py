"""The one exception type the CLI turns into a single ``error:`` line."""

from __future__ import annotations


class LowdoseError(Exception):
    """A user-facing error: bad input, a missing file, a mismatched checkpoint.

    The message must name the file (or option) and the reason, in one line; the CLI prints it
    as ``error: <message>`` and shows a traceback only with ``--debug``.

    Example:
        >>> raise LowdoseError("scan.dcm: no pixel data")  # doctest: +SKIP
    """

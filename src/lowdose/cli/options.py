"""Option parsers shared by several commands."""

from __future__ import annotations

from lowdose.errors import LowdoseError
from lowdose.image import Window


def parse_window(text: str | None) -> Window | None:
    """A :class:`lowdose.Window` from ``"lo,hi"`` or a name (``lung``, ``abdomen``, ...).

    Example:
        >>> parse_window("-160,240")
        Window(lo=-160.0, hi=240.0)
    """
    from lowdose.image import NAMED_WINDOWS

    if text is None:
        return None
    text = text.strip()
    if text in NAMED_WINDOWS:
        return Window.named(text)
    try:
        lo, hi = (float(v) for v in text.split(","))
        return Window(lo, hi)
    except ValueError:
        raise LowdoseError(
            f"--window {text!r}: expected 'lo,hi' in HU (e.g. -1350,150) or one of "
            f"{', '.join(sorted(NAMED_WINDOWS))}"
        ) from None

"""Option parsers shared by several commands."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lowdose.errors import LowdoseError
from lowdose.image import Window


def npy_scale_option(default: str | None = None) -> Any:
    """The ``--npy-scale`` option of the commands that read ``.npy`` images.

    Example:
        >>> npy_scale_option().param_decls
        ('--npy-scale',)
    """
    import typer

    return typer.Option(default, "--npy-scale",
                        help="How .npy values map to HU: 'hu' or 'mayo' (4096*v - 1024); "
                        "values all in [0, 1] are refused as HU. An .npy output of an .npy "
                        "read as mayo is written in mayo, any other in HU.")


def window_option(writes: bool = False) -> Any:
    """The ``--window`` option of the commands that read 8-bit PNG/JPEG images as HU;
    ``writes``: the command also writes its PNG outputs through it.

    Example:
        >>> window_option().param_decls
        ('--window',)
    """
    import typer

    written = "; the outputs are written through it" if writes else ""
    return typer.Option(None, "--window",
                        help="HU window of 8-bit PNG/JPEG inputs: 'lo,hi' or a name (default: "
                        f"the window a lowdose PNG recorded, else lung = -1350,150){written}.")


def series_option(flag: str = "--series", of: str = "the input", each: bool = False) -> Any:
    """A ``--series UID`` option: which DICOM series to read from a folder that holds several;
    ``each``: the command also takes ``all`` (every series, each into a subfolder of the output).

    Example:
        >>> series_option().param_decls
        ('--series',)
    """
    import typer

    every = (", or 'all': each series into a subfolder of the output named by its number and "
             "description") if each else ""
    return typer.Option(None, flag, help=f"SeriesInstanceUID (or a unique part of it) to read "
                        f"when {of} is a folder of several DICOM series (lowdose info lists "
                        f"them){every}.")


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


def listed_or_need_io(
    command: str,
    listing: Callable[[], Sequence[tuple[str, str]]] | None,
    src: Path | None,
    dst: Path | None,
) -> bool:
    """``--list`` of a command with optional INPUT and OUTPUT: print ``listing()`` (name, line)
    and return True (the command is done); else require both paths and return False.

    Example:
        >>> listed_or_need_io("denoise", None, Path("in.nii"), Path("out.nii"))
        False
    """
    import typer

    if listing is not None:
        rows = listing()
        width = max((len(name) for name, _ in rows), default=0) + 1
        for name, line in rows:
            typer.echo(f"{name:<{width}}{line}")
        return True
    if src is None or dst is None:
        raise LowdoseError(f"{command}: give an INPUT and an OUTPUT (or --list)")
    return False


def parse_doses(text: str, flag: str = "--doses") -> list[float]:
    """``"0.25"`` -> ``[0.25]``; ``"0.25,0.1"`` -> ``[0.25, 0.1]``; bad or empty text: a clear
    error naming ``flag``. (Each dose's range is checked where it is used.)

    Example:
        >>> parse_doses("0.25,0.1")
        [0.25, 0.1]
    """
    try:
        doses = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LowdoseError(f"{flag} {text!r}: give numbers in (0, 1], comma-separated, like "
                           "0.5,0.25") from None
    if not doses:
        raise LowdoseError(f"{flag}: give at least one dose fraction")
    return doses


MAX_OUTPUTS_LISTED = 10
"""Outputs named one by one; more (a dataset of images) are counted in one line."""


def say_written(written: Sequence[Path], output: Path) -> None:
    """Print each written path (``wrote PATH``), or one count line under ``output`` when a
    folder tree of images made more than :data:`MAX_OUTPUTS_LISTED`.

    Example:
        >>> say_written([Path("out/a.png")], Path("out"))
        wrote out/a.png
    """
    import typer

    if len(written) <= MAX_OUTPUTS_LISTED:
        for path in written:
            typer.echo(f"wrote {path}")
    else:
        typer.echo(f"wrote {len(written)} files under {output}")


# A reStructuredText role (:class:`Denoiser`, :func:`~a.b.c`), an inline literal (``bm3d``) or
# interpreted text (`x`), as the docstrings the --list outputs quote are written.
_RST_MARKUP = re.compile(r"(?::[\w.+-]+:)?(``|`)(.+?)\1(?:_{1,2})?")


def plain_text(text: str) -> str:
    """``text`` with its reStructuredText roles and literals as the words they show: what a
    terminal prints of a docstring line (the ``--list`` outputs).

    Example:
        >>> plain_text("GAN generator ``G`` as a :class:`Denoiser` (:func:`~a.b.load_it`)")
        'GAN generator G as a Denoiser (load_it)'
    """

    def shown(match: re.Match[str]) -> str:
        inner = match.group(2)
        if link := re.fullmatch(r"(.+?)\s*<[^<>]+>", inner):  # `title <target>`: the title
            return link.group(1)
        if match.group(0).startswith(":") and inner.startswith("~"):  # ~a.b.c: its last part
            return inner[1:].rsplit(".", 1)[-1]
        return inner

    return _RST_MARKUP.sub(shown, text)

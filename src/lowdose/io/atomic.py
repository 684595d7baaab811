"""Atomic file writes: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lowdose.errors import LowdoseError

TEMP_RANDOM = 8
"""Random characters ``tempfile`` puts in a temporary name (``mkstemp``/``mkdtemp``)."""
_RANDOM = f"[a-z0-9_]{{{TEMP_RANDOM}}}"


def name_max(folder: str | os.PathLike[str]) -> int:
    """The longest file name (bytes) the file system under ``folder`` (or its nearest
    existing parent) allows; 255 where it cannot say.

    Example:
        >>> name_max("/") >= 14
        True
    """
    place = existing_parent(Path(folder))
    try:
        return int(os.pathconf(place, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def existing_parent(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent (``.`` at worst).

    Example:
        >>> existing_parent(Path("/no/such/folder")).as_posix()
        '/'
    """
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:  # lexists: no error on a long name
        path = path.parent
    return path


def temp_name_parts(target: Path, folder: bool = False) -> tuple[str, str]:
    """``(prefix, suffix)`` of the temporary names beside ``target``, around
    :data:`TEMP_RANDOM` random characters: ``.NAME.partial-XXXXXXXX`` for a folder,
    ``.STEM.XXXXXXXX.partial.SUFFIX`` for a file (its format's suffix kept last, as a writer
    picks its format by it). The name is cut so the whole fits the file system's name limit.

    Example:
        >>> temp_name_parts(Path("out/ct.nii.gz"))
        ('.ct.nii.', '.partial.nii.gz')
        >>> temp_name_parts(Path("out/series"), folder=True)
        ('.series.partial-', '')
    """
    limit = name_max(target.parent)
    if folder:
        tail, suffix = ".partial-", ""
        stem = target.name
    else:
        suffix = ".partial" + ("".join(target.suffixes[-2:]) or ".tmp")
        tail, stem = ".", target.stem
    room = limit - TEMP_RANDOM - len(suffix) - len(tail) - 1  # 1: the leading dot
    while len(os.fsencode(stem)) > max(room, 1):  # cut by characters, measured in bytes
        stem = stem[:-1]
    return f".{stem}{tail}", suffix


def remove_stale_temps(target: Path, folder: bool = False) -> None:
    """Remove the temporary names of earlier writes of ``target`` beside it (left by a killed
    process): only names of ``target``'s own pattern (:func:`temp_name_parts`), folders' ``.old``
    ones included. Call it after ``target`` was written.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / ".a.x1y2z3w4.partial.png").write_bytes(b"")
        >>> (root / "a.png").write_bytes(b"png") and None
        >>> remove_stale_temps(root / "a.png")
        >>> sorted(p.name for p in root.iterdir())
        ['a.png']
    """
    import re
    import shutil

    prefix, suffix = temp_name_parts(target, folder)
    patterns = [re.escape(prefix) + _RANDOM + re.escape(suffix)]
    if folder:  # the old series set aside while the new one is renamed in
        patterns.append(re.escape(prefix.removesuffix("partial-") + "old-") + _RANDOM)
    stale = re.compile("|".join(f"(?:{p})" for p in patterns))
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        if not stale.fullmatch(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def check_output_place(path: str | os.PathLike[str]) -> None:
    """Raise :class:`LowdoseError` now if ``path`` cannot be written: a name longer than its
    file system allows (itself, or a folder to be made on the way), a file where a folder
    must be, or a folder it goes into that this process may not write.

    Example:
        >>> check_output_place("out/restored.nii.gz")  # fine: nothing raised
        >>> try:
        ...     check_output_place("x" * 300 + ".nii.gz")
        ... except LowdoseError as exc:
        ...     print(str(exc)[-47:])
        name too long for its file system (at most 255)
    """
    path = Path(path)
    place = existing_parent(path.parent)
    limit = name_max(place)
    rest = Path(os.path.abspath(path)).relative_to(place).parts
    for part in rest:
        if len(os.fsencode(part)) > limit:
            raise LowdoseError(f"{path.parent / part[:40]}... ({len(os.fsencode(part))} bytes): "
                               f"name too long for its file system (at most {limit})")
    if not place.is_dir():
        raise LowdoseError(f"{path}: {place} is a file, not a folder")
    if not os.access(place, os.W_OK | os.X_OK):
        raise LowdoseError(f"{place}: folder not writable (permission denied); choose another "
                           f"output for {path.name}")


def _cannot_write(target: Path, exc: OSError) -> Exception:
    """An error about a temporary path, told about ``target`` (what the user named)."""
    return LowdoseError(f"{target}: cannot write ({exc.strerror or exc})")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``target`` on success.

    A crash or exception leaves the old target (or nothing) in place, never a partial file;
    the temporary files of earlier, killed writes of ``target`` are removed on success.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = temp_name_parts(target)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
            if tmp.is_file():  # mkstemp makes 0600 files; give the result the usual permissions
                os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, target)
        except OSError as exc:
            # The user named the target; the hidden temporary name would only confuse.
            if exc.filename in (str(tmp), name) or exc.filename2 in (str(target),):
                raise _cannot_write(target, exc) from exc
            raise
        remove_stale_temps(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def current_umask() -> int:
    """The process's file-creation mask (read without changing it), for the permissions a
    file or folder made by ``mkstemp``/``mkdtemp`` (0600/0700) should get instead."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically and return the path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (nan, inf) replaced by ``None``, in nested dicts,
    lists and tuples: what strict JSON (``allow_nan=False``, a browser's ``JSON.parse``) takes.

    Example:
        >>> strict_json({"psnr": float("inf"), "rmse": [1.5, float("nan")]})
        {'psnr': None, 'rmse': [1.5, None]}
    """
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(target: str | os.PathLike[str], value: Any, indent: int = 2) -> Path:
    """Write ``value`` as strict JSON (:func:`strict_json`: null for what is not finite) to
    ``target`` atomically, with a final newline, and return the path."""
    text = json.dumps(strict_json(value), indent=indent, allow_nan=False)
    return atomic_write_text(target, text + "\n")

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


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``target`` on success.

    A crash or exception leaves the old target (or nothing) in place, never a partial file.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{suffix}",
                                dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600 files; give the result the usual permissions
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
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

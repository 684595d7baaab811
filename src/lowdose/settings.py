"""Typed settings read from YAML presets and configs: each checker returns the value in its
type or raises one :class:`~lowdose.errors.LowdoseError` line naming the key, the value and what
is allowed. Shared by the training presets, GAN presets and study configs."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

from lowdose.errors import LowdoseError


def _as_number(value: Any) -> int | float | None:
    """``value`` as an int or float, or ``None`` when it is no number. A numeric string counts:
    PyYAML (YAML 1.1) reads ``1e-4`` and ``1e4`` as strings (a float there needs a dot)."""
    if isinstance(value, bool):  # True is an int to Python, never a step count or a rate
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value.strip())
            except ValueError:
                pass
    return None


def checked_int(value: Any, key: str, minimum: int | None = None) -> int:
    """The setting ``key`` as an int: a whole number (``8``, ``8.0``, or YAML's string
    ``"1e4"``) of at least ``minimum``.

    Raises:
        LowdoseError: one line naming ``key``, the value and what is allowed.

    Example:
        >>> checked_int("1e4", "trainer.max_steps", 1), checked_int(8.0, "trainer.batch_size", 1)
        (10000, 8)
        >>> checked_int("abc", "trainer.max_steps", 1)
        Traceback (most recent call last):
        ...
        lowdose.errors.LowdoseError: trainer.max_steps: 'abc' is not an integer
    """
    number = _as_number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        raise LowdoseError(f"{key}: {value!r} is not an integer")
    if minimum is not None and number < minimum:
        raise LowdoseError(f"{key}: {value!r} is out of range; use an integer >= {minimum}")
    return int(number)


def checked_float(value: Any, key: str, low: float | None = None, high: float | None = None,
                  *, open_low: bool = False, open_high: bool = False,
                  infinite: bool = False) -> float:
    """The setting ``key`` as a float in ``[low, high]`` (``open_low``/``open_high``: that end
    excluded; ``None``: unbounded). Ints and YAML's numeric strings (``"1e-4"``) are accepted;
    NaN never, infinity only with ``infinite``.

    Raises:
        LowdoseError: one line naming ``key``, the value and what is allowed.

    Example:
        >>> checked_float("1e-4", "optim.lr", 0, open_low=True), checked_float(1, "optim.lr", 0)
        (0.0001, 1.0)
        >>> checked_float(-1, "optim.lr", 0, open_low=True)
        Traceback (most recent call last):
        ...
        lowdose.errors.LowdoseError: optim.lr: -1 is out of range; use a number > 0
    """
    number = _as_number(value)
    if number is None or math.isnan(number):
        raise LowdoseError(f"{key}: {value!r} is not a number")
    number = float(number)
    below = low is not None and (number <= low if open_low else number < low)
    above = high is not None and (number >= high if open_high else number > high)
    if below or above or (math.isinf(number) and not infinite):
        if low is not None and high is not None:
            allowed = (f"in {'(' if open_low else '['}{low:g}, {high:g}"
                       f"{')' if open_high else ']'}")
        elif low is not None:
            allowed = f"{'>' if open_low else '>='} {low:g}"
        elif high is not None:
            allowed = f"{'<' if open_high else '<='} {high:g}"
        else:
            allowed = "that is finite"
        raise LowdoseError(f"{key}: {value!r} is out of range; use a number {allowed}")
    return number


def checked_bool(value: Any, key: str) -> bool:
    """The setting ``key`` if it is ``true`` or ``false`` (a quoted ``'no'`` is a string: YAML
    reads the bare word as false).

    Raises:
        LowdoseError: one line naming ``key`` and the value.

    Example:
        >>> checked_bool(False, "trainer.tensorboard")
        False
    """
    if not isinstance(value, bool):
        import numpy as np

        if not isinstance(value, np.bool_):
            raise LowdoseError(f"{key}: {value!r} is not true or false")
    return bool(value)


def checked_choice(value: Any, key: str, choices: Any) -> Any:
    """``value`` if it is one of ``choices``, else a :class:`LowdoseError` naming ``key``.

    Example:
        >>> checked_choice("fp32", "trainer.precision", ("auto", "bf16", "fp32"))
        'fp32'
    """
    if not isinstance(value, str | int | float | type(None)) or value not in choices:
        raise LowdoseError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def checked_text(value: Any, key: str, optional: bool = True) -> str | None:
    """The setting ``key`` as a string (a path too); ``None`` only if ``optional``.

    Example:
        >>> checked_text(None, "trainer.device"), checked_text("cpu", "trainer.device")
        (None, 'cpu')
    """
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str):
        raise LowdoseError(f"{key}: {value!r} is not a string")
    return value

"""The library's numeric arguments, checked where a caller hands them in: a bad value is a
:class:`UserError` naming the argument, a good one comes back as Python's own ``int`` or ``float``.
numpy's numbers are taken (a seed from ``np.arange``, a rate from a grid), and what is recorded
from them stays plain JSON."""

from __future__ import annotations

import math
import numbers
from typing import Any

from autoprompt_search.errors import UserError


def whole_number(value: Any, name: str, least: int, most: int | None = None, *, most_text: str | None = None) -> int:
    """``value`` as an ``int`` when it is a whole number (never a bool) from ``least`` up to ``most``;
    ``most_text`` writes the upper bound in the message (``2**32 - 1``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least or (most is not None and value > most):
        bound = f"from {least} to {most_text or most}" if most is not None else f"of at least {least}"
        raise UserError(f"{name} must be a whole number {bound}, got {value!r}", option=name)
    return int(value)


def positive_number(value: Any, name: str, most: float | None = None, *, unit: str = "") -> float:
    """``value`` as a ``float`` when it is a finite real number above 0 (and at most ``most``);
    ``unit`` names what it counts in the message (``" of seconds"``). Infinity is refused: a record
    holding it is not JSON."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    try:
        number = float(value) if real else math.nan
    except OverflowError:  # an int beyond a float's range
        number = math.inf
    if not 0 < number < math.inf or (most is not None and number > most):
        bound = f"above 0 and at most {most:g}" if most is not None else "above 0"
        raise UserError(f"{name} must be a {'finite ' if number == math.inf else ''}number{unit} {bound}, got {value!r}", option=name)
    return number

"""The library's numeric arguments, checked where a caller hands them in: a bad value is a
:class:`UserError` naming the argument, a good one comes back as Python's own ``int`` or ``float``.
numpy's numbers are taken (a seed from ``np.arange``, a rate from a grid), and what is recorded
from them stays plain JSON."""

from __future__ import annotations

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
    """``value`` as a ``float`` when it is a real number above 0 (and at most ``most``; NaN never is);
    ``unit`` names what it counts in the message (``" of seconds"``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 or (most is not None and not value <= most):
        bound = f"above 0 and at most {most:g}" if most is not None else "above 0"
        raise UserError(f"{name} must be a number{unit} {bound}, got {value!r}", option=name)
    return float(value)

"""Value checks shared by the search-space dataclasses: each failure names the field path."""

from __future__ import annotations

import difflib
from typing import Any

from autoprompt_search.errors import UserError


class Invalid(UserError):
    """A bad value at ``key`` (a path from the top, e.g. ``budget.trials``); the loader adds the file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key = key


def need_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise Invalid(key, f"must be true or false, got {value!r}")


def need_int(key: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(key, f"must be an integer, got {value!r}")
    if value < minimum:
        raise Invalid(key, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise Invalid(key, f"must be at most {maximum}, got {value}")


def need_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise Invalid(key, f"must be one of {', '.join(choices)}, got {value!r}{hint}")

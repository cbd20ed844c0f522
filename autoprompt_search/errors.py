"""The one exception type for mistakes a user can fix (bad file, field, label, value)."""

from __future__ import annotations


class UserError(Exception):
    """A user's mistake: the CLI prints the message alone and exits with code 2.

    The message must name the file, field or line at fault. ``option`` names the library
    argument at fault (``storage``, ``resume``, ``device``, ...): the CLI shows it as its flag.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option

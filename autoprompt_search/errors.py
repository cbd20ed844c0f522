"""The one exception type for mistakes a user can fix (bad file, field, label, value)."""

from __future__ import annotations


class UserError(Exception):
    """A user's mistake: the CLI prints the message alone and exits with code 2.

    The message must name the file, field or line at fault. ``option`` names the library
    argument at fault (``storage``, ``resume``, ``device``, ...): the CLI shows it as its flag;
    ``alternatives`` names the arguments that fix it when none is at fault.
    """

    def __init__(self, message: str, *, option: str | None = None, alternatives: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.option = option
        self.alternatives = alternatives  # arguments that would fix it, when no single one is at fault

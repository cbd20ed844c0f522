"""The one exception type for mistakes a user can fix (bad file, field, label, value)."""


class UserError(Exception):
    """A user's mistake: the CLI prints the message alone and exits with code 2.

    The message must name the file, field or line at fault.
    """

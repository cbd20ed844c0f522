"""Where progress lines go: a :data:`Log` takes one line; :func:`to_stderr` (the default of the
search, ``combine``, the asset resolvers and the slot cache's warnings) keeps stdout free for what
a command prints as its result."""

from __future__ import annotations

import sys
from typing import Callable

Log = Callable[[str], None]


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

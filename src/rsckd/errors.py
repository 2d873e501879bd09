"""One exception type for every problem a user can fix (bad file, bad parameter).

The CLI prints its message as one line and exits with status 2, so a user never sees a traceback
from deep inside a library for a mistake of theirs.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A problem with the user's input: the message names the file or key and what was expected."""


def warn(message: str) -> None:
    """Report a tolerated real-world quirk on stderr (one line, prefixed so it can be grepped)."""
    print(f"warning: {message}", file=sys.stderr)

"""One exception type for every problem a user can fix (bad file, bad parameter), and the readers that turn a
missing or malformed file into it.

The CLI prints its message as one line and exits with status 2, so a user never sees a traceback
from deep inside a library for a mistake of theirs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class UserError(Exception):
    """A problem with the user's input: the message names the file or key and what was expected."""


def warn(message: str) -> None:
    """Report a tolerated real-world quirk on stderr (one line, prefixed so it can be grepped)."""
    print(f"warning: {message}", file=sys.stderr)


def read_json(path: Path, what: str, writer: str) -> Any:
    """A JSON file's content; missing or malformed is a UserError naming the file and what writes it (the
    caller checks the structure, which only it knows)."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found (run {writer} first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: malformed {what}, not valid JSON ({err})") from None


def load_npy(path: Path, what: str, writer: str, mmap: bool = False) -> np.ndarray:
    """A .npy array (never a pickle); missing or unreadable is a UserError naming the file and what writes it
    (the caller checks shape and dtype, which only it knows)."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"{path}: {what} not found (run {writer} first)")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{path}: not a readable .npy file ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise UserError(f"{path}: not a .npy file (a {type(array).__name__})")
    return array

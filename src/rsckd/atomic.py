"""Atomic, byte-deterministic writers: an interrupted stage never leaves a file that looks finished.

Every writer builds its output under a temporary name in the same directory and renames it into place
only when complete (``os.replace`` is atomic on POSIX). JSON is written with sorted keys and rounded
floats so the same numbers always give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

FLOAT_DIGITS = 6


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if tmp.is_dir():
            replace_dir(tmp, path)
        else:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def replace_dir(staged: Path, path: Path) -> None:
    """Swap the finished folder ``staged`` in for ``path``. Folders cannot be renamed over each other, so the
    previous ``path`` is moved aside first and put back if the second rename fails."""
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    try:
        os.replace(staged, path)
    except BaseException:
        if old.exists():
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` as a whole when the block succeeds."""
    with atomic_path(path) as tmp:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        yield tmp


def clean_json(obj: Any, digits: int = FLOAT_DIGITS) -> Any:
    """Round floats, turn numpy scalars and arrays into plain Python, and refuse NaN/inf (not JSON)."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist(), digits)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            raise ValueError(f"refusing to write a non-finite number ({value}) to JSON")
        rounded = round(value, digits)
        return 0.0 if rounded == 0 else rounded
    return obj


def json_bytes(obj: Any, digits: int = FLOAT_DIGITS) -> bytes:
    return (json.dumps(clean_json(obj, digits), indent=2, sort_keys=True) + "\n").encode()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_bytes(path, json_bytes(obj))


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` through a temporary name (np.save output is byte-deterministic for equal arrays)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def content_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a folder's files (relative paths and their sha256, in sorted order; download
    bookkeeping in ``.cache/`` folders, such as a hub snapshot's, left out)."""
    root = Path(path)
    if root.is_file():
        return file_digest(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts)
    listing = "".join(f"{p.relative_to(root).as_posix()}\t{file_digest(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()

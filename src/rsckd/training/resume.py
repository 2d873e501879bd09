"""End-of-epoch checkpoints so an interrupted run continues where it stopped.

Checkpoints live outside the stage outputs (DVC must never see them) in ``$RSCKD_RESUME_DIR/<key>`` or
``.cache/resume/<key>``. The key hashes everything that defines the run (arch, target, seed, the params
blocks used, the cycle table, the features' meta, the soft-label file's content and the package's source),
so a changed input or edited code starts afresh instead of resuming a stale run. The directory is removed once
the run's outputs are complete.

A checkpoint (model, Adam state, history, the selected epoch's weights unless they are the model's) is up to
four model sizes, 2.5 GB for full-size BTS: writing one can take longer than a GPU epoch. So
``resume.checkpoint_minutes`` spaces them by wall time; an interruption costs at most that much training, and
the outputs do not depend on when it happened.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from rsckd.atomic import atomic_path, json_bytes
from rsckd.errors import warn

CHECKPOINT = "checkpoint.pt"


def source_digest() -> str:
    """sha256 of the rsckd package's source files: a run resumes only a checkpoint of the same code."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def resume_dir(identity: dict[str, Any]) -> Path:
    key = hashlib.sha256(json_bytes({**identity, "source": source_digest()}, digits=12)).hexdigest()[:32]
    return Path(os.environ.get("RSCKD_RESUME_DIR", ".cache/resume")) / key


class Checkpoints:
    """The latest end-of-epoch state of one run, written atomically, at most every ``minutes``."""

    def __init__(self, directory: str | os.PathLike[str], minutes: float = 0.0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CHECKPOINT
        self.interval_s = 60.0 * minutes
        self.last_save = time.monotonic()

    def due(self) -> bool:
        """Whether the interval since the last save (or the start) has passed."""
        return time.monotonic() - self.last_save >= self.interval_s

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a checkpoint we cannot read only costs the epochs it held
            warn(f"{self.path}: unreadable resume checkpoint ({err}); starting the run from epoch 1")
            return None

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self.last_save = time.monotonic()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

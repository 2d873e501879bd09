"""A fresh git copy of the repository's tracked files, and commands run inside it, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def tracked_copy(dest: Path) -> Path:
    """Copy the files git tracks (as they are in the working tree) into a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env={**os.environ, **GIT_IDENTITY})
    return dest


def edit_params(repo: Path, edit: Callable[[dict], object]) -> None:
    """Apply ``edit`` to the parsed ``repo/params.yaml`` in place and write it back."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command of this environment (dvc, rsckd) in ``cwd``; its stdout, or a failure with its output.

    Python writes byte-code caches beside the sources here, as on a user's machine, whatever this process was
    told (stage dependencies on source folders must not see them)."""
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    done = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def lock_stages(root: Path) -> dict[str, dict]:
    """The stage entries of ``root/dvc.lock`` (command, dependency, params and output hashes)."""
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]

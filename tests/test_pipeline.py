"""End to end: the whole default DAG from a copy of the repository, serial and in parallel slots.

Both runs must reproduce the committed dvc.lock, metrics and plots byte for byte (same params, same machine),
and a following plain `dvc repro` must have nothing to do. These are the slowest tests (minutes each).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("dvc.lock", "metrics", "plots", "reports")
pytestmark = pytest.mark.slow


def tracked_copy(dest: Path) -> Path:
    """Copy the files git tracks (as they are in the working tree) into a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def committed_outputs(root: Path) -> dict[str, bytes]:
    out = {}
    for name in COMPARED:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out.update({str(p.relative_to(root)): p.read_bytes() for p in files if p.name != ".gitignore"})
    return out


def run(cmd: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def check_reproduced(copy: Path) -> None:
    assert "Data and pipelines are up to date" in run(["dvc", "status"], copy)
    again = run(["dvc", "repro"], copy)
    assert "Running stage" not in again
    expected, got = committed_outputs(ROOT), committed_outputs(copy)
    assert sorted(got) == sorted(expected)
    differing = [name for name in expected if got[name] != expected[name]]
    assert not differing, f"outputs differ from the committed ones: {differing}"


def test_default_dag_reproduces_the_committed_outputs(tmp_path):
    copy = tracked_copy(tmp_path / "repo")
    run(["dvc", "repro"], copy)
    check_reproduced(copy)


def test_parallel_slots_give_the_serial_bytes(tmp_path):
    copy = tracked_copy(tmp_path / "repo")
    out = run(["rsckd", "parallel", "--slots", "2"], copy)
    assert "FAIL" not in out
    check_reproduced(copy)


def test_remote_run_cache_restores_results_on_another_machine(tmp_path):
    """The multi-machine recipe: a worker pushes its run-cache, another clone pulls it and trains nothing.

    Both clones use params the committed dvc.lock has never seen, so only the run-cache can carry the results.
    """
    remote = tmp_path / "remote"
    worker, collector = tracked_copy(tmp_path / "worker"), tracked_copy(tmp_path / "collector")
    for repo in (worker, collector):
        run(["dvc", "remote", "add", "-d", "store", str(remote)], repo)
        params = repo / "params.yaml"
        params.write_text(params.read_text().replace("  seed: 0\n", "  seed: 1\n", 1))
    run(["dvc", "repro", "prepare"], worker)
    run(["dvc", "push", "--run-cache", "--with-deps", "prepare"], worker)
    out = run(["dvc", "repro", "--pull", "prepare"], collector)
    assert "Running stage" not in out and "is cached - skipping run" in out
    table = "data/prepared/cycles.csv"
    assert (collector / table).read_bytes() == (worker / table).read_bytes()

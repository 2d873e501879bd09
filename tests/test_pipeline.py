"""End to end: the whole default DAG from a copy of the repository, as `make repro` runs it.

The run must reproduce the committed dvc.lock, metrics, plots and reports byte for byte: the README promises
them on any x86-64 machine (data stages by construction, training stages through ``runtime.cpu_kernels:
portable``; ``test_reproducibility.py`` imitates other CPUs). `rsckd parallel` runs each item as
`dvc repro -s <item>`, the command a plain `dvc repro` runs in order, and the plain `dvc repro` that follows
must have nothing to do. Its outputs must also show the paper's robust effects (``paper_effects.py``). These
are the slowest tests (minutes each).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from paper_effects import broken_distillation, broken_effects
from repo_copy import ROOT, run, tracked_copy

COMPARED = ("dvc.lock", "metrics", "plots", "reports")
pytestmark = pytest.mark.slow


def outputs(root: Path) -> dict[str, bytes]:
    out = {}
    for name in COMPARED:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out.update({str(p.relative_to(root)): p.read_bytes() for p in files if p.name != ".gitignore"})
    return out


def assert_same_outputs(got: Path, expected: Path) -> None:
    want, have = outputs(expected), outputs(got)
    assert sorted(have) == sorted(want)
    differing = [name for name in want if have[name] != want[name]]
    assert not differing, f"outputs of {got} differ from those of {expected}: {differing}"


def assert_nothing_stale(copy: Path) -> None:
    assert "Data and pipelines are up to date" in run(["dvc", "status"], copy)
    assert "Running stage" not in run(["dvc", "repro"], copy)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    copy = tracked_copy(tmp_path_factory.mktemp("default") / "repo")
    out = run(["rsckd", "parallel", "--workers", "2"], copy)
    assert ", 0 failed, 0 skipped" in out
    return copy


def test_default_dag_reproduces_the_committed_outputs(default_run):
    assert_nothing_stale(default_run)
    assert_same_outputs(default_run, ROOT)


def test_default_dag_shows_the_papers_effects(default_run):
    assert broken_effects(default_run) + broken_distillation(default_run) == []


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

"""End to end: the whole default DAG from a copy of the repository, serial and through `rsckd parallel`.

The serial run must reproduce the committed dvc.lock, metrics, plots and reports byte for byte: the README
promises them on any x86-64 machine (data stages by construction, training stages through
``runtime.cpu_kernels: portable``; ``test_reproducibility.py`` imitates other CPUs). The run on two local Dask
workers must give the serial run's bytes, and a following plain `dvc repro` must have nothing to do. These are
the slowest tests (minutes each).
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
def serial_run(tmp_path_factory) -> Path:
    copy = tracked_copy(tmp_path_factory.mktemp("serial") / "repo")
    run(["dvc", "repro"], copy)
    return copy


def test_default_dag_reproduces_the_committed_outputs(serial_run):
    assert_nothing_stale(serial_run)
    assert_same_outputs(serial_run, ROOT)


def test_two_local_workers_give_the_serial_bytes(tmp_path, serial_run):
    copy = tracked_copy(tmp_path / "repo")
    out = run(["rsckd", "parallel", "--workers", "2"], copy)
    assert ", 0 failed, 0 skipped" in out
    assert_nothing_stale(copy)
    assert_same_outputs(copy, serial_run)


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

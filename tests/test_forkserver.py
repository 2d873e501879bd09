"""rsckd.forkserver: commands forked from a warm server behave as in their own process.

The whole default DAG runs through it in test_pipeline.py (byte-identical outputs); here the command
side's contract: exit status, streams, working directory, fallbacks, interrupts, and a server that ends with
its parent.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from repo_copy import ROOT
from rsckd import forkserver


@pytest.fixture(scope="module")
def server():
    path, process = forkserver.start()
    assert forkserver.wait_ready(path, process)  # it listens once it has imported
    yield path
    process.kill()
    process.wait()
    Path(path).unlink()
    Path(path).parent.rmdir()


def test_a_command_runs_in_a_fork_with_the_callers_directory_and_streams(
    server, tmp_path, monkeypatch, capfd
):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(forkserver.ENV, server)
    monkeypatch.delenv("RSCKD_LAUNCH", raising=False)

    assert forkserver.delegate(["check-params", "--params", "params.yaml"]) == 0  # None: it ran here
    assert capfd.readouterr().out == "params.yaml: ok (5 teachers, k in [3, 5])\n"


def test_a_failing_command_gives_its_error_and_status(server, tmp_path, monkeypatch, capfd):
    (tmp_path / "params.yaml").write_text("teacher: {epochs: forty}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(forkserver.ENV, server)
    monkeypatch.delenv("RSCKD_LAUNCH", raising=False)

    assert forkserver.delegate(["check-params", "--params", "params.yaml"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: params.yaml") and "Traceback" not in err
    assert forkserver.delegate(["train", "--no-such-flag"]) == 2  # argparse's own exit
    assert "the following arguments are required: --arch" in capfd.readouterr().err


def test_the_command_runs_here_without_a_reachable_server_or_with_a_launch_prefix(
    server, tmp_path, monkeypatch
):
    monkeypatch.delenv(forkserver.ENV, raising=False)
    assert forkserver.delegate(["check-params"]) is None
    monkeypatch.setenv(forkserver.ENV, str(tmp_path / "no-socket"))
    assert forkserver.delegate(["check-params"]) is None
    monkeypatch.setenv(forkserver.ENV, server)
    monkeypatch.setenv("RSCKD_LAUNCH", "srun --gres=gpu:1")
    assert forkserver.delegate(["check-params"]) is None


def test_the_server_ends_with_the_process_that_started_it():
    code = "from rsckd import forkserver; print(forkserver.start()[0])"
    starter = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True)
    path = Path(starter.stdout.strip())
    deadline = time.monotonic() + 120
    while path.parent.exists() and time.monotonic() < deadline:  # it imports, sees its parent gone, cleans up
        time.sleep(0.2)
    assert not path.exists() and not path.parent.exists()


def test_waiting_for_a_server_that_failed_returns_at_once(tmp_path):
    failed = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    assert not forkserver.wait_ready(str(tmp_path / "socket"), failed, timeout=60)
    assert time.monotonic() - started < 30


def test_a_forked_command_acts_on_the_first_interrupt_only():
    """A Ctrl-C reaches a forked command twice (directly, and passed on by its command process); the second
    must not interrupt the cleanup the first began."""
    code = """if True:
        import os, signal, time
        from rsckd import forkserver
        forkserver._interrupt_once()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C, passed on
            time.sleep(0.5)
            print("cleaned up")
    """
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, "cleaned up\n", "")

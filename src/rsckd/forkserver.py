"""Stage commands forked from a warm process, so each `rsckd` command does not import torch again.

Every worker of `rsckd parallel` keeps one server that has imported torch, transformers, timm, dvclive and
pandas once (about 8 s on a 2-core machine, a fifth of a 12-epoch tiny BTS item). A `rsckd ...` command that
DVC starts on that worker finds ``$RSCKD_FORKSERVER`` and hands the server its arguments, working directory,
environment and standard streams (the file descriptors themselves). A forked child takes them over, runs
the command and sends back its exit status, which the command then exits with. Signals the command gets
(Ctrl-C, a kill) are passed on to the child, which acts on the first SIGINT only (a Ctrl-C reaches it
directly too), and a child whose command has gone stops itself. A server whose worker has gone interrupts that
worker's items. Without the variable, with a ``$RSCKD_LAUNCH`` prefix (the command may run on another
node, under its own allocation), or when the server cannot be reached, the command runs in its own process as
before.

Forking is safe here because the server is single-threaded, never touches CUDA and runs no tensor maths: a
child starts as a fresh process would after its imports. The CPU-kernel pin of ``runtime.cpu_kernels`` still
comes before any kernel runs (and checks that), and the pipeline's outputs are byte-identical either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ENV = "RSCKD_FORKSERVER"
STREAMS = (0, 1, 2)


def preload() -> None:
    """What the stage commands import, imported once in the server."""
    import dvclive  # noqa: F401
    import pandas  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401
    import torch._inductor.config  # noqa: F401 (what torch.use_deterministic_algorithms imports)
    from transformers import ASTModel, ClapModel, RobertaTokenizerFast  # noqa: F401


# ---------------------------------------------------------------- the command's side


def delegate(argv: list[str]) -> int | None:
    """Run ``rsckd argv`` in a fork of the server named by ``$RSCKD_FORKSERVER`` and return its exit status;
    None when it should run here instead (no server, a launch prefix, a stream that is not open)."""
    path = os.environ.get(ENV)
    if not path or os.environ.get("RSCKD_LAUNCH", "").strip():
        return None
    try:
        for fd in STREAMS:
            os.fstat(fd)
    except OSError:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(path)
            socket.send_fds(conn, [b"\0"], list(STREAMS))
            request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
            conn.sendall(json.dumps(request).encode() + b"\n")
            replies = conn.makefile("rb")
            pid_line = replies.readline()
        except OSError:
            return None
        if not pid_line:  # the server went away before forking: nothing has run
            return None
        pid = int(pid_line)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: _forward(pid, signum))
        status = replies.readline()
    if not status:
        print(f"error: rsckd {' '.join(argv)} (process {pid}) ended without an exit status", file=sys.stderr)
        return 1
    return int(status)


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just ended
        os.kill(pid, signum)


# ---------------------------------------------------------------- the server's side


def serve(path: str, parent: int) -> None:
    """Import, listen on ``path``, then fork one child per connection until ``parent`` (the process that
    started the server) has gone."""
    preload()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path + ".new")
        server.listen()
        os.rename(path + ".new", path)  # the socket appears only once it accepts connections
        server.settimeout(1.0)
        server_pid = os.getpid()
        try:
            while os.getppid() == parent:
                _reap()
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                if os.fork() == 0:
                    code = 1
                    try:
                        server.close()
                        code = _child(conn)
                    except BaseException:
                        traceback.print_exc()
                    finally:
                        os._exit(code)
                conn.close()
        finally:
            if os.getpid() == server_pid:  # not a child interrupted before its own try
                if os.getppid() != parent:
                    _interrupt_orphans(path)
                Path(path).unlink(missing_ok=True)
                Path(path).parent.rmdir()


def _interrupt_orphans(path: str) -> None:
    """The worker has gone (a `kill -9` of `rsckd parallel`, whose local workers exit at once): interrupt what
    it was running, as a Ctrl-C would, instead of leaving it to train on unobserved. Its items' processes
    (dvc, the stage command, whatever that starts) carry this server's socket in their environment; the
    commands forked here are this process's children."""
    import psutil

    here = os.getpid()
    items = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid != here and (process.ppid() == here or process.environ().get(ENV) == path):
                items.append(process)
    interrupt(items)


def interrupt(processes: list) -> int:
    """Send SIGINT to each of ``processes`` (psutil processes) still there, as a Ctrl-C would; how many."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGINT)
    return len(processes)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _child(conn: socket.socket) -> int:
    """Take over the command's streams, directory and environment, run it, send its exit status."""
    from rsckd import cli

    _, fds, _, _ = socket.recv_fds(conn, 1, len(STREAMS))
    for fd, stream in zip(fds, STREAMS, strict=True):
        os.dup2(fd, stream)
        os.close(fd)
    request = json.loads(conn.makefile("rb").readline())
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    del os.environ[ENV]  # commands this one starts run in their own process
    sys.argv = ["rsckd", *request["argv"]]
    _interrupt_once()  # before the command knows this process and can pass a signal on
    conn.sendall(f"{os.getpid()}\n".encode())
    threading.Thread(target=_stop_when_gone, args=(conn,), daemon=True).start()
    try:
        code = cli.run(request["argv"])
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(f"{code}\n".encode())
    return code


def _interrupt_once() -> None:
    """Make only the first SIGINT raise KeyboardInterrupt. A Ctrl-C (or `rsckd parallel` stopping its items)
    reaches a forked command twice: directly, and passed on by its command process. The second would cut
    short the cleanup the first began (an atomic write removing its temporary file)."""
    interrupted = False

    def interrupt(_signum: int, _frame: object) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)


def _exit_code(code: object) -> int:
    """What the interpreter makes of ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _stop_when_gone(conn: socket.socket) -> None:
    """The command process closed its end (it was killed): stop, as the command would have."""
    if not conn.recv(1):
        os.kill(os.getpid(), signal.SIGTERM)


def start() -> tuple[str, subprocess.Popen]:
    """Start a server in a new temporary directory: (its socket path, its process). Its socket appears once
    it has imported everything; commands that come earlier, or find it failed (its error is on stderr), run in
    their own processes."""
    path = str(Path(tempfile.mkdtemp(prefix="rsckd-forkserver-")) / "socket")
    command = [sys.executable, "-m", "rsckd.forkserver", path, str(os.getpid())]
    return path, subprocess.Popen(command, stdout=subprocess.DEVNULL)


def wait_ready(path: str, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Wait until the server listens (True) or has failed or is still importing after ``timeout`` (False).

    A command that came earlier would spend that time importing the same libraries in its own process, on the
    cores the server's imports use too; waiting loses it nothing and spares the machine that work."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))

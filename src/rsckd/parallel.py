"""`rsckd parallel`: the stale stage items of the pipeline run as Dask tasks, on one machine or a cluster.

DVC stays in charge of the pipeline: its own graph and staleness test choose the items (those a plain
`dvc repro` would run, and everything downstream of them), and each item runs as
`dvc --wait-for-lock repro -s <item>`, so dvc.lock, the cache and the run-cache are written by DVC. Dask runs
them on its workers: one task per item, handed over as soon as its upstream items have succeeded and a worker
is free, so a stage never waits for unrelated ones. A failed item stops only what depends on it, and after a
complete run `dvc status` must find nothing stale.

Workers are processes of a ``LocalCluster`` (one item at a time each, GPUs dealt round-robin) or batch jobs of
dask-jobqueue on SLURM or PBS, in a checkout on a shared file system with a shared DVC cache.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from rsckd import forkserver
from rsckd.config import read_yaml
from rsckd.errors import UserError
from rsckd.schema import STRINGS, TEXT, Block, Expected, fail, integer, validated

CLUSTERS = ("local", "slurm", "pbs")
DEFAULT_CLUSTER_CONFIG = "configs/cluster.yaml"
JOB_FLAGS = ("queue", "account", "walltime", "memory", "gpus_per_job")  # batch settings a flag may override
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub"}
GPU_ID = re.compile(r"\d+|(GPU|MIG)-[0-9A-Za-z/-]+")  # what CUDA_VISIBLE_DEVICES takes: an index or a UUID


def dask_settings() -> dict[str, Any]:
    """Dask settings of every run: in this process (the scheduler, a local cluster's nannies) and, as DASK_*
    variables, in batch jobs.

    A nanny's pre-spawn environment tunes workers for Dask's own tasks (a 64 KiB MALLOC_TRIM_THRESHOLD_, one
    OpenMP/MKL/OpenBLAS thread) and the stage commands would inherit it: the trim threshold alone made a tiny
    BTS training take 30.2 s instead of 22.1 s. Each of those variables is set to None (Dask's "leave it
    alone"), so an item runs with the environment a plain `dvc repro` has (the nanny still fixes
    PYTHONHASHSEED, which no output depends on). A saturation of 1.0 lets a one-thread worker hold one task,
    never one running and one waiting."""
    import dask
    import distributed.config  # noqa: F401 (loads the distributed.* defaults into dask.config)

    return {
        "distributed.nanny.pre-spawn-environ": dict.fromkeys(
            dask.config.get("distributed.nanny.pre-spawn-environ")
        ),
        "distributed.nanny.environ": dict.fromkeys(dask.config.get("distributed.nanny.environ")),
        "distributed.scheduler.worker-saturation": 1.0,
    }


# ---------------------------------------------------------------- the plan: DVC's graph and staleness


def plan(root: Path) -> dict[str, list[str]]:
    """Stage items to run, upstream first, each with the items among them it must wait for.

    The items are the stages a plain `dvc repro` evaluates (DVC's own graph, frozen stages cut from their
    dependencies as `dvc repro` does) that are stale now, plus everything downstream of those: they may become
    stale once their upstream has run (if not, their `dvc repro -s` does nothing).
    """
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    try:
        with Repo(str(root)) as repo, repo.lock:
            graph = get_active_graph(repo.index.graph)  # edges point from a stage to the stages it depends on
            steps = plan_repro(graph, collect_stages(repo, ["dvc.yaml"]))
            stale = {stage for stage in steps if stage.changed()}
    except DvcException as err:
        raise UserError(f"dvc: {err}") from None
    selected = stale.union(*(nx.ancestors(graph, stage) for stage in stale))
    return {
        stage.addressing: [up.addressing for up in graph.successors(stage) if up in selected]
        for stage in steps
        if stage in selected
    }


# ---------------------------------------------------------------- one task: one stage item on one worker slot


def failure(item: str, log: Path, reason: str) -> str:
    """Why an item failed, as its summary line gives it: the reason and the log to read."""
    return f"{item} failed ({reason + '; ' if reason else ''}log {log})"


def command_error(log: Path) -> str:
    """The last ``error: ...`` line in an item's log: the one clear message every rsckd command gives on bad
    input, so a failed item says why on screen ('' when the command wrote none)."""
    errors = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else ""


@dataclass(frozen=True)
class GpuDeal:
    """How a worker slot finds its GPU: slots are dealt round-robin over ``gpus`` (local) or over the GPUs the
    batch system gave their job (``gpus=None``: the job's CUDA_VISIBLE_DEVICES; a batch system that confines
    the job to its GPUs without setting it shows them as 0 .. ``gpus_per_job`` - 1). A LocalCluster names its
    workers 0, 1, ...; dask-jobqueue names them ``<job>-<i>`` when a job runs several."""

    gpus: tuple[str, ...] | None
    slots_per_job: int = 1
    gpus_per_job: int = 0

    def gpu(self, worker_name: int | str) -> str | None:
        gpus = self.gpus if self.gpus is not None else _job_gpus(self.gpus_per_job)
        if not gpus:
            return None
        if isinstance(worker_name, int):
            slot = worker_name
        elif self.slots_per_job == 1:
            slot = 0
        else:
            index = worker_name.rsplit("-", 1)[-1]
            if not index.isdigit():
                raise UserError(f"worker {worker_name!r}: expected a name '<job>-<i>' to deal its GPU by")
            slot = int(index)
        return gpus[slot % len(gpus)]


def gpu_ids(text: str) -> tuple[str, ...]:
    """The GPU ids of a comma-separated list, as CUDA_VISIBLE_DEVICES and ``--gpus`` write them."""
    return tuple(g for g in text.split(",") if g)


def _job_gpus(gpus_per_job: int) -> tuple[str, ...]:
    """The GPUs of this batch job: its CUDA_VISIBLE_DEVICES (empty: none), else 0 .. gpus_per_job - 1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return tuple(str(i) for i in range(gpus_per_job))
    return gpu_ids(visible)


def log_path(log_dir: Path, item: str) -> Path:
    return log_dir / f"{item.replace('/', '_').replace(':', '_')}.log"


def run_item(item: str, root: str, log_dir: str, deal: GpuDeal) -> dict[str, Any]:
    """Run one stage item with DVC in the checkout (runs on a worker).

    The worker's interpreter directory goes first on PATH, so `dvc` and the stage commands (`rsckd ...`) come
    from the same environment on every machine. Whatever goes wrong comes back as ``{"failed": why}``, naming
    the item's log; raised, it would also make Dask's worker print a traceback of this function, which says
    nothing about the stage."""
    log = log_path(Path(log_dir), item)
    try:
        return _run_item(item, root, log, deal)
    except Exception as err:
        return {"failed": failure(item, log, f"{type(err).__name__}: {err}")}


_SERVERS: dict[int, tuple[str, Any]] = {}  # worker process id -> its fork server (socket, process)


def worker_forkserver(wait: bool = False) -> str:
    """The socket of this worker's fork server, started by ``start_forkservers`` or with its first item;
    ``wait``: once it listens (or has failed: the command then runs in its own process)."""
    if os.getpid() not in _SERVERS:
        _SERVERS[os.getpid()] = forkserver.start()
    path, process = _SERVERS[os.getpid()]
    if wait:
        forkserver.wait_ready(path, process)
    return path


INTERRUPTED = threading.Event()  # set in a worker once its items were interrupted: it starts no other


def interrupt_items() -> int:
    """Interrupt every process below this worker (its running item's dvc and stage command, its fork server
    and the commands forked from it), as a Ctrl-C in a terminal interrupts the whole process group, and start
    no item after; returns how many processes there were."""
    import psutil

    INTERRUPTED.set()
    return forkserver.interrupt(psutil.Process().children(recursive=True))


class Stopped(Exception):
    """SIGTERM or SIGHUP reached `rsckd parallel`: a `kill`, a closed terminal, a batch system ending it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _stop(signum: int, _frame: Any) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stopping_items(client: Any) -> Any:
    """While the graph runs, a SIGTERM or SIGHUP of this process interrupts the running items on every worker
    and ends the command with one error. Without this a `kill` of this process alone would leave the items
    running: only a terminal's Ctrl-C reaches the whole process group. A signal already ignored (SIGHUP
    under `nohup`) stays ignored."""
    signals = [sig for sig in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, _stop) for sig in signals}
    try:
        yield
    except Stopped as stop:
        for sig in signals:  # a second signal must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        try:  # a worker the signal also reached (a hang-up) may be gone
            done = client.run(interrupt_items, on_error="ignore", callback_timeout=30)
            what = f"{sum(done.values())} process(es) of the running items interrupted"
        except Exception as err:
            what = f"interrupting the running items failed ({type(err).__name__}: {err})"
        raise UserError(
            f"stopped by {stop}: {what}; run again to go on (only what is still stale runs)"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_forkservers(client: Any) -> None:
    """Start every worker's fork server now, while the cores are free, rather than with each worker's first
    item: the first items of the DAG (synthesize, prepare, features) are short and on the way to everything
    else, and a server starting beside them (8 s of imports) made the first teacher start at 43 s instead of
    25 s. Workers that join later (batch jobs) start theirs with their first item."""
    client.run(worker_forkserver)


def _run_item(item: str, root: str, log: Path, deal: GpuDeal) -> dict[str, Any]:
    from distributed import get_worker

    gpu = deal.gpu(get_worker().name)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    env[forkserver.ENV] = worker_forkserver(wait=True)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if INTERRUPTED.is_set():  # stopped while this item waited for its fork server
        return {"failed": failure(item, log, "not started: the run was stopped")}
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(
            [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "-s", item],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if code != 0:
        return {"failed": failure(item, log, command_error(log))}
    return {"failed": None, "gpu": gpu, "seconds": time.perf_counter() - start, "log": str(log)}


# ---------------------------------------------------------------- clusters


def _memory(value: Any) -> str:
    from dask.utils import parse_bytes

    try:
        if isinstance(value, str) and parse_bytes(value) > 0:
            return value
    except ValueError:
        pass
    raise ValueError("not an amount of memory")


def _walltime(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"(\d+-)?\d+:\d\d:\d\d", value):
        return value
    sexagesimal = " (YAML reads an unquoted 24:00:00 as a number: quote it)" if isinstance(value, int) else ""
    raise fail(f"expected a walltime HH:MM:SS, got {value!r}{sexagesimal}")


class JobSettings(Block):
    """One batch-job kind (slurm, pbs) of the cluster config."""

    queue: TEXT | None
    account: TEXT | None
    walltime: Annotated[str, BeforeValidator(_walltime)]
    memory: Annotated[str, BeforeValidator(_memory), Expected("an amount of memory such as 64GiB")]
    cpus_per_job: integer(1)
    gpus_per_job: integer(1)
    slots_per_gpu: integer(1)
    directives: STRINGS
    prologue: STRINGS
    interface: TEXT | None
    log_directory: TEXT


def job_settings(kind: str, config_path: Path, flags: dict[str, Any]) -> JobSettings:
    """The batch-job settings of ``kind`` from the cluster config file, with the flags given on top."""
    raw = read_yaml(config_path, f"cluster config not found (start from {DEFAULT_CLUSTER_CONFIG})")
    fields = ", ".join(JobSettings.model_fields)
    if not isinstance(raw, dict) or kind not in raw:
        raise UserError(f"{config_path}: {kind}: missing; expected a mapping of {fields}")
    settings = validated(JobSettings, raw[kind], str(config_path), lambda key: f"{kind}.{key}".rstrip("."))
    given = {name: value for name, value in flags.items() if value is not None}
    merged = validated(
        JobSettings, {**settings.model_dump(), **given}, "flags", lambda key: f"--{key.replace('_', '-')}"
    )
    if kind == "pbs" and "-" in merged.walltime:  # SLURM's D-HH:MM:SS
        where = "--walltime" if "walltime" in given else f"{config_path}: pbs.walltime"
        raise UserError(f"{where}: PBS takes HH:MM:SS, got {merged.walltime!r}")
    return merged


def job_slots(settings: JobSettings) -> int:
    """Worker slots in one batch job: ``slots_per_gpu`` on each of its ``gpus_per_job`` GPUs."""
    return settings.gpus_per_job * settings.slots_per_gpu


def dask_exports() -> list[str]:
    """``dask_settings()`` as the shell lines that give a batch job's Dask processes the same settings."""
    return [
        f"export DASK_{key.upper().replace('.', '__').replace('-', '_')}={shlex.quote(repr(value))}"
        for key, value in dask_settings().items()
    ]


def batch_cluster(kind: str, settings: JobSettings, root: Path) -> Any:
    """A dask-jobqueue cluster whose every job is one worker per GPU slot, one thread (one item) each.

    Jobs start in the checkout (``cd``), which must be on a file system the compute nodes share; the worker's
    python is this one, so the checkout's environment is used there too."""
    from dask_jobqueue import PBSCluster, SLURMCluster
    from dask_jobqueue.pbs import pbs_format_bytes_ceil

    slots = job_slots(settings)
    log_directory = root / settings.log_directory
    log_directory.mkdir(parents=True, exist_ok=True)
    common = {
        "cores": slots,  # dask threads: one per worker process, so one stage item per slot
        "processes": slots,
        "memory": settings.memory,
        "queue": settings.queue,
        "account": settings.account,
        "walltime": settings.walltime,
        "interface": settings.interface,
        "job_name": "rsckd",
        "log_directory": str(log_directory),
        "job_script_prologue": [f"cd {shlex.quote(str(root))}", *dask_exports(), *settings.prologue],
    }
    if kind == "slurm":
        directives = [f"--gres=gpu:{settings.gpus_per_job}", *settings.directives]
        return SLURMCluster(
            **common,
            job_cls=reporting_submissions(SLURMCluster.job_cls),
            job_cpu=settings.cpus_per_job,
            job_extra_directives=directives,
        )
    from dask.utils import parse_bytes

    memory = pbs_format_bytes_ceil(parse_bytes(settings.memory))
    spec = f"select=1:ncpus={settings.cpus_per_job}:ngpus={settings.gpus_per_job}:mem={memory}"
    return PBSCluster(
        **common,
        job_cls=reporting_submissions(PBSCluster.job_cls),
        resource_spec=spec,
        job_extra_directives=settings.directives,
    )


SUBMIT_WAIT_S = 120  # the first jobs' submissions are awaited this long before the run goes on regardless


def reporting_submissions(job_cls: type) -> type:
    """``job_cls`` whose every submission outcome (accepted or not) goes to its queue ``submissions``, and
    whose refusal is one warning line instead of a traceback on Dask's event loop (the job then never
    starts; the run goes on without it)."""
    from distributed.core import Status

    class Reporting(job_cls):  # type: ignore[valid-type, misc]
        submissions: queue.Queue[bool] = queue.Queue()

        async def start(self) -> None:
            try:
                await super().start()
            except RuntimeError as err:  # the submit command failed: its stderr, else its stdout, says why
                out, _, err_text = str(err).partition("stdout:\n")[2].partition("stderr:\n")
                why = "; ".join((err_text.strip() or out.strip() or str(err)).splitlines())
                print(
                    f"warning: {self.submit_command} refused job {self.name}: {why}",
                    file=sys.stderr,
                    flush=True,
                )
                self._record(accepted=False)
            except ValueError as err:  # submitted, but the answer named no job id
                why = "; ".join(str(err).splitlines())
                print(f"warning: job {self.name} cannot be cancelled: {why}", file=sys.stderr, flush=True)
                self._record(accepted=True)
            else:
                self.submissions.put(True)

        def _record(self, accepted: bool) -> None:
            """Without a job id: Dask expects a job whose start returned to be running (closing it cancels
            nothing, as there is no id)."""
            self.submissions.put(accepted)
            self.status = Status.running

    return Reporting


def check_submissions(cluster: Any, submit: str, jobs: int) -> None:
    """Stop when the batch system refused every one of the first ``jobs`` jobs (its answers are the warnings
    above): no worker could ever join, and the command would wait for ever. Returns at the first accepted
    job."""
    deadline = time.monotonic() + SUBMIT_WAIT_S
    for _ in range(jobs):
        try:
            accepted = cluster.job_cls.submissions.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:  # a submit command still running: its jobs may yet start
            return
        if accepted:
            return
    raise UserError(
        f"{submit} refused all {jobs} job(s) (above), so no worker can join: fix the job settings "
        "(configs/cluster.yaml or the flags --queue, --account, --walltime, --memory, --gpus-per-job), "
        "or try again if the batch system was only busy"
    )


SBATCH_CHECK_S = 60  # a controller that answers slower than this is not waited for


def check_slurm_job(cluster: Any) -> None:
    """Show SLURM's own check of the job script (``sbatch --test-only``, which submits nothing): a wrong
    partition, account or resource request is named before Dask submits, which would only log the rejection
    while the command waits. Advice only: sbatch also refuses a job it could merely queue (every node of the
    partition drained), which a real submission would wait out. PBS has no such check."""
    with tempfile.NamedTemporaryFile("w", prefix="rsckd-job-", suffix=".sh") as script:
        script.write(cluster.job_script())
        script.flush()
        try:
            done = subprocess.run(
                ["sbatch", "--test-only", script.name], capture_output=True, text=True, timeout=SBATCH_CHECK_S
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            print(f"sbatch --test-only: no verdict ({err})", flush=True)
            return
    answer = "; ".join(line for line in (done.stderr + done.stdout).splitlines() if line.strip())
    print(f"sbatch --test-only: {answer or f'exit status {done.returncode}'}", flush=True)
    if done.returncode != 0:
        print(
            "warning: sbatch refused the job script, so the jobs may never start; unless the partition's "
            "nodes are only drained, fix the job settings or the flags, and stop this command with Ctrl-C",
            file=sys.stderr,
            flush=True,
        )


# ---------------------------------------------------------------- running the graph


@dataclass
class Outcomes:
    done: dict[str, dict[str, Any]]
    failed: dict[str, str]  # item -> why (with its log)
    skipped: dict[str, str]  # item -> the failed upstream item that stopped it

    def summary(self) -> str:
        lines = [f"summary: {len(self.done)} done, {len(self.failed)} failed, {len(self.skipped)} skipped"]
        lines += [f"  done     {item}  (log {info['log']})" for item, info in self.done.items()]
        lines += [f"  failed   {item}  ({why})" for item, why in self.failed.items()]
        lines += [f"  skipped  {item}  (upstream {up} failed)" for item, up in self.skipped.items()]
        return "\n".join(lines)


def downstream(items: dict[str, list[str]]) -> dict[str, set[str]]:
    """Every item that waits, directly or not, on each item."""
    import networkx as nx

    graph = nx.DiGraph((up, item) for item, upstream in items.items() for up in upstream)
    graph.add_nodes_from(items)
    return {item: nx.descendants(graph, item) for item in items}


def downstream_counts(after: dict[str, set[str]]) -> dict[str, int]:
    """How many items wait, directly or not, on each item (``after``: :func:`downstream`'s sets): among ready
    items the one that unblocks the most starts first (the teachers before a Table 2 run that only the report
    waits for)."""
    return {item: len(later) for item, later in after.items()}


def execute(
    client: Any,
    items: dict[str, list[str]],
    root: Path,
    log_dir: Path,
    deal: GpuDeal,
    slots: int,
) -> Outcomes:
    """Run every item whose upstream items all succeeded, at most ``slots`` (the workers) at a time, and
    collect every outcome; a failed item skips everything downstream of it.

    Dask gets an item only when a worker slot is free for it: given the whole graph at once, it assigns
    waiting tasks to workers ahead of time from duration guesses, and a worker then idles while another
    holds a queue (measured: a core idle for 22 s while the last teacher ran and Table 2 runs waited)."""
    from distributed import as_completed
    from tqdm import tqdm

    after = downstream(items)
    priority = downstream_counts(after)
    waiting = {item: set(upstream) for item, upstream in items.items()}
    dependents: dict[str, list[str]] = {item: [] for item in items}  # in plan order, as ``ready`` keeps it
    for later, upstream in waiting.items():
        for up in upstream:
            dependents[up].append(later)
    ready = [item for item, upstream in waiting.items() if not upstream]
    running = as_completed()
    outcomes = Outcomes({}, {}, {})

    def start_ready() -> None:
        ready.sort(key=lambda item: -priority[item])  # stable: the plan's order among equals
        while ready and running.count() < slots:
            item = ready.pop(0)
            args = (item, str(root), str(log_dir), deal)
            running.add(client.submit(run_item, *args, key=item, pure=False))

    start_ready()
    with tqdm(total=len(items), unit="item", file=sys.stderr) as bar:
        for future in running:
            item = future.key
            if future.status == "finished":
                info = future.result()
            else:  # the task itself did not finish: its worker died, or it was cancelled
                err = future.exception() if future.status == "error" else future.status
                info = {"failed": failure(item, log_path(log_dir, item), repr(err))}
            if info["failed"] is None:
                outcomes.done[item] = info
                gpu = "" if info["gpu"] is None else f"gpu {info['gpu']}, "
                bar.write(f"  ok      {item}  ({gpu}{info['seconds']:.0f} s)", file=sys.stdout)
                for later in dependents[item]:
                    waiting[later].discard(item)
                    if not waiting[later]:
                        ready.append(later)
            else:
                outcomes.failed[item] = info["failed"]
                bar.write(f"  FAILED  {info['failed']}", file=sys.stdout)
                for later in sorted(after[item] - outcomes.skipped.keys(), key=list(items).index):
                    outcomes.skipped[later] = item
                    bar.update()
            bar.update()
            start_ready()
    return outcomes


def start_cluster(
    args: argparse.Namespace, settings: JobSettings | None, root: Path
) -> tuple[Any, GpuDeal, int]:
    """Local worker processes, or batch jobs kept at the size that gives ``args.workers`` workers (rounded up
    to whole jobs); also returns how many workers that is."""
    from distributed import LocalCluster

    if settings is None:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True)
        return cluster, GpuDeal(gpu_ids(args.gpus)), args.workers
    cluster = batch_cluster(args.cluster, settings, root)
    if args.cluster == "slurm":
        check_slurm_job(cluster)
    slots_per_job = job_slots(settings)
    jobs = math.ceil(args.workers / slots_per_job)
    cluster.adapt(
        minimum_jobs=jobs, maximum_jobs=jobs
    )  # a fixed size: a job ended by its walltime is replaced
    try:
        check_submissions(cluster, SUBMIT_COMMANDS[args.cluster], jobs)
    except BaseException:  # the error, or a signal while waiting: no job may stay queued
        cluster.close()
        raise
    return cluster, GpuDeal(None, slots_per_job, settings.gpus_per_job), jobs * slots_per_job


def dashboard(client: Any) -> str:
    if importlib.util.find_spec("bokeh") is None:
        return f"{client.dashboard_link} (its pages need bokeh: pip install 'bokeh>=3.1')"
    return client.dashboard_link


def final_status(root: Path) -> None:
    """DVC's own staleness test closes every run: after a complete run a plain `dvc repro` must have nothing
    to do. What is stale (a stage edited meanwhile) is reported, not run here, on what may be a login node."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise UserError(f"final `dvc status` failed:\n{done.stderr.strip()}")
    stale = json.loads(done.stdout or "{}")
    if stale:
        raise UserError(
            f"final `dvc status`: still stale: {', '.join(stale)} (changed during the run?); "
            "run the command again"
        )
    print("final `dvc status`: nothing stale (a plain `dvc repro` has nothing to do)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=int, default=2, help="workers in all, one stage item each at a time"
    )
    parser.add_argument(
        "--gpus", default="", help="local: comma-separated GPU ids dealt round-robin to the workers, e.g. 0,1"
    )
    parser.add_argument("--cluster", choices=CLUSTERS, default="local", help="where the workers run")
    parser.add_argument(
        "--cluster-config",
        default=DEFAULT_CLUSTER_CONFIG,
        help=f"batch-job settings for --cluster slurm|pbs (default {DEFAULT_CLUSTER_CONFIG})",
    )
    parser.add_argument("--queue", help="batch queue / partition (overrides the config)")
    parser.add_argument("--account", help="account charged for the jobs (overrides the config)")
    parser.add_argument("--walltime", help="per job, HH:MM:SS (overrides the config)")
    parser.add_argument("--memory", help="per job, e.g. 64GiB (overrides the config)")
    parser.add_argument("--gpus-per-job", type=int, help="GPUs of each batch job (overrides the config)")
    parser.add_argument("--log-dir", default=".cache/parallel", help="one log file per stage item")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the items and what each waits for (and the job script, with SLURM's check of it)",
    )


def _repository_root() -> Path:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root())
    except NotDvcRepoError:
        raise UserError(f"{Path.cwd()}: not inside a DVC repository (run from the checkout)") from None


def check_cluster_flags(args: argparse.Namespace) -> None:
    """Flags that belong to the other kind of cluster are refused, never silently ignored (a forgotten
    ``--cluster slurm`` would otherwise run every item on this machine)."""
    if args.cluster == "local":
        given = [f"--{name.replace('_', '-')}" for name in JOB_FLAGS if getattr(args, name) is not None]
        if args.cluster_config != DEFAULT_CLUSTER_CONFIG:
            given.append("--cluster-config")
        if given:
            raise UserError(f"{', '.join(given)}: only for --cluster slurm|pbs (batch jobs)")
        bad = [g for g in gpu_ids(args.gpus) if not GPU_ID.fullmatch(g)]
        if bad:
            raise UserError(
                f"--gpus: expected comma-separated GPU indices or UUIDs (e.g. 0,1), got {args.gpus!r}"
            )
        return
    if args.gpus:
        raise UserError("--gpus: only for --cluster local; batch jobs get their GPUs from gpus_per_job")
    submit = SUBMIT_COMMANDS[args.cluster]
    if not args.dry_run and shutil.which(submit) is None:
        raise UserError(
            f"--cluster {args.cluster}: `{submit}` not found (run on a machine that submits jobs)"
        )


def run(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise UserError(f"--workers: expected an integer >= 1, got {args.workers}")
    check_cluster_flags(args)
    root = _repository_root()
    settings = None
    if args.cluster != "local":
        flags = {name: getattr(args, name) for name in JOB_FLAGS}
        settings = job_settings(args.cluster, root / args.cluster_config, flags)
    items = plan(root)
    print(f"{len(items)} stage item(s) to run", flush=True)
    if args.dry_run:
        for item, upstream in items.items():
            print(f"  {item}" + (f"  (after {', '.join(upstream)})" if upstream else ""))
        if settings is not None:
            with batch_cluster(args.cluster, settings, root) as cluster:
                print(cluster.job_script())
                if args.cluster == "slurm" and shutil.which("sbatch"):
                    check_slurm_job(cluster)
        return
    if items:
        import dask
        from distributed import Client

        log_dir = (root / args.log_dir).resolve()
        log_dir.mkdir(parents=True, exist_ok=True)
        with dask.config.set(dask_settings()):
            cluster, deal, slots = start_cluster(args, settings, root)
            with cluster, Client(cluster) as client:
                print(f"dask dashboard: {dashboard(client)}", flush=True)
                start_forkservers(client)
                with stopping_items(client):
                    outcomes = execute(client, items, root, log_dir, deal, slots)
        print(outcomes.summary(), flush=True)
        if outcomes.failed:
            raise UserError(
                f"{len(outcomes.failed)} stage item(s) failed and {len(outcomes.skipped)} were skipped; "
                "fix the failure and run again: only what is still stale will run"
            )
    final_status(root)

"""`rsckd parallel` on small generated DVC projects whose stages sleep for known times.

Each stage appends its start and end times to ``events.jsonl``, so the tests assert ordering facts (what
started before what ended), never wall-clock thresholds. The whole default DAG through the executor is in
``test_pipeline.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from repo_copy import ROOT, run
from rsckd.errors import UserError
from rsckd.parallel import SUBMIT_COMMANDS, GpuDeal, downstream, downstream_counts, job_settings

STAGE_SCRIPT = """\
import json, os, sys, time
from pathlib import Path

name, seconds = sys.argv[1], float(sys.argv[2])
start = time.time()
Path(name + ".pid").write_text(str(os.getpid()))
listening = os.path.exists(os.environ.get("RSCKD_FORKSERVER", ""))
time.sleep(seconds)
if Path(name + ".broken").exists():
    sys.exit("error: " + name + ": broken on purpose")
Path(name + ".txt").write_text(name + "\\n")
with open("events.jsonl", "a") as events:
    event = {"stage": name, "start": start, "end": time.time(), "listening": listening}
    events.write(json.dumps(event) + "\\n")
"""


def sleep_project(root: Path, stages: dict[str, tuple[float, list[str]]]) -> Path:
    """A DVC project: stage ``name`` sleeps ``seconds``, reads its upstream outputs, writes its own."""
    root.mkdir(parents=True)
    (root / "stage.py").write_text(STAGE_SCRIPT)
    spec = {
        name: {
            "cmd": f"python stage.py {name} {seconds}",
            "deps": ["stage.py", *(f"{up}.txt" for up in upstream)],
            "outs": [f"{name}.txt"],
        }
        for name, (seconds, upstream) in stages.items()
    }
    (root / "dvc.yaml").write_text(json.dumps({"stages": spec}, indent=1))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        run(cmd, root)
    return root


def command_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this one) with this interpreter's bin/ first on PATH, for `rsckd` and `dvc`."""
    env = {**(os.environ if env is None else env)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def batch(kind: str) -> list[str]:
    """The flags of a `rsckd parallel` run on batch jobs of ``kind`` with the repository's cluster config."""
    return ["--cluster", kind, "--cluster-config", str(ROOT / "configs/cluster.yaml")]


def rsckd_parallel(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["rsckd", "parallel", *args],
        cwd=project,
        env=command_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def events(project: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for line in (project / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        runs.setdefault(event["stage"], []).append(event)
    return runs


def summary(stdout: str) -> dict[str, set[str]]:
    """The items of the run's closing summary, by outcome."""
    found: dict[str, set[str]] = {"done": set(), "failed": set(), "skipped": set()}
    for line in stdout.splitlines():
        words = line.split()
        if line.startswith("  ") and len(words) > 1 and words[0] in found:
            found[words[0]].add(words[1])
    return found


def layers(stages: dict[str, tuple[float, list[str]]]) -> dict[str, int]:
    """Longest-path level of each stage: the layer a layer-by-layer runner would put it in."""
    level: dict[str, int] = {}

    def of(name: str) -> int:
        if name not in level:
            level[name] = 1 + max((of(up) for up in stages[name][1]), default=-1)
        return level[name]

    return {name: of(name) for name in stages}


def test_a_stage_starts_when_its_own_upstream_is_done_not_its_layer(tmp_path):
    stages = {
        "slow": (15, []),
        "fast": (1, []),
        "after_fast": (1, ["fast"]),
        "last": (0, ["slow", "after_fast"]),
    }
    project = sleep_project(tmp_path / "p", stages)
    done = rsckd_parallel(project, "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary(done.stdout)["done"] == set(stages)
    runs = {name: only for name, (only,) in events(project).items()}

    # a layered runner starts after_fast only once its whole previous layer (slow included) has ended
    assert layers(stages)["after_fast"] > layers(stages)["slow"]
    assert runs["after_fast"]["start"] < runs["slow"]["end"]
    assert runs["slow"]["start"] < runs["fast"]["end"]  # two workers: the two roots overlap
    assert runs["last"]["start"] > max(runs["slow"]["end"], runs["after_fast"]["end"])
    # the first item on each worker too found its fork server listening: it never imports torch beside it
    assert all(only["listening"] for only in runs.values())
    assert "Running stage" not in run(["dvc", "repro"], project)


def test_a_failed_item_skips_exactly_its_downstream_and_a_rerun_runs_only_what_is_stale(tmp_path):
    stages = {
        "ok_a": (0, []),
        "ok_b": (0, ["ok_a"]),
        "bad": (0, []),
        "after_bad": (0, ["bad"]),
        "after_after_bad": (0, ["after_bad"]),
        "joined": (0, ["ok_a", "bad"]),
    }
    project = sleep_project(tmp_path / "p", stages)
    (project / "bad.broken").touch()
    failed = rsckd_parallel(project, "--workers", "2")
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "1 stage item(s) failed" in failed.stderr
    assert summary(failed.stdout) == {
        "done": {"ok_a", "ok_b"},
        "failed": {"bad"},
        "skipped": {"after_bad", "after_after_bad", "joined"},
    }
    assert "broken on purpose" in (project / ".cache/parallel/bad.log").read_text()
    log = project / ".cache/parallel/bad.log"
    assert f"bad failed (error: bad: broken on purpose; log {log})" in failed.stdout  # why, on screen
    assert "Traceback" not in failed.stdout + failed.stderr  # the stage's own error line says it all
    assert set(events(project)) == {"ok_a", "ok_b"}

    (project / "bad.broken").unlink()
    again = rsckd_parallel(project, "--workers", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary(again.stdout)["done"] == {"bad", "after_bad", "after_after_bad", "joined"}
    assert {name: len(r) for name, r in events(project).items()} == dict.fromkeys(stages, 1)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project)


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory) -> Path:
    return sleep_project(tmp_path_factory.mktemp("tiny") / "p", {"one": (0, [])})


def test_slurm_job_script_holds_the_requested_resources(tiny_project):
    flags = ["--queue", "gpu-long", "--account", "proj42", "--walltime", "02:30:00", "--memory", "48GiB"]
    cluster = batch("slurm")
    done = rsckd_parallel(tiny_project, *cluster, *flags, "--gpus-per-job", "2", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    script = done.stdout
    for line in (
        "#SBATCH -p gpu-long",
        "#SBATCH -A proj42",
        "#SBATCH -t 02:30:00",
        "#SBATCH --mem=48G",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:2",
        f"cd {tiny_project}",
        "--nthreads 1 ",
        "--nworkers 2 ",
    ):
        assert line in script, f"{line!r} not in the job script:\n{script}"
    assert "  one\n" in script  # the dry run also lists the stale items


def test_a_batch_jobs_nanny_leaves_the_item_environment_alone(tiny_project, tmp_path):
    """The job script's DASK_* exports must give the job's nanny no environment of its own to set."""
    cluster = batch("slurm")
    done = rsckd_parallel(tiny_project, *cluster, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    exports = [line for line in done.stdout.splitlines() if line.startswith("export DASK_")]
    probe = (
        "import dask, distributed; from distributed.nanny import _get_env_variables; "
        "print(_get_env_variables('distributed.nanny.pre-spawn-environ'), "
        "dask.config.get('distributed.scheduler.worker-saturation'))"
    )
    script = tmp_path / "job.sh"
    script.write_text("\n".join([*exports, f'{sys.executable} -c "{probe}"']) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    seen = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
    assert seen.stdout.split() == ["{}", "1.0"]


def test_pbs_job_script_asks_for_gpus_in_its_select_statement(tiny_project):
    cluster = batch("pbs")
    done = rsckd_parallel(tiny_project, *cluster, "--queue", "gpuq", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "#PBS -q gpuq" in done.stdout
    assert "#PBS -l select=1:ncpus=8:ngpus=1:mem=" in done.stdout
    assert "#PBS -l walltime=24:00:00" in done.stdout


def cluster_config(tmp_path: Path, **changes) -> Path:
    text = (ROOT / "configs/cluster.yaml").read_text()
    for key, value in changes.items():
        text = text.replace(f"\n  {key}:", f"\n  {key}: {value} #", 1)
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


NO_FLAGS = dict.fromkeys(("queue", "account", "walltime", "memory", "gpus_per_job"))


def test_an_item_runs_with_the_callers_environment_not_the_dask_nannys(tmp_path):
    """The nanny sets MALLOC_TRIM_THRESHOLD_ and OMP_NUM_THREADS in its workers; the item must see the
    caller's values (unset, and 3) as under a plain `dvc repro`."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "record.py").write_text(
        "import json, os\n"
        "keys = ('MALLOC_TRIM_THRESHOLD_', 'OMP_NUM_THREADS')\n"
        "json.dump({k: os.environ.get(k) for k in keys}, open('env.json', 'w'))\n"
    )
    stage = {"cmd": "python record.py", "deps": ["record.py"], "outs": ["env.json"]}
    (project / "dvc.yaml").write_text(json.dumps({"stages": {"env": stage}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        run(cmd, project)
    caller = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"} | {"OMP_NUM_THREADS": "3"}
    done = rsckd_parallel(project, "--workers", "1", env=caller)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((project / "env.json").read_text()) == {
        "MALLOC_TRIM_THRESHOLD_": None,
        "OMP_NUM_THREADS": "3",
    }


@pytest.mark.parametrize(
    "changes, flags, message",
    [
        ({"walltime": "2h"}, {}, "cluster.yaml: slurm.walltime: expected a walltime HH:MM:SS"),
        ({"gpus_per_job": 0}, {}, "cluster.yaml: slurm.gpus_per_job: expected an integer >= 1"),
        ({"directives": "--exclusive"}, {}, "cluster.yaml: slurm.directives: expected a list"),
        ({}, {"memory": "lots"}, "flags: --memory: expected an amount of memory such as 64GiB, got 'lots'"),
    ],
)
def test_bad_cluster_settings_name_the_key_and_the_expected_value(tmp_path, changes, flags, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")) as err:
        job_settings("slurm", cluster_config(tmp_path, **changes), {**NO_FLAGS, **flags})
    assert "\n" not in str(err.value)


def test_cluster_config_rejects_unknown_and_missing_keys(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("slurm:\n  queue: gpu\n  partition: a100\n")
    with pytest.raises(UserError, match=r"slurm\.partition: unknown key; expected one of queue, account"):
        job_settings("slurm", path, NO_FLAGS)
    with pytest.raises(UserError, match=r"pbs: missing; expected a mapping of queue, account"):
        job_settings("pbs", path, NO_FLAGS)


def test_pbs_refuses_a_slurm_walltime(tmp_path):
    with pytest.raises(UserError, match="--walltime: PBS takes HH:MM:SS, got '1-00:00:00'"):
        job_settings("pbs", cluster_config(tmp_path), {**NO_FLAGS, "walltime": "1-00:00:00"})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--queue", "gpu", "--workers", "16"], "error: --queue: only for --cluster slurm|pbs (batch jobs)"),
        (["--gpus", "cuda:0"], "error: --gpus: expected comma-separated GPU indices or UUIDs (e.g. 0,1)"),
        (["--cluster", "slurm"], "error: --cluster slurm: `sbatch` not found"),
    ],
    ids=["job_flag_without_cluster", "gpu_name", "no_submit_command"],
)
def test_flags_that_would_be_ignored_or_hang_are_refused(tiny_project, args, message):
    """A forgotten --cluster would run everything here; a GPU name CUDA cannot read would train on the CPU;
    without the scheduler's submit command no job would ever start."""
    if shutil.which("sbatch"):
        pytest.skip("this machine submits SLURM jobs")
    done = rsckd_parallel(tiny_project, *args)
    assert done.returncode == 2 and done.stderr.startswith(message), done.stderr


FAKE_SUBMIT = """#!/bin/sh
# sbatch or qsub of a batch system on this machine: refuses the queue "nope" and the first $REFUSE_FIRST jobs,
# runs the others as local process groups, and logs its calls and the scripts it was given.
echo "args: $*" >> "$BATCH_DIR/log"
if [ "$1" = --test-only ]; then script=$2; else script=$1; fi
cat "$script" >> "$BATCH_DIR/log"
if grep -Eq '^#(SBATCH -p|PBS -q) nope' "$script"; then
  echo "$(basename "$0"): error: invalid partition specified: nope" >&2
  exit 1
fi
if [ "$1" = --test-only ]; then
  echo "sbatch: Job 7 to start at 2026-12-03T18:00:00 using 8 processors on nodes n1 in partition gpu" >&2
  exit 0
fi
n=0  # the job's number: mkdir takes each one once, even for jobs submitted at the same time
until mkdir "$BATCH_DIR/job$n" 2> /dev/null; do n=$((n + 1)); done
if [ "$n" -lt "${REFUSE_FIRST:-0}" ]; then
  echo "$(basename "$0"): error: job limit reached" >&2
  exit 1
fi
cp "$script" "$BATCH_DIR/$n.sh"
setsid bash "$BATCH_DIR/$n.sh" > "$BATCH_DIR/$n.out" 2>&1 < /dev/null &
echo $! > "$BATCH_DIR/$n.pid"
if [ -n "$NO_JOB_ID" ]; then echo "submitted"; else echo "Submitted batch job $n"; fi
"""
FAKE_CANCEL = """#!/bin/sh
kill -s TERM -- "-$(cat "$BATCH_DIR/$1.pid")"
"""


@pytest.fixture
def fake_batch(tmp_path: Path) -> Any:
    """An environment whose sbatch/qsub and scancel/qdel are ``FAKE_SUBMIT`` and ``FAKE_CANCEL``, and the
    folder of their log and jobs; jobs still running at the end are stopped."""
    batch_dir = tmp_path / "batch"
    (batch_dir / "bin").mkdir(parents=True)
    for names, script in ((("sbatch", "qsub"), FAKE_SUBMIT), (("scancel", "qdel"), FAKE_CANCEL)):
        for name in names:
            (batch_dir / "bin" / name).write_text(script)
            (batch_dir / "bin" / name).chmod(0o755)
    path = f"{batch_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
    yield {**os.environ, "PATH": path, "BATCH_DIR": str(batch_dir)}, batch_dir
    for pid_file in batch_dir.glob("*.pid"):
        with contextlib.suppress(OSError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize(
    ("queue", "verdict", "warned"),
    [
        ("nope", "sbatch --test-only: sbatch: error: invalid partition specified: nope", True),
        ("gpu", "sbatch --test-only: sbatch: Job 7 to start at 2026-12-03T18:00:00", False),
    ],
    ids=["refused", "accepted"],
)
def test_slurm_checks_the_job_script_without_submitting_it(tiny_project, fake_batch, queue, verdict, warned):
    """A wrong partition would otherwise be a rejected job that Dask only logs while the command waits."""
    env, batch_dir = fake_batch
    cluster = batch("slurm")
    done = rsckd_parallel(tiny_project, *cluster, "--queue", queue, "--dry-run", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert verdict in done.stdout
    assert done.stderr.startswith("warning: sbatch refused the job script") == warned, done.stderr
    log = (batch_dir / "log").read_text()
    calls = [line for line in log.splitlines() if line.startswith("args: ")]
    assert len(calls) == 1 and calls[0].startswith("args: --test-only ")
    assert f"#SBATCH -p {queue}" in log


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_a_batch_system_that_refuses_every_job_stops_the_command(tiny_project, fake_batch, kind):
    """Otherwise no worker ever joins and the command waits for ever, under a traceback on Dask's loop."""
    env, batch_dir = fake_batch
    done = rsckd_parallel(tiny_project, *batch(kind), "--queue", "nope", "--workers", "2", env=env)
    submit = SUBMIT_COMMANDS[kind]
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    refusals = [
        line for line in done.stderr.splitlines() if line.startswith(f"warning: {submit} refused job")
    ]
    assert len(refusals) == 2 and all(
        r.endswith("error: invalid partition specified: nope") for r in refusals
    )
    assert done.stderr.splitlines()[-1].startswith(f"error: {submit} refused all 2 job(s) (above)")


@pytest.mark.parametrize(
    ("setting", "warning", "warnings"),
    [
        ("REFUSE_FIRST", r"warning: qsub refused job PBSCluster-\d: qsub: error: job limit reached", 1),
        ("NO_JOB_ID", r"warning: job PBSCluster-\d cannot be cancelled: Could not parse job id .*", 2),
    ],
    ids=["one refused", "no job id"],
)
def test_items_run_on_the_jobs_the_batch_system_accepts(tmp_path, fake_batch, setting, warning, warnings):
    """A refused job, or an answer without a job id, is one warning; the run goes on with the jobs that
    started (here local process groups running the job scripts, as compute nodes would), which are gone
    once it ends."""
    env, batch_dir = fake_batch
    project = sleep_project(tmp_path / "p", {"first": (1, []), "second": (1, ["first"])})
    done = rsckd_parallel(project, *batch("pbs"), "--workers", "2", env={**env, setting: "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == warnings and all(re.fullmatch(warning, line) for line in warned), done.stderr
    assert "summary: 2 done, 0 failed, 0 skipped" in done.stdout
    assert (project / "second.txt").exists()
    job = (batch_dir / "1.sh").read_text()  # an accepted job ran the checkout's worker
    assert f"cd {project}" in job and "distributed.cli.dask_worker" in job
    deadline = time.monotonic() + 60
    for pid_file in batch_dir.glob("*.pid"):
        while psutil.pid_exists(int(pid_file.read_text())):
            assert time.monotonic() < deadline, f"job {pid_file.stem} still runs after the run"
            time.sleep(0.5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["kill", "kill -9"])
@pytest.mark.parametrize("cluster", [[], batch("pbs")], ids=["local", "batch job"])
def test_a_kill_of_the_command_interrupts_the_running_items(tmp_path, fake_batch, cluster, sig):
    """A kill reaches only the `rsckd parallel` process; the stage it was running must stop too, unfinished,
    rather than run on without anyone waiting for it. A SIGTERM ends the command with one error; after a
    SIGKILL local workers exit with it, a batch job's worker once it has lost the scheduler, and their fork
    servers interrupt what they ran."""
    project = sleep_project(tmp_path / "p", {"long": (300, [])})
    pid_file = project / "long.pid"
    with subprocess.Popen(
        ["rsckd", "parallel", "--workers", "1", *cluster],
        cwd=project,
        env=command_env(fake_batch[0]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        try:
            deadline = time.monotonic() + 300
            while not (pid_file.exists() and pid_file.read_text()):  # once the worker and fork server are up
                assert command.poll() is None, command.stderr.read()
                assert time.monotonic() < deadline, "the stage did not start"
                time.sleep(0.5)
            stage = psutil.Process(int(pid_file.read_text()))
            command.send_signal(sig)
            err = command.communicate(timeout=120)[1]
        finally:
            command.kill()
    try:
        stage.wait(timeout=120)  # psutil.TimeoutExpired if the stage runs on (a batch job's worker: 30-40 s)
    finally:
        with contextlib.suppress(psutil.Error):
            stage.kill()
    assert not (project / "long.txt").exists()
    if sig == signal.SIGTERM:
        assert command.returncode == 2, err
        assert "error: stopped by SIGTERM: " in err and "running items interrupted" in err, err


def test_bad_worker_count_is_one_clear_error(tiny_project):
    done = rsckd_parallel(tiny_project, "--workers", "0")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --workers: expected an integer >= 1, got 0"


def test_items_that_unblock_more_of_the_graph_come_first():
    items = {
        "teacher": [],
        "ensemble": ["teacher"],
        "student": ["ensemble"],
        "table2": [],
        "report": ["table2"],
    }
    assert downstream_counts(downstream(items)) == {
        "teacher": 2,
        "ensemble": 1,
        "student": 0,
        "table2": 1,
        "report": 0,
    }


def test_gpus_are_dealt_round_robin_over_the_workers_of_a_machine_or_a_job(monkeypatch):
    local = GpuDeal(("0", "1"))
    assert [local.gpu(worker) for worker in range(5)] == ["0", "1", "0", "1", "0"]
    assert GpuDeal(()).gpu(3) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what the batch system gave the job
    two_per_job = GpuDeal(None, slots_per_job=2)
    assert [two_per_job.gpu(f"SLURMCluster-7-{i}") for i in range(2)] == ["3", "5"]
    assert GpuDeal(None, slots_per_job=1).gpu("SLURMCluster-7") == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # a job confined to its GPUs, the variable unset
    two_gpus = GpuDeal(None, slots_per_job=4, gpus_per_job=2)
    assert [two_gpus.gpu(f"PBSCluster-7-{i}") for i in range(4)] == ["0", "1", "0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a job given no GPU
    assert two_gpus.gpu("PBSCluster-7-0") is None

"""What `rsckd parallel` buys: wall time of the default DAG with serial `dvc repro` and with the executor on
1 and 2 local workers, each from a fresh clone of this repository's HEAD (nothing cached: every stage runs);
and, on a GPU machine, the aggregate BTS teacher training throughput of 1, 2, 4, 8 workers sharing one GPU
(each a `benchmarks/train_throughput.py --size full` process; the sum of their training samples/s, each timed
over its own steps while the others run: the processes start together, but their timed windows overlap only
where their start-up and evaluation do not, so the sum is an upper bound on what the GPU sustains).

    python benchmarks/parallel_dag.py                        # CPU: serial vs 1 and 2 workers (minutes)
    python benchmarks/parallel_dag.py --dry-run              # the commands, without running them
    python benchmarks/parallel_dag.py --gpu-slots 1 2 4 8    # GPU: aggregate samples/s per number of workers
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "HF_HUB_OFFLINE": "1",
}
DAG_RUNS = {
    "serial dvc repro": ["dvc", "repro"],
    "rsckd parallel --workers 1": ["rsckd", "parallel", "--workers", "1"],
    "rsckd parallel --workers 2": ["rsckd", "parallel", "--workers", "2"],
}
GPU_COMMAND = "python benchmarks/parallel_dag.py --gpu-slots 1 2 4 8 --gpu 0"
# the eager, batch-8, hard-target row of train_throughput.py's table: mode, batch, target, train samples/s
TRAIN_RATE = re.compile(r"^off\s+8\s+hard\s+([\d.]+)", re.MULTILINE)


def timed_dag_run(cmd: list[str], work: Path) -> float:
    """Wall seconds of ``cmd`` in a fresh clone, running the clone's own code (not this checkout's editable
    install); a failure shows the end of its output."""
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    paths = [str(clone / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**ENV, "PYTHONPATH": os.pathsep.join(paths)}
    log = work / "run.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(cmd, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        sys.exit(f"{' '.join(cmd)} failed (exit {code}) in a fresh clone, ending:\n" + "\n".join(tail))
    return time.perf_counter() - start


def aggregate_train_rate(slots: int, gpu: str, steps: int) -> float:
    """Sum of the training samples/s of ``slots`` throughput processes started together on one GPU."""
    cmd = [sys.executable, str(ROOT / "benchmarks/train_throughput.py"), "--size", "full", "--device", "cuda"]
    cmd += ["--modes", "off", "--batch-sizes", "8", "--steps", str(steps)]
    env = {**ENV, "CUDA_VISIBLE_DEVICES": gpu}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(slots)]
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        sys.exit(f"a throughput process failed:\n{outputs}")
    rates = [TRAIN_RATE.search(out) for out in outputs]
    if not all(rates):
        sys.exit(f"no 'off 8 hard' row in the throughput output:\n{outputs[0]}")
    return sum(float(rate[1]) for rate in rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gpu-slots", type=int, nargs="+", help="measure GPU throughput for these slot counts"
    )
    parser.add_argument("--gpu", default="0", help="the GPU the slots share")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per slot")
    parser.add_argument("--dry-run", action="store_true", help="print what would run")
    args = parser.parse_args()

    if args.gpu_slots:
        print(f"{'slots':>5} {'samples/s (all slots)':>22} {'per slot':>9} {'vs 1 slot':>9}")
        base = None
        for slots in args.gpu_slots:
            if args.dry_run:
                print(
                    f"{slots:>5}  {slots} x train_throughput.py --size full --device cuda on GPU {args.gpu}"
                )
                continue
            rate = aggregate_train_rate(slots, args.gpu, args.steps)
            base = base or rate
            print(f"{slots:>5} {rate:>22.1f} {rate / slots:>9.1f} {rate / base:>8.2f}x", flush=True)
        return

    print(f"{'default DAG from a fresh clone':<30} {'wall s':>8}")
    for name, cmd in DAG_RUNS.items():
        if args.dry_run:
            print(f"{name:<30} {'-':>8}  (git clone {ROOT}; {' '.join(cmd)})")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{name:<30} {timed_dag_run(cmd, Path(tmp)):>8.1f}", flush=True)
    print(
        f"\nGPU (on a GPU machine): aggregate teacher samples/s, 1/2/4/8 workers on one GPU:\n  {GPU_COMMAND}"
    )


if __name__ == "__main__":
    main()

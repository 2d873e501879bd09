"""`rsckd parallel`: run the stale items of each DAG layer in parallel slots, on DVC's own machinery.

Not a scheduler of its own: DVC decides what is stale (`dvc status`), each item runs as
`dvc --wait-for-lock repro -s <stage>` (so dvc.lock, the cache and the run-cache are kept by DVC), and a final
plain `dvc repro` must find nothing left to do. Layers are the longest-path levels of `dvc dag`, so every item
of a layer has all its upstream stages finished before it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rsckd.errors import UserError

EDGE = re.compile(r'^"(?P<src>[^"]+)" -> "(?P<dst>[^"]+)";$')
NODE = re.compile(r'^"(?P<name>[^"]+)";$')


def _dvc(*args: str) -> str:
    done = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"`dvc {' '.join(args)}` failed:\n{done.stderr.strip()}")
    return done.stdout


def dag_layers(dot: str) -> list[list[str]]:
    """Group stages by their longest distance from a root (parses `dvc dag --dot`; edges point downstream)."""
    nodes, parents = [], {}
    for line in dot.splitlines():
        line = line.strip()
        if m := EDGE.match(line):
            parents.setdefault(m["dst"], []).append(m["src"])
        elif m := NODE.match(line):
            nodes.append(m["name"])
    depth: dict[str, int] = {}

    def level(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((level(p) for p in parents.get(node, [])), default=-1)
        return depth[node]

    layers: dict[int, list[str]] = {}
    for node in nodes:
        layers.setdefault(level(node), []).append(node)
    return [layers[i] for i in sorted(layers)]


def slot_envs(slots: int, gpus: list[str]) -> list[dict[str, str]]:
    """One environment per slot; with GPUs, slots are dealt round-robin (several slots may share a GPU)."""
    envs = []
    for i in range(slots):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        envs.append(env)
    return envs


def run_layer(stages: list[str], envs: list[dict[str, str]], log_dir: Path) -> list[str]:
    """Run every stage through a pool of slots; return the stages that failed."""
    free: queue.Queue[dict[str, str]] = queue.Queue()
    for env in envs:
        free.put(env)

    def one(stage: str) -> str | None:
        env = free.get()
        try:
            log = log_dir / f"{stage.replace('/', '_')}.log"
            with open(log, "w") as out:
                code = subprocess.call(
                    ["dvc", "--wait-for-lock", "repro", "-s", stage],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            gpu = env.get("CUDA_VISIBLE_DEVICES", "-")
            print(f"  {'ok  ' if code == 0 else 'FAIL'} {stage} (gpu {gpu}, log {log})", flush=True)
            return None if code == 0 else stage
        finally:
            free.put(env)

    with ThreadPoolExecutor(max_workers=len(envs)) as pool:
        return [s for s in pool.map(one, stages) if s is not None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slots", type=int, default=2, help="items run at once (in total)")
    parser.add_argument("--gpus", default="", help="comma-separated GPU ids dealt to the slots, e.g. 0,1")
    parser.add_argument("--log-dir", default=".cache/parallel", help="one log file per stage item")
    parser.add_argument("--dry-run", action="store_true", help="print the stale items per layer and stop")


def run(args: argparse.Namespace) -> None:
    if args.slots < 1:
        raise UserError(f"--slots: expected an integer >= 1, got {args.slots}")
    envs = slot_envs(args.slots, [g for g in args.gpus.split(",") if g])
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    for number, layer in enumerate(dag_layers(_dvc("dag", "--dot")), start=1):
        stale = [s for s in layer if s in json.loads(_dvc("status", "--json") or "{}")]
        print(f"layer {number}: {len(stale)} of {len(layer)} stale", flush=True)
        if args.dry_run:
            print("".join(f"  {s}\n" for s in stale), end="")
            continue
        failed = run_layer(stale, envs, log_dir)
        if failed:
            raise UserError(f"{len(failed)} stage item(s) failed: {', '.join(failed)} (logs in {log_dir}/)")
    if not args.dry_run:
        final = subprocess.run(["dvc", "repro"], capture_output=True, text=True)
        sys.stdout.write(final.stdout)
        if final.returncode != 0:
            raise UserError(f"final `dvc repro` failed:\n{final.stderr.strip()}")

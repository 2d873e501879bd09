"""Time `rsckd prepare` + `rsckd features` (clap and fbank) on a full-ICBHI-size synthetic corpus.

Targets: <= 3 minutes and <= 4 GB peak RSS in all on 2 CPU cores, with the paper's feature settings (CLAP
log-mel at 48 kHz / 64 mels / hop 480; kaldi fbank at 16 kHz / 128 bins / 10 ms shift). Each step runs as its
own process, so its wall time and peak RSS (from wait4) are what a DVC stage would see.

    python benchmarks/prepare_features.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ["--n-patients", "126", "--recordings-per-patient", "7.3", "--cycles-per-recording", "7.5"]
PAPER_FEATURES = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())["features"]  # the paper profile
TARGET_S, TARGET_GB = 180.0, 4.0


def step(name: str, *args: str) -> tuple[float, float, float]:
    """Run `rsckd ARGS` as a child; return (wall seconds, CPU seconds, peak RSS in GB) of that child alone.

    CPU seconds (user + system, all threads) show the work done even when a shared machine slows the wall
    clock."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "rsckd", *args], cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{name} failed (exit {os.waitstatus_to_exitcode(status)})")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024**2  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", default=None, help="work folder to keep (default: a temporary one, removed)"
    )
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="rsckd-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"]["root"] = str(work / "synthetic")
        params["features"] = PAPER_FEATURES
        params["cycles"] = {"desired_length_s": 8.0, "pad": "repeat"}
        params_path = work / "params.yaml"
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        p = ["--params", str(params_path)]
        syn_s, _, syn_gb = step("synthesize", "synthesize", *p, "--out", str(work / "synthetic"), *CORPUS)
        print(f"synthesize (untimed setup): {syn_s:.1f} s, peak RSS {syn_gb:.2f} GB", flush=True)
        table = str(work / "prepared" / "cycles.csv")
        timed = {
            "prepare": step("prepare", "prepare", *p, "--out", str(work / "prepared")),
            "features clap": step(
                "clap", "features", "--kind", "clap", *p, "--cycles", table, "--out", str(work / "clap")
            ),
            "features fbank": step(
                "fbank", "features", "--kind", "fbank", *p, "--cycles", table, "--out", str(work / "fbank")
            ),
        }
        print(f"\n{'step':<16}{'wall s':>10}{'CPU s':>10}{'peak RSS GB':>14}")
        for name, (seconds, cpu, gb) in timed.items():
            print(f"{name:<16}{seconds:>10.1f}{cpu:>10.1f}{gb:>14.2f}")
        total_s, total_cpu = (sum(t[i] for t in timed.values()) for i in (0, 1))
        peak_gb = max(gb for _, _, gb in timed.values())
        print(f"{'total':<16}{total_s:>10.1f}{total_cpu:>10.1f}{peak_gb:>14.2f}")
        print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        n = len((work / "prepared" / "cycles.csv").read_text().splitlines()) - 1
        sizes = ", ".join(
            f"{k} {(work / k / 'features.npy').stat().st_size / 1024**3:.2f} GB" for k in ("clap", "fbank")
        )
        print(f"\n{n} cycles; features.npy: {sizes}; {os.cpu_count()} CPU cores")
        verdict = {True: "met", False: "MISSED"}
        time_ok, memory_ok = verdict[total_s <= TARGET_S], verdict[peak_gb <= TARGET_GB]
        print(f"target <= {TARGET_S:.0f} s: {time_ok}; target <= {TARGET_GB:.0f} GB peak RSS: {memory_ok}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

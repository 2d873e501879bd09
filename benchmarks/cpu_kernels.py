"""What ``runtime.cpu_kernels: portable`` costs: one default-profile training run per architecture, timed with
the CPU's native kernels and with the portable ones (run after ``make repro``: it reads the default profile's
features). Prints seconds per run, the ratio, and whether the two runs' metrics agree.

    python benchmarks/cpu_kernels.py [--archs bts cnn6 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def timed_run(arch: str, kernels: str, work: Path) -> tuple[float, dict]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runtime"]["cpu_kernels"] = kernels
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    out = work / f"{arch}-{kernels}"
    cmd = [
        "rsckd",
        "train",
        "--arch",
        arch,
        "--target",
        "hard",
        "--seed",
        "1",
        "--params",
        str(work / "params.yaml"),
    ]
    cmd += ["--out", str(out), "--metrics", str(out) + ".json"]
    env = {**os.environ, "RSCKD_RESUME_DIR": str(work / "resume" / f"{arch}-{kernels}")}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return time.perf_counter() - start, json.loads(Path(str(out) + ".json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archs", nargs="+", default=["bts", "audio_clap", "ast", "cnn6", "resnet18", "efficientnet_b0"]
    )
    args = parser.parse_args()
    print(f"{'arch':<16} {'native s':>9} {'portable s':>11} {'ratio':>6}  same Score")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            native, m_native = timed_run(arch, "native", Path(tmp))
            portable, m_portable = timed_run(arch, "portable", Path(tmp))
            same = m_native["last"]["score"] == m_portable["last"]["score"]
            print(
                f"{arch:<16} {native:>9.1f} {portable:>11.1f} {portable / native:>6.2f}  {same}", flush=True
            )


if __name__ == "__main__":
    sys.exit(main())

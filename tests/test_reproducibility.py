"""Other CPUs, imitated on this one: the committed dvc.lock must come out whatever SIMD the CPU offers.

The committed outputs were made on one x86-64 machine; users and CI run on others. Each case below reruns
the data stages in a fresh copy of the repository, with the CPU libraries told to act as a CPU with fewer
vector extensions (numpy's run-time dispatch capped at x86-64-v2 or v3, ATen's kernels at plain or AVX2,
MKL's and oneDNN's code branches, glibc's libm without FMA or AVX), with numpy's BLAS on 2 or 1 threads
(``OMP_NUM_THREADS``; every torch stage takes its own from ``runtime.threads``, the committed 1 but for the
feature stages of the v3 case, which runs no training, on 2), and asserts that every
stage's entry in dvc.lock (hence every output byte) is the committed one, but for the thread count it
records. The most restricted case (v2) also reruns two training runs (a BTS baseline and a CNN6). The data
stages must not depend on any of these; the training stages are pinned by ``runtime.cpu_kernels:
portable``, which overrides the ATen / MKL / oneDNN variables set here, so the cases differ for them only in
numpy's and glibc's masks, which v2 sets widest. OpenBLAS's core type is left as the environment sets it
(some machines set it to avoid wrong results).
"""

from __future__ import annotations

import pytest

from repo_copy import ROOT, edit_params, lock_stages, run, tracked_copy

pytestmark = pytest.mark.slow

DATA_STAGES = ("synthesize", "prepare", "features@clap", "features@fbank")
TRAINING_STAGES = ("baseline@1", "arch_hard@cnn6-1")
NUMPY_V2 = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"  # numpy 2.4's dispatch targets above its x86-64-v2 baseline
CPUS = {  # this CPU with its own thread count is the default DAG of test_pipeline.py
    "x86-64-v2": {
        "NPY_DISABLE_CPU_FEATURES": NUMPY_V2,
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F,-AVX",
        "OMP_NUM_THREADS": "2",  # numpy's BLAS; torch's threads are runtime.threads
    },
    "x86-64-v3-2-feature-threads": {
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F",
        "OMP_NUM_THREADS": "1",
    },
}


def without_thread_count(entry: dict) -> dict:
    """A dvc.lock entry without the ``runtime.threads`` the feature stages record (it sets their speed)."""
    params = entry.get("params", {})
    return {
        **entry,
        "params": {f: {k: v for k, v in p.items() if k != "runtime.threads"} for f, p in params.items()},
    }


def on_two_threads(params: dict) -> None:
    assert params["runtime"]["threads"] != 2, "the committed thread count is 2: try another here"
    params["runtime"]["threads"] = 2


@pytest.mark.parametrize("cpu", list(CPUS))
def test_imitated_cpu_reproduces_the_committed_lock(tmp_path, cpu):
    copy = tracked_copy(tmp_path / "repo")
    training = cpu.startswith("x86-64-v2")
    stages = DATA_STAGES + (TRAINING_STAGES if training else ())
    if not training:  # the feature stages on 2 threads, the committed ones on 1
        edit_params(copy, on_two_threads)
    run(["dvc", "repro", "--force", "--no-run-cache", *stages[-2:]], copy, env=CPUS[cpu])  # + their upstream
    committed, got = lock_stages(ROOT), lock_stages(copy)
    differing = [s for s in stages if without_thread_count(got[s]) != without_thread_count(committed[s])]
    assert not differing, f"on an imitated {cpu} CPU these stages gave other bytes: {differing}"

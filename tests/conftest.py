"""Test-wide settings: never reach a model hub, and keep CPU results independent of the machine's cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # compile in-process: no worker pool on 2 cores

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """One torch thread for the test: two threads wait on each other when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- fault-injection tally (tests/test_faults.py): one closing line in the normal terminal summary ---
FAULT_STATS_KEY = "_rsckd_fault_stats"


def pytest_configure(config):
    setattr(config, FAULT_STATS_KEY, {"bad_inputs": 0, "faults": 0, "outputs_lost": 0})


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    stats = getattr(config, FAULT_STATS_KEY, None)
    if stats and (stats["bad_inputs"] or stats["faults"] or stats["outputs_lost"]):
        terminalreporter.write_line(
            f"fault-injection: {stats['bad_inputs']} bad inputs tried, {stats['faults']} faults survived, "
            f"outputs lost = {stats['outputs_lost']}"
        )

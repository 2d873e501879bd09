"""The DAG follows whatever architectures the params name, and re-runs exactly what an edit changes.

One copy of the repository runs the whole pipeline with a CNN6 teacher, AST students and a Table 2 of CNN6 and
BTS (one epoch each, fewer seeds), then edits params and asks DVC what is stale. These runs take minutes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from repo_copy import edit_params, run, tracked_copy

pytestmark = pytest.mark.slow
SMALL = {
    "teacher": {"arch": "cnn6", "seeds": [1, 2, 3], "epochs": 1},
    "distill": {"arch": "ast", "ks": [1, 3], "methods": ["mean"], "seeds": [1, 2]},
    "arch_table": {"archs": ["cnn6", "bts"], "methods": ["mean"], "k": 3, "seeds": [1]},
    "ablation": {"k": 3},
    "second_gen": {"k": 3, "method": "mean"},
}


def stale(repo: Path) -> set[str]:
    return set(json.loads(run(["dvc", "status", "--json"], repo)))


def ran(repro_output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", repro_output))


@pytest.fixture(scope="module")
def other_archs(tmp_path_factory) -> Path:
    repo = tracked_copy(tmp_path_factory.mktemp("other_archs") / "repo")

    def small(params):
        for block, values in SMALL.items():
            params[block].update(values)
        for protocol in params["train"].values():
            protocol["epochs"] = 1

    edit_params(repo, small)
    out = run(["rsckd", "parallel", "--workers", "2"], repo)
    assert ", 0 failed, 0 skipped" in out
    return repo


def test_any_teacher_and_student_architecture_runs_end_to_end(other_archs):
    assert stale(other_archs) == set()
    lock = yaml.safe_load((other_archs / "dvc.lock").read_text())["stages"]
    assert "--arch cnn6" in lock["teacher@1"]["cmd"] and "--arch ast" in lock["student@3-mean-1"]["cmd"]
    assert set(lock["teacher@1"]["params"]["params.yaml"]) >= {"models.cnn6", "train.cnn6"}
    data_deps = {d["path"] for d in lock["teacher@1"]["deps"] if d["path"].startswith("data/")}
    assert data_deps == {"data/prepared/cycles.csv", "data/arch_inputs/cnn6.json"}
    students = json.loads((other_archs / "metrics/students/k3-mean-s1.json").read_text())
    assert (students["arch"], students["k"]) == ("ast", 3)
    assert (other_archs / "reports/tables.md").is_file()


def test_editing_one_architecture_marks_only_its_stages_stale(other_archs):
    """train.cnn6 reaches the CNN6 teachers and the CNN6 Table 2 rows, and nothing else."""
    original = (other_archs / "params.yaml").read_text()
    edit_params(other_archs, lambda p: p["train"]["cnn6"].update(lr=2e-3))
    assert stale(other_archs) == {
        "teacher@1",
        "teacher@2",
        "teacher@3",
        "arch_hard@cnn6-1",
        "arch_soft@cnn6-mean-1",
    }
    (other_archs / "params.yaml").write_text(original)
    assert stale(other_archs) == set()


def test_new_features_reach_only_the_architectures_that_read_them(other_archs):
    """Only BTS (a Table 2 row here) reads the CLAP features: their change re-runs its rows and the report."""
    original = (other_archs / "params.yaml").read_text()
    edit_params(other_archs, lambda p: p["features"]["clap"].update(n_fft=512))
    assert ran(run(["dvc", "repro", "arch_inputs"], other_archs)) == {"features@clap", "arch_inputs"}
    assert stale(other_archs) == {"arch_hard@bts-1", "arch_soft@bts-mean-1", "report"}
    (other_archs / "params.yaml").write_text(original)
    run(["dvc", "repro", "arch_inputs"], other_archs)  # the old features come back from the run-cache
    assert stale(other_archs) == set()


def test_a_new_k_re_runs_only_the_ensemble_its_students_second_gen_and_report(other_archs):
    ablation_files = sorted((other_archs / "data/soft_labels/ablation").iterdir())
    before = {p.name: p.read_bytes() for p in ablation_files}
    edit_params(other_archs, lambda p: p["distill"].update(ks=[1, 2, 3]))
    assert ran(run(["dvc", "repro", "ensemble"], other_archs)) == {"ensemble"}
    assert {p.name: p.read_bytes() for p in ablation_files} == before
    assert stale(other_archs) == {"student@2-mean-1", "student@2-mean-2", "report"}
    assert ran(run(["dvc", "repro"], other_archs)) == {
        "student@2-mean-1",
        "student@2-mean-2",
        "second_gen",
        "report",
    }

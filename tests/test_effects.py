"""The committed default outputs show the paper's robust effects, and the checks notice when one is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from paper_effects import broken_distillation, broken_effects
from repo_copy import ROOT


def test_committed_default_outputs_show_the_papers_effects():
    assert broken_effects(ROOT) == []


def copied_metrics(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "metrics", tmp_path / "metrics")
    return tmp_path


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_an_ensemble_of_one_teacher_breaks_the_ensemble_effects(tmp_path):
    root = copied_metrics(tmp_path)

    def first_teacher_only(ensemble):
        for k in ensemble["k"]:
            ensemble["k"][k] = ensemble["k"]["1"]
        ensemble["individual"]["mean"]["loss"] = ensemble["k"]["1"]["loss"] - 0.01

    edit_json(root / "metrics" / "ensemble.json", first_teacher_only)
    broken = broken_effects(root)
    assert [b.split(":")[0] for b in broken] == [
        "ensemble of all teachers below the mean teacher's test loss",
        "k-curve test loss falls from k = 1 to k = 5",
    ]


def test_a_teacher_at_chance_is_reported_by_name(tmp_path):
    root = copied_metrics(tmp_path)
    path = root / "metrics" / "teachers" / "s3.json"
    edit_json(path, lambda run: run[run["selected"]].update(score=50.0))
    assert broken_effects(root) == ["teachers above chance (Score > 50): {'s3': 50.0}"]


def test_soft_label_students_above_the_baseline_loss_are_reported(tmp_path):
    root = copied_metrics(tmp_path)
    runs = [json.loads(p.read_text()) for p in (root / "metrics" / "baseline").glob("s*.json")]
    worst = max(run[run["selected"]]["loss"] for run in runs)
    for path in (root / "metrics" / "students").glob("k5-mean-s*.json"):
        edit_json(path, lambda run: run[run["selected"]].update(loss=worst))
    assert [b.split(":")[0] for b in broken_effects(root)] == [
        "k = 5 soft-label students below the baseline's test loss"
    ]


def write_runs(root: Path, group: str, logits: dict[str, np.ndarray]) -> None:
    for name, z in logits.items():
        (root / "models" / group / name).mkdir(parents=True)
        np.save(root / "models" / group / name / "logits_test.npy", z.astype(np.float32))


def test_students_on_one_hot_labels_break_the_distillation_effect(tmp_path):
    rng = np.random.default_rng(0)
    teachers = {f"s{s}": rng.normal(size=(200, 4)) for s in (1, 2, 3)}
    ensemble = np.mean(list(teachers.values()), axis=0)
    baseline = {f"s{s}": ensemble + rng.normal(scale=0.5, size=(200, 4)) for s in (1, 2)}
    soft = {f"k3-mean-s{s}": ensemble + rng.normal(scale=0.1, size=(200, 4)) for s in (1, 2)}
    one_hot = {f"k3-mean-s{s}": 8.0 * np.eye(4)[ensemble.argmax(axis=1)] for s in (1, 2)}
    found = {}
    for name, students in (("soft", soft), ("one_hot", one_hot)):
        root = tmp_path / name
        write_runs(root, "teachers", teachers)
        write_runs(root, "baseline", baseline)
        write_runs(root, "students", {"k1-mean-s1": ensemble, **students})
        found[name] = [b.split(":")[0] for b in broken_distillation(root)]
    assert found == {
        "soft": [],
        "one_hot": ["k = 3 soft-label students nearer the ensemble than the baseline (KL)"],
    }

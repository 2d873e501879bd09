"""The committed default outputs show the paper's robust effects, and the checks notice when one is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from paper_effects import broken_distillation, broken_effects, mean_entropy
from repo_copy import ROOT
from rsckd.training.targets import softmax


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


def write_runs(root: Path, group: str, logits: dict[str, np.ndarray], entropy: float | None = None) -> None:
    for name, z in logits.items():
        (root / "models" / group / name).mkdir(parents=True)
        np.save(root / "models" / group / name / "logits_test.npy", z.astype(np.float32))
        (root / "metrics" / group).mkdir(parents=True, exist_ok=True)
        (root / "metrics" / group / f"{name}.json").write_text(json.dumps({"target_entropy": entropy}))


def write_soft_labels(root: Path, k: int, rng: np.random.Generator) -> float:
    """A cycle table of 60 train-split rows (12 of them validation) and 200 test rows, the k-teacher file of
    the train split, and the mean entropy of its mean-teacher targets on the 48 rows trained on."""
    (root / "data" / "prepared").mkdir(parents=True)
    (root / "data" / "soft_labels").mkdir(parents=True)
    split = ["train"] * 60 + ["test"] * 200
    subset = ["train"] * 48 + ["val"] * 12 + ["test"] * 200
    pd.DataFrame({"split": split, "subset": subset}).to_csv(root / "data/prepared/cycles.csv", index=False)
    logits = rng.normal(size=(k, 60, 4)).astype(np.float32)
    np.save(root / "data" / "soft_labels" / f"k{k}.npy", logits)
    return mean_entropy(softmax(logits.mean(axis=0))[:48])


def test_students_on_one_hot_labels_break_the_distillation_checks(tmp_path):
    """Students of one-hot targets are caught by their recorded target entropy, whether their predictions
    wander from the ensemble (one_hot_far) or stay nearer it than the baseline's, as in the default
    (one_hot_near, README 'What the default shows')."""
    rng = np.random.default_rng(0)
    teachers = {f"s{s}": rng.normal(size=(200, 4)) for s in (1, 2, 3)}
    ensemble = np.mean(list(teachers.values()), axis=0)
    baseline = {f"s{s}": ensemble + rng.normal(scale=0.5, size=(200, 4)) for s in (1, 2)}
    near = {f"k3-mean-s{s}": ensemble + rng.normal(scale=0.1, size=(200, 4)) for s in (1, 2)}
    far = {f"k3-mean-s{s}": 8.0 * np.eye(4)[ensemble.argmax(axis=1)] for s in (1, 2)}
    found = {}
    for case, students, one_hot in (
        ("soft", near, False),
        ("one_hot_near", near, True),
        ("one_hot_far", far, True),
    ):
        root = tmp_path / case
        entropy = write_soft_labels(root, 3, np.random.default_rng(1))
        write_runs(root, "teachers", teachers)
        write_runs(root, "baseline", baseline, entropy=0.0)
        write_runs(root, "students", {"k1-mean-s1": ensemble}, entropy=0.5)
        write_runs(root, "students", students, entropy=0.0 if one_hot else entropy)
        found[case] = [b.split(" (")[0] for b in broken_distillation(root)]
    entropy_check = "k = 3 students trained on the softmax of the mean teacher logits"
    assert found == {
        "soft": [],
        "one_hot_near": [entropy_check],
        "one_hot_far": ["k = 3 soft-label students nearer the ensemble than the baseline", entropy_check],
    }

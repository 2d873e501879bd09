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


def write_students(root: Path, entropies: dict[str, float]) -> None:
    (root / "metrics" / "students").mkdir(parents=True)
    for name, entropy in entropies.items():
        (root / "metrics" / "students" / f"{name}.json").write_text(json.dumps({"target_entropy": entropy}))


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


def test_students_on_one_hot_labels_break_the_distillation_check(tmp_path):
    """The students of the largest k are checked against their own soft-label file (the k = 1 student's
    entropy differs and is not read); one-hot targets record an entropy of 0."""
    found = {}
    for case, one_hot in (("soft", False), ("one_hot", True)):
        root = tmp_path / case
        entropy = write_soft_labels(root, 3, np.random.default_rng(1))
        trained = 0.0 if one_hot else entropy
        write_students(root, {"k1-mean-s1": 0.5, "k3-mean-s1": trained, "k3-mean-s2": trained})
        found[case] = [b.split(" (")[0] for b in broken_distillation(root)]
    assert found == {
        "soft": [],
        "one_hot": ["k = 3 students trained on the softmax of the mean teacher logits"],
    }

"""The committed default outputs show the paper's robust effects, and the check notices when one is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from paper_effects import broken_effects
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

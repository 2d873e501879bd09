"""The paper's robust effects, read from a repository's outputs: what the end-to-end tests assert.

From the committed metrics files (``broken_effects``): every teacher above chance, the ensemble of all
teachers below both the mean teacher's and one teacher's test loss, and the soft-label students of the largest
k (mean teacher) below the k = 0 baseline's mean test loss. From the DVC-cached outputs of a run
(``broken_distillation``): those students predict closer to the ensemble than the baseline does, and the
targets they trained on (the entropy each run records) are the softmax of the mean logits of their soft-label
file. An ensemble of one teacher breaks the ensemble effects; soft labels replaced by the ensemble's one-hot
argmax break the second check only (those students, too, land nearer the ensemble than the class-weighted
baseline, README 'What the default shows').

The effects compare test cross-entropies: on a few hundred test cycles one run's Score moves by points
between seeds, while the loss averages over every cycle. Any classifier that ignores its input scores at most
50 (always "normal": Sp 100, Se 0; any other constant answer: Sp 0, Se <= 100), so a Score above 50 shows
that a teacher reads its input.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from rsckd.training.targets import softmax


def _selected(path: Path) -> dict:
    run = json.loads(path.read_text())
    return run[run["selected"]]


def broken_effects(root: Path) -> list[str]:
    """The effects that do not hold in ``root``'s outputs, each with its numbers (empty: all hold)."""
    metrics = root / "metrics"
    broken = []
    scores = {p.stem: _selected(p)["score"] for p in sorted((metrics / "teachers").glob("s*.json"))}
    below = {name: score for name, score in scores.items() if score <= 50.0}
    if not scores or below:
        broken.append(f"teachers above chance (Score > 50): {below or 'no teachers'}")

    ensemble = json.loads((metrics / "ensemble.json").read_text())
    curve = {int(k): v["loss"] for k, v in ensemble["k"].items()}
    whole, one, mean_teacher = curve[max(curve)], curve[1], ensemble["individual"]["mean"]["loss"]
    if not whole < mean_teacher:
        broken.append(
            f"ensemble of all teachers below the mean teacher's test loss: {whole} vs {mean_teacher}"
        )
    if not whole < one:
        broken.append(f"k-curve test loss falls from k = 1 to k = {max(curve)}: {one} -> {whole}")

    k, students = _largest_k_mean_students(sorted((metrics / "students").glob("k*-mean-s*.json")))
    soft = np.mean([_selected(p)["loss"] for p in students])
    baseline = np.mean([_selected(p)["loss"] for p in sorted((metrics / "baseline").glob("s*.json"))])
    if not soft < baseline:
        broken.append(f"k = {k} soft-label students below the baseline's test loss: {soft} vs {baseline}")
    return broken


def _largest_k_mean_students(paths: list[Path]) -> tuple[int, list[Path]]:
    """The largest k and its runs (metrics files or run directories, named k<k>-mean-s<seed>)."""
    assert paths, "no mean-teacher students found"
    k = max(int(re.match(r"k(\d+)-", p.name).group(1)) for p in paths)
    return k, [p for p in paths if p.name.startswith(f"k{k}-")]


def _test_logits(run_dirs: list[Path]) -> list[np.ndarray]:
    assert run_dirs, "no runs found"
    return [np.load(d / "logits_test.npy") for d in run_dirs]


def _probabilities(logits: np.ndarray) -> np.ndarray:
    return softmax(logits).astype(np.float64)  # the soft-label rule of the training targets


def broken_distillation(root: Path) -> list[str]:
    """Soft-label students (mean teacher, largest k) nearer the teachers' ensemble than the hard-label
    baseline: mean KL(ensemble || run) over the test cycles; the ensemble: softmax of the mean logits."""
    models = root / "models"
    ensemble = _probabilities(np.mean(_test_logits(sorted((models / "teachers").glob("s*"))), axis=0))

    def mean_kl(run_dirs: list[Path]) -> float:
        kls = [
            (ensemble * (np.log(ensemble) - np.log(_probabilities(z)))).sum(axis=-1).mean()
            for z in _test_logits(run_dirs)
        ]
        return float(np.mean(kls))

    broken = []
    k, students = _largest_k_mean_students(sorted((models / "students").glob("k*-mean-s*")))
    soft = mean_kl(students)
    baseline = mean_kl(sorted((models / "baseline").glob("s*")))
    if not soft < baseline:
        broken.append(
            f"k = {k} soft-label students nearer the ensemble than the baseline (KL): {soft} vs {baseline}"
        )
    expected = _mean_teacher_entropy(root, k)
    trained = {p.stem: json.loads(p.read_text())["target_entropy"] for p in _metrics_of(root, students)}
    if not all(abs(h - expected) < ENTROPY_TOLERANCE for h in trained.values()):
        broken.append(
            f"k = {k} students trained on the softmax of the mean teacher logits (target entropy "
            f"{expected:.6f} nats): {trained}"
        )
    return broken


ENTROPY_TOLERANCE = 2e-6  # the metrics files round to 6 decimals


def mean_entropy(p: np.ndarray) -> float:
    """Mean entropy (nats, in float64) of the rows of an (n, 4) array of distributions."""
    p = p.astype(np.float64)
    return float(-(p * np.log(p)).sum(axis=-1).mean())


def _metrics_of(root: Path, run_dirs: list[Path]) -> list[Path]:
    return [root / "metrics" / run.parent.name / f"{run.name}.json" for run in run_dirs]


def _mean_teacher_entropy(root: Path, k: int) -> float:
    """Mean entropy of softmax(mean of the k teachers' logits) over the rows the students fit (train split,
    less the validation patients), from the k-teacher soft-label file the students read."""
    table = pd.read_csv(root / "data" / "prepared" / "cycles.csv", usecols=["split", "subset"])
    fit = (table.loc[table["split"] == "train", "subset"] == "train").to_numpy()
    logits = np.load(root / "data" / "soft_labels" / f"k{k}.npy")
    return mean_entropy(softmax(logits.mean(axis=0))[fit])

"""The paper's robust effects, read from a repository's outputs: what the end-to-end tests assert.

From the committed metrics files (``broken_effects``): every teacher above chance, and the ensemble of all
teachers below both the mean teacher's and one teacher's test loss. From a run's soft-label files
(``broken_distillation``): the soft-label students of the largest k (mean teacher) trained on the softmax of
the mean logits of their file (the entropy of its targets each run records). An ensemble of one teacher breaks
the ensemble effects; soft labels replaced by the ensemble's one-hot argmax break the distillation check.

What the students' predictions show is not asserted: trained alike (the same class weighting), the default's
k = 5 students match the baseline's test loss rather than beat it, and their predictions lie barely nearer the
ensemble than the baseline's, no nearer than those of students of the one-hot labels (README 'What it does not
show').

Any classifier that ignores its input scores at most 50 (always "normal": Sp 100, Se 0; any other constant
answer: Sp 0, Se <= 100), so a Score above 50 shows that a teacher reads its input. The ensemble effects
compare test cross-entropies: on a few hundred test cycles one run's Score moves by points between seeds,
while the loss averages over every cycle.
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
    return broken


def _largest_k_mean_students(paths: list[Path]) -> tuple[int, list[Path]]:
    """The largest k and its metrics files (named k<k>-mean-s<seed>.json)."""
    assert paths, "no mean-teacher students found"
    k = max(int(re.match(r"k(\d+)-", p.name).group(1)) for p in paths)
    return k, [p for p in paths if p.name.startswith(f"k{k}-")]


def broken_distillation(root: Path) -> list[str]:
    """The soft-label students of the largest k (mean teacher) trained on the softmax of the mean logits of
    their k-teacher file: the mean entropy of the targets each run records against that of the file's."""
    k, students = _largest_k_mean_students(sorted((root / "metrics" / "students").glob("k*-mean-s*.json")))
    expected = _mean_teacher_entropy(root, k)
    trained = {p.stem: json.loads(p.read_text())["target_entropy"] for p in students}
    if all(abs(h - expected) < ENTROPY_TOLERANCE for h in trained.values()):
        return []
    return [
        f"k = {k} students trained on the softmax of the mean teacher logits (target entropy "
        f"{expected:.6f} nats): {trained}"
    ]


ENTROPY_TOLERANCE = 2e-6  # the metrics files round to 6 decimals


def mean_entropy(p: np.ndarray) -> float:
    """Mean entropy (nats, in float64) of the rows of an (n, 4) array of distributions."""
    p = p.astype(np.float64)
    return float(-(p * np.log(p)).sum(axis=-1).mean())


def _mean_teacher_entropy(root: Path, k: int) -> float:
    """Mean entropy of softmax(mean of the k teachers' logits) over the rows the students fit (train split,
    less the validation patients), from the k-teacher soft-label file the students read."""
    table = pd.read_csv(root / "data" / "prepared" / "cycles.csv", usecols=["split", "subset"])
    fit = (table.loc[table["split"] == "train", "subset"] == "train").to_numpy()
    logits = np.load(root / "data" / "soft_labels" / f"k{k}.npy")
    return mean_entropy(softmax(logits.mean(axis=0))[fit])

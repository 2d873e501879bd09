"""The paper's robust effects, read from a repository's metrics files: what the end-to-end tests assert.

Asserted: every teacher above chance, and the ensemble of all teachers below both the mean teacher's and one
teacher's test loss. Not asserted, because the default does not show it (README, 'Profiles'): soft-label
students below the k = 0 baseline's test loss.

The ensemble effects compare test cross-entropies: on a few hundred test cycles one run's Score moves by
points between seeds, while the loss averages over every cycle. Any classifier that ignores its input scores
at most 50 (always "normal": Sp 100, Se 0; any other constant answer: Sp 0, Se <= 100), so a Score above 50
shows that a teacher reads its input.
"""

from __future__ import annotations

import json
from pathlib import Path


def _selected(path: Path) -> dict:
    run = json.loads(path.read_text())
    return run[run["selected"]]


def broken_effects(root: Path) -> list[str]:
    """The effects that do not hold in ``root``'s outputs, each with its numbers (empty: all hold)."""
    metrics = root / "metrics"
    broken = []
    teachers = sorted((metrics / "teachers").glob("s*.json"))
    below = {p.stem: _selected(p)["score"] for p in teachers if _selected(p)["score"] <= 50.0}
    if not teachers or below:
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

"""``rsckd prepare``: turn an ICBHI-layout root (real or synthetic) into the cycle table.

Writes ``<out>/cycles.csv`` (contract: one row per annotation row, sorted stems x file row order) and
``<out>/summary.json`` (the counts a user can check against the known ICBHI numbers), as one atomic folder
so an interrupted run never leaves a table that looks finished.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from rsckd.atomic import atomic_dir, write_json, write_text
from rsckd.config import Data, load_params
from rsckd.data.icbhi import Dataset, read_dataset
from rsckd.data.prompts import age_group
from rsckd.data.summary import summarize
from rsckd.data.table import cycles_csv, label_of
from rsckd.errors import UserError


def carve_validation(train_patients: list[int], fraction: float, seed: int) -> set[int]:
    """Patients moved from train to the validation subset: round(fraction * n) drawn from the sorted list.

    With a positive fraction at least one patient is taken and at least one is left, so a small corpus still
    has both subsets.
    """
    patients = sorted(set(train_patients))
    if fraction <= 0:
        return set()
    if len(patients) < 2:
        raise UserError(
            f"data.val_fraction: {fraction} needs at least 2 train patients, found {len(patients)}"
        )
    n = min(max(round(fraction * len(patients)), 1), len(patients) - 1)
    chosen = np.random.default_rng(seed).choice(np.array(patients), size=n, replace=False)
    return {int(p) for p in chosen}


def cycle_rows(dataset: Dataset, val_fraction: float, val_seed: int) -> list[dict[str, Any]]:
    """The table rows, in table order (recordings are sorted by stem; rows keep file order)."""
    val = carve_validation(
        [r.patient for r in dataset.recordings if r.split == "train"], val_fraction, val_seed
    )
    rows = []
    for rec in dataset.recordings:
        demo = dataset.patients.get(rec.patient)
        age = demo.age if demo else None
        subset = "test" if rec.split == "test" else "val" if rec.patient in val else "train"
        for i, (start, end, crackle, wheeze) in enumerate(rec.annotations):
            rows.append(
                {
                    "id": f"{rec.stem}:{i}",
                    "stem": rec.stem,
                    "row": i,
                    "patient": rec.patient,
                    "split": rec.split,
                    "subset": subset,
                    "label": label_of(crackle, wheeze),
                    "crackle": crackle,
                    "wheeze": wheeze,
                    "start": start,
                    "end": end,
                    "location": rec.location,
                    "prompt_location": rec.prompt_location,
                    "device": rec.device,
                    "mode": rec.mode,
                    "age": "" if age is None else age,
                    "sex": (demo.sex if demo else None) or "",
                    "age_group": age_group(age),
                    "prompt": rec.prompt,
                    "native_sr": rec.native_sr,
                    "wav": rec.wav.as_posix(),
                }
            )
    return rows


def prepare(data: Data, out: str | Path) -> dict[str, Any]:
    """Read the dataset, write cycles.csv and summary.json under ``out``; return the summary."""
    dataset = read_dataset(data)
    rows = cycle_rows(dataset, data.val_fraction, data.val_seed)
    summary = summarize(dataset, rows)
    with atomic_dir(out) as tmp:
        write_text(tmp / "cycles.csv", cycles_csv(rows))
        write_json(tmp / "summary.json", summary)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (reads its data block)")
    parser.add_argument("--out", default="data/prepared", help="output folder (replaced as a whole)")


def run(args: argparse.Namespace) -> None:
    summary = prepare(load_params(args.params).data, args.out)
    c = summary["cycles"]
    print(
        f"{args.out}/cycles.csv: {c['total']} cycles "
        f"(train {c['train']['total']}, test {c['test']['total']}) "
        f"from {summary['files']['total']} files, {len(summary['warnings'])} warning(s)"
    )

"""``rsckd prepare``: turn an ICBHI-layout root (real or synthetic) into the cycle table.

Writes ``<out>/cycles.csv`` (contract: one row per annotation row, sorted stems x file row order) and
``<out>/summary.json`` (the counts a user can check against the known ICBHI numbers), as one atomic folder
so an interrupted run never leaves a table that looks finished.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rsckd.atomic import atomic_dir, write_json, write_text
from rsckd.config import Data, load_params
from rsckd.data.icbhi import read_dataset
from rsckd.data.summary import summarize
from rsckd.data.table import cycle_rows, cycles_csv


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

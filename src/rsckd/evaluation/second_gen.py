"""The `second-gen` stage: BTS-d++, the ensemble of the students distilled from one sweep cell (k, method)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rsckd.atomic import write_json
from rsckd.config import load_params
from rsckd.data.table import load_cycles
from rsckd.errors import UserError, read_json
from rsckd.evaluation.ensemble import ensemble_scores, read_logits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cycles", default="data/prepared/cycles.csv")
    parser.add_argument("--students", default="models/students", help="folder of student run dirs")
    parser.add_argument("--ensemble-metrics", default="metrics/ensemble.json")
    parser.add_argument("--metrics", default="metrics/second_gen.json")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    k, method, seeds = params.second_gen.k, params.second_gen.method, params.distill.seeds
    ensemble = read_json(Path(args.ensemble_metrics), "ensemble metrics", "`rsckd ensemble`")
    by_k = ensemble.get("k") if isinstance(ensemble, dict) else None
    teachers = by_k.get(str(k)) if isinstance(by_k, dict) else None
    if not isinstance(teachers, dict):
        raise UserError(
            f"{args.ensemble_metrics}: holds no ensemble of k = {k} teachers (second_gen.k); "
            "re-run `rsckd ensemble`"
        )
    table = load_cycles(Path(args.cycles))
    labels = table.loc[table.split == "test", "label"].to_numpy()
    runs = [Path(args.students) / f"k{k}-{method}-s{seed}" for seed in seeds]
    logits = np.stack([read_logits(r, "test", len(labels)) for r in runs])
    students = ensemble_scores(logits, labels)
    write_json(
        Path(args.metrics),
        {"k": k, "method": method, "seeds": seeds, "students": students, "teachers": teachers},
    )

"""The `ensemble` stage: score the teacher ensemble for every k and write the students' soft-label files.

Teachers are combined in `teacher.seeds` order, so the file for k holds the logits of teachers 1..k and adding
a teacher never changes the bytes of an existing k file: DVC then re-runs only the students that need it.
Each Table 3 variant gets its own file (``ablation/<variant>.npy``: the teachers it reads; none for
noise_var), so a variant's stage depends on exactly what it reads and a new sweep k re-runs no ablation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsckd.ablations import ABLATIONS
from rsckd.atomic import atomic_dir, save_npy, write_json, write_text
from rsckd.config import Params, load_params
from rsckd.data.table import load_cycles
from rsckd.errors import UserError, load_npy
from rsckd.evaluation.icbhi_score import scores_from_logits
from rsckd.evaluation.run_metrics import read_run_metrics


def read_logits(run_dir: Path, split: str, n_rows: int) -> np.ndarray:
    """Load a run's logits for one split and check they line up with the cycle table."""
    path = run_dir / f"logits_{split}.npy"
    logits = load_npy(path, f"{split} logits", "`rsckd train`")
    if logits.shape != (n_rows, 4) or logits.dtype != np.float32:
        raise UserError(
            f"{path}: expected float32 logits of shape ({n_rows}, 4), got {logits.dtype} {logits.shape}"
        )
    return logits


def ensemble_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ICBHI scores of the mean logits (the paper's BTS++ rule) and their cross-entropy test loss."""
    mean = logits.mean(axis=0)
    loss = torch.nn.functional.cross_entropy(
        torch.from_numpy(mean).double(), torch.tensor(labels, dtype=torch.long)
    )
    scores = scores_from_logits(labels, mean)
    return {"sp": scores["sp"], "se": scores["se"], "score": scores["score"], "loss": float(loss)}


def soft_label_ks(params: Params) -> list[int]:
    """Every k a sweep or Table 2 student reads a file for."""
    return sorted({*params.distill.ks, params.arch_table.k})


def ablation_teachers(variant: str, seeds: list[int], k: int, curated: list[int]) -> list[int]:
    """The teachers (seeds, in file order) whose logits a Table 3 variant reads (rsckd.ablations)."""
    teachers = {"none": [], "first 1": seeds[:1], "first k": seeds[:k], "curated k": curated}
    return teachers[ABLATIONS[variant][1]]


def curated_seeds(teacher_metrics: dict[int, dict[str, Any]], k: int, by: str) -> list[int]:
    """The k teachers with the best individual Score (ties broken by teacher order)."""
    order = list(teacher_metrics)

    def score(seed: int) -> float:
        result = teacher_metrics[seed]["literature" if by == "literature" else "val"]
        if result is None:
            raise UserError(
                f"ensemble.curate_by: 'val' needs teachers trained with a validation split (seed {seed})"
            )
        return result["val_score"] if by == "val" else result["score"]

    ranked = sorted(order, key=lambda s: (-score(s), order.index(s)))
    return ranked[:k]


def run_ensemble(
    params: Params,
    cycles: Path,
    teachers_dir: Path,
    metrics_dir: Path,
    soft_dir: Path,
    metrics_out: Path,
    plot_out: Path,
) -> None:
    table = load_cycles(cycles)
    train = table[table.split == "train"]
    test_labels = table.loc[table.split == "test", "label"].to_numpy()
    seeds = params.teacher.seeds
    runs = [teachers_dir / f"s{seed}" for seed in seeds]
    train_logits = np.stack([read_logits(r, "train", len(train)) for r in runs])
    test_logits = np.stack([read_logits(r, "test", len(test_labels)) for r in runs])
    teacher_metrics = {seed: read_run_metrics(metrics_dir / f"s{seed}.json") for seed in seeds}

    def rows_of(chosen: list[int]) -> list[int]:
        return [seeds.index(s) for s in chosen]

    per_k = {str(k): ensemble_scores(test_logits[:k], test_labels) for k in range(1, len(seeds) + 1)}
    columns = ("sp", "se", "score", "loss")
    individual = np.array(
        [[ensemble_scores(one[None], test_labels)[x] for x in columns] for one in test_logits]
    )
    curated = {}
    if "curated" in params.ablation.variants:
        k = params.ablation.k
        chosen = curated_seeds(teacher_metrics, k, params.ensemble.curate_by)
        curated = {"k": k, "seeds": chosen, **ensemble_scores(test_logits[rows_of(chosen)], test_labels)}
    with atomic_dir(soft_dir) as out:
        for k in soft_label_ks(params):
            save_npy(out / f"k{k}.npy", train_logits[:k])
        (out / "ablation").mkdir()
        for variant in params.ablation.variants:
            chosen = ablation_teachers(variant, seeds, params.ablation.k, curated.get("seeds", []))
            save_npy(out / "ablation" / f"{variant}.npy", train_logits[rows_of(chosen)])
    write_json(
        metrics_out,
        {
            "k": per_k,
            "curated": curated,
            "individual": {
                "mean": dict(zip(columns, individual.mean(axis=0), strict=True)),
                "std": dict(
                    zip(
                        columns,
                        individual.std(axis=0, ddof=1) if len(seeds) > 1 else [0.0] * len(columns),
                        strict=True,
                    )
                ),
            },
        },
    )
    rows = ["k,sp,se,score,loss"] + [
        f"{k},{v['sp']:.4f},{v['se']:.4f},{v['score']:.4f},{v['loss']:.6f}" for k, v in per_k.items()
    ]
    write_text(plot_out, "\n".join(rows) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cycles", default="data/prepared/cycles.csv")
    parser.add_argument("--teachers", default="models/teachers", help="folder of teacher run dirs s<seed>/")
    parser.add_argument(
        "--teacher-metrics", default="metrics/teachers", help="folder of teacher metrics s<seed>.json"
    )
    parser.add_argument("--soft-dir", default="data/soft_labels")
    parser.add_argument("--metrics", default="metrics/ensemble.json")
    parser.add_argument("--plot", default="plots/ensemble_k.csv")


def run(args: argparse.Namespace) -> None:
    run_ensemble(
        load_params(args.params),
        Path(args.cycles),
        Path(args.teachers),
        Path(args.teacher_metrics),
        Path(args.soft_dir),
        Path(args.metrics),
        Path(args.plot),
    )

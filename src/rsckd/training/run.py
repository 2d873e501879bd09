"""``rsckd train``: one training run (a teacher or a student) from the cycle table, features and params.

Reads models.<arch>, train.<arch> and runtime (plus ablation.noise_var for noise targets), trains on the
subset == train rows, evaluates the test split and the val subset every epoch, and writes the run
directory (--out) and the metrics JSON (--metrics). An interrupted run resumes from its last epoch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from rsckd.ablations import ABLATIONS
from rsckd.architectures import ARCHITECTURES, architecture
from rsckd.atomic import file_digest, write_json
from rsckd.config import SEED, Params, load_params
from rsckd.errors import UserError, load_npy
from rsckd.schema import Block, integer, validated
from rsckd.training.artifacts import run_config, write_curves, write_run
from rsckd.training.loop import check_run_data, pick_device, seed_everything, slice_sets, train
from rsckd.training.resume import Checkpoints, resume_dir
from rsckd.training.targets import (
    NEEDS_SOFT_FILE,
    TARGETS,
    Targets,
    load_soft_logits,
)


class Flags(Block):
    """The flags of one run that the params schema does not cover."""

    seed: SEED
    epochs: integer(1) | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, choices=ARCHITECTURES)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--out", required=True, help="run directory to write (replaced as a whole)")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--curves", help="dvclive folder for the per-epoch curves (replaced as a whole)")
    parser.add_argument("--target", choices=TARGETS, help="training target (default: hard)")
    parser.add_argument("--soft", help="teacher-logit file (k, N_train, 4) for soft targets and --ablation")
    parser.add_argument("--ablation", choices=ABLATIONS, help="Table 3 variant: sets --target itself")
    parser.add_argument("--epochs", type=int, help="instead of train.<arch>.epochs (teacher.epochs)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cycles", default="data/prepared/cycles.csv")
    parser.add_argument("--features-dir", help="default: data/features/<kind of the arch>")


def resolve_target(target: str | None, soft: str | None, ablation: str | None) -> tuple[str, Path | None]:
    """(target kind, soft-label file) from the flags. An ablation sets the target itself and reads its own
    file of `rsckd ensemble` (``data/soft_labels/ablation/<variant>.npy``)."""
    if ablation is not None:
        if target is not None:
            raise UserError("--ablation chooses the target itself; drop --target")
        if soft is None:
            raise UserError(
                f"--ablation {ablation} needs --soft data/soft_labels/ablation/{ablation}.npy "
                "(written by `rsckd ensemble`)"
            )
        return ABLATIONS[ablation][0], Path(soft)
    target = target or "hard"
    if target in NEEDS_SOFT_FILE and soft is None:
        raise UserError(
            f"--target {target} needs --soft FILE.npy (teacher logits written by `rsckd ensemble`)"
        )
    if target not in NEEDS_SOFT_FILE and soft is not None:
        raise UserError(f"--target {target} does not use a soft-label file; drop --soft")
    return target, None if soft is None else Path(soft)


def load_features(features_dir: Path, n_rows: int) -> np.ndarray:
    path = features_dir / "features.npy"
    features = load_npy(path, "features", "`rsckd features` for this architecture's kind", mmap=True)
    if features.ndim != 3 or features.shape[0] != n_rows or features.dtype != np.float32:
        raise UserError(
            f"{path}: expected float32 features of shape ({n_rows}, T, F) for the {n_rows} cycle-table rows, "
            f"got {features.dtype} {features.shape} (features of another cycle table? rerun `rsckd features`)"
        )
    return features


def train_run(
    arch: str,
    seed: int,
    out: str | os.PathLike[str],
    metrics: str | os.PathLike[str],
    params: Params,
    target: str | None = None,
    soft: str | None = None,
    ablation: str | None = None,
    cycles: str | os.PathLike[str] = "data/prepared/cycles.csv",
    features_dir: str | os.PathLike[str] | None = None,
    curves: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    epoch_hook=None,
) -> dict[str, Any]:
    """Run one training and write its outputs; returns the metrics dict. ``epochs`` replaces
    train.<arch>.epochs; ``epoch_hook(epoch)`` runs after every epoch's checkpoint (fault-injection tests)."""
    from rsckd.data.table import load_cycles
    from rsckd.models import build_model, build_tokenizer, count_parameters, tokenize

    validated(Flags, {"seed": seed, "epochs": epochs}, "flags", lambda key: f"--{key}")
    target, soft_path = resolve_target(target, soft, ablation)
    spec = architecture(arch)
    kind = spec.feature_kind
    features_dir = Path(features_dir) if features_dir is not None else Path("data/features") / kind
    table = load_cycles(cycles)
    features = load_features(features_dir, len(table))
    split, subset = table["split"].to_numpy(), table["subset"].to_numpy()
    train_rows = np.flatnonzero(split == "train")
    labels = table["label"].to_numpy().astype(np.int64)
    soft_logits = None if soft_path is None else load_soft_logits(soft_path, len(train_rows))
    if soft_logits is not None and target not in NEEDS_SOFT_FILE:
        if len(soft_logits):  # the file of a variant that reads no teacher holds none
            raise UserError(
                f"{soft_path}: --ablation {ablation} reads no teacher logits, but the file has some"
            )
        soft_logits = None
    targets = Targets(target, labels[train_rows], soft_logits, seed, params.ablation.noise_var)

    model_cfg, train_cfg, runtime = params.models[arch], params.train[arch], params.runtime
    if epochs is not None:
        train_cfg = train_cfg.model_copy(update={"epochs": epochs})
    meta = features_dir / "meta.json"
    meta = meta if meta.is_file() else features_dir / "features.npy"  # hash the array only without its meta
    identity = {
        "arch": arch,
        "target": target,
        "ablation": ablation,
        "seed": seed,
        "model": model_cfg.model_dump(),
        "train": train_cfg.model_dump(),
        "runtime": runtime.model_dump(),
        "noise_var": params.ablation.noise_var if target.startswith("noise") else None,
        "cycles": file_digest(cycles),
        "features": [list(features.shape), file_digest(meta)],
        "soft": None if soft_logits is None else file_digest(soft_path),
    }
    checkpoints = Checkpoints(resume_dir(identity), params.resume.checkpoint_minutes)

    device = pick_device(runtime.device)
    seed_everything(seed, device, runtime)
    tokenizer = prompt_index = tokens = None
    if spec.reads_prompt:
        prompts, prompt_index = np.unique(table["prompt"].to_numpy().astype(str), return_inverse=True)
        tokenizer = build_tokenizer(model_cfg, prompts.tolist())
        ids, mask = tokenize(tokenizer, prompts.tolist(), model_cfg.max_text_length)
        tokens = (ids.to(device), mask.to(device))
    feature_shape = (int(features.shape[1]), int(features.shape[2]))
    model = build_model(arch, model_cfg, feature_shape, tokenizer=tokenizer).to(device)

    data = slice_sets(features, labels, split, subset, targets, prompt_index, tokens)
    check_run_data(data, train_cfg, f"train.{arch}")
    result = train(model, data, train_cfg, seed, device, checkpoints, epoch_hook, runtime.compile)

    config = run_config(
        arch, params, train_cfg, kind, feature_shape, target=target, seed=seed, ablation=ablation, k=targets.k
    )
    write_run(out, model, config, result, tokenizer)
    if curves is not None:
        write_curves(curves, result.history)
    summary = {
        "arch": arch,
        "target": target,
        "ablation": ablation,
        "seed": seed,
        "k": targets.k,
        "n_params": count_parameters(model),
        "target_entropy": data.fit.targets.entropy(),
        "selected": train_cfg.select,
        **result.selection,
    }
    write_json(metrics, summary)
    checkpoints.clear()
    return summary


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    train_run(
        args.arch,
        args.seed,
        args.out,
        args.metrics,
        params,
        target=args.target,
        soft=args.soft,
        ablation=args.ablation,
        cycles=args.cycles,
        features_dir=args.features_dir,
        curves=args.curves,
        epochs=args.epochs,
    )

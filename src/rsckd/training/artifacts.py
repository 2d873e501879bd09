"""A run directory: what `rsckd train` writes and what `rsckd predict`/`rsckd ensemble` read back.

Layout: model.safetensors (selected weights, buffers included), logits_train.npy / logits_test.npy
(float32, table order), history.csv (one row per epoch; lr as %.6e so small rates keep their digits,
metrics as %.6f, empty val columns without a validation subset), config.json (everything needed to
rebuild the model) and, for text models, tokenizer/. The directory is replaced as a whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_model, save_model

from rsckd.atomic import atomic_dir, json_bytes, save_npy, write_bytes, write_text
from rsckd.config import ARCH, FEATURE_BLOCKS, Params, Train
from rsckd.errors import UserError, read_json
from rsckd.schema import MAPPING, Expected, choice, integer, validated
from rsckd.training.loop import RunResult

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "test_loss", "test_sp", "test_se", "test_score")
HISTORY_COLUMNS += ("val_sp", "val_se", "val_score")


def history_cell(row: dict[str, Any], column: str) -> str:
    """One history value as written: lr as %.6e so small rates keep their digits, metrics as %.6f."""
    if column == "epoch":
        return str(row["epoch"])
    value = row[column]
    return "" if value is None else f"{value:.6e}" if column == "lr" else f"{value:.6f}"


def history_csv(history: list[dict[str, Any]]) -> str:
    lines = [",".join(HISTORY_COLUMNS)]
    lines += [",".join(history_cell(row, c) for c in HISTORY_COLUMNS) for row in history]
    return "\n".join(lines) + "\n"


# dvclive metric name -> history column: the per-epoch curves that `dvc plots show` renders
CURVES = {
    "train/loss": "train_loss",
    "test/loss": "test_loss",
    "test/score": "test_score",
    "test/se": "test_se",
    "test/sp": "test_sp",
    "val/score": "val_score",
    "lr": "lr",
}


def write_curves(out: str | os.PathLike[str], history: list[dict[str, Any]]) -> None:
    """The run's history as dvclive plot files (``plots/metrics/<name>.tsv``, step = epoch), replaced as a
    whole. Written after training from the (checkpointed) history, so a resumed run logs every epoch once;
    values are rounded as in history.csv so the files are as stable as the metrics. dvclive's last-step
    summary (metrics.json) is dropped: the run's metrics JSON holds the results, and `dvc plots` cannot
    read a summary in a plots folder."""
    from dvclive import Live

    with atomic_dir(out) as tmp:
        with Live(str(tmp), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            for row in history:
                live.step = row["epoch"]
                for name, column in CURVES.items():
                    if row[column] is not None:
                        live.log_metric(name, float(history_cell(row, column)))
        (tmp / "metrics.json").unlink()


class RunConfig(BaseModel):
    """What rebuilding a run's model and its inputs reads from config.json (`rsckd predict`); the blocks are
    validated by their own schemas where they are read, and the protocol and identity keys pass unread."""

    arch: ARCH
    model: MAPPING
    feature_kind: choice(*FEATURE_BLOCKS)
    features: MAPPING
    cycles: MAPPING
    feature_shape: Annotated[
        list[integer(1)], Field(min_length=2, max_length=2), Expected("[frames, bins] (positive integers)")
    ]


def run_config(
    arch: str, params: Params, train: Train, feature_kind: str, feature_shape: tuple[int, int], **extra: Any
):
    """config.json: the blocks that define the model and its inputs, the protocol it trained under (``train``:
    train.<arch>, with the run's own epochs), plus the run's identity (``extra``)."""
    return {
        "arch": arch,
        "model": params.models[arch].model_dump(),
        "feature_kind": feature_kind,
        "features": params.features.of(feature_kind).model_dump(),
        "cycles": params.cycles.model_dump(),
        "feature_shape": list(feature_shape),
        "train": train.model_dump(),
        **extra,
    }


def write_run(
    out: str | os.PathLike[str],
    model: torch.nn.Module,
    config: dict[str, Any],
    result: RunResult,
    tokenizer=None,
) -> None:
    """Write the run directory atomically (``model`` holds the selected weights)."""
    with atomic_dir(out) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_npy(tmp / "logits_train.npy", result.logits_train)
        save_npy(tmp / "logits_test.npy", result.logits_test)
        write_text(tmp / "history.csv", history_csv(result.history))
        write_bytes(tmp / "config.json", json_bytes(config))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp / "tokenizer"))


def read_run_config(path: Path) -> dict[str, Any]:
    """A run's config.json, checked for what rebuilding the model and its inputs reads."""
    config = read_json(path, "run config", "`rsckd train`")
    validated(RunConfig, config, str(path))
    return config


def load_run(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"):
    """Rebuild a trained model from a run directory: (model in eval mode, config dict, tokenizer or None)."""
    from rsckd.architectures import architecture
    from rsckd.models import build_model, load_tokenizer

    run_dir = Path(run_dir)
    for name in ("config.json", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise UserError(
                f"{run_dir / name}: missing (not a complete run directory written by `rsckd train`)"
            )
    config = read_run_config(run_dir / "config.json")
    tokenizer = load_tokenizer(run_dir / "tokenizer") if (run_dir / "tokenizer").is_dir() else None
    block = architecture(config["arch"]).model_block(config["model"], str(run_dir / "config.json"))
    model = build_model(config["arch"], block, tuple(config["feature_shape"]), tokenizer=tokenizer)
    load_model(model, run_dir / "model.safetensors", device=str(device))
    return model.to(device).eval(), config, tokenizer

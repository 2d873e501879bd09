"""``rsckd check-params``: validate a params file and check that the inputs its profile needs are on disk.

The pipeline's first stage (``inputs``) runs it with ``--inputs --out data/inputs``: one file per input, so
replacing one architecture's pretrained weights re-runs exactly that architecture's stages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsckd.architectures import ARCHITECTURES
from rsckd.config import Params, load_params
from rsckd.errors import UserError

SYNTHETIC_ROOT = "data/synthetic"  # written by the synthesize stage, so never missing before the DAG runs


def missing_inputs(params: Params) -> list[str]:
    """What the configured profile needs from the user that is not on disk (data root, pretrained weights)."""
    problems = []
    root = Path(params.data.root)
    if not (root / params.data.audio_dir).is_dir() and root != Path(SYNTHETIC_ROOT):
        problems.append(
            f"data.root: {root}/{params.data.audio_dir} not found. Download the ICBHI 2017 Respiratory "
            "Sound Database and put ICBHI_final_database/ (920 .wav + .txt), ICBHI_challenge_train_test.txt "
            f"and the demographic file under {root}/ (optional: metadata.txt of the BTS reference for "
            "per-patient locations)"
        )
    for arch, cfg in params.models.items():
        if cfg.pretrained is not None and not Path(cfg.pretrained).exists():
            weights = ARCHITECTURES[arch].weights
            problems.append(f"models.{arch}.pretrained: {cfg.pretrained} not found; put there {weights}")
    return problems


def require_inputs(params: Params) -> None:
    problems = missing_inputs(params)
    if problems:
        raise UserError(
            "the profile needs files that are not here (for the paper profile, `make paper-inputs` or "
            "`rsckd fetch` downloads them all, pinned):\n  - " + "\n  - ".join(problems)
        )


def write_inputs(params: Params, out: str) -> None:
    """``data.json`` (the data root) and ``<arch>.json`` per architecture: its pretrained weights and their
    content digest. Each training stage depends on its architecture's file and the inputs stage on
    models/pretrained/, so replacing one architecture's weights re-runs exactly that architecture's stages."""
    from rsckd.atomic import atomic_dir, content_digest, write_json

    with atomic_dir(out) as tmp:
        write_json(tmp / "data.json", {"data_root": params.data.root})
        for arch, cfg in params.models.items():
            weights = cfg.pretrained
            digest = None if weights is None else content_digest(weights)
            write_json(tmp / f"{arch}.json", {"pretrained": weights, "sha256": digest})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file to validate")
    parser.add_argument(
        "--inputs", action="store_true", help="also check that data and pretrained weights exist"
    )
    parser.add_argument(
        "--out", help="write what was checked into this folder, one JSON file per input (the first stage)"
    )


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    if args.inputs:
        require_inputs(params)
    if args.out:
        write_inputs(params, args.out)
    print(f"{args.params}: ok ({len(params.teacher.seeds)} teachers, k in {params.distill.ks})")

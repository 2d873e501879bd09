"""``rsckd check-params``: validate a params file and check that the inputs its profile needs are on disk.

The pipeline's first stage (``inputs``) runs it with ``--inputs --out data/inputs``, and the ``arch_inputs``
stage, once the features exist, with ``--arch-inputs``: one digest file per architecture, so changed weights
or features re-run exactly the stages of the architectures that read them.
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
    """``data.json``: the data root the prepare stage reads, once it has been checked."""
    from rsckd.atomic import atomic_dir, write_json

    with atomic_dir(out) as tmp:
        write_json(tmp / "data.json", {"data_root": params.data.root})


def write_arch_inputs(params: Params, features_root: Path, out: str) -> None:
    """One ``<arch>.json`` per architecture: the content digests of what its training reads besides the cycle
    table and its params blocks, namely its feature folder and its pretrained weights. Every training stage
    depends on its architecture's file, so changed features or new weights re-run exactly the stages of the
    architectures that read them, whatever teacher.arch, distill.arch and arch_table.archs name (dvc.yaml
    cannot look up an architecture's feature kind itself)."""
    from rsckd.atomic import atomic_dir, content_digest, write_json

    with atomic_dir(out) as tmp:
        for arch, cfg in params.models.items():
            features = features_root / ARCHITECTURES[arch].feature_kind
            if not (features / "features.npy").is_file():
                raise UserError(f"{features}: no features.npy (run `rsckd features --kind {features.name}`)")
            weights = cfg.pretrained
            digests = {
                "features": features.as_posix(),
                "features_sha256": content_digest(features),
                "pretrained": weights,
                "pretrained_sha256": None if weights is None else content_digest(weights),
            }
            write_json(tmp / f"{arch}.json", digests)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file to validate")
    parser.add_argument(
        "--inputs", action="store_true", help="also check that data and pretrained weights exist"
    )
    parser.add_argument("--out", help="write the checked data root into this folder (the first stage)")
    parser.add_argument(
        "--arch-inputs",
        help="write one digest file per architecture of its features and weights into this folder",
    )
    parser.add_argument("--features-dir", default="data/features", help="folder of the feature kinds")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    if args.inputs:
        require_inputs(params)
    if args.out:
        write_inputs(params, args.out)
    if args.arch_inputs:
        write_arch_inputs(params, Path(args.features_dir), args.arch_inputs)
    print(f"{args.params}: ok ({len(params.teacher.seeds)} teachers, k in {params.distill.ks})")

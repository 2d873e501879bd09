"""``rsckd predict``: classify every respiratory cycle of a new recording with one or more trained runs.

Cycles come from an ICBHI-format annotation file, or are consecutive fixed-length windows when there is none.
Each run rebuilds its own inputs exactly as in training (the cycle cut, the feature kind and settings of its
config.json, and for BTS the metadata prompt), so a model never sees inputs it was not trained on. Several
runs are combined like the paper's ensembles: the mean of their logits.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from rsckd.atomic import clean_json
from rsckd.data.icbhi import DEVICES, LOCATIONS
from rsckd.errors import UserError, warn

CLASSES = ("normal", "crackle", "wheeze", "both")
BATCH = 16  # cycles per forward pass: bounded memory for long recordings
MIN_TAIL_S = 1.0  # a short last window under this (or under a shorter window) is dropped: mostly padding


def windows(duration_s: float, window_s: float) -> list[tuple[float, float]]:
    """Consecutive windows covering the recording. Only the last one can be short; it is dropped when shorter
    than ``MIN_TAIL_S`` (or than a shorter window), unless it is all there is."""
    if window_s <= 0:
        raise UserError(f"--window-s: expected a positive length in seconds, got {window_s}")
    shortest = min(MIN_TAIL_S, window_s) - 1e-9  # starts are i * window_s, so no full window falls short
    rows = []
    for i in range(max(1, math.ceil(duration_s / window_s - 1e-9))):
        start, end = i * window_s, min((i + 1) * window_s, duration_s)
        if end - start >= shortest or not rows:
            rows.append((round(start, 6), round(end, 6)))
    return rows


def annotation_rows(path: Path, wav: Path, duration_s: float) -> list[tuple[float, float]]:
    """(start, end) of every row of an ICBHI annotation file, validated like `rsckd prepare` does."""
    from rsckd.data.icbhi import _read_annotations

    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    rows, late = _read_annotations(path, duration_s, wav, warn)
    if late:
        warn(f"{path}: {late} cycle(s) end after the recording ends; they are clipped to the audio")
    return [(start, end) for start, end, _, _ in rows]


def recording_prompt(wav: Path, args: argparse.Namespace) -> str:
    """The BTS sentence: location and device from the ICBHI file name (or flags), age and sex from flags."""
    from rsckd.data.icbhi import STEM_FORMAT, parse_stem
    from rsckd.data.prompts import bts_prompt

    location, device = args.location, args.device
    if location is None or device is None:
        try:
            _, _, stem_location, _, stem_device = parse_stem(wav.stem)
        except ValueError as err:
            raise UserError(
                f"{wav.name}: a BTS model needs the chest location and device; the file name is not "
                f"{STEM_FORMAT} ({err}), so pass --location and --device"
            ) from None
        location, device = location or stem_location, device or stem_device
    if args.age is None or args.sex is None:
        warn(
            "no --age/--sex: the BTS prompt uses the reference's defaults for missing values "
            "(pediatric, female)"
        )
    return bts_prompt(location, args.age, args.sex, device)


def run_logits(
    run_dir: Path, wave: torch.Tensor, sr: int, rows: list[tuple[float, float]], prompt: Any
) -> torch.Tensor:
    """Logits (n_cycles, 4) of one run, its inputs rebuilt from its config.json."""
    from rsckd.architectures import architecture
    from rsckd.config import FEATURE_BLOCKS, Cycles
    from rsckd.data.features import compute, feature_cycles
    from rsckd.models import tokenize
    from rsckd.schema import validated
    from rsckd.training.artifacts import load_run

    model, config, tokenizer = load_run(run_dir)
    where = str(run_dir / "config.json")
    features_cfg = validated(FEATURE_BLOCKS[config["feature_kind"]], config["features"], where)
    cycles = feature_cycles(wave, sr, rows, features_cfg, validated(Cycles, config["cycles"], where))
    text: dict[str, torch.Tensor] = {}
    arch = architecture(config["arch"])
    if arch.reads_prompt:
        if tokenizer is None:
            raise UserError(f"{run_dir}: a text model without tokenizer/ (incomplete run directory)")
        ids, mask = tokenize(tokenizer, [prompt()], config["model"]["max_text_length"])  # checked by load_run
        text = {"input_ids": ids, "attention_mask": mask}
    out = []
    with torch.no_grad():
        for part in cycles.split(BATCH):
            feats = compute(part, config["feature_kind"], features_cfg)
            if list(feats.shape[1:]) != list(config["feature_shape"]):
                raise UserError(
                    f"{run_dir}: features of shape {list(feats.shape[1:])} but the model was trained on "
                    f"{config['feature_shape']} (config.json edited?)"
                )
            n = feats.shape[0]
            batch_text = {key: value.expand(n, -1) for key, value in text.items()}
            out.append(model(feats, **batch_text).float())
    return torch.cat(out)


def predict(args: argparse.Namespace) -> list[dict[str, Any]]:
    from rsckd.data.cycles import read_wav

    wav = Path(args.recording)
    if not wav.is_file():
        raise UserError(f"{wav}: recording not found")
    wave, sr = read_wav(wav)
    duration = wave.shape[0] / sr
    if not args.annotations and args.window_s * sr < 1:
        raise UserError(f"--window-s: {args.window_s} s is shorter than one sample at {sr} Hz")
    rows = (
        annotation_rows(Path(args.annotations), wav, duration)
        if args.annotations
        else windows(duration, args.window_s)
    )
    prompt_cache: list[str] = []

    def prompt() -> str:  # built once, and only if some run uses text
        if not prompt_cache:
            prompt_cache.append(recording_prompt(wav, args))
        return prompt_cache[0]

    logits = torch.stack([run_logits(Path(d), wave, sr, rows, prompt) for d in args.model]).mean(dim=0)
    probs = torch.softmax(logits, dim=1)
    return [
        {
            "cycle": i,
            "start": start,
            "end": end,
            **{f"p_{name}": float(p) for name, p in zip(CLASSES, probs[i].tolist(), strict=True)},
            "predicted": CLASSES[int(probs[i].argmax())],
        }
        for i, (start, end) in enumerate(rows)
    ]


def format_table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'cycle':>5} {'start':>8} {'end':>8} "
        + " ".join(f"{f'P({c})':>10}" for c in CLASSES)
        + "  predicted"
    )
    lines = [header]
    for r in results:
        probs = " ".join(f"{r[f'p_{c}']:>10.3f}" for c in CLASSES)
        lines.append(f"{r['cycle']:>5} {r['start']:>8.3f} {r['end']:>8.3f} {probs}  {r['predicted']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", help="the .wav file to classify")
    parser.add_argument(
        "--annotations", help="ICBHI annotation .txt (start end crackle wheeze); default: windows"
    )
    parser.add_argument(
        "--model", nargs="+", required=True, metavar="RUN_DIR", help="run dir(s) of `rsckd train`"
    )
    parser.add_argument("--window-s", type=float, default=8.0, help="window length without annotations (s)")
    parser.add_argument("--age", type=float, help="patient age in years (BTS prompt)")
    parser.add_argument("--sex", choices=("M", "F"), help="patient sex (BTS prompt)")
    parser.add_argument(
        "--location", choices=LOCATIONS, help="chest location (BTS prompt); default: from the file name"
    )
    parser.add_argument(
        "--device", choices=DEVICES, help="stethoscope (BTS prompt); default: from the file name"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> None:
    results = predict(args)
    if args.json:
        print(
            json.dumps(
                clean_json({"recording": args.recording, "models": args.model, "cycles": results}), indent=2
            )
        )
    else:
        print(format_table(results))

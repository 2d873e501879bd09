"""``rsckd data summary ROOT``: what an ICBHI-layout dataset holds, before any stage runs on it.

The same :func:`summarize` writes ``summary.json`` in ``rsckd prepare``, so the numbers a user checks by
hand (files, patients, cycles per split and class, diagnoses, prompts, sample rates, warnings) are the ones
the pipeline used.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from rsckd.atomic import json_bytes
from rsckd.config import Data
from rsckd.data.icbhi import DATA_DEFAULTS, Dataset, data_block, read_dataset
from rsckd.data.prompts import PROMPT_LOCATION_MODES
from rsckd.data.table import LABEL_NAMES


def _class_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["label"] for r in rows)
    return {"total": len(rows), **{name: counts[i] for i, name in enumerate(LABEL_NAMES)}}


def summarize(dataset: Dataset, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per split and subset, patients, diagnoses, native rates, devices, prompts and warnings."""
    recs = dataset.recordings
    splits = ("train", "test")
    patients = {s: sorted({r.patient for r in recs if r.split == s}) for s in splits}
    subsets = {s: [r for r in rows if r["subset"] == s] for s in ("train", "val", "test")}
    return {
        "root": dataset.root.as_posix(),
        "files": {"total": len(recs), **{s: sum(r.split == s for r in recs) for s in splits}},
        "patients": {
            "total": len({r.patient for r in recs}),
            **{s: len(p) for s, p in patients.items()},
            "in_both_splits": sorted(set(patients["train"]) & set(patients["test"])),
        },
        "cycles": {
            "total": len(rows),
            **{s: _class_counts([r for r in rows if r["split"] == s]) for s in splits},
        },
        "subsets": {
            s: {**_class_counts(sub), "patients": len({r["patient"] for r in sub})}
            for s, sub in subsets.items()
        },
        "diagnoses": _diagnoses(dataset, rows),
        "native_sample_rates": {str(k): v for k, v in sorted(Counter(r.native_sr for r in recs).items())},
        "devices": dict(sorted(Counter(r.device for r in recs).items())),
        "prompts": {
            "distinct": len({r.prompt for r in recs}),
            **{s: len({r.prompt for r in recs if r.split == s}) for s in splits},
        },
        "warnings": list(dataset.warnings),
    }


def _diagnoses(dataset: Dataset, rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per diagnosis (data.diagnosis_file): its patients and their cycles per class; {} without the file."""
    if not dataset.diagnoses:
        return {}
    of = {pid: dataset.diagnoses.get(pid, "unknown") for pid in {r.patient for r in dataset.recordings}}
    return {
        name: {
            "patients": sum(d == name for d in of.values()),
            **_class_counts([r for r in rows if of[r["patient"]] == name]),
        }
        for name in sorted(set(of.values()))
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable version of :func:`summarize` (one fact per line)."""

    def classes(c: dict[str, int]) -> str:
        return f"{c['total']} ({', '.join(f'{n} {c[n]}' for n in LABEL_NAMES)})"

    f, p, c = summary["files"], summary["patients"], summary["cycles"]
    lines = [
        f"root: {summary['root']}",
        f"files: {f['total']} (train {f['train']}, test {f['test']})",
        f"patients: {p['total']} (train {p['train']}, test {p['test']}; in both splits: "
        f"{', '.join(map(str, p['in_both_splits'])) or 'none'})",
        f"cycles: {c['total']}",
        f"  train: {classes(c['train'])}",
        f"  test: {classes(c['test'])}",
        "subsets:",
        *(f"  {s}: {classes(v)}, {v['patients']} patients" for s, v in summary["subsets"].items()),
        *(["diagnoses:"] if summary["diagnoses"] else []),
        *(f"  {d}: {v['patients']} patients, cycles {classes(v)}" for d, v in summary["diagnoses"].items()),
        "native sample rates: "
        + ", ".join(f"{sr} Hz x {n}" for sr, n in summary["native_sample_rates"].items()),
        "devices: " + ", ".join(f"{d} {n}" for d, n in summary["devices"].items()),
        f"distinct prompts: {summary['prompts']['distinct']} (train {summary['prompts']['train']}, "
        f"test {summary['prompts']['test']})",
        f"warnings: {len(summary['warnings'])}",
        *(f"  - {w}" for w in summary["warnings"]),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="summary")
    p = sub.add_parser(
        "summary", help="files, patients, cycles per split and class, prompts, rates, warnings"
    )
    p.add_argument("root", help="ICBHI-layout root (e.g. data/raw/ICBHI or data/synthetic)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    for key in ("audio_dir", "split_file", "demographics_file", "diagnosis_file", "metadata_file"):
        p.add_argument(
            f"--{key.replace('_', '-')}", default=DATA_DEFAULTS[key], help=f"default: {DATA_DEFAULTS[key]}"
        )
    p.add_argument(
        "--prompt-location", choices=PROMPT_LOCATION_MODES, default=DATA_DEFAULTS["prompt_location"]
    )
    p.add_argument("--val-fraction", type=float, default=DATA_DEFAULTS["val_fraction"])
    p.add_argument("--val-seed", type=int, default=DATA_DEFAULTS["val_seed"])


def summarize_root(data: Data) -> dict[str, Any]:
    """:func:`summarize` of the dataset a ``data`` block points at."""
    from rsckd.data.prepare import cycle_rows  # prepare imports this module for its summary.json

    dataset = read_dataset(data)
    return summarize(dataset, cycle_rows(dataset, data.val_fraction, data.val_seed))


def run(args: argparse.Namespace) -> None:
    summary = summarize_root(data_block(**{key: getattr(args, key) for key in DATA_DEFAULTS}))
    if args.json:
        print(json_bytes(summary).decode(), end="")
    else:
        print(format_summary(summary))

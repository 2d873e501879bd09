"""Tiny ICBHI-layout folders for tests: a few 2-s wavs at the real native rates and PCM widths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from rsckd.data.icbhi import DATA_DEFAULTS

# stem, split, native rate, subtype, annotation rows (start, end, crackle, wheeze)
RECORDINGS: list[tuple[str, str, int, str, list[tuple[float, float, int, int]]]] = [
    ("101_1b1_Al_sc_Meditron", "train", 4000, "PCM_16", [(0.1, 0.9, 0, 0), (0.9, 1.8, 1, 0)]),
    ("101_1b1_Pr_sc_Meditron", "train", 10000, "PCM_24", [(0.0, 1.0, 0, 1)]),
    ("102_1b1_Tc_mc_AKGC417L", "train", 44100, "PCM_32", [(0.2, 1.5, 1, 1), (1.5, 1.9, 0, 0)]),
    ("102_2b1_Ar_sc_AKGC417L", "test", 44100, "PCM_16", [(0.0, 1.2, 0, 0)]),
    ("103_2b2_Ll_sc_LittC2SE", "test", 4000, "PCM_16", [(0.0, 0.5, 0, 0), (0.5, 1.9, 1, 0)]),
    ("104_1b1_Lr_sc_Litt3200", "test", 4000, "PCM_24", [(0.1, 1.1, 0, 1)]),
    ("105_1p1_Pl_sc_Meditron", "train", 4000, "PCM_32", [(0.3, 1.2, 0, 0), (1.2, 1.95, 0, 0)]),
    ("106_3b1_Tc_sc_LittC2SE", "train", 4000, "PCM_16", [(0.0, 1.0, 1, 0)]),
]
# pid age sex adult_bmi child_weight child_height (the official 6 columns)
DEMOGRAPHICS = {
    101: ["101", "3", "F", "NA", "19", "99"],
    102: ["102", "75", "M", "25.5", "NA", "NA"],
    103: ["103", "18.9", "M", "NA", "60", "170"],
    104: ["104", "19", "F", "22.1", "NA", "NA"],
    105: ["105", "0.58", "M", "NA", "7.1", "64"],
    106: ["106", "NA", "NA", "NA", "NA", "NA"],
}
# the reference metadata.txt's per-patient chest location (one of the patient's own locations)
METADATA_LOCATIONS = {101: "Pr", 102: "Tc", 103: "Ll", 104: "Lr", 105: "Pl", 106: "Tc"}


def write_wav(path: Path, sr: int, subtype: str = "PCM_16", seconds: float = 2.0) -> None:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440.0 * t), sr, subtype=subtype, format="WAV")


def annotation_text(rows: list[tuple[float, float, int, int]]) -> str:
    return "".join(f"{s:.3f}\t{e:.3f}\t{c}\t{w}\n" for s, e, c, w in rows)


def make_icbhi(
    root: Path,
    recordings: list[tuple[str, str, int, str, list[tuple[float, float, int, int]]]] | None = None,
    *,
    metadata: bool = True,
    diagnosis: bool = True,
) -> dict[str, Any]:
    """Write an ICBHI-layout root and return the matching ``data`` block."""
    recordings = RECORDINGS if recordings is None else recordings
    audio = root / DATA_DEFAULTS["audio_dir"]
    audio.mkdir(parents=True)
    for stem, _, sr, subtype, rows in recordings:
        write_wav(audio / f"{stem}.wav", sr, subtype)
        (audio / f"{stem}.txt").write_text(annotation_text(rows))
    (root / DATA_DEFAULTS["split_file"]).write_text("\n".join(f"{r[0]}\t{r[1]}" for r in recordings))
    (root / "ICBHI_Challenge_demographic_information.txt").write_text(
        "".join("\t".join(row) + "\n" for row in DEMOGRAPHICS.values())
    )
    if metadata:
        (root / "metadata.txt").write_text(
            "".join("\t".join([*row, METADATA_LOCATIONS[pid]]) + "\n" for pid, row in DEMOGRAPHICS.items())
        )
    if diagnosis:
        (root / DATA_DEFAULTS["diagnosis_file"]).write_text("".join(f"{pid}\tCOPD\n" for pid in DEMOGRAPHICS))
    return {**DATA_DEFAULTS, "root": str(root)}

"""Reader for the ICBHI 2017 Respiratory Sound Database exactly as distributed (or the synthetic copy).

The reference counts (4,142 train / 2,756 test cycles) only come out if every annotation row becomes one
cycle and the official split is applied per FILE, so this reader never merges, drops or reorders rows.
Known quirks of the public files are tolerated with a warning; anything else stops with one
:class:`~rsckd.errors.UserError` naming the file and what was expected, before any work is done.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from rsckd.config import Data
from rsckd.data.prompts import bts_prompt, prompt_locations
from rsckd.errors import UserError, warn
from rsckd.schema import validated

LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
MODES = ("sc", "mc")
DEVICES = ("AKGC417L", "LittC2SE", "Litt3200", "Meditron")
DEMOGRAPHICS_NAMES = ("ICBHI_Challenge_demographic_information.txt", "demographic_info.txt")
SPLITS = ("train", "test")
NA_VALUES = {"", "na", "nan", "n/a", "none"}
# Defaults of the `data` block: `rsckd data summary ROOT` and tests read a root without a params file.
DATA_DEFAULTS: dict[str, Any] = {
    "root": "data/synthetic",
    "audio_dir": "ICBHI_final_database",
    "split_file": "ICBHI_challenge_train_test.txt",
    "demographics_file": None,
    "diagnosis_file": "ICBHI_Challenge_diagnosis.txt",
    "metadata_file": "metadata.txt",
    "prompt_location": "patient",
    "val_fraction": 0.2,
    "val_seed": 0,
}
STEM_FORMAT = "{patient}_{index}_{location}_{mode}_{device}, e.g. 101_1b1_Al_sc_Meditron"

Annotation = tuple[float, float, int, int]
Note = Callable[[str], None]


@dataclass(frozen=True)
class Patient:
    """One row of the demographic file (``None`` where the file says NA)."""

    pid: int
    age: float | None
    sex: str | None
    adult_bmi: float | None
    child_weight: float | None
    child_height: float | None


@dataclass
class Recording:
    """One ``<stem>.wav`` + ``<stem>.txt`` pair; ``annotations`` keeps the file's row order."""

    stem: str
    patient: int
    index: str
    location: str
    mode: str
    device: str
    split: str
    wav: Path
    native_sr: int
    frames: int
    annotations: list[Annotation]
    prompt_location: str = ""
    prompt: str = ""

    @property
    def duration(self) -> float:
        return self.frames / self.native_sr


@dataclass
class Dataset:
    root: Path
    recordings: list[Recording]
    patients: dict[int, Patient]
    metadata_locations: dict[int, str] | None
    diagnoses: dict[int, str]
    warnings: list[str] = field(default_factory=list)


def missing_root_message(root: Path) -> str:
    return (
        f"{root}: data root not found. Download the ICBHI 2017 Respiratory Sound Database and put under "
        f"{root}/: ICBHI_final_database/ (the 920 .wav + .txt pairs), ICBHI_challenge_train_test.txt, the "
        f"demographic file ({DEMOGRAPHICS_NAMES[0]} or {DEMOGRAPHICS_NAMES[1]}) and optionally "
        "metadata.txt of the BTS reference (per-patient chest locations) -- e.g. data/raw/ICBHI/ with "
        "data.root: data/raw/ICBHI. "
        "For the embedded synthetic corpus run `rsckd synthesize` first."
    )


def parse_stem(stem: str) -> tuple[int, str, str, str, str]:
    """(patient, recording index, chest location, mode, device) from an ICBHI file name."""
    parts = stem.split("_")
    if len(parts) != 5 or not parts[0].isdigit():
        raise ValueError(f"expected 5 underscore-separated fields {STEM_FORMAT}")
    pid, index, location, mode, device = parts
    for value, allowed, what in (
        (location, LOCATIONS, "chest location"),
        (mode, MODES, "mode"),
        (device, DEVICES, "device"),
    ):
        if value not in allowed:
            raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return int(pid), index, location, mode, device


def _read_text(path: Path, note: Note) -> str:
    """Decode UTF-8; a stray non-UTF-8 byte (seen in public files) falls back to latin-1 with a warning."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        text = raw.decode("latin-1")
        note(f"{path}: byte 0x{raw[err.start]:02x} at offset {err.start} is not UTF-8; read it as latin-1")
    return text.lstrip("\ufeff")


def _lines(text: str) -> list[tuple[int, list[str]]]:
    """Non-empty lines as (number, fields); tab-separated lines keep empty fields, others split on spaces."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.rstrip("\t\r ").split("\t")] if "\t" in line else line.split()
        out.append((number, fields))
    return out


def _optional_number(value: str, where: str, what: str) -> float | None:
    if value.lower() in NA_VALUES:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise UserError(f"{where}: {what} {value!r} is not a number (or NA)")
    return number


def _read_patients(path: Path, note: Note) -> tuple[dict[int, Patient], dict[int, str]]:
    """Rows ``pid age sex adult_bmi child_weight child_height [chest_location]``; locations from column 7."""
    patients: dict[int, Patient] = {}
    locations: dict[int, str] = {}
    for i, (number, fields) in enumerate(_lines(_read_text(path, note))):
        where = f"{path}, line {number}"
        if i == 0 and not fields[0].isdigit() and fields[0].isidentifier():
            continue  # a header line (pid age sex ...)
        if len(fields) < 6:
            raise UserError(
                f"{where}: {len(fields)} column(s); expected 6 "
                "(pid age sex adult_bmi child_weight child_height, NA if missing)"
            )
        if not fields[0].isdigit():
            raise UserError(f"{where}: patient id {fields[0]!r} is not an integer")
        pid = int(fields[0])
        if pid in patients:
            raise UserError(f"{where}: patient {pid} appears twice; expected one line per patient")
        sex = None if fields[2].lower() in NA_VALUES else fields[2].upper()
        if sex not in (None, "M", "F"):
            raise UserError(f"{where}: sex {fields[2]!r}; expected M, F or NA")
        age, bmi, weight, height = (
            _optional_number(fields[k], where, name)
            for k, name in ((1, "age"), (3, "adult BMI"), (4, "child weight"), (5, "child height"))
        )
        patients[pid] = Patient(pid, age, sex, bmi, weight, height)
        if len(fields) >= 7 and fields[6].lower() not in NA_VALUES:
            if fields[6] not in LOCATIONS:
                raise UserError(
                    f"{where}: chest location {fields[6]!r}; expected one of {', '.join(LOCATIONS)}"
                )
            locations[pid] = fields[6]
    if not patients:
        raise UserError(f"{path}: no patient rows; expected one line per patient")
    return patients, locations


def _read_diagnoses(path: Path, note: Note) -> dict[int, str]:
    out: dict[int, str] = {}
    for i, (number, fields) in enumerate(_lines(_read_text(path, note).replace(",", " "))):
        if i == 0 and not fields[0].isdigit():
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise UserError(f"{path}, line {number}: expected '<patient id>\\t<diagnosis>'")
        out[int(fields[0])] = " ".join(fields[1:])
    return out


def _read_split_file(path: Path, note: Note) -> dict[str, str]:
    if not path.is_file():
        raise UserError(
            f"{path}: split file not found; expected lines '<stem>\\t<train|test>' (data.split_file)"
        )
    entries: dict[str, str] = {}
    for number, fields in _lines(_read_text(path, note)):
        where = f"{path}, line {number}"
        if len(fields) != 2:
            raise UserError(f"{where}: {len(fields)} column(s); expected '<stem>\\t<train|test>'")
        stem, split = fields
        if split not in SPLITS:
            raise UserError(f"{where}: split {split!r}; expected train or test")
        if stem in entries:
            raise UserError(f"{where}: {stem} is listed twice; expected each file once")
        entries[stem] = split
    if not entries:
        raise UserError(f"{path}: empty split file; expected lines '<stem>\\t<train|test>'")
    return entries


def _shorten(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _assign_splits(stems: list[str], entries: dict[str, str], path: Path, note: Note) -> dict[str, str]:
    """Split per audio file; names differing only in the device token (challenge list) match on 4 fields."""
    stem_set = set(stems)
    spare: dict[str, list[str]] = defaultdict(list)
    for name in entries:
        if name not in stem_set:
            spare[name.rsplit("_", 1)[0]].append(name)
    wanting: dict[str, list[str]] = defaultdict(list)
    for stem in stems:
        if stem not in entries:
            wanting[stem.rsplit("_", 1)[0]].append(stem)
    out = {stem: entries[stem] for stem in stems if stem in entries}
    renamed, used = [], set()
    for prefix, audio in wanting.items():
        if len(audio) == 1 and len(spare.get(prefix, [])) == 1:
            out[audio[0]] = entries[spare[prefix][0]]
            used.add(spare[prefix][0])
            renamed.append(f"{spare[prefix][0]} -> {audio[0]}")
    missing = sorted(s for s in stems if s not in out)
    if missing:
        raise UserError(
            f"{path}: no split for {len(missing)} audio file(s): {_shorten(missing)}; "
            "expected a line per file"
        )
    extra = sorted(name for names in spare.values() for name in names if name not in used)
    if extra:
        raise UserError(
            f"{path}: lists {len(extra)} file(s) with no audio in the audio folder: {_shorten(extra)}; "
            "expected every listed <stem>.wav to exist"
        )
    if renamed:
        note(
            f"{path}: {len(renamed)} name(s) differ from the audio files only in the device token; "
            f"matched on the first four fields: {_shorten(sorted(renamed))}"
        )
    for split in SPLITS:
        if split not in out.values():
            raise UserError(f"{path}: no {split} file; expected both train and test files")
    return out


def _scan_audio_dir(audio: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``<stem>.wav`` and annotation ``<stem>.txt`` files (other text files, like READMEs, are ignored)."""
    wavs: dict[str, Path] = {}
    txts: dict[str, Path] = {}
    for path in sorted(audio.iterdir()):
        suffix = path.suffix.lower()
        if (
            not path.is_file()
            or suffix not in (".wav", ".txt")
            or (suffix == ".txt" and not re.match(r"\d+_", path.name))
        ):
            continue
        found = wavs if suffix == ".wav" else txts
        if path.stem in found:
            raise UserError(
                f"{audio}: duplicate recording {path.stem} ({found[path.stem].name} and {path.name})"
            )
        found[path.stem] = path
    if not wavs:
        raise UserError(f"{audio}: no .wav files; expected the ICBHI <stem>.wav + <stem>.txt pairs")
    for have, lack, kind in ((wavs, txts, "annotation .txt"), (txts, wavs, ".wav")):
        orphans = sorted(set(have) - set(lack))
        if orphans:
            raise UserError(
                f"{audio}: {len(orphans)} recording(s) without a {kind} file: {_shorten(orphans)}"
            )
    return wavs, txts


def _wav_info(path: Path) -> tuple[int, int]:
    """(sample rate, frames) from the header; only PCM is accepted, like the ICBHI files."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise UserError(f"{path}: unreadable audio ({err}); expected a PCM WAV file") from None
    if not info.subtype.startswith("PCM_"):
        raise UserError(
            f"{path}: sample format {info.subtype} ({info.subtype_info}); expected PCM "
            "(PCM_16, PCM_24, PCM_32 or PCM_U8) as in ICBHI"
        )
    if info.frames == 0:
        raise UserError(f"{path}: empty audio (0 samples); expected a recording")
    return int(info.samplerate), int(info.frames)


def _read_annotations(path: Path, duration: float, wav: Path, note: Note) -> tuple[list[Annotation], int]:
    """Rows in file order, plus how many end after the audio ends (the reference clips those)."""
    rows: list[Annotation] = []
    late = 0
    for number, fields in _lines(_read_text(path, note)):
        where = f"{path}, line {number}"
        if len(fields) != 4:
            raise UserError(
                f"{where}: {len(fields)} column(s); expected 4 (start end crackle wheeze, tab-separated)"
            )
        try:
            start, end = float(fields[0]), float(fields[1])
        except ValueError:
            raise UserError(
                f"{where}: start/end {fields[0]!r} {fields[1]!r}; expected numbers (seconds)"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            raise UserError(f"{where}: start/end {fields[0]} {fields[1]}; expected finite seconds >= 0")
        if end <= start:
            raise UserError(f"{where}: end {fields[1]} <= start {fields[0]}; expected end > start")
        if fields[2] not in ("0", "1") or fields[3] not in ("0", "1"):
            raise UserError(f"{where}: crackle/wheeze {fields[2]!r} {fields[3]!r}; expected 0 or 1")
        if start >= duration:
            raise UserError(f"{where}: cycle starts at {start} s but {wav.name} lasts only {duration:.3f} s")
        late += end > duration
        rows.append((start, end, int(fields[2]), int(fields[3])))
    if not rows:
        raise UserError(f"{path}: no annotation rows; expected one line per breath cycle")
    return rows, late


def _resolve(root: Path, name: str | None) -> Path | None:
    return None if name is None else root / name


def _read_demographics(
    root: Path, demographics_file: str | None, metadata: Path | None, note: Note
) -> tuple[dict[int, Patient], dict[int, str] | None]:
    """Patients from the demographic file (auto-detected when not configured), and the metadata locations."""
    configured = _resolve(root, demographics_file)
    candidates = [configured] if configured else [root / name for name in DEMOGRAPHICS_NAMES]
    demographics = next((p for p in candidates if p.is_file()), None)
    meta_patients, locations = _read_patients(metadata, note) if metadata else ({}, {})
    if demographics is not None:
        patients, _ = _read_patients(demographics, note)
    elif configured is None and metadata is not None:
        note(
            f"{root}: no {' or '.join(DEMOGRAPHICS_NAMES)}; "
            f"using the first 6 columns of {metadata} as demographics"
        )
        patients = meta_patients
    else:
        expected = configured or " or ".join(str(p) for p in candidates)
        raise UserError(
            f"{expected}: demographic file not found (data.demographics_file); "
            "expected 6 columns pid age sex ..."
        )
    return patients, (locations or None)


def data_block(**settings: Any) -> Data:
    """A ``data`` block from ``DATA_DEFAULTS`` and the given settings (``rsckd data summary``, tests)."""
    return validated(Data, {**DATA_DEFAULTS, **settings}, "data")


def read_dataset(cfg: Data) -> Dataset:
    """Read and check an ICBHI-layout root described by the ``data`` block of params.yaml."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(missing_root_message(root))
    audio = root / cfg.audio_dir
    if not audio.is_dir():
        raise UserError(
            f"{audio}: audio folder not found (data.audio_dir); "
            "expected the folder of <stem>.wav + <stem>.txt pairs"
        )
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        warn(message)

    wavs, txts = _scan_audio_dir(audio)
    stems = sorted(wavs)
    parsed = {}
    for stem in stems:
        try:
            parsed[stem] = parse_stem(stem)
        except ValueError as err:
            raise UserError(f"{wavs[stem]}: file name {stem!r}: {err}") from None
    split_path = root / cfg.split_file
    splits = _assign_splits(stems, _read_split_file(split_path, note), split_path, note)

    recordings, late = [], 0
    for stem in stems:
        pid, index, location, mode, device = parsed[stem]
        sr, frames = _wav_info(wavs[stem])
        rows, n_late = _read_annotations(txts[stem], frames / sr, wavs[stem], note)
        late += n_late
        recordings.append(
            Recording(stem, pid, index, location, mode, device, splits[stem], wavs[stem], sr, frames, rows)
        )
    if late:
        note(
            f"{audio}: {late} cycle(s) end after their recording ends "
            "(kept; extraction clips them as the reference does)"
        )

    metadata = _resolve(root, cfg.metadata_file)
    metadata = metadata if metadata is not None and metadata.is_file() else None
    patients, locations = _read_demographics(root, cfg.demographics_file, metadata, note)
    pids = sorted({r.patient for r in recordings})
    absent = [pid for pid in pids if pid not in patients]
    if absent:
        note(
            f"no demographics for patient(s) {', '.join(map(str, absent))}: prompts use pediatric/female "
            "as the reference does"
        )
    gaps = {
        what: [str(pid) for pid in pids if pid in patients and getattr(patients[pid], what) is None]
        for what in ("age", "sex")
    }
    if gaps["age"] or gaps["sex"]:
        listed = "; ".join(f"{what} of patient(s) {', '.join(p)}" for what, p in gaps.items() if p)
        note(
            f"NA {listed} in the demographics: prompts use pediatric (age) / female (sex) like the reference"
        )

    diagnoses: dict[int, str] = {}
    diagnosis = _resolve(root, cfg.diagnosis_file)
    if diagnosis is not None:
        if diagnosis.is_file():
            diagnoses = _read_diagnoses(diagnosis, note)
        else:
            note(f"{diagnosis}: diagnosis file not found (data.diagnosis_file; no per-diagnosis counts)")

    chosen, prompt_notes = prompt_locations(recordings, locations, cfg.prompt_location)
    for message in prompt_notes:
        note(message)
    for rec in recordings:
        p = patients.get(rec.patient)
        rec.prompt_location = chosen[rec.stem]
        rec.prompt = bts_prompt(rec.prompt_location, p.age if p else None, p.sex if p else None, rec.device)
    return Dataset(root, recordings, patients, locations, diagnoses, warnings)

"""The BTS metadata sentence, built exactly as the reference builds it (reference-protocol section 4).

Teachers and students must see the same text for the same cycle, so the quirks of the reference are kept
on purpose: a missing age counts as pediatric, a missing sex as female, the device comes from the file
name, and (by default) the chest location is the patient's single location from the reference
``metadata.txt``, not the recording's own one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

LOCATION_NAMES = {
    "Tc": "trachea",
    "Al": "left anterior chest",
    "Ar": "right anterior chest",
    "Pl": "left posterior chest",
    "Pr": "right posterior chest",
    "Ll": "left lateral chest",
    "Lr": "right lateral chest",
}
PROMPT_LOCATION_MODES = ("patient", "recording")
ADULT_MIN_AGE = 19


class _Recording(Protocol):
    stem: str
    patient: int
    location: str


def age_group(age: float | None) -> str:
    """``int(age) >= 19`` is adult; a missing age is pediatric (the reference maps NaN to -1)."""
    return "adult" if age is not None and int(age) >= ADULT_MIN_AGE else "pediatric"


def bts_prompt(location: str, age: float | None, sex: str | None, device: str) -> str:
    """One sentence per recording: location, patient (age group + sex) and device."""
    sex_word = "male" if sex == "M" else "female"
    patient = (
        f"an adult {sex_word} patient" if age_group(age) == "adult" else f"a {sex_word} pediatric patient"
    )
    device_words = "an AKGC417L microphone" if device == "AKGC417L" else f"a {device} stethoscope"
    return f"This sound was recorded from the {LOCATION_NAMES[location]} of {patient}, using {device_words}."


def prompt_locations(
    recordings: Iterable[_Recording], metadata_locations: Mapping[int, str] | None, mode: str
) -> tuple[dict[str, str], list[str]]:
    """Chest location code used in each recording's prompt, keyed by stem, plus warnings.

    ``mode='patient'`` reproduces the reference: the per-patient value of the metadata file. Without that
    file (or for a patient it lacks) the patient's first recording in sorted stem order stands in, with one
    warning, so a dataset without the reference's extra file still gets a fixed per-patient location.
    """
    if mode not in PROMPT_LOCATION_MODES:
        raise ValueError(f"prompt_location must be one of {PROMPT_LOCATION_MODES}, got {mode!r}")
    ordered = sorted(recordings, key=lambda r: r.stem)
    if mode == "recording":
        return {r.stem: r.location for r in ordered}, []
    first: dict[int, str] = {}
    for rec in ordered:
        first.setdefault(rec.patient, rec.location)
    known = metadata_locations or {}
    fallback = sorted(pid for pid in first if pid not in known)
    warnings = []
    if metadata_locations is None:
        warnings.append(
            "no per-patient chest location (metadata file or its 7th column absent): prompts use the "
            "location of each patient's first recording (data.prompt_location = patient)"
        )
    elif fallback:
        warnings.append(
            f"patient(s) {', '.join(map(str, fallback))} missing from the metadata file: their prompts "
            "use the location of the patient's first recording"
        )
    chosen = {pid: known.get(pid, loc) for pid, loc in first.items()}
    return {r.stem: chosen[r.patient] for r in ordered}, warnings

"""BTS prompts: exact reference sentences, missing age/sex fallbacks, and both chest-location modes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from icbhi_fixtures import make_icbhi
from rsckd.data.icbhi import data_block, read_dataset
from rsckd.data.prompts import age_group, bts_prompt, prompt_locations


def test_reference_examples_exactly() -> None:
    # the two examples of reference-protocol section 4, verbatim
    examples = [
        "This sound was recorded from the left posterior chest of an adult male patient, using a Meditron stethoscope.",  # noqa: E501
        "This sound was recorded from the trachea of a female pediatric patient, using an AKGC417L microphone.",  # noqa: E501
    ]
    assert bts_prompt("Pl", 70.0, "M", "Meditron") == examples[0]
    assert bts_prompt("Tc", 5.0, "F", "AKGC417L") == examples[1]


@pytest.mark.parametrize(
    ("age", "sex", "words"),
    [
        (None, None, "a female pediatric patient"),  # ICBHI 223: all NA
        (None, "M", "a male pediatric patient"),
        (45.0, None, "an adult female patient"),
        (18.9, "M", "a male pediatric patient"),  # int(18.9) = 18
        (19.0, "F", "an adult female patient"),
        (0.58, "M", "a male pediatric patient"),
    ],
)
def test_patient_words(age: float | None, sex: str | None, words: str) -> None:
    assert f"of {words}, using" in bts_prompt("Ar", age, sex, "Litt3200")


def test_locations_and_devices() -> None:
    assert "from the right lateral chest of" in bts_prompt("Lr", 50, "M", "LittC2SE")
    assert bts_prompt("Ll", 50, "M", "LittC2SE").endswith("using a LittC2SE stethoscope.")
    assert age_group(None) == "pediatric" and age_group(19) == "adult" and age_group(18.99) == "pediatric"


@dataclass
class Rec:
    stem: str
    patient: int
    location: str


RECS = [
    Rec("7_2b1_Tc_sc_Meditron", 7, "Tc"),
    Rec("7_1b1_Pr_sc_Meditron", 7, "Pr"),
    Rec("8_1b1_Al_sc_Meditron", 8, "Al"),
]


def test_prompt_location_modes() -> None:
    assert prompt_locations(RECS, {7: "Tc", 8: "Ll"}, "patient") == (
        {"7_1b1_Pr_sc_Meditron": "Tc", "7_2b1_Tc_sc_Meditron": "Tc", "8_1b1_Al_sc_Meditron": "Ll"},
        [],
    )
    own, notes = prompt_locations(RECS, {7: "Tc"}, "recording")
    assert own == {r.stem: r.location for r in RECS} and notes == []
    # no metadata: the patient's first recording in sorted stem order (7_1b1 -> Pr), one warning
    chosen, notes = prompt_locations(RECS, None, "patient")
    assert (
        chosen["7_2b1_Tc_sc_Meditron"] == "Pr" and chosen["8_1b1_Al_sc_Meditron"] == "Al" and len(notes) == 1
    )
    chosen, notes = prompt_locations(RECS, {7: "Tc"}, "patient")
    assert chosen["8_1b1_Al_sc_Meditron"] == "Al" and len(notes) == 1 and "8" in notes[0]


def test_dataset_prompts_follow_prompt_location(tmp_path: Path) -> None:
    cfg = make_icbhi(tmp_path / "with")
    by_stem = {r.stem: r for r in read_dataset(data_block(**cfg)).recordings}
    rec = by_stem["101_1b1_Al_sc_Meditron"]  # metadata says Pr for patient 101
    assert rec.prompt_location == "Pr"
    assert rec.prompt == (
        "This sound was recorded from the right posterior chest of a female pediatric patient, "
        "using a Meditron stethoscope."
    )
    assert by_stem["106_3b1_Tc_sc_LittC2SE"].prompt.endswith(
        "of a female pediatric patient, using a LittC2SE stethoscope."
    )
    assert (
        "of an adult male patient, using an AKGC417L microphone." in by_stem["102_2b1_Ar_sc_AKGC417L"].prompt
    )

    own = read_dataset(data_block(**{**cfg, "prompt_location": "recording"}))
    assert {r.stem: r.prompt_location for r in own.recordings}["101_1b1_Al_sc_Meditron"] == "Al"

    bare = make_icbhi(tmp_path / "without", metadata=False)
    ds = read_dataset(data_block(**bare))
    assert {r.stem: r.prompt_location for r in ds.recordings}["101_1b1_Pr_sc_Meditron"] == "Al"
    assert sum("no per-patient chest location" in w for w in ds.warnings) == 1

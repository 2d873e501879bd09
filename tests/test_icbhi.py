"""The ICBHI reader: layout, native rates/PCM widths, tolerated quirks (warnings) and every hard error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from icbhi_fixtures import DEMOGRAPHICS, RECORDINGS, make_icbhi
from rsckd.data.icbhi import data_block, parse_stem, read_dataset
from rsckd.errors import UserError


@pytest.fixture
def cfg(tmp_path: Path) -> dict:
    return make_icbhi(tmp_path / "icbhi")


def audio(cfg: dict) -> Path:
    return Path(cfg["root"]) / cfg["audio_dir"]


def test_reads_every_recording_in_stem_order(cfg: dict) -> None:
    ds = read_dataset(data_block(**cfg))
    assert [r.stem for r in ds.recordings] == sorted(r[0] for r in RECORDINGS)
    by_stem = {r.stem: r for r in ds.recordings}
    for stem, split, sr, _, rows in RECORDINGS:
        rec = by_stem[stem]
        assert (rec.split, rec.native_sr, rec.frames, rec.annotations) == (split, sr, 2 * sr, rows)
        assert rec.wav == audio(cfg) / f"{stem}.wav"
    rec = by_stem["102_1b1_Tc_mc_AKGC417L"]
    assert (rec.patient, rec.index, rec.location, rec.mode, rec.device) == (
        102,
        "1b1",
        "Tc",
        "mc",
        "AKGC417L",
    )
    assert {r.native_sr for r in ds.recordings} == {4000, 10000, 44100}
    assert (
        ds.patients[105].age == 0.58 and ds.patients[102].adult_bmi == 25.5 and ds.patients[106].sex is None
    )
    assert ds.metadata_locations == {101: "Pr", 102: "Tc", 103: "Ll", 104: "Lr", 105: "Pl", 106: "Tc"}
    assert ds.diagnoses[101] == "COPD"
    assert len(ds.warnings) == 1 and "106" in ds.warnings[0]  # the all-NA patient, like ICBHI's 223


def test_demographic_info_variant_space_separated(cfg: dict) -> None:
    root = Path(cfg["root"])
    (root / "ICBHI_Challenge_demographic_information.txt").unlink()
    (root / "demographic_info.txt").write_text("".join(" ".join(r) + "\n" for r in DEMOGRAPHICS.values()))
    assert read_dataset(data_block(**cfg)).patients[103].age == 18.9


def test_non_utf8_annotation_byte_warns(cfg: dict, capsys: pytest.CaptureFixture[str]) -> None:
    path = audio(cfg) / "101_1b1_Al_sc_Meditron.txt"
    path.write_bytes(b"0.100\t0.900\t0\t0\xa0\n0.900\t1.800\t1\t0\n")
    ds = read_dataset(data_block(**cfg))
    assert ds.recordings[0].annotations == [(0.1, 0.9, 0, 0), (0.9, 1.8, 1, 0)]
    assert any("not UTF-8" in w and path.name in w for w in ds.warnings)
    assert "warning:" in capsys.readouterr().err


def test_split_name_with_other_device_token_matches_on_four_fields(cfg: dict) -> None:
    split = Path(cfg["root"]) / cfg["split_file"]
    split.write_text(split.read_text().replace("103_2b2_Ll_sc_LittC2SE", "103_2b2_Ll_sc_Meditron"))
    ds = read_dataset(data_block(**cfg))
    assert {r.stem: r.split for r in ds.recordings}["103_2b2_Ll_sc_LittC2SE"] == "test"
    assert any(
        "device token" in w and "103_2b2_Ll_sc_Meditron -> 103_2b2_Ll_sc_LittC2SE" in w for w in ds.warnings
    )


def test_patient_missing_from_demographics_warns_and_falls_back(cfg: dict) -> None:
    path = Path(cfg["root"]) / "ICBHI_Challenge_demographic_information.txt"
    path.write_text("".join("\t".join(r) + "\n" for pid, r in DEMOGRAPHICS.items() if pid != 104))
    ds = read_dataset(data_block(**cfg))
    assert any("no demographics for patient(s) 104" in w for w in ds.warnings)
    rec = next(r for r in ds.recordings if r.patient == 104)
    assert "of a female pediatric patient" in rec.prompt


def test_cycle_ending_after_audio_warns(cfg: dict) -> None:
    (audio(cfg) / "106_3b1_Tc_sc_LittC2SE.txt").write_text("0.0\t2.5\t1\t0\n")
    ds = read_dataset(data_block(**cfg))
    assert ds.recordings[-1].annotations == [(0.0, 2.5, 1, 0)]
    assert any("end after their recording ends" in w for w in ds.warnings)


def test_header_lines_and_blank_lines_are_tolerated(cfg: dict) -> None:
    root = Path(cfg["root"])
    path = root / "ICBHI_Challenge_demographic_information.txt"
    path.write_text("pid age sex bmi weight height\n\n" + path.read_text())
    assert len(read_dataset(data_block(**cfg)).patients) == len(DEMOGRAPHICS)


def test_parse_stem() -> None:
    assert parse_stem("226_1b1_Pl_sc_LittC2SE") == (226, "1b1", "Pl", "sc", "LittC2SE")
    with pytest.raises(ValueError, match="chest location"):
        parse_stem("226_1b1_Xx_sc_LittC2SE")


def _rewrite(name: str, text: str) -> Callable[[dict], Path]:
    def mutate(cfg: dict) -> Path:
        path = audio(cfg) / name
        path.write_text(text)
        return path

    return mutate


def _split(text_of: Callable[[str], str]) -> Callable[[dict], Path]:
    def mutate(cfg: dict) -> Path:
        path = Path(cfg["root"]) / cfg["split_file"]
        path.write_text(text_of(path.read_text()))
        return path

    return mutate


def _unlink(name: str) -> Callable[[dict], Path]:
    def mutate(cfg: dict) -> Path:
        (audio(cfg) / name).unlink()
        return audio(cfg)

    return mutate


def _wav(write: Callable[[Path], None]) -> Callable[[dict], Path]:
    def mutate(cfg: dict) -> Path:
        path = audio(cfg) / "104_1b1_Lr_sc_Litt3200.wav"
        write(path)
        return path

    return mutate


def _missing_root(cfg: dict) -> Path:
    cfg["root"] = str(Path(cfg["root"]) / "nope")
    return Path(cfg["root"])


def _missing_audio_dir(cfg: dict) -> Path:
    cfg["audio_dir"] = "elsewhere"
    return Path(cfg["root"]) / "elsewhere"


def _missing_split(cfg: dict) -> Path:
    path = Path(cfg["root"]) / cfg["split_file"]
    path.unlink()
    return path


def _duplicate(cfg: dict) -> Path:
    (audio(cfg) / "101_1b1_Al_sc_Meditron.wav").rename(audio(cfg) / "101_1b1_Al_sc_Meditron.WAV")
    (audio(cfg) / "101_1b1_Pr_sc_Meditron.wav").rename(audio(cfg) / "101_1b1_Al_sc_Meditron.wav")
    (audio(cfg) / "101_1b1_Pr_sc_Meditron.txt").unlink()
    return audio(cfg)


def _bad_name(cfg: dict) -> Path:
    for ext in ("wav", "txt"):
        (audio(cfg) / f"106_3b1_Tc_sc_LittC2SE.{ext}").rename(audio(cfg) / f"106_3b1_Tc_LittC2SE.{ext}")
    return audio(cfg) / "106_3b1_Tc_LittC2SE.wav"


A = "101_1b1_Al_sc_Meditron.txt"
ERRORS = {
    "missing root": (_missing_root, "ICBHI 2017 Respiratory Sound Database"),
    "missing audio folder": (_missing_audio_dir, "audio folder not found"),
    "missing split file": (_missing_split, "split file not found"),
    "wav without annotation": (_unlink("104_1b1_Lr_sc_Litt3200.txt"), "without a annotation .txt"),
    "annotation without wav": (_unlink("104_1b1_Lr_sc_Litt3200.wav"), "without a .wav"),
    "too few columns": (_rewrite(A, "0.1\t0.9\t0\n"), "line 1: 3 column(s); expected 4"),
    "non-numeric time": (_rewrite(A, "0.1\tabc\t0\t0\n"), "expected numbers"),
    "end before start": (_rewrite(A, "0.1\t0.9\t0\t0\n0.9\t0.9\t1\t0\n"), "line 2: end 0.9 <= start 0.9"),
    "label not 0/1": (_rewrite(A, "0.1\t0.9\t2\t0\n"), "expected 0 or 1"),
    "no rows": (_rewrite(A, "\n"), "no annotation rows"),
    "cycle beyond audio": (_rewrite(A, "2.5\t3.0\t0\t0\n"), "starts at 2.5 s but"),
    "unreadable wav": (_wav(lambda p: p.write_bytes(b"RIFF garbage")), "unreadable audio"),
    "empty wav": (_wav(lambda p: sf.write(p, np.zeros(0), 4000, format="WAV")), "empty audio"),
    "float wav": (
        _wav(lambda p: sf.write(p, np.zeros(800), 4000, subtype="FLOAT", format="WAV")),
        "expected PCM",
    ),
    "duplicate stem": (_duplicate, "duplicate recording 101_1b1_Al_sc_Meditron"),
    "bad file name": (_bad_name, "expected 5 underscore-separated fields"),
    "stem missing from split": (
        _split(lambda t: t.replace("105_1p1_Pl_sc_Meditron\ttrain\n", "")),
        "no split for 1",
    ),
    "split lists unknown file": (_split(lambda t: t + "\n199_1b1_Al_sc_Meditron\ttest"), "with no audio"),
    "no test file": (_split(lambda t: t.replace("\ttest", "\ttrain")), "no test file"),
    "bad split value": (
        _split(lambda t: t.replace("\ttest", "\tTest", 1)),
        "split 'Test'; expected train or test",
    ),
    "split listed twice": (_split(lambda t: t + "\n101_1b1_Al_sc_Meditron\ttrain"), "listed twice"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_the_file(cfg: dict, case: str) -> None:
    mutate, message = ERRORS[case]
    where = mutate(cfg)
    with pytest.raises(UserError, match=None) as err:
        read_dataset(data_block(**cfg))
    assert message in str(err.value)
    assert str(where) in str(err.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("101\t3\tX\tNA\t19\t99", "sex 'X'"),
        ("101\t3\tF\tNA\t19", "expected 6"),
        ("101\tabc\tF\tNA\t19\t99", "age"),
    ],
)
def test_bad_demographics(cfg: dict, line: str, message: str) -> None:
    path = Path(cfg["root"]) / "ICBHI_Challenge_demographic_information.txt"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match=message):
        read_dataset(data_block(**cfg))


def test_missing_demographics_file(cfg: dict) -> None:
    root = Path(cfg["root"])
    (root / "ICBHI_Challenge_demographic_information.txt").unlink()
    ds = read_dataset(data_block(**cfg))  # the reference metadata.txt carries the same 6 columns
    assert ds.patients[102].sex == "M" and any("first 6 columns" in w for w in ds.warnings)
    (root / "metadata.txt").unlink()
    with pytest.raises(UserError, match="demographic file not found"):
        read_dataset(data_block(**cfg))

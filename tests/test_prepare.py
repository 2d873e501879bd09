"""`rsckd prepare` and `rsckd data summary`: table order, ids, labels, validation carve, messages, output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from icbhi_fixtures import RECORDINGS, make_icbhi
from rsckd.cli import main
from rsckd.data.icbhi import data_block, read_dataset
from rsckd.data.prepare import carve_validation, cycle_rows, prepare
from rsckd.data.summary import summarize
from rsckd.data.table import CYCLE_COLUMNS, load_cycles
from rsckd.errors import UserError


@pytest.fixture
def cfg(tmp_path: Path) -> dict:
    return make_icbhi(tmp_path / "icbhi")


def params_file(tmp_path: Path, **data: object) -> Path:
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["data"].update(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_table_rows_order_ids_and_columns(cfg: dict, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    summary = prepare(data_block(**cfg), out)
    df = load_cycles(out / "cycles.csv")
    assert tuple(df.columns) == CYCLE_COLUMNS
    expected = [(stem, i, row) for stem, _, _, _, rows in sorted(RECORDINGS) for i, row in enumerate(rows)]
    assert len(df) == len(expected) == summary["cycles"]["total"]
    assert list(df["id"]) == [f"{stem}:{i}" for stem, i, _ in expected]
    assert list(zip(df["start"], df["end"], df["crackle"], df["wheeze"], strict=True)) == [
        r for _, _, r in expected
    ]
    assert list(df["label"]) == [c + 2 * w for _, _, (_, _, c, w) in expected]
    first = df.iloc[0]
    assert first["wav"] == f"{cfg['root']}/ICBHI_final_database/101_1b1_Al_sc_Meditron.wav"
    assert (first["patient"], first["native_sr"], first["location"], first["prompt_location"]) == (
        101,
        4000,
        "Al",
        "Pr",
    )
    assert (first["age"], first["sex"], first["age_group"], first["device"], first["mode"]) == (
        3.0,
        "F",
        "pediatric",
        "Meditron",
        "sc",
    )
    na = df[df["patient"] == 106].iloc[0]
    assert pd.isna(na["age"]) and na["sex"] == "" and na["age_group"] == "pediatric"
    assert df["id"].dtype == object or str(df["id"].dtype) in ("str", "string")
    assert set(df.loc[df["split"] == "test", "subset"]) == {"test"}
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_validation_carve_is_patient_disjoint_and_seeded(cfg: dict) -> None:
    ds = read_dataset(data_block(**cfg))
    rows = cycle_rows(ds, 0.5, 0)
    train = {r["patient"] for r in rows if r["subset"] == "train"}
    val = {r["patient"] for r in rows if r["subset"] == "val"}
    assert val and train and not train & val
    assert train | val == {r.patient for r in ds.recordings if r.split == "train"}
    assert [r["subset"] for r in rows if r["split"] == "test"] == ["test"] * sum(
        r["split"] == "test" for r in rows
    )
    assert [r["subset"] for r in cycle_rows(ds, 0.5, 0)] == [r["subset"] for r in rows]
    assert {r["subset"] for r in cycle_rows(ds, 0.0, 0)} == {"train", "test"}
    # patient 102 also has a test file (like ICBHI 156/218): only its train file counts for the carve
    assert 102 in {r.patient for r in ds.recordings if r.split == "test"}


def test_carve_sizes() -> None:
    patients = list(range(100, 180))
    assert len(carve_validation(patients, 0.2, 0)) == 16
    assert carve_validation(patients, 0.2, 0) == carve_validation(list(reversed(patients)), 0.2, 0)
    assert carve_validation(patients, 0.2, 0) != carve_validation(patients, 0.2, 1)
    assert len(carve_validation([1, 2], 0.1, 0)) == 1  # never empty, never everything
    with pytest.raises(UserError, match="at least 2 train patients"):
        carve_validation([1], 0.2, 0)


def test_prepare_cli_and_missing_root(cfg: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prepared"
    assert main(["prepare", "--params", str(params_file(tmp_path, root=cfg["root"])), "--out", str(out)]) == 0
    assert "12 cycles" in capsys.readouterr().out and (out / "cycles.csv").is_file()
    missing = tmp_path / "raw" / "ICBHI"
    assert (
        main(["prepare", "--params", str(params_file(tmp_path, root=str(missing))), "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(missing) in err
    for words in (
        "ICBHI 2017 Respiratory Sound Database",
        "ICBHI_final_database/",
        "ICBHI_challenge_train_test.txt",
        "metadata.txt",
    ):
        assert words in err
    assert (out / "cycles.csv").is_file()  # a failed run leaves the previous output alone


def test_load_cycles_rejects_wrong_columns(tmp_path: Path) -> None:
    path = tmp_path / "cycles.csv"
    path.write_text("id,stem\na:0,a\n")
    with pytest.raises(UserError, match="missing: .*'row'"):
        load_cycles(path)
    with pytest.raises(UserError, match="run `rsckd prepare`"):
        load_cycles(tmp_path / "absent.csv")


def test_summary_cli(cfg: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "summary", cfg["root"]]) == 0
    out = capsys.readouterr().out
    for line in (
        "files: 8 (train 5, test 3)",
        "patients: 6 (train 4, test 3; in both splits: 102)",
        "  train: 8 (normal 4, crackle 2, wheeze 1, both 1)",
        "  test: 4 (normal 2, crackle 1, wheeze 1, both 0)",
        "diagnoses:\n  COPD: 6 patients, cycles 12 (normal 6, crackle 3, wheeze 2, both 1)\n",
        "native sample rates: 4000 Hz x 5, 10000 Hz x 1, 44100 Hz x 2",
        "warnings: 1",
    ):
        assert line in out, line
    assert main(["data", "summary", cfg["root"], "--json", "--prompt-location", "recording"]) == 0
    data = json.loads(capsys.readouterr().out)
    ds = read_dataset(data_block(**{**cfg, "prompt_location": "recording"}))
    assert data == json.loads(json.dumps(summarize(ds, cycle_rows(ds, 0.2, 0))))
    assert data["prompts"]["distinct"] == len({r.prompt for r in ds.recordings})
    assert main(["data", "summary", cfg["root"] + "/nope"]) == 2
    assert "ICBHI 2017" in capsys.readouterr().err

"""Synthetic corpus: byte determinism, exact ICBHI layout, ICBHI-like proportions and cycle lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from rsckd.cli import main
from rsckd.config import Synthesize
from rsckd.data.icbhi import data_block, read_dataset
from rsckd.data.synthetic import FLIP_P, plan_corpus, render, synthesize

SMALL = Synthesize(
    seed=3, n_patients=6, recordings_per_patient=1.5, cycles_per_recording=3, test_fraction=0.4
)
ICBHI_SIZE = Synthesize(
    seed=0, n_patients=126, recordings_per_patient=7.3, cycles_per_recording=7.5, test_fraction=0.4
)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    synthesize(SMALL, out)
    return out


def test_same_seed_same_bytes_any_thread_count(corpus: Path, tmp_path: Path) -> None:
    synthesize(SMALL, tmp_path / "again", workers=1)
    assert tree(tmp_path / "again") == tree(corpus)
    synthesize(SMALL.model_copy(update={"seed": 4}), tmp_path / "other")
    assert tree(tmp_path / "other") != tree(corpus)


def test_layout_is_readable_icbhi(corpus: Path) -> None:
    names = {p.name for p in corpus.iterdir()}
    assert names == {
        "ICBHI_final_database",
        "ICBHI_challenge_train_test.txt",
        "ICBHI_Challenge_demographic_information.txt",
        "metadata.txt",
        "ICBHI_Challenge_diagnosis.txt",
    }
    assert (
        not (corpus / "ICBHI_challenge_train_test.txt").read_text().endswith("\n")
    )  # like the official file
    demo = [
        line.split("\t")
        for line in (corpus / "ICBHI_Challenge_demographic_information.txt").read_text().splitlines()
    ]
    assert all(len(row) == 6 for row in demo) and any("NA" in row for row in demo)
    ds = read_dataset(data_block(root=str(corpus)))
    assert all(w.startswith("NA ") for w in ds.warnings)  # only the deliberate demographic NAs
    assert {r.split for r in ds.recordings} == {"train", "test"}
    for pid, loc in ds.metadata_locations.items():
        assert loc in {r.location for r in ds.recordings if r.patient == pid}
    for rec in ds.recordings:
        assert rec.native_sr in (4000, 10000, 44100)
        assert sf.info(str(rec.wav)).subtype in ("PCM_16", "PCM_24", "PCM_32")
        bounds = [a[0] for a in rec.annotations] + [rec.annotations[-1][1]]
        assert np.all(np.diff(bounds) > 0) and rec.annotations[-1][1] <= rec.duration  # contiguous, inside


def test_proportions_like_icbhi() -> None:
    patients, recs = plan_corpus(ICBHI_SIZE)
    labels = np.concatenate([r.labels for r in recs])
    share = np.bincount(labels, minlength=4) / labels.size
    assert np.allclose(share, [0.54, 0.27, 0.12, 0.07], atol=0.06), share
    flipped = np.mean(np.concatenate([r.labels != r.sounds for r in recs]))
    assert abs(flipped - FLIP_P) < 0.02  # annotator noise at the configured rate
    assert 700 < len(recs) < 1200 and 5000 < labels.size < 9000
    lengths = np.concatenate([np.diff(r.bounds) for r in recs])
    assert lengths.min() >= 0.3 - 1e-3 and (lengths > 8).sum() >= 5 and 2.3 < np.median(lengths) < 3.0
    devices = [r.device for r in recs]
    assert 0.55 < devices.count("AKGC417L") / len(recs) < 0.85
    assert {r.sr for r in recs} == {4000, 10000, 44100} and {r.subtype for r in recs} == {
        "PCM_16",
        "PCM_24",
        "PCM_32",
    }
    assert {r.stem.split("_")[3] for r in recs} == {"sc", "mc"}
    ages = [p.age for p in patients if p.age is not None]
    assert min(ages) < 19 <= max(ages) and any(p.sex is None for p in patients)
    by_patient = {}
    for r in recs:
        by_patient.setdefault(int(r.stem.split("_")[0]), set()).add(r.split)
    assert sum(s == {"train", "test"} for s in by_patient.values()) == 1  # like ICBHI's 156/218


def test_render_length_and_level() -> None:
    _, recs = plan_corpus(SMALL)
    rec = next(r for r in recs if r.sr == 44100)
    y = render(rec, np.random.default_rng(0))
    assert y.dtype == np.float32 and y.size == int(np.ceil(rec.duration * rec.sr))
    assert np.isfinite(y).all() and 0.2 < np.abs(y).max() < 1.0


def test_cli_overrides_and_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    out = tmp_path / "cli"
    args = [
        "synthesize",
        "--params",
        str(path),
        "--out",
        str(out),
        "--n-patients",
        "4",
        "--cycles-per-recording",
        "2",
    ]
    assert main(args) == 0
    assert "4 patients" in capsys.readouterr().out
    assert len({p.name.split("_")[0] for p in (out / "ICBHI_final_database").iterdir()}) == 4
    assert main([*args, "--test-fraction", "0"]) == 2
    assert "flags: --test-fraction: expected a number > 0 and <= 1, got 0.0" in capsys.readouterr().err

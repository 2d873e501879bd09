"""`rsckd predict` on tiny runs trained on a synthetic corpus: the logits training saw, ensembles, windows."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from rsckd.cli import main
from rsckd.data.table import load_cycles
from rsckd.errors import UserError
from rsckd.predict import CLASSES, add_arguments, predict, windows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic corpus with one BTS run and one CNN6 run (1 epoch, tiny models)."""
    root = tmp_path_factory.mktemp("predict")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"].update(n_patients=6, recordings_per_patient=1, cycles_per_recording=3)
    for cfg in params["train"].values():
        cfg.update(epochs=1, batch_size=4)
    params["runtime"]["cpu_kernels"] = "native"  # trained in this process, where torch already ran kernels
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with contextlib.chdir(root):
        for command in (
            ["synthesize"],
            ["prepare"],
            ["features", "--kind", "clap"],
            ["features", "--kind", "fbank"],
        ):
            assert main(command) == 0, command
        for arch in ("bts", "cnn6"):
            assert main(["train", "--arch", arch, "--seed", "1", "--out", f"runs/{arch}",
                         "--metrics", f"runs/{arch}.json"]) == 0  # fmt: skip
    return root


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_predict_reproduces_the_logits_of_training(project: Path) -> None:
    """The annotated cycles of a test recording, with its table prompt, give the run's saved test logits."""
    table = load_cycles(project / "data/prepared/cycles.csv")
    test = table[table.split == "test"].reset_index(drop=True)
    stem = test.stem.iloc[0]
    rows = test[test.stem == stem]
    first = rows.iloc[0]
    wav = project / first.wav
    args = [str(wav), "--annotations", str(wav.with_suffix(".txt")), "--location", first.prompt_location]
    if not np.isnan(first.age):
        args += ["--age", str(first.age)]
    if first.sex != "":
        args += ["--sex", first.sex]
    for arch in ("bts", "cnn6"):
        with contextlib.chdir(project):
            results = predict(parse(*args, "--model", f"runs/{arch}"))
        saved = torch.from_numpy(np.load(project / f"runs/{arch}/logits_test.npy")[rows.index.to_numpy()])
        probs = torch.tensor([[r[f"p_{c}"] for c in CLASSES] for r in results])
        assert torch.allclose(probs, torch.softmax(saved, dim=1), atol=1e-4), arch
        assert [(r["start"], r["end"]) for r in results] == list(zip(rows.start, rows.end, strict=True))


def test_ensemble_is_the_mean_of_logits(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = next((project / "data/synthetic/ICBHI_final_database").glob("*.wav"))
    common = [str(wav), "--window-s", "2", "--age", "60", "--sex", "M"]
    with contextlib.chdir(project):
        single = [predict(parse(*common, "--model", f"runs/{arch}")) for arch in ("bts", "cnn6")]
        assert main(["predict", *common, "--model", "runs/bts", "runs/cnn6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == ["runs/bts", "runs/cnn6"]
    both = out["cycles"]
    assert len(both) == len(single[0]) >= 1
    for i, row in enumerate(both):
        log_probs = [np.log([s[i][f"p_{c}"] for c in CLASSES]) for s in single]
        # log-softmax differs from the logits by a per-model constant, which cancels in the softmax
        expected = torch.softmax(torch.tensor(np.mean(log_probs, axis=0)), dim=0)
        assert np.allclose([row[f"p_{c}"] for c in CLASSES], expected.numpy(), atol=1e-5)
        assert row["predicted"] == CLASSES[int(np.argmax([row[f"p_{c}"] for c in CLASSES]))]


def test_table_output(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = next((project / "data/synthetic/ICBHI_final_database").glob("*.wav"))
    with contextlib.chdir(project):
        assert main(["predict", str(wav), "--model", "runs/cnn6", "--window-s", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "cycle",
        "start",
        "end",
        "P(normal)",
        "P(crackle)",
        "P(wheeze)",
        "P(both)",
        "predicted",
    ]
    assert lines[1].split()[:3] == ["0", "0.000", "1.000"] and lines[1].split()[-1] in CLASSES
    assert len(lines) == 1 + int(sf.info(str(wav)).duration)  # 1-s windows, the short tail dropped


def test_windows_cover_the_recording() -> None:
    assert windows(5.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert windows(4.5, 2.0) == [(0.0, 2.0), (2.0, 4.0)]  # a 0.5 s tail is mostly padding: dropped
    assert windows(0.5, 8.0) == [(0.0, 0.5)]  # unless it is all there is
    assert windows(1.2, 0.5) == [(0.0, 0.5), (0.5, 1.0)]  # windows under MIN_TAIL_S: only the tail is short
    assert windows(1.0, 0.1) == [(round(0.1 * i, 6), round(0.1 * (i + 1), 6)) for i in range(10)]
    assert windows(1e-5, 1e5) == [(0.0, 1e-5)]  # a recording far shorter than the window is one window
    with pytest.raises(UserError, match="--window-s"):
        windows(5.0, 0.0)


def test_bts_needs_location_and_device_for_other_file_names(project: Path) -> None:
    wav = next((project / "data/synthetic/ICBHI_final_database").glob("*.wav"))
    renamed = project / "recording.wav"
    shutil.copy(wav, renamed)
    with contextlib.chdir(project), pytest.raises(UserError, match="--location and --device"):
        predict(parse(str(renamed), "--model", "runs/bts"))
    with contextlib.chdir(project):
        results = predict(
            parse(str(renamed), "--model", "runs/bts", "--location", "Tc", "--device", "Meditron")
        )
    assert len(results) >= 1


def test_missing_inputs_are_user_errors(project: Path, tmp_path: Path) -> None:
    wav = next((project / "data/synthetic/ICBHI_final_database").glob("*.wav"))
    with pytest.raises(UserError, match="recording not found"):
        predict(parse(str(tmp_path / "none.wav"), "--model", str(project / "runs/cnn6")))
    with pytest.raises(UserError, match="config.json"):
        predict(parse(str(wav), "--model", str(tmp_path)))
    with pytest.raises(UserError, match="--window-s: 1e-06 s is shorter than one sample"):
        predict(parse(str(wav), "--window-s", "1e-6", "--model", str(project / "runs/cnn6")))
    with pytest.raises(UserError, match="annotation file not found"):
        predict(
            parse(str(wav), "--annotations", str(tmp_path / "x.txt"), "--model", str(project / "runs/cnn6"))
        )


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda config: "{oops", "malformed run config, not valid JSON"),
        (
            lambda config: json.dumps({k: v for k, v in config.items() if k != "feature_kind"}),
            "feature_kind: missing key",
        ),
        (
            lambda config: json.dumps({**config, "feature_kind": "mfcc"}),
            "feature_kind: expected one of clap, fbank, got 'mfcc'",
        ),
        (
            lambda config: json.dumps({**config, "feature_shape": [0, 16]}),
            "feature_shape[0]: expected an integer >= 1, got 0",
        ),
        (
            lambda config: json.dumps({**config, "feature_shape": [16]}),
            "feature_shape: expected [frames, bins] (positive integers), got [16]",
        ),
        (lambda config: json.dumps([config]), "expected a mapping of arch, model, feature_kind"),
        (lambda config: json.dumps({**config, "arch": "vgg"}), "arch: expected one of "),
    ],
    ids=["not_json", "missing_key", "unknown_kind", "bad_shape", "short_shape", "a_list", "unknown_arch"],
)
def test_damaged_run_config_is_a_user_error(project: Path, tmp_path: Path, damage, expected: str) -> None:
    wav = next((project / "data/synthetic/ICBHI_final_database").glob("*.wav"))
    run = tmp_path / "run"
    shutil.copytree(project / "runs/cnn6", run)
    (run / "config.json").write_text(damage(json.loads((run / "config.json").read_text())))
    with pytest.raises(UserError, match=re.escape(f"{run / 'config.json'}: {expected}")):
        predict(parse(str(wav), "--model", str(run)))

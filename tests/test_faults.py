"""Fault injection: bad inputs and interrupted/failing runs through the real CLI, on tiny CPU configs.

Every bad input must stop with ONE ``error: ...`` line naming the file or params key and what was expected
(exit code 2, no traceback) and leave no partial output: the output is absent, or the previous output is
intact byte for byte, and no temporary sibling is left behind for DVC to see. Every fault (SIGKILL mid-run,
an abort or a disk-full error while writing, a diverging loss) must leave the same guarantees, and a killed
run must resume to outputs byte-identical to an uninterrupted run. The tally is printed by conftest.py's
``pytest_terminal_summary`` as ``fault-injection: N bad inputs tried, M faults survived, outputs lost = L``.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

from icbhi_fixtures import RECORDINGS, make_icbhi, write_wav
from params_edit import DELETE, set_key
from rsckd.cli import main
from rsckd.errors import UserError
from run_fixtures import cycle_table, learnable_features

REPO = Path(__file__).resolve().parents[1]
RSCKD = Path(sys.executable).with_name("rsckd")
BASE_PARAMS: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
N_FIT, N_VAL, N_TEST = 32, 8, 16
T, F = 24, 16  # clap features of the tiny BTS / Audio-CLAP models
AUDIO = "ICBHI_final_database"


# ---------------------------------------------------------------- tally, snapshots, assertions


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> dict[str, int]:
    return request.config._rsckd_fault_stats


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    """An in-process run sets torch's thread count and deterministic mode; restore them after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Bytes of a file, or of every file under a folder (None when absent)."""
    if path.is_file():
        return {"": path.read_bytes()}
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
        }
    return None


def leftovers(*outputs: Path) -> list[str]:
    """Temporary siblings of the outputs (``.NAME.tmp-PID``, ``.NAME.old-PID``) and temp files inside them."""
    found = []
    for out in outputs:
        if out.parent.is_dir():
            found += [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        if out.is_dir():
            found += [p.relative_to(out).as_posix() for p in out.rglob(".*") if ".tmp-" in p.name]
    return sorted(found)


def check_outputs(tally: dict[str, int], before: dict[Path, dict[str, bytes] | None]) -> None:
    """Each output is as it was before the failed command (absent stays absent), with no temp leftovers."""
    lost = [str(p) for p, snap in before.items() if snapshot(p) != snap]
    stray = leftovers(*before)
    if lost or stray:
        tally["outputs_lost"] += 1
    assert not lost, f"outputs changed by a failed command: {lost}"
    assert not stray, f"temporary files left next to the outputs: {stray}"


def one_error(err: str, *fragments: str) -> str:
    """The single ``error:`` line of stderr, which must contain every fragment; no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    message = err[err.index("error:") :]  # a key listing may continue on indented lines
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def fails_cleanly(
    capsys: pytest.CaptureFixture[str],
    tally: dict[str, int],
    argv: list[str],
    outputs: list[Path],
    *fragments: str,
    kind: str = "bad_inputs",
) -> str:
    """Run ``rsckd argv`` in-process: exit 2, one error line with ``fragments``, outputs untouched."""
    before = {p: snapshot(p) for p in outputs}
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    message = one_error(err, *fragments)
    check_outputs(tally, before)
    tally[kind] += 1
    return message


def write_params(path: Path, **changes: Any) -> Path:
    """params.yaml of the repository with ``a__b__c=value`` changes (DELETE removes a key)."""
    params = copy.deepcopy(BASE_PARAMS)
    params["runtime"].update(device="cpu", threads=1, cpu_kernels="native")
    for arch in params["train"]:
        params["train"][arch].update(epochs=2, batch_size=8)
    for key, value in changes.items():
        set_key(params, key.replace("__", "."), value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# ---------------------------------------------------------------- a tiny training workspace


def tiny_table() -> pd.DataFrame:
    prompts = ["an adult male patient, trachea, Meditron", "a female pediatric patient, left anterior chest"]
    return cycle_table(N_FIT, N_VAL, N_TEST, prompts, per_patient=8)


def write_features(folder: Path, labels: np.ndarray, poison: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x = learnable_features(labels, np.random.default_rng(0), (T, F))
    if poison is not None:
        x[:, 3, 5] = poison
    np.save(folder / "features.npy", x)
    (folder / "meta.json").write_text(json.dumps({"kind": "clap", "shape": list(x.shape), "poison": poison}))
    return folder


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    table = tiny_table()
    table.to_csv(root / "cycles.csv", index=False)
    write_features(root / "features", table["label"].to_numpy())
    write_params(root / "params.yaml")
    return root


def train_argv(ws: Path, out: Path, *extra: str, params: Path | None = None, arch: str = "bts") -> list[str]:
    return [
        "train",
        "--arch",
        arch,
        "--seed",
        "1",
        "--out",
        str(out),
        "--metrics",
        f"{out}.json",
        "--params",
        str(params or ws / "params.yaml"),
        "--cycles",
        str(ws / "cycles.csv"),
        "--features-dir",
        str(ws / "features"),
        *extra,
    ]


def outputs_of(out: Path) -> list[Path]:
    return [out, Path(f"{out}.json")]


@pytest.fixture
def resume_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RSCKD_RESUME_DIR", str(tmp_path / "resume"))
    return tmp_path / "resume"


@pytest.fixture
def previous_run(ws: Path, tmp_path: Path, resume_env: Path) -> Path:
    """A completed 1-epoch run (a previous output that a failing run must not touch)."""
    params = write_params(tmp_path / "one_epoch.yaml", train__bts__epochs=1)
    out = tmp_path / "runs" / "prev"
    assert main(train_argv(ws, out, params=params)) == 0
    assert (out / "model.safetensors").is_file() and Path(f"{out}.json").is_file()
    return out


# ---------------------------------------------------------------- malformed ICBHI roots (rsckd prepare)


def corrupt_missing_wav(root: Path) -> tuple[str, ...]:
    (root / AUDIO / f"{RECORDINGS[0][0]}.wav").unlink()
    return (str(root / AUDIO), "without a .wav file", RECORDINGS[0][0])


def corrupt_empty_wav(root: Path) -> tuple[str, ...]:
    sf.write(root / AUDIO / f"{RECORDINGS[1][0]}.wav", np.zeros(0), 10000, subtype="PCM_16")
    return (f"{RECORDINGS[1][0]}.wav", "empty audio (0 samples)")


def corrupt_truncated_wav(root: Path) -> tuple[str, ...]:
    wav = root / AUDIO / f"{RECORDINGS[2][0]}.wav"
    wav.write_bytes(wav.read_bytes()[:20])  # cut inside the fmt chunk
    return (f"{RECORDINGS[2][0]}.wav", "unreadable audio", "expected a PCM WAV file")


def corrupt_truncated_data(root: Path) -> tuple[str, ...]:
    wav = root / AUDIO / f"{RECORDINGS[6][0]}.wav"  # 2 s, cycles up to 1.95 s
    wav.write_bytes(wav.read_bytes()[: len(wav.read_bytes()) // 2])  # the audio now ends near 1 s
    return (f"{RECORDINGS[6][0]}.txt, line 2", "cycle starts at 1.2 s", "lasts only")


def corrupt_ulaw_wav(root: Path) -> tuple[str, ...]:
    write_wav(root / AUDIO / f"{RECORDINGS[3][0]}.wav", 4000, "ULAW")
    return (f"{RECORDINGS[3][0]}.wav", "sample format ULAW", "expected PCM")


def corrupt_float_wav(root: Path) -> tuple[str, ...]:
    write_wav(root / AUDIO / f"{RECORDINGS[4][0]}.wav", 4000, "FLOAT")
    return (f"{RECORDINGS[4][0]}.wav", "sample format FLOAT", "expected PCM")


def _annotation(root: Path, i: int, text: str) -> Path:
    path = root / AUDIO / f"{RECORDINGS[i][0]}.txt"
    path.write_text(text)
    return path


def corrupt_too_few_columns(root: Path) -> tuple[str, ...]:
    _annotation(root, 0, "0.1\t0.9\t0\n")
    return (f"{RECORDINGS[0][0]}.txt, line 1", "3 column(s); expected 4")


def corrupt_non_numeric_time(root: Path) -> tuple[str, ...]:
    _annotation(root, 1, "0.0\t1.0\t0\t0\nabc\t1.5\t0\t0\n")
    return (f"{RECORDINGS[1][0]}.txt, line 2", "'abc'", "expected numbers (seconds)")


def corrupt_end_before_start(root: Path) -> tuple[str, ...]:
    _annotation(root, 5, "1.0\t0.5\t0\t1\n")
    return (f"{RECORDINGS[5][0]}.txt, line 1", "end 0.5 <= start 1.0", "expected end > start")


def corrupt_start_beyond_audio(root: Path) -> tuple[str, ...]:
    _annotation(root, 7, "0.0\t1.0\t1\t0\n5.0\t6.0\t0\t0\n")
    return (f"{RECORDINGS[7][0]}.txt, line 2", "cycle starts at 5.0 s", "lasts only 2.000 s")


def corrupt_bad_flag(root: Path) -> tuple[str, ...]:
    _annotation(root, 7, "0.0\t1.0\t2\t0\n")
    return (f"{RECORDINGS[7][0]}.txt, line 1", "crackle/wheeze '2' '0'", "expected 0 or 1")


def corrupt_duplicate_stem_in_split(root: Path) -> tuple[str, ...]:
    split = root / "ICBHI_challenge_train_test.txt"
    split.write_text(split.read_text() + f"\n{RECORDINGS[2][0]}\ttest\n")
    return (str(split), f"{RECORDINGS[2][0]} is listed twice", "expected each file once")


def corrupt_duplicate_stem_in_audio(root: Path) -> tuple[str, ...]:
    stem = RECORDINGS[3][0]
    shutil.copy(root / AUDIO / f"{stem}.wav", root / AUDIO / f"{stem}.WAV")
    return (str(root / AUDIO), f"duplicate recording {stem}")


def corrupt_stem_missing_from_split(root: Path) -> tuple[str, ...]:
    split = root / "ICBHI_challenge_train_test.txt"
    split.write_text("".join(f"{r[0]}\t{r[1]}\n" for r in RECORDINGS if r[0] != RECORDINGS[4][0]))
    return (str(split), "no split for 1 audio file(s)", RECORDINGS[4][0])


def corrupt_empty_split(root: Path) -> tuple[str, ...]:
    split = root / "ICBHI_challenge_train_test.txt"
    split.write_text("\n\n")
    return (str(split), "empty split file", "<stem>\\t<train|test>")


def corrupt_unknown_split(root: Path) -> tuple[str, ...]:
    split = root / "ICBHI_challenge_train_test.txt"
    split.write_text(split.read_text().replace("\ttest", "\tvalid", 1))
    return (str(split), "split 'valid'", "expected train or test")


def corrupt_bad_stem(root: Path) -> tuple[str, ...]:
    for ext in ("wav", "txt"):
        src = root / AUDIO / f"{RECORDINGS[0][0]}.{ext}"
        src.rename(src.with_name(f"101_1b1_Xx_sc_Meditron.{ext}"))
    return ("101_1b1_Xx_sc_Meditron.wav", "chest location 'Xx'")


ICBHI_CASES = [
    corrupt_missing_wav,
    corrupt_empty_wav,
    corrupt_truncated_wav,
    corrupt_truncated_data,
    corrupt_ulaw_wav,
    corrupt_float_wav,
    corrupt_too_few_columns,
    corrupt_non_numeric_time,
    corrupt_end_before_start,
    corrupt_start_beyond_audio,
    corrupt_bad_flag,
    corrupt_duplicate_stem_in_split,
    corrupt_duplicate_stem_in_audio,
    corrupt_stem_missing_from_split,
    corrupt_empty_split,
    corrupt_unknown_split,
    corrupt_bad_stem,
]


@pytest.fixture(scope="module")
def good_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rsckd prepare`` of the intact fixture root: the previous output every failing prepare must keep."""
    base = tmp_path_factory.mktemp("icbhi_good")
    data = make_icbhi(base / "root")
    params = write_params(base / "params.yaml", data=data)
    assert main(["prepare", "--params", str(params), "--out", str(base / "prepared")]) == 0
    assert (base / "prepared" / "cycles.csv").is_file()
    return base / "prepared"


@pytest.mark.parametrize("corrupt", ICBHI_CASES, ids=lambda f: f.__name__.removeprefix("corrupt_"))
def test_malformed_icbhi_root(corrupt, tmp_path: Path, good_prepared: Path, capsys, tally) -> None:
    data = make_icbhi(tmp_path / "root")
    fragments = corrupt(tmp_path / "root")
    params = write_params(tmp_path / "params.yaml", data=data)
    fresh, kept = tmp_path / "fresh" / "prepared", tmp_path / "kept" / "prepared"
    shutil.copytree(good_prepared, kept)
    # a first run (output absent) and a re-run over a previous output: both leave nothing new behind
    fails_cleanly(
        capsys, tally, ["prepare", "--params", str(params), "--out", str(fresh)], [fresh], *fragments
    )
    assert not fresh.parent.exists() or not any(fresh.parent.iterdir())
    before = snapshot(kept)
    capsys.readouterr()
    assert main(["prepare", "--params", str(params), "--out", str(kept)]) == 2
    one_error(capsys.readouterr().err, *fragments)
    assert snapshot(kept) == before and snapshot(kept) == snapshot(good_prepared)


# ---------------------------------------------------------------- malformed params


PARAMS_CASES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "unknown_key": ({"train__bts__epochz": 3}, ("train.bts.epochz: unknown key", "expected one of epochs")),
    "missing_key": ({"train__bts__epochs": DELETE}, ("train.bts.epochs: missing key",)),
    "wrong_type": (
        {"train__bts__epochs": "three"},
        ("train.bts.epochs: expected an integer >= 1", "'three'"),
    ),
    "bool_for_int": ({"runtime__threads": True}, ("runtime.threads: expected an integer >= 1", "True")),
    "k_above_teachers": (
        {"distill__ks": [1, 3, 9]},
        ("distill.ks: k = 9 is larger than the number of teachers",),
    ),
    "duplicate_seeds": ({"teacher__seeds": [1, 2, 2]}, ("teacher.seeds: duplicate values 2",)),
    "negative_lr": ({"train__bts__lr": -1.0e-3}, ("train.bts.lr: expected a number > 0", "-0.001")),
    "nan_lr": ({"train__bts__lr": float("nan")}, ("train.bts.lr: expected a number > 0",)),
    "unknown_arch": ({"teacher__arch": "vgg16"}, ("teacher.arch: expected one of bts", "'vgg16'")),
    "unknown_target": (
        {"ablation__variants": ["noise_var", "soft"]},
        ("ablation.variants[1]: expected one of", "'soft'"),
    ),
    "unknown_model_size": (
        {"models__bts__size": "huge"},
        ("models.bts.size: expected one of tiny, full", "'huge'"),
    ),
}


@pytest.mark.parametrize("case", sorted(PARAMS_CASES))
def test_malformed_params(case: str, ws: Path, tmp_path: Path, capsys, tally) -> None:
    changes, fragments = PARAMS_CASES[case]
    bad = write_params(tmp_path / f"{case}.yaml", **changes)
    inputs = tmp_path / "inputs.json"
    inputs.write_text('{"previous": true}\n')
    # the pipeline's first stage, then a training stage: one error naming the file and key, nothing written
    fails_cleanly(
        capsys,
        tally,
        ["check-params", "--params", str(bad), "--out", str(inputs)],
        [inputs],
        str(bad),
        *fragments,
    )
    out = tmp_path / "runs" / "t"
    fails_cleanly(capsys, tally, train_argv(ws, out, params=bad), outputs_of(out), str(bad), *fragments)
    assert not out.parent.exists()


def test_batch_larger_than_the_training_cycles(ws: Path, tmp_path: Path, capsys, tally) -> None:
    bad = write_params(tmp_path / "p.yaml", train__bts__batch_size=N_FIT + 1)
    out = tmp_path / "runs" / "t"
    fails_cleanly(
        capsys,
        tally,
        train_argv(ws, out, params=bad),
        outputs_of(out),
        f"train.bts.batch_size: {N_FIT + 1} is more than the {N_FIT} training cycles",
        "(train.bts.drop_last: true)",
    )


def test_params_not_yaml_or_missing(ws: Path, tmp_path: Path, capsys, tally) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("train: {bts: [unclosed\n")
    out = tmp_path / "runs" / "t"
    fails_cleanly(capsys, tally, train_argv(ws, out, params=bad), outputs_of(out), str(bad), "not valid YAML")
    absent = tmp_path / "absent.yaml"
    fails_cleanly(
        capsys, tally, ["check-params", "--params", str(absent)], [], str(absent), "params file not found"
    )


@pytest.mark.parametrize(
    ("flag", "value"), [("--target", "softest"), ("--arch", "vgg16"), ("--ablation", "curatedd")]
)
def test_unknown_choice_on_the_command_line(
    flag: str, value: str, ws: Path, tmp_path: Path, capsys, tally
) -> None:
    out = tmp_path / "runs" / "t"
    argv = train_argv(ws, out)
    if flag == "--arch":
        argv[argv.index("--arch") + 1] = value
    else:
        argv += [flag, value]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"argument {flag}: invalid choice: '{value}'" in err
    check_outputs(tally, {p: None for p in outputs_of(out)})
    tally["bad_inputs"] += 1


# ---------------------------------------------------------------- pretrained weights, soft labels


def test_missing_pretrained_directory(ws: Path, tmp_path: Path, capsys, tally) -> None:
    absent = tmp_path / "no_such_clap"
    params = write_params(tmp_path / "p.yaml", models__audio_clap__pretrained=str(absent))
    out = tmp_path / "runs" / "clap"
    fails_cleanly(
        capsys,
        tally,
        train_argv(ws, out, params=params, arch="audio_clap"),
        outputs_of(out),
        "models.audio_clap.pretrained",
        str(absent),
        "not found",
    )
    inputs = tmp_path / "inputs.json"
    fails_cleanly(
        capsys,
        tally,
        ["check-params", "--inputs", "--params", str(params), "--out", str(inputs)],
        [inputs],
        f"models.audio_clap.pretrained: {absent} not found",
        "put there",
    )


@pytest.fixture(scope="module")
def clap_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny audio-only CLAP directory, and copies whose config.json describes another tiny model."""
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection

    from rsckd.models.clap_audio import TINY_AUDIO

    base = tmp_path_factory.mktemp("clap")
    torch.manual_seed(0)
    ClapAudioModelWithProjection(ClapAudioConfig(**TINY_AUDIO)).save_pretrained(str(base / "good"))
    config = json.loads((base / "good" / "config.json").read_text())
    dirs = {"good": base / "good"}
    for name, change in (("shape", {"projection_dim": 48}), ("depth", {"depths": [1, 1, 2]})):
        dirs[name] = base / name
        dirs[name].mkdir()
        shutil.copy(base / "good" / "model.safetensors", dirs[name] / "model.safetensors")
        (dirs[name] / "config.json").write_text(json.dumps({**config, **change}))
    return dirs


@pytest.mark.parametrize(
    ("which", "fragments"),
    [
        (
            "shape",
            ("shape (checkpoint vs model) (4)", "audio_projection.linear1.weight (32, 64) vs (48, 64)"),
        ),
        ("depth", ("missing (18)", "audio_model.audio_encoder.layers.2.blocks.1.")),
    ],
)
def test_mismatched_pretrained_directory(which, fragments, clap_dirs, ws, tmp_path, capsys, tally) -> None:
    params = write_params(tmp_path / "p.yaml", models__audio_clap__pretrained=str(clap_dirs[which]))
    out = tmp_path / "runs" / "clap"
    message = fails_cleanly(
        capsys,
        tally,
        train_argv(ws, out, params=params, arch="audio_clap"),
        outputs_of(out),
        "models.audio_clap.pretrained",
        str(clap_dirs[which]),
        "the checkpoint does not match the model",
        *fragments,
    )
    assert "ignore_mismatched_sizes" not in message  # ours, not the library's advice


def test_matching_pretrained_directory_is_accepted(clap_dirs) -> None:
    """Control for the mismatch cases: the same weights under their own config load without complaint."""
    from rsckd.architectures import ARCHITECTURES
    from rsckd.models import build_model

    block = ARCHITECTURES["audio_clap"].block(
        size="tiny", pretrained=str(clap_dirs["good"]), input_norm="none"
    )
    model = build_model("audio_clap", block, (T, F))
    assert model.head.in_features == 32


def npz_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, logits=array)
    return buffer.getvalue()


SOFT_CASES = {
    "too_few_rows": (np.zeros((3, N_FIT + N_VAL - 5, 4), np.float32), ("has 35 rows", "40 train rows")),
    "wrong_classes": (
        np.zeros((3, N_FIT + N_VAL, 3), np.float32),
        ("expected teacher logits of shape (k, N_train, 4)",),
    ),
    "nan_logits": (np.full((2, N_FIT + N_VAL, 4), np.nan, np.float32), ("contains NaN or infinite logits",)),
    "not_npy": (b"not an array", ("not a readable .npy file",)),
    "empty_file": (b"", ("not a readable .npy file",)),
    "npz": (npz_bytes(np.zeros((2, N_FIT + N_VAL, 4), np.float32)), ("not a .npy file (a NpzFile)",)),
    "pickled": (np.array([{}], dtype=object), ("not a readable .npy file",)),
}


@pytest.mark.parametrize("case", sorted(SOFT_CASES))
def test_soft_labels_not_matching_the_cycle_table(case, ws, previous_run, capsys, tally) -> None:
    array, fragments = SOFT_CASES[case]
    bad = previous_run.parent / "BAD.npy"
    if isinstance(array, bytes):
        bad.write_bytes(array)
    else:
        np.save(bad, array)
    fails_cleanly(
        capsys,
        tally,
        train_argv(ws, previous_run, "--target", "mean", "--soft", str(bad)),
        outputs_of(previous_run),
        str(bad),
        *fragments,
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda run: [],
        lambda run: {},
        lambda run: {**run, "literature": {**run["literature"], "score": "high"}},
        lambda run: {**run, "val": {k: v for k, v in run["val"].items() if k != "val_score"}},
        lambda run: {**run, "seed": "1"},
    ],
    ids=["a_list", "no_blocks", "score_not_a_number", "val_without_val_score", "seed_a_string"],
)
def test_malformed_run_metrics_name_the_file(tmp_path: Path, damage) -> None:
    """The one reader of run metrics (the ensemble's curated ranking and the report use it) refuses a damaged
    teacher's metrics by name."""
    from rsckd.evaluation.run_metrics import read_run_metrics

    good = REPO / "metrics/teachers/s1.json"
    assert read_run_metrics(good) == json.loads(good.read_text())
    bad = tmp_path / "s1.json"
    bad.write_text(json.dumps(damage(json.loads(good.read_text()))))
    with pytest.raises(UserError, match=f"{bad}: malformed run metrics, expected arch, target"):
        read_run_metrics(bad)


# ---------------------------------------------------------------- faults


def _subprocess_env(resume: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RSCKD_RESUME_DIR": str(resume), "PYTHONUNBUFFERED": "1"}


def test_sigkill_mid_run_resumes_to_identical_outputs(ws: Path, tmp_path: Path, tally) -> None:
    params = write_params(tmp_path / "p.yaml", train__bts__epochs=4)
    resume = tmp_path / "resume"
    out = tmp_path / "runs" / "killed"
    argv = [str(RSCKD), *train_argv(ws, out, params=params)]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(argv, env=_subprocess_env(resume), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(resume.glob("*/checkpoint.pt")):
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "no epoch checkpoint within 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    log.close()
    assert not out.exists() and not Path(f"{out}.json").exists()  # nothing looks finished
    [checkpoint] = list(resume.glob("*/checkpoint.pt"))
    done = len(torch.load(checkpoint, weights_only=True)["history"])
    assert 1 <= done < 4

    rerun = subprocess.run(argv, env=_subprocess_env(resume), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming after epoch {done} from {checkpoint}" in rerun.stderr
    trained = [e for e in range(1, 5) if f"epoch {e}/4 lr" in rerun.stderr]
    assert trained == list(range(done + 1, 5))  # the rerun only trained the missing epochs
    assert not checkpoint.parent.exists()  # cleared once the outputs are complete

    reference = tmp_path / "runs" / "straight"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSCKD_RESUME_DIR", str(tmp_path / "resume_ref"))
        assert main(train_argv(ws, reference, params=params)) == 0
    resumed, straight = snapshot(out), snapshot(reference)
    assert {"model.safetensors", "logits_train.npy", "logits_test.npy", "history.csv"} <= set(resumed)
    assert resumed == straight
    assert Path(f"{out}.json").read_bytes() == Path(f"{reference}.json").read_bytes()
    assert leftovers(out, Path(f"{out}.json")) == []
    tally["faults"] += 1


class Abort(BaseException):
    """Stands for the process being interrupted mid-write (like KeyboardInterrupt, not an Exception)."""


def test_abort_while_writing_features_leaves_nothing_half_written(
    good_prepared: Path, tmp_path: Path, monkeypatch, tally
) -> None:
    import rsckd.data.features as features

    params = write_params(tmp_path / "p.yaml")
    cycles = good_prepared / "cycles.csv"  # its wav paths point into the intact fixture root
    out = tmp_path / "features" / "clap"
    argv = ["features", "--kind", "clap", "--params", str(params), "--cycles", str(cycles), "--out", str(out)]
    assert main(argv) == 0
    before = {out: snapshot(out)}
    real = features._write_rows

    def write_half_then_die(npy: Path, index: np.ndarray, values: np.ndarray) -> None:
        real(npy, index[: len(index) // 2], values[: len(index) // 2])  # some rows reached the disk
        raise Abort

    monkeypatch.setattr(features, "_write_rows", write_half_then_die)
    monkeypatch.setattr(features, "CHUNK_CYCLES", {"cpu": 4, "cuda": 4})
    with pytest.raises(Abort):
        main(argv)
    check_outputs(tally, before)
    fresh = tmp_path / "other" / "clap"
    with pytest.raises(Abort):
        main([*argv[:-1], str(fresh)])
    check_outputs(tally, {fresh: None})
    tally["faults"] += 1


def test_abort_while_writing_a_run_directory(ws: Path, previous_run: Path, monkeypatch, tally) -> None:
    import rsckd.training.artifacts as artifacts

    before = {p: snapshot(p) for p in outputs_of(previous_run)}
    written = []

    def save_then_die(path, array):
        written.append(Path(path).name)
        if len(written) == 2:  # model.safetensors and logits_train.npy are already in the temp folder
            Path(path).write_bytes(b"\x93NUMPY half")
            raise Abort
        real_save(path, array)

    real_save = artifacts.save_npy
    monkeypatch.setattr(artifacts, "save_npy", save_then_die)
    with pytest.raises(Abort):
        main(train_argv(ws, previous_run))
    assert written == ["logits_train.npy", "logits_test.npy"]
    check_outputs(tally, before)
    tally["faults"] += 1


def _enospc(filename: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


def test_disk_full_while_writing_the_cycle_table(
    good_prepared: Path, tmp_path: Path, monkeypatch, capsys, tally
):
    """ENOSPC from a low-level write (as Python raises it: no file name) keeps the previous cycle table."""
    params = write_params(tmp_path / "p.yaml", data=make_icbhi(tmp_path / "root"))
    out = tmp_path / "prepared"
    shutil.copytree(good_prepared, out)
    real_write = os.write
    calls = []

    def full_disk_write(self: Path, data: bytes) -> int:
        calls.append(self.name)
        with open(self, "wb") as f:
            real_write(f.fileno(), data[: len(data) // 2])
        raise _enospc()

    monkeypatch.setattr(Path, "write_bytes", full_disk_write)
    message = fails_cleanly(
        capsys,
        tally,
        ["prepare", "--params", str(params), "--out", str(out)],
        [out],
        "No space left on device",
        "left untouched",
        kind="faults",
    )
    assert calls == [".cycles.csv.tmp-" + str(os.getpid())]
    assert message.count("\n") == 1


def test_disk_full_when_swapping_in_the_new_folder(
    good_prepared: Path, tmp_path: Path, monkeypatch, capsys, tally
):
    """The rename that replaces the previous output fails: the previous output is put back, not lost."""
    import rsckd.atomic as atomic

    params = write_params(tmp_path / "p.yaml", data=make_icbhi(tmp_path / "root"))
    out = tmp_path / "prepared"
    shutil.copytree(good_prepared, out)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".prepared.tmp-") and Path(dst) == out:
            raise _enospc(str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    fails_cleanly(
        capsys,
        tally,
        ["prepare", "--params", str(params), "--out", str(out)],
        [out],
        "No space left on device",
        str(out),
        kind="faults",
    )


def test_disk_full_while_saving_a_run(ws: Path, previous_run: Path, monkeypatch, capsys, tally) -> None:
    """ENOSPC inside np.save of the logits (after training): the previous run dir and metrics stay."""
    import rsckd.atomic as atomic

    real_save = np.save

    def save(f, array, **kw):
        if array.shape[0] == N_TEST:  # logits_test.npy, the second array of the run
            f.write(b"\x93NUMPY partial")
            raise _enospc()
        real_save(f, array, **kw)

    monkeypatch.setattr(atomic.np, "save", save)
    fails_cleanly(
        capsys,
        tally,
        train_argv(ws, previous_run),
        outputs_of(previous_run),
        "No space left on device",
        kind="faults",
    )


@pytest.mark.parametrize("cause", ["inf_features", "huge_lr"])
def test_nan_loss_stops_without_outputs(
    cause: str, ws: Path, tmp_path: Path, resume_env, capsys, tally
) -> None:
    table = tiny_table()
    features = ws / "features"
    params = ws / "params.yaml"
    if cause == "inf_features":
        features = write_features(tmp_path / "inf_features", table["label"].to_numpy(), poison=np.inf)
    else:
        params = write_params(tmp_path / "p.yaml", train__bts__lr=1.0e30, train__bts__ma_beta=0.0)
    out = tmp_path / "runs" / "nan"
    argv = train_argv(ws, out, params=params)
    argv[argv.index("--features-dir") + 1] = str(features)
    fails_cleanly(
        capsys,
        tally,
        argv,
        outputs_of(out),
        "training loss became NaN or infinite at epoch 1",
        "nothing was written",
        kind="faults",
    )
    assert not out.parent.exists()

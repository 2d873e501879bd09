"""Typed, validated view of params.yaml.

Every stage calls :func:`load_params` before doing any work, so an impossible value (a typo'd key, k larger
than the number of teachers, a negative learning rate, an unknown architecture) stops the run with one message
naming the key and what was expected, instead of failing an hour into a GPU job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rsckd.errors import UserError

ARCHS = ("bts", "audio_clap", "ast", "cnn6", "resnet18", "efficientnet_b0")
METHODS = ("mean", "random")
TARGETS = ("hard", "mean", "random", "noise_var", "noise_teacher_var", "raw_logits")
ABLATIONS = ("noise_var", "noise_teacher_var", "single_teacher", "curated", "raw_logits")
COMPILE_MODES = ("off", "default", "reduce-overhead")

Check = Callable[[str, Any], Any]


def _fail(key: str, expected: str, value: Any) -> UserError:
    return UserError(f"params: {key}: expected {expected}, got {value!r}")


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(key: str, v: Any) -> int:
        if (
            isinstance(v, bool)
            or not isinstance(v, int)
            or (lo is not None and v < lo)
            or (hi is not None and v > hi)
        ):
            bounds = (
                f" >= {lo}"
                if hi is None and lo is not None
                else f" in [{lo}, {hi}]"
                if hi is not None
                else ""
            )
            raise _fail(key, f"an integer{bounds}", v)
        return v

    return check


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Check:
    def check(key: str, v: Any) -> float:
        try:
            x = float(v) if not isinstance(v, bool) and isinstance(v, (int, float, str)) else math.nan
        except ValueError:
            x = math.nan
        bad = (
            not math.isfinite(x)
            or (lo is not None and (x <= lo if lo_open else x < lo))
            or (hi is not None and x > hi)
        )
        if bad:
            bound = "" if lo is None else f" {'>' if lo_open else '>='} {lo}"
            bound += "" if hi is None else f" and <= {hi}"
            raise _fail(key, f"a number{bound}", v)
        return x

    return check


def boolean(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, "true or false", v)
    return v


def choice(*options: str) -> Check:
    def check(key: str, v: Any) -> str:
        if v not in options:
            raise _fail(key, "one of " + ", ".join(options), v)
        return v

    return check


def compile_mode(key: str, v: Any) -> str:
    """``runtime.compile``; YAML reads a bare ``off`` as false, which means off here too."""
    return choice(*COMPILE_MODES)(key, "off" if v is False else v)


def optional(inner: Check) -> Check:
    def check(key: str, v: Any) -> Any:
        return None if v is None else inner(key, v)

    return check


def text(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _fail(key, "a non-empty string", v)
    return v


def unique_list(item: Check) -> Check:
    def check(key: str, v: Any) -> list[Any]:
        if not isinstance(v, list) or not v:
            raise _fail(key, "a non-empty list (written [a, b, ...])", v)
        out = [item(f"{key}[{i}]", x) for i, x in enumerate(v)]
        dupes = sorted({str(x) for x in out if out.count(x) > 1})
        if dupes:
            raise UserError(
                f"params: {key}: duplicate values {', '.join(dupes)}; every value must appear once"
            )
        return out

    return check


def block(spec: dict[str, Any]) -> Check:
    """A mapping with exactly the keys of ``spec`` (values: checks or nested specs)."""

    def check(key: str, v: Any) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise _fail(key, "a mapping of " + ", ".join(spec), v)
        unknown = sorted(set(v) - set(spec))
        if unknown:
            raise UserError(f"params: {key}.{unknown[0]}: unknown key; expected one of {', '.join(spec)}")
        missing = [k for k in spec if k not in v]
        if missing:
            raise UserError(f"params: {key}.{missing[0]}: missing key")
        return {k: (block(c) if isinstance(c, dict) else c)(f"{key}.{k}", v[k]) for k, c in spec.items()}

    return check


SPECAUGMENT = optional(
    block(
        {
            "freq_masks": integer(0),
            "freq_width": integer(0),
            "time_masks": integer(0),
            "time_width": integer(0),
        }
    )
)
TRAIN = {
    "epochs": integer(1),
    "batch_size": integer(1),
    "lr": number(0, lo_open=True),
    "weight_decay": number(0),
    "min_lr_ratio": number(0, 1, lo_open=True),
    "ma_beta": number(0, 0.999),
    "class_weighted": boolean,
    "specaugment": SPECAUGMENT,
    "drop_last": boolean,
    "se_min": number(0, 100),
    "select": choice("literature", "last", "val"),
}
MODEL = {"size": choice("tiny", "full"), "pretrained": optional(text)}
NORM = choice("none", "audioset", "per_sample")
SCHEMA: dict[str, Any] = {
    "synthesize": {
        "seed": integer(0),
        "n_patients": integer(4),
        "recordings_per_patient": number(1),
        "cycles_per_recording": number(1),
        "test_fraction": number(0, 1, lo_open=True),
    },
    "data": {
        "root": text,
        "audio_dir": text,
        "split_file": text,
        "demographics_file": optional(text),
        "diagnosis_file": optional(text),
        "metadata_file": optional(text),
        "prompt_location": choice("patient", "recording"),
        "val_fraction": number(0, 0.9),
        "val_seed": integer(0),
    },
    "cycles": {"desired_length_s": number(0, lo_open=True), "pad": choice("repeat", "zero")},
    "features": {
        "clap": {
            "sample_rate": integer(1000),
            "n_mels": integer(1),
            "n_fft": integer(16),
            "hop_length": integer(1),
            "f_min": number(0),
            "f_max": number(0, lo_open=True),
            "max_length_s": number(0, lo_open=True),
        },
        "fbank": {
            "sample_rate": integer(1000),
            "num_mel_bins": integer(1),
            "frame_length_ms": number(0, lo_open=True),
            "frame_shift_ms": number(0, lo_open=True),
        },
    },
    "models": {
        "bts": {**MODEL, "max_text_length": integer(8), "input_norm": NORM},
        "audio_clap": {**MODEL, "input_norm": NORM},
        "ast": {**MODEL, "swap_input_dims": boolean, "input_norm": NORM},
        "cnn6": {**MODEL, "input_norm": NORM},
        "resnet18": {**MODEL, "input_norm": NORM},
        "efficientnet_b0": {**MODEL, "input_norm": NORM},
    },
    "train": {arch: TRAIN for arch in ARCHS},
    "runtime": {
        "device": choice("auto", "cpu", "cuda"),
        "threads": integer(1),
        "cpu_kernels": choice("portable", "native"),
        "compile": compile_mode,
        "checkpoint_minutes": number(0),
    },
    "teacher": {"arch": choice(*ARCHS), "seeds": unique_list(integer(0))},
    "ensemble": {"curate_by": choice("literature", "val")},
    "distill": {
        "arch": choice(*ARCHS),
        "ks": unique_list(integer(1)),
        "methods": unique_list(choice(*METHODS)),
        "seeds": unique_list(integer(0)),
    },
    "arch_table": {
        "archs": unique_list(choice(*ARCHS)),
        "methods": unique_list(choice(*METHODS)),
        "k": integer(1),
        "seeds": unique_list(integer(0)),
    },
    "ablation": {
        "variants": unique_list(choice(*ABLATIONS)),
        "k": integer(1),
        "noise_var": number(0, lo_open=True),
        "seeds": unique_list(integer(0)),
    },
    "second_gen": {"k": integer(1), "method": choice(*METHODS)},
}


def _cross_checks(p: dict[str, Any]) -> None:
    """Constraints between blocks (a k needs that many teachers, and so on)."""
    n_teachers = len(p["teacher"]["seeds"])
    for key, ks in (
        ("distill.ks", p["distill"]["ks"]),
        ("arch_table.k", [p["arch_table"]["k"]]),
        ("ablation.k", [p["ablation"]["k"]]),
        ("second_gen.k", [p["second_gen"]["k"]]),
    ):
        too_big = [k for k in ks if k > n_teachers]
        if too_big:
            raise UserError(
                f"params: {key}: k = {too_big[0]} is larger than the number of teachers "
                f"({n_teachers} in teacher.seeds)"
            )
    if (
        p["second_gen"]["k"] not in p["distill"]["ks"]
        or p["second_gen"]["method"] not in p["distill"]["methods"]
    ):
        raise UserError(
            "params: second_gen: (k, method) must be a cell of the distillation sweep "
            f"(distill.ks x distill.methods), got k={p['second_gen']['k']}, "
            f"method={p['second_gen']['method']}"
        )
    if len(p["distill"]["seeds"]) < 2:
        raise UserError(
            "params: distill.seeds: the second-generation ensemble needs at least 2 student seeds"
        )
    for arch in ARCHS:
        if p["train"][arch]["select"] == "val" and p["data"]["val_fraction"] == 0:
            raise UserError(
                f"params: train.{arch}.select: 'val' needs a validation split (data.val_fraction > 0)"
            )
    clap = p["features"]["clap"]
    if clap["f_min"] >= clap["f_max"] or clap["f_max"] > clap["sample_rate"] / 2:
        raise UserError(
            "params: features.clap.f_max: expected f_min < f_max <= sample_rate / 2, got "
            f"f_min={clap['f_min']}, f_max={clap['f_max']}, sample_rate={clap['sample_rate']}"
        )


def validate(raw: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Return the checked (and number-coerced) params, or raise one UserError naming the key."""
    try:
        params = block(SCHEMA)("params", raw)
    except UserError as err:
        raise UserError(f"{source}: {str(err).removeprefix('params: ').removeprefix('params.')}") from None
    try:
        _cross_checks(params)
    except UserError as err:
        raise UserError(f"{source}: {str(err).removeprefix('params: ')}") from None
    return params


def read_yaml(path: Path, missing: str) -> Any:
    """A YAML file's content; a missing or unparsable file is one error naming it (``missing``: what to say
    when the file is not there)."""
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    raw = read_yaml(path, "params file not found (run from the repository root or pass --params)")
    return validate(raw, str(path))

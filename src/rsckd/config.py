"""Typed, validated view of params.yaml.

Every stage calls :func:`load_params` before doing any work, so an impossible value (a typo'd key, k larger
than the number of teachers, a negative learning rate, an unknown architecture) stops the run with one message
naming the key and what was expected, instead of failing an hour into a GPU job. The ``models`` and ``train``
blocks hold one entry per architecture of :mod:`rsckd.architectures`, no more, no less.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, create_model, model_validator

from rsckd.ablations import ABLATIONS
from rsckd.architectures import ARCHITECTURES, ModelBlock
from rsckd.data.prompts import PROMPT_LOCATION_MODES
from rsckd.errors import UserError
from rsckd.schema import BOOLEAN, TEXT, Block, choice, fail, integer, number, unique_list, validated

METHODS = ("mean", "random")
TARGETS = ("hard", "mean", "random", "noise_var", "noise_teacher_var", "raw_logits")
COMPILE_MODES = ("off", "default", "reduce-overhead")


class Synthesize(Block):
    seed: integer(0)
    n_patients: integer(4)
    recordings_per_patient: number(ge=1)
    cycles_per_recording: number(ge=1)
    test_fraction: number(gt=0, le=1)


class Data(Block):
    root: TEXT
    audio_dir: TEXT
    split_file: TEXT
    demographics_file: TEXT | None
    diagnosis_file: TEXT | None
    metadata_file: TEXT | None
    prompt_location: choice(*PROMPT_LOCATION_MODES)
    val_fraction: number(ge=0, le=0.9)
    val_seed: integer(0)


class Cycles(Block):
    desired_length_s: number(gt=0)
    pad: choice("repeat", "zero")


class ClapFeatures(Block):
    sample_rate: integer(1000)
    n_mels: integer(1)
    n_fft: integer(16)
    hop_length: integer(1)
    f_min: number(ge=0)
    f_max: number(gt=0)
    max_length_s: number(gt=0)


class FbankFeatures(Block):
    sample_rate: integer(1000)
    num_mel_bins: integer(1)
    frame_length_ms: number(gt=0)
    frame_shift_ms: number(gt=0)


class Features(Block):
    clap: ClapFeatures
    fbank: FbankFeatures

    def of(self, kind: str) -> ClapFeatures | FbankFeatures:
        return getattr(self, kind)


FEATURE_BLOCKS: dict[str, type[ClapFeatures | FbankFeatures]] = {"clap": ClapFeatures, "fbank": FbankFeatures}


class SpecAugment(Block):
    freq_masks: integer(0)
    freq_width: integer(0)
    time_masks: integer(0)
    time_width: integer(0)


class Train(Block):
    """``train.<arch>``: one architecture's training protocol."""

    epochs: integer(1)
    batch_size: integer(1)
    lr: number(gt=0)
    weight_decay: number(ge=0)
    min_lr_ratio: number(gt=0, le=1)
    ma_beta: number(ge=0, le=0.999)
    class_weighted: BOOLEAN
    specaugment: SpecAugment | None
    drop_last: BOOLEAN
    se_min: number(ge=0, le=100)
    select: choice("literature", "last", "val")


def _bare_off(value: Any) -> Any:
    """YAML (and ``dvc exp run -S runtime.compile=off``) read a bare ``off`` as false."""
    return "off" if value is False else value


class Runtime(Block):
    device: choice("auto", "cpu", "cuda")
    threads: integer(1)
    cpu_kernels: choice("portable", "native")
    compile: Annotated[choice(*COMPILE_MODES), BeforeValidator(_bare_off)]


class Resume(Block):
    checkpoint_minutes: number(ge=0)


class PerArch(Block):
    """One entry per architecture of the table, in its order; ``blocks[name]`` reads one."""

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in type(self).model_fields]


class ModelBlocks(PerArch):
    def __getitem__(self, name: str) -> ModelBlock:
        return getattr(self, name)


class TrainBlocks(PerArch):
    def __getitem__(self, name: str) -> Train:
        return getattr(self, name)


def _known_arch(value: Any) -> str:
    if not isinstance(value, str) or value not in ARCHITECTURES:
        raise fail(f"expected one of {', '.join(ARCHITECTURES)}, got {value!r}")
    return value


ARCH = Annotated[str, BeforeValidator(_known_arch)]
SEED = integer(0, 2**32 - 1)  # numpy's seed range
SEEDS = unique_list(SEED)
METHOD_LIST = unique_list(choice(*METHODS))


class Teacher(Block):
    arch: ARCH
    seeds: SEEDS
    epochs: integer(1)  # the teachers' own; train.<arch> gives the rest of the protocol (students: all of it)


class Ensemble(Block):
    curate_by: choice("literature", "val")


class Distill(Block):
    arch: ARCH
    ks: unique_list(integer(1))
    methods: METHOD_LIST
    seeds: SEEDS


class ArchTable(Block):
    archs: unique_list(ARCH)
    methods: METHOD_LIST
    k: integer(1)
    seeds: SEEDS


class Ablation(Block):
    variants: unique_list(choice(*ABLATIONS))
    k: integer(1)
    noise_var: number(gt=0)
    seeds: SEEDS


class SecondGen(Block):
    k: integer(1)
    method: choice(*METHODS)


class Params(Block):
    """params.yaml; ``models``/``train`` hold one block per architecture, read as ``params.train[arch]``."""

    synthesize: Synthesize
    data: Data
    cycles: Cycles
    features: Features
    models: ModelBlocks
    train: TrainBlocks
    runtime: Runtime
    resume: Resume
    teacher: Teacher
    ensemble: Ensemble
    distill: Distill
    arch_table: ArchTable
    ablation: Ablation
    second_gen: SecondGen

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        """Constraints between blocks (a k needs that many teachers, and so on)."""
        n_teachers = len(self.teacher.seeds)
        for key, ks in (
            ("distill.ks", self.distill.ks),
            ("arch_table.k", [self.arch_table.k]),
            ("ablation.k", [self.ablation.k]),
            ("second_gen.k", [self.second_gen.k]),
        ):
            too_big = [k for k in ks if k > n_teachers]
            if too_big:
                raise fail(
                    f"k = {too_big[0]} is larger than the number of teachers ({n_teachers} in teacher.seeds)",
                    key,
                )
        second_gen = self.second_gen
        if second_gen.k not in self.distill.ks or second_gen.method not in self.distill.methods:
            raise fail(
                "(k, method) must be a cell of the distillation sweep (distill.ks x distill.methods), "
                f"got k={second_gen.k}, method={second_gen.method}",
                "second_gen",
            )
        if len(self.distill.seeds) < 2:
            raise fail("the second-generation ensemble needs at least 2 student seeds", "distill.seeds")
        no_val = "'val' needs a validation split (data.val_fraction > 0)"
        for arch, train in self.train.items():
            if train.select == "val" and self.data.val_fraction == 0:
                raise fail(no_val, f"train.{arch}.select")
        curated = "curated" in self.ablation.variants
        if curated and self.ensemble.curate_by == "val" and self.data.val_fraction == 0:
            raise fail(no_val, "ensemble.curate_by")
        clap = self.features.clap
        if clap.f_min >= clap.f_max or clap.f_max > clap.sample_rate / 2:
            raise fail(
                "expected f_min < f_max <= sample_rate / 2, got "
                f"f_min={clap.f_min}, f_max={clap.f_max}, sample_rate={clap.sample_rate}",
                "features.clap.f_max",
            )
        return self


@functools.cache
def _schema(archs: tuple[str, ...]) -> type[Params]:
    """Params whose ``models``/``train`` hold exactly ``archs`` (rebuilt after a registration)."""
    models = {name: (ARCHITECTURES[name].block, ...) for name in archs}
    return create_model(
        "Params",
        __base__=Params,
        models=(create_model("Models", __base__=ModelBlocks, **models), ...),
        train=(create_model("Train", __base__=TrainBlocks, **{name: (Train, ...) for name in archs}), ...),
    )


def validate(raw: Any, source: str = "params.yaml") -> Params:
    """The checked (and number-coerced) params, or one UserError naming the key."""
    return validated(_schema(tuple(ARCHITECTURES)), raw, source)


def read_yaml(path: Path, missing: str) -> Any:
    """A YAML file's content; a missing or unparsable file is one error naming it (``missing``: what to say
    when the file is not there)."""
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err})") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    raw = read_yaml(path, "params file not found (run from the repository root or pass --params)")
    return validate(raw, str(path))

"""params.yaml validation: every impossible value stops with one message naming the key."""

import copy
from pathlib import Path

import pytest
import yaml

from params_edit import DELETE, set_key
from rsckd.cli import main
from rsckd.config import load_params, validate
from rsckd.errors import UserError
from rsckd.inputs import missing_inputs, write_arch_inputs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def edited(path: str, value):
    params = copy.deepcopy(DEFAULT)
    set_key(params, path, value)
    return params


def test_default_and_paper_profiles_are_valid():
    assert validate(DEFAULT).teacher.seeds == [1, 2, 3, 4, 5]
    paper = load_params(ROOT / "configs/paper.yaml")
    assert len(paper.teacher.seeds) == 30
    assert paper.distill.ks == [1, 3, 5, 10, 15, 20, 25, 30]
    assert paper.models["bts"].size == "full"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("train.bts.lrr", 0.1, "train.bts.lrr: unknown key"),
        ("train.bts.lr", -1.0, "train.bts.lr: expected a number > 0"),
        ("train.bts.lr", "fast", "train.bts.lr: expected a number"),
        ("train.bts.epochs", 2.5, "train.bts.epochs: expected an integer"),
        ("train.bts.epochs", True, "train.bts.epochs: expected an integer"),
        ("train.bts.select", "best", "train.bts.select: expected one of literature, last, val"),
        ("train.bts.epochs", DELETE, "train.bts.epochs: missing key"),
        ("distill.ks", [1, 3, 7], "distill.ks: k = 7 is larger than the number of teachers (5"),
        ("arch_table.k", 6, "arch_table.k: k = 6 is larger than the number of teachers"),
        ("teacher.seeds", [], "teacher.seeds: expected a non-empty list"),
        ("teacher.epochs", 0, "teacher.epochs: expected an integer >= 1, got 0"),
        ("teacher.seeds", [1, 2, 2], "teacher.seeds: duplicate values 2"),
        ("teacher.seeds", [1, 2**32], "teacher.seeds[1]: expected an integer >= 0 and <= 4294967295"),
        ("distill.seeds", "1,2", "distill.seeds: expected a non-empty list"),
        ("distill.methods", ["mean", "median"], "distill.methods[1]: expected one of mean, random"),
        ("teacher.arch", "vgg", "teacher.arch: expected one of bts, audio_clap"),
        ("arch_table.archs", ["cnn6", "cnn14"], "arch_table.archs[1]: expected one of"),
        ("ablation.variants", ["dropout"], "ablation.variants[0]: expected one of"),
        ("models.bts.size", "huge", "models.bts.size: expected one of tiny, full"),
        ("second_gen.k", 2, "second_gen: (k, method) must be a cell of the distillation sweep"),
        ("data.val_fraction", 1.5, "data.val_fraction: expected a number >= 0 and <= 0.9"),
        ("features.clap.f_max", 9000.0, "features.clap.f_max: expected f_min < f_max <= sample_rate / 2"),
        ("runtime.compile", "max-autotune", "runtime.compile: expected one of off, default, reduce-overhead"),
        ("runtime.compile", True, "runtime.compile: expected one of off, default, reduce-overhead, got True"),
        ("resume.checkpoint_minutes", -1, "resume.checkpoint_minutes: expected a number >= 0"),
    ],
)
def test_bad_values_name_the_key(path, value, message):
    with pytest.raises(UserError) as err:
        validate(edited(path, value))
    assert str(err.value).startswith("params.yaml: " + message)


def test_val_selection_needs_a_validation_split():
    params = edited("data.val_fraction", 0.0)
    params["train"]["cnn6"]["select"] = "val"
    with pytest.raises(UserError, match="train.cnn6.select: 'val' needs a validation split"):
        validate(params)
    params = edited("data.val_fraction", 0.0)
    params["ensemble"]["curate_by"] = "val"
    with pytest.raises(UserError, match="ensemble.curate_by: 'val' needs a validation split"):
        validate(params)
    params["ablation"]["variants"].remove("curated")  # nothing is curated: nothing to rank
    validate(params)


def test_compile_off_may_be_written_bare():
    """YAML (and `dvc exp run -S runtime.compile=off`) read a bare off as false."""
    assert yaml.safe_load("compile: off")["compile"] is False
    assert validate(edited("runtime.compile", False)).runtime.compile == "off"
    assert validate(DEFAULT).runtime.compile == "off"


def test_numbers_written_as_yaml_strings_are_accepted():
    assert validate(edited("train.bts.lr", "1e-4")).train["bts"].lr == pytest.approx(1e-4)


def test_paper_profile_names_every_missing_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    problems = missing_inputs(load_params(ROOT / "configs/paper.yaml"))
    assert [p.split(":")[0] for p in problems] == ["data.root"] + [
        f"models.{a}.pretrained" for a in ("bts", "audio_clap", "ast", "cnn6", "resnet18", "efficientnet_b0")
    ]
    assert "ICBHI_final_database" in problems[0] and "data/raw/ICBHI" in problems[0]
    out = tmp_path / "inputs.json"
    assert (
        main(["check-params", "--params", str(ROOT / "configs/paper.yaml"), "--inputs", "--out", str(out)])
        == 2
    )
    assert "the profile needs files that are not here" in capsys.readouterr().err
    assert not out.exists()


def test_missing_and_malformed_params_files(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_params(bad)
    bad.write_bytes("# Latin-1 comment: né\n".encode("latin-1"))
    with pytest.raises(UserError, match="bad.yaml: not UTF-8 text"):
        load_params(bad)


def test_arch_inputs_digest_each_architectures_features_and_weights(tmp_path):
    """Replacing one architecture's weights, or one feature kind, changes only the digest files of the
    architectures that read them (each training stage's dependency)."""
    params = validate(DEFAULT)
    weights = tmp_path / "pretrained"
    (weights / "clap").mkdir(parents=True)
    (weights / "clap" / "model.safetensors").write_bytes(b"clap")
    (weights / "clap" / ".cache").mkdir()
    (weights / "clap" / ".cache" / "download.lock").write_text("bookkeeping")
    (weights / "cnn6.pth").write_bytes(b"cnn6 v1")
    params.models["bts"].pretrained = str(weights / "clap")
    params.models["cnn6"].pretrained = str(weights / "cnn6.pth")
    features = tmp_path / "features"
    for kind in ("clap", "fbank"):
        (features / kind).mkdir(parents=True)
        (features / kind / "features.npy").write_bytes(kind.encode())

    def written() -> dict[str, bytes]:
        write_arch_inputs(params, features, str(tmp_path / "arch_inputs"))
        return {p.name: p.read_bytes() for p in sorted((tmp_path / "arch_inputs").iterdir())}

    def changed(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
        return [name for name in before if after[name] != before[name]]

    before = written()
    assert sorted(before) == sorted(f"{arch}.json" for arch, _ in params.models.items())
    resnet = yaml.safe_load(before["resnet18.json"])
    assert (resnet["pretrained"], resnet["pretrained_sha256"]) == (None, None)
    (weights / "clap" / ".cache" / "download.lock").write_text("other bookkeeping")
    assert written() == before
    (weights / "cnn6.pth").write_bytes(b"cnn6 v2")
    after = written()
    assert changed(before, after) == ["cnn6.json"]
    (features / "clap" / "features.npy").write_bytes(b"clap v2")
    assert changed(after, written()) == ["audio_clap.json", "bts.json"]
    (features / "fbank" / "features.npy").unlink()
    with pytest.raises(UserError, match="fbank: no features.npy"):
        written()

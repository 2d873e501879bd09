"""The architecture table: a registered architecture is validated, built and trained like the paper's six."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rsckd.architectures import ARCHITECTURES, Architecture, ModelBlock, register
from rsckd.cli import main
from rsckd.config import load_params
from rsckd.errors import UserError
from rsckd.evaluation.icbhi_score import N_CLASSES
from rsckd.models.base import RSCModel
from run_fixtures import cycle_table, learnable_features

REPO = Path(__file__).resolve().parents[1]
SHAPE = (32, 32)  # (T, F) of the fbank fixture


class MeanLinear(RSCModel):
    """The time-averaged spectrum -> Linear(F, 4): the smallest model that learns the fixture."""

    def __init__(self, bins: int, input_norm: str) -> None:
        super().__init__(input_norm)
        self.head = nn.Linear(bins, N_CLASSES)

    def classify(self, x: torch.Tensor, *prompt: torch.Tensor | None) -> torch.Tensor:
        return self.head(x.mean(dim=1))


def build_toy(cfg: ModelBlock, feature_shape: tuple[int, int], tokenizer=None) -> MeanLinear:
    return MeanLinear(feature_shape[1], cfg.input_norm)


TOY = Architecture(
    name="toy",
    label="Toy",
    feature_kind="fbank",
    reads_prompt=False,
    builder=f"{__name__}:build_toy",
    weights="nothing (the toy model is never pretrained)",
)


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    del ARCHITECTURES[TOY.name]


def params_with_toy(path: Path, toy_blocks: bool = True) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runtime"].update(device="cpu", threads=1, cpu_kernels="native")
    if toy_blocks:
        params["models"]["toy"] = {"size": "tiny", "pretrained": None, "input_norm": "per_sample"}
        params["train"]["toy"] = {**params["train"]["cnn6"], "epochs": 2, "batch_size": 16}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_registered_architecture_trains_end_to_end(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("RSCKD_RESUME_DIR", str(tmp_path / "resume"))
    table = cycle_table(48, 16, 32, ["a prompt the toy model never reads"], per_patient=8)
    table.to_csv(tmp_path / "cycles.csv", index=False)
    features = tmp_path / "features" / toy.feature_kind
    features.mkdir(parents=True)
    np.save(
        features / "features.npy",
        learnable_features(table["label"].to_numpy(), np.random.default_rng(0), SHAPE),
    )
    out = tmp_path / "runs" / "toy"
    argv = ["train", "--arch", "toy", "--seed", "1", "--out", str(out), "--metrics", f"{out}.json"]
    argv += [
        "--params",
        str(params_with_toy(tmp_path / "params.yaml")),
        "--cycles",
        str(tmp_path / "cycles.csv"),
    ]
    assert main([*argv, "--features-dir", str(features)]) == 0
    metrics = json.loads(Path(f"{out}.json").read_text())
    assert metrics["arch"] == "toy" and metrics["n_params"] == SHAPE[1] * N_CLASSES + N_CLASSES
    config = json.loads((out / "config.json").read_text())
    assert (
        config["arch"] == "toy"
        and config["feature_kind"] == "fbank"
        and config["feature_shape"] == list(SHAPE)
    )
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "logits_train.npy",
        "logits_test.npy",
        "history.csv",
        "config.json",
    }


def test_params_blocks_follow_the_table(toy, tmp_path):
    assert load_params(params_with_toy(tmp_path / "with.yaml")).train["toy"].epochs == 2
    with pytest.raises(UserError, match=r"without\.yaml: models\.toy: missing key"):
        load_params(params_with_toy(tmp_path / "without.yaml", toy_blocks=False))
    del ARCHITECTURES[toy.name]  # as if never registered: its blocks are now unknown keys
    try:
        with pytest.raises(UserError, match=r"with\.yaml: models\.toy: unknown key; expected one of bts, "):
            load_params(tmp_path / "with.yaml")
    finally:
        register(toy)


def test_the_paper_architectures_in_order():
    assert [(a.name, a.label, a.feature_kind, a.reads_prompt) for a in ARCHITECTURES.values()] == [
        ("bts", "BTS", "clap", True),
        ("audio_clap", "Audio-CLAP", "clap", False),
        ("ast", "AST", "fbank", False),
        ("cnn6", "CNN6", "fbank", False),
        ("resnet18", "ResNet18", "fbank", False),
        ("efficientnet_b0", "EfficientNet-B0", "fbank", False),
    ]
    with pytest.raises(ValueError, match="already registered"):
        register(ARCHITECTURES["bts"])

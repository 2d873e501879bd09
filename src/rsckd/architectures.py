"""The architecture table: every fact about an architecture, declared once.

Params validation (the allowed names, the ``models.*`` and ``train.*`` keys), the feature kind a stage reads,
whether a model gets the prompt tokens, the builder and the missing-weights message all come from here. A
builder is named as ``"module:function"`` and imported only when a model is built, so ``import rsckd`` stays
light. The default training protocol of an architecture is its ``train.<name>`` block in params.yaml.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rsckd.errors import UserError
from rsckd.schema import BOOLEAN, TEXT, Block, choice, integer, validated

SIZES = ("tiny", "full")


class ModelBlock(Block):
    """``models.<name>``: the model's size, local pretrained weights and input normalisation."""

    size: choice(*SIZES)
    pretrained: TEXT | None
    input_norm: choice("none", "audioset", "per_sample")


class BTSBlock(ModelBlock):
    max_text_length: integer(8)


class ASTBlock(ModelBlock):
    swap_input_dims: BOOLEAN


@dataclass(frozen=True)
class Architecture:
    """One architecture; its default training protocol is its ``train.<name>`` block in params.yaml."""

    name: str
    label: str  # as the paper writes it
    feature_kind: Literal["clap", "fbank"]
    reads_prompt: bool  # whether the model gets the metadata prompt's tokens
    builder: str  # "module:function", called as function(block, (T, F), tokenizer) -> RSCModel
    weights: str  # what to put at models.<name>.pretrained
    block: type[ModelBlock] = ModelBlock  # the class of its models.<name> block

    def build_function(self) -> Callable[..., Any]:
        """The builder, imported now (transformers/timm load only when a model is built)."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)

    def model_block(self, raw: Any, source: str) -> ModelBlock:
        """A ``models.<name>`` block read back from a file (e.g. a run's config.json)."""
        return validated(self.block, raw, source, lambda key: f"model.{key}")


_CLAP = "a Hugging Face laion/clap-htsat-unfused directory (or `rsckd import-clap 630k-audioset-best.pt DIR`)"
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            name="bts",
            label="BTS",
            feature_kind="clap",
            reads_prompt=True,
            builder="rsckd.models.bts:build",
            weights=_CLAP,
            block=BTSBlock,
        ),
        Architecture(
            name="audio_clap",
            label="Audio-CLAP",
            feature_kind="clap",
            reads_prompt=False,
            builder="rsckd.models.clap_audio:build",
            weights=_CLAP,
        ),
        Architecture(
            name="ast",
            label="AST",
            feature_kind="fbank",
            reads_prompt=False,
            builder="rsckd.models.ast:build",
            weights="a Hugging Face MIT/ast-finetuned-audioset-10-10-0.4593 directory",
            block=ASTBlock,
        ),
        Architecture(
            name="cnn6",
            label="CNN6",
            feature_kind="fbank",
            reads_prompt=False,
            builder="rsckd.models.cnn6:build",
            weights="the PANNs checkpoint Cnn6_mAP=0.343.pth (zenodo record 3987831)",
        ),
        Architecture(
            name="resnet18",
            label="ResNet18",
            feature_kind="fbank",
            reads_prompt=False,
            builder="rsckd.models.timm_models:build_resnet18",
            weights="torchvision's ImageNet ResNet18 in timm layout "
            "(model.safetensors of timm/resnet18.tv_in1k)",
        ),
        Architecture(
            name="efficientnet_b0",
            label="EfficientNet-B0",
            feature_kind="fbank",
            reads_prompt=False,
            builder="rsckd.models.timm_models:build_efficientnet_b0",
            weights="timm ImageNet EfficientNet-B0 (model.safetensors of timm/efficientnet_b0.ra_in1k)",
        ),
    )
}


def register(arch: Architecture) -> None:
    """Add an architecture (its params blocks become required in every params file read after this)."""
    if arch.name in ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch


def architecture(name: str) -> Architecture:
    """The table entry of ``name``; an unknown name (e.g. a run's config.json) is the user's to fix."""
    if name not in ARCHITECTURES:
        raise UserError(f"unknown architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]

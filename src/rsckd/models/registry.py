"""One builder per architecture name, and the common wrapper every model shares.

Every model maps ``features[B, T, F]`` (the cached feature array of its family, not normalised) to 4-class
logits, so the training loop, the ensemble and ``rsckd predict`` never need to know which network is inside.
The input normalisation lives in the wrapper (``models.<arch>.input_norm``) so a saved run carries it with its
weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsckd.config import ARCHS
from rsckd.errors import UserError

SIZES = ("tiny", "full")
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # AST's AudioSet fbank statistics


def normalise(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``audioset``: AST's fixed statistics (x - mean) / (2 std); ``per_sample``: each sample's own
    statistics, as the SG-SCL CNNs; ``none``: CLAP models, whose first op is a BatchNorm over mel bins."""
    if mode == "audioset":
        return (x - AUDIOSET_MEAN) / (AUDIOSET_STD * 2)
    if mode == "per_sample":
        mean = x.mean(dim=(1, 2), keepdim=True)
        std = x.std(dim=(1, 2), keepdim=True)
        return (x - mean) / (2 * std + 1e-8)
    return x


class RSCModel(nn.Module):
    """features[B, T, F] (+ prompt tokens of text models) -> logits[B, 4]; subclasses define ``classify``."""

    uses_text = False

    def __init__(self, input_norm: str = "none") -> None:
        super().__init__()
        self.input_norm = input_norm

    def forward(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.classify(normalise(features, self.input_norm), input_ids, attention_mask)

    def classify(
        self, x: torch.Tensor, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError


Builder = Callable[[dict[str, Any], tuple[int, int], Any], RSCModel]


def _builders() -> Mapping[str, Builder]:
    # imported here so `import rsckd.models` stays light (transformers/timm load only when a model is built)
    from rsckd.models import ast, bts, clap_audio, cnn6, timm_models

    return {
        "bts": bts.build,
        "audio_clap": clap_audio.build,
        "ast": ast.build,
        "cnn6": cnn6.build,
        "resnet18": timm_models.build_resnet18,
        "efficientnet_b0": timm_models.build_efficientnet_b0,
    }


def build_model(
    arch: str, cfg: dict[str, Any], feature_shape: tuple[int, int], tokenizer: Any = None
) -> RSCModel:
    """``models.<arch>`` block -> a model for (T, F) inputs; random init unless ``cfg["pretrained"]``."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    if cfg.get("size") not in SIZES:
        raise UserError(f"models.{arch}.size: {cfg.get('size')!r}, expected one of {', '.join(SIZES)}")
    t, f = (int(n) for n in feature_shape)
    return _builders()[arch](cfg, (t, f), tokenizer).train()  # from_pretrained leaves submodules in eval


def pretrained_path(arch: str, cfg: dict[str, Any]) -> Path | None:
    """``models.<arch>.pretrained`` as a path, or None; a path that is not there is the user's to fix."""
    value = cfg.get("pretrained")
    if value is None:
        return None
    path = Path(value)
    if not path.exists():
        raise UserError(f"models.{arch}.pretrained: {path} not found (a local directory or checkpoint file)")
    return path


def check_mel_bins(arch: str, kind_key: str, got: int, expected: int) -> None:
    """Models with a fixed number of frequency bins (BatchNorm over bins, a position grid) say so clearly."""
    if got != expected:
        raise UserError(
            f"models.{arch}: expects {expected} frequency bins but the features have {got}; make "
            f"features.{kind_key} match the model size (or pick the size that matches the features)"
        )


def count_parameters(model: nn.Module) -> int:
    """All parameters (trainable or not), the number reported in the metrics and the cost table."""
    return sum(p.numel() for p in model.parameters())

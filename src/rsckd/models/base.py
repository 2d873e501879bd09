"""What every model shares: the wrapper, input normalisation, the shape and weight checks, and building a
model by architecture name (its builder comes from :mod:`rsckd.architectures`; builders import only this).

Every model maps ``features[B, T, F]`` (the cached feature array of its family, not normalised) to 4-class
logits, so the training loop, the ensemble and ``rsckd predict`` never need to know which network is inside.
The input normalisation lives in the wrapper (``models.<arch>.input_norm``) so a saved run carries it with its
weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsckd.architectures import ModelBlock, architecture
from rsckd.errors import UserError

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
    """features[B, T, F] (+ prompt tokens of text models) -> logits[B, 4]; subclasses define ``classify``,
    text models also ``embed_prompts``."""

    def __init__(self, input_norm: str = "none") -> None:
        super().__init__()
        self.input_norm = input_norm

    def forward(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        prompts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``prompts``: the rows' prompt embeddings in place of their tokens. Evaluation passes them: it
        encodes each distinct prompt of a set once (``embed_prompts``), not once per row."""
        return self.classify(normalise(features, self.input_norm), input_ids, attention_mask, prompts)

    def embed_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One embedding per row of prompt tokens; only models that read the prompt define it."""
        raise NotImplementedError(f"{type(self).__name__} reads no prompt")

    def classify(
        self,
        x: torch.Tensor,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        prompts: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError


def build_model(
    arch: str, cfg: ModelBlock, feature_shape: tuple[int, int], tokenizer: Any = None
) -> RSCModel:
    """``models.<arch>`` block -> a model for (T, F) inputs; random init unless ``cfg.pretrained``.

    The builder module is imported here, so transformers/timm load only when a model is built."""
    build = architecture(arch).build_function()
    t, f = (int(n) for n in feature_shape)
    return build(cfg, (t, f), tokenizer).train()  # from_pretrained leaves submodules in eval


def pretrained_path(arch: str, cfg: ModelBlock) -> Path | None:
    """``models.<arch>.pretrained`` as a path, or None; a path that is not there is the user's to fix."""
    if cfg.pretrained is None:
        return None
    path = Path(cfg.pretrained)
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

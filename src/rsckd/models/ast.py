"""AST (Audio Spectrogram Transformer) on the kaldi fbank (B, T, F), as patch-mix / SG-SCL.

feature = mean of the CLS and distillation tokens (ASTModel's pooler output) -> LayerNorm + Linear(768, 4).
Full size: DeiT-base, 16x16 patches, frequency/time stride 10, 128 mel bins, ``max_length = T`` (798 frames at
the paper's 8 s / 10 ms), i.e. a 12 x 79 patch grid. With ``pretrained`` (a local Hugging Face AST directory,
e.g. the AudioSet model with its 12 x 101 grid), the architecture comes from that directory and its position
embedding is adapted to the new grid the way the original AST code does: per axis, centre crop when the grid
shrinks, bilinear interpolation when it grows.

``swap_input_dims`` (default off) reproduces the reference's quirk: it passes ``input_fdim=798,
input_tdim=128``, so the pretrained grid is adapted to 79 x 12 (time x frequency) and then laid over tokens
ordered 12 x 79 (frequency x time) - both hold 948 tokens, so it runs, with scrambled positions. The reference
AST numbers were made this way. It changes nothing without pretrained weights (a random embedding has no grid
to scramble).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsckd.architectures import ASTBlock
from rsckd.errors import UserError
from rsckd.evaluation.icbhi_score import N_CLASSES
from rsckd.models.base import RSCModel, check_mel_bins, pretrained_path
from rsckd.models.pretrained import hf_config, hf_load, load_strict

FULL: dict[str, Any] = dict(num_mel_bins=128, patch_size=16, frequency_stride=10, time_stride=10)
TINY: dict[str, Any] = dict(
    num_mel_bins=16,
    patch_size=8,
    frequency_stride=8,
    time_stride=8,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
)
POSITIONS = "embeddings.position_embeddings"


def patch_grid(config: Any) -> tuple[int, int]:
    """(frequency, time) patch counts, as ASTEmbeddings computes them."""
    f = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    t = (config.max_length - config.patch_size) // config.time_stride + 1
    return f, t


def adapt_position_embedding(
    pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], swap_input_dims: bool = False
) -> torch.Tensor:
    """(1, 2 + Fo*To, D) -> (1, 2 + Fn*Tn, D), keeping the CLS/distillation positions.

    With ``swap_input_dims`` the target grid is built as (Tn, Fn) and flattened row-major (the reference).
    """
    (fo, to), (fn, tn) = old_grid, (new_grid[::-1] if swap_input_dims else new_grid)
    grid = pos[:, 2:].reshape(1, fo, to, -1).permute(0, 3, 1, 2)  # (1, D, Fo, To), tokens frequency-major
    if tn < to:
        grid = grid[:, :, :, to // 2 - tn // 2 : to // 2 - tn // 2 + tn]
    if fn < fo:
        grid = grid[:, :, fo // 2 - fn // 2 : fo // 2 - fn // 2 + fn, :]
    if grid.shape[-2:] != (fn, tn):
        grid = F.interpolate(grid, size=(fn, tn), mode="bilinear")
    return torch.cat([pos[:, :2], grid.flatten(2).transpose(1, 2)], dim=1)


class AST(RSCModel):
    def __init__(self, backbone: nn.Module, input_norm: str) -> None:
        super().__init__(input_norm)
        self.ast = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(
            nn.LayerNorm(hidden, eps=backbone.config.layer_norm_eps), nn.Linear(hidden, N_CLASSES)
        )

    def classify(self, x: torch.Tensor, *prompt: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.ast(input_values=x).pooler_output)


def _config(cfg: ASTBlock, t: int):
    """(ASTConfig for T frames, the pretrained directory's own config or None)."""
    from transformers import ASTConfig

    path = pretrained_path("ast", cfg)
    if path is None:
        return ASTConfig(max_length=t, **(TINY if cfg.size == "tiny" else FULL)), None
    raw = hf_config(path, "models.ast.pretrained")
    if raw.get("model_type") != "audio-spectrogram-transformer":
        raise UserError(
            f"models.ast.pretrained: {path} holds a {raw.get('model_type')!r} model, expected an AST"
        )
    source = ASTConfig.from_pretrained(str(path), local_files_only=True)
    config = copy.deepcopy(source)
    config.max_length = t
    return config, source


def build(cfg: ASTBlock, feature_shape: tuple[int, int], tokenizer: Any = None) -> AST:
    from transformers import ASTModel

    t, f = feature_shape
    config, source = _config(cfg, t)
    check_mel_bins("ast", "fbank.num_mel_bins", f, config.num_mel_bins)
    if t < config.patch_size:
        raise UserError(
            f"models.ast: {t} frames are fewer than one {config.patch_size}-frame patch (features.fbank)"
        )
    model = AST(ASTModel(config), cfg.input_norm)
    if source is not None:
        # load at the checkpoint's own grid, then move its position embedding to ours
        where = "models.ast.pretrained"
        state = hf_load(
            ASTModel, pretrained_path("ast", cfg), where, (r"^classifier\.",), config=source
        ).state_dict()
        state[POSITIONS] = adapt_position_embedding(
            state[POSITIONS], patch_grid(source), patch_grid(config), cfg.swap_input_dims
        )
        load_strict(model.ast, state, f"{where} ({cfg.pretrained})")
    return model

"""BTS: CLAP (HTSAT audio + RoBERTa text) with the patient-metadata prompt as text, fine-tuned end to end.

feature = cat(L2-normalised text embedding, L2-normalised audio embedding) -> Linear(2 * projection_dim, 4)
(1024 -> 4 at full size), as the reference's ``clap_final concat``. The embeddings are computed from the
towers and projections here, not via ``get_text_features``/``get_audio_features``, whose return type and
normalisation changed across transformers versions (5.17 returns a model output with a normalised
pooler_output).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsckd.architectures import BTSBlock
from rsckd.errors import UserError
from rsckd.evaluation.icbhi_score import N_CLASSES
from rsckd.models.base import RSCModel
from rsckd.models.clap_audio import check_clap_features, clap_config, clap_module

ROBERTA_VOCAB = 50265
POSITION_OFFSET = 2  # RoBERTa positions start after the padding index (1)


def text_settings(cfg: BTSBlock, tokenizer: Any) -> dict[str, Any]:
    """RoBERTa-base at full size (layer_norm_eps 1e-5, as the original CLAP); 2 layers x 32 wide when tiny."""
    positions = cfg.max_text_length + POSITION_OFFSET
    if cfg.size == "full":
        return {"vocab_size": max(ROBERTA_VOCAB, len(tokenizer)), "layer_norm_eps": 1e-5}
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=positions,
        pad_token_id=tokenizer.pad_token_id,
    )


def check_text(cfg: BTSBlock, text_config: Any, tokenizer: Any) -> None:
    if len(tokenizer) > text_config.vocab_size:
        raise UserError(
            f"models.bts: the tokenizer has {len(tokenizer)} tokens but the text tower only "
            f"{text_config.vocab_size} embeddings (tokenizer and pretrained weights from different models?)"
        )
    longest = cfg.max_text_length + POSITION_OFFSET
    if longest > text_config.max_position_embeddings:
        raise UserError(
            f"models.bts.max_text_length: {cfg.max_text_length} exceeds the text tower's "
            f"{text_config.max_position_embeddings - POSITION_OFFSET} positions"
        )


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 token mask -> (B, 1, 1, L) additive mask: 0 where attended, the dtype's minimum on padding.

    transformers uses a 4-D mask as it is; a 2-D one it first checks with ``mask.all()`` in Python (a host
    synchronisation on every forward pass that also breaks a compiled graph) before building its own mask,
    which gives the same logits (tested).
    """
    return (attention_mask[:, None, None, :] == 0).to(dtype) * torch.finfo(dtype).min


class BTS(RSCModel):
    def __init__(self, clap: nn.Module, projection_dim: int, input_norm: str) -> None:
        super().__init__(input_norm)
        self.clap = clap
        self.head = nn.Linear(2 * projection_dim, N_CLASSES)

    def embed_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embeddings, one per row of tokens."""
        text_mask = additive_attention_mask(attention_mask, self.head.weight.dtype)
        text = self.clap.text_model(input_ids=input_ids, attention_mask=text_mask).pooler_output
        return F.normalize(self.clap.text_projection(text), dim=-1)

    def classify(
        self,
        x: torch.Tensor,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        prompts: torch.Tensor | None,
    ) -> torch.Tensor:
        """Audio tower first, text tower second: the order in which a training step draws their dropout."""
        audio = self.clap.audio_model(input_features=x.unsqueeze(1)).pooler_output
        if prompts is None:
            if input_ids is None:
                raise ValueError("bts needs the prompt tokens (input_ids, attention_mask)")
            prompts = self.embed_prompts(input_ids, attention_mask)
        audio = F.normalize(self.clap.audio_projection(audio), dim=-1)
        return self.head(torch.cat([prompts, audio], dim=-1))


def build(cfg: BTSBlock, feature_shape: tuple[int, int], tokenizer: Any = None) -> BTS:
    from transformers import ClapModel

    if tokenizer is None:
        raise UserError("models.bts: a tokenizer is required (rsckd.models.build_tokenizer)")
    config = clap_config("bts", cfg, text_settings(cfg, tokenizer))
    check_clap_features("bts", config.audio_config, feature_shape)
    check_text(cfg, config.text_config, tokenizer)
    clap = clap_module("bts", ClapModel, cfg, config)
    return BTS(clap, config.projection_dim, cfg.input_norm)

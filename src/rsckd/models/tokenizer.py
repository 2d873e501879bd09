"""Prompt tokenizer for the text tower of BTS, always built or loaded offline.

With a pretrained CLAP directory its own RoBERTa tokenizer is used (the ids must match the pretrained
embeddings). Without one, a RoBERTa-style byte-level BPE is trained on the prompts themselves: the text tower
is then random anyway, and the hub is never asked (transformers 5 silently returns an EMPTY tokenizer for a
hub name when offline, so every tokenizer is checked for size before use).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rsckd.architectures import ModelBlock
from rsckd.errors import UserError
from rsckd.models.base import pretrained_path

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as RoBERTa: bos 0, pad 1, eos 2
LOCAL_VOCAB_SIZE = 1000  # upper bound; BPE stops earlier once every prompt word is one token
MODEL_MAX_LENGTH = 512


def _checked(tokenizer: Any, source: str) -> Any:
    if len(tokenizer) <= len(SPECIAL_TOKENS):
        raise UserError(
            f"{source}: the tokenizer loaded empty ({len(tokenizer)} tokens); expected a full vocabulary"
        )
    return tokenizer


def load_tokenizer(path: str | os.PathLike[str], where: str | None = None) -> Any:
    """A saved tokenizer directory (a pretrained model's or a run's ``tokenizer/``), strictly local."""
    from transformers import AutoTokenizer

    source = f"{where}: {path}" if where else str(path)
    if not Path(path).is_dir():
        raise UserError(f"{source}: not a directory holding a tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(
            f"{source}: no usable tokenizer there ({err}); a CLAP directory needs RoBERTa's tokenizer files "
            f"(tokenizer.json or vocab.json + merges.txt)"
        ) from None
    return _checked(tokenizer, source)


def local_tokenizer(prompts: list[str]) -> Any:
    """Deterministic byte-level BPE on the sorted, de-duplicated prompts: same prompts -> same ids."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaTokenizerFast

    corpus = sorted(set(prompts))
    if not corpus:
        raise UserError("no prompts to build the text tokenizer from (empty cycle table?)")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus,
        vocab_size=LOCAL_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    bpe._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=MODEL_MAX_LENGTH,
    )
    return _checked(tokenizer, "local prompt tokenizer")


def build_tokenizer(cfg: ModelBlock, prompts: list[str]) -> Any:
    """The ``cfg.pretrained`` directory's own tokenizer if set, else a local BPE of the prompts."""
    path = pretrained_path("bts", cfg)
    return local_tokenizer(prompts) if path is None else load_tokenizer(path, "models.bts.pretrained")


def tokenize(tokenizer: Any, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) LongTensors padded to the longest prompt (at most ``max_length``).

    Equivalent to the reference's pad-to-64: padded positions are masked out and RoBERTa's position ids skip
    pads.
    """
    batch = tokenizer(
        list(prompts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return batch["input_ids"].long(), batch["attention_mask"].long()

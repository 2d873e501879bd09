"""Model registry: one builder per architecture, the prompt tokenizer and local pretrained weights.

Everything is built offline: random init by default, or a local directory/checkpoint given in
``models.<arch>.pretrained`` (checked key by key). Heavy libraries (transformers, timm) are imported only when
a model or tokenizer is built.
"""

from rsckd.models.registry import ARCHS, RSCModel, build_model, count_parameters
from rsckd.models.tokenizer import build_tokenizer, load_tokenizer, tokenize

__all__ = [
    "ARCHS",
    "RSCModel",
    "build_model",
    "build_tokenizer",
    "count_parameters",
    "load_tokenizer",
    "tokenize",
]

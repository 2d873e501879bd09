"""Models by architecture name (see rsckd.architectures), the prompt tokenizer and local pretrained weights.

Everything is built offline: random init by default, or a local directory/checkpoint given in
``models.<arch>.pretrained`` (checked key by key). Heavy libraries (transformers, timm) are imported only when
a model or tokenizer is built.
"""

from rsckd.models.base import RSCModel, build_model, count_parameters
from rsckd.models.tokenizer import build_tokenizer, load_tokenizer, tokenize

__all__ = [
    "RSCModel",
    "build_model",
    "build_tokenizer",
    "count_parameters",
    "load_tokenizer",
    "tokenize",
]

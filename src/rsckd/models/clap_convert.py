"""``rsckd import-clap CKPT.pt OUT_DIR``: original LAION-CLAP checkpoint -> Hugging Face ClapModel directory.

The laion-clap package is not a dependency (it pins numpy<2, reaches the hub at import and construction), and
transformers ships no converter in its wheels, so the renaming lives here. LAION keys -> ClapModel keys:
text_branch -> text_model, audio_branch -> audio_model.audio_encoder, attn -> attention.self, self.proj ->
output.dense, mlp.fc1/fc2 -> intermediate.dense/output.dense, norm1/2 -> layernorm_before/after, bn0 ->
batch_norm, ``<x>_projection.0/2`` (nn.Sequential indices) -> ``<x>_projection.linear1/2``; the fused Swin
``qkv`` is split into query/key/value. Keys the Hugging Face model has no place for are dropped by name (see
``IGNORED``); anything else that does not match is reported, so a fused or foreign checkpoint is refused.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import torch

from rsckd.atomic import atomic_dir
from rsckd.errors import UserError
from rsckd.models.pretrained import load_strict

IGNORED = (
    r"^text_transform\.",  # MLPs of the contrastive training objective, unused at inference
    r"^audio_transform\.",
    r"^audio_branch\.(spectrogram_extractor|logmel_extractor)\.",  # torchlibrosa STFT/mel: precomputed
    r"^audio_branch\.tscam_conv\.",  # HTSAT's AudioSet tagging head
    r"^audio_branch\.head\.",
    r"\.attn_mask$",  # shifted-window masks, recomputed from the input size
)
RENAMES = (
    (r"^text_branch\.", "text_model."),
    (r"^audio_branch\.", "audio_model.audio_encoder."),
    (r"\.attn\.", ".attention.self."),
    (r"\.attention\.self\.proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.bn0\.", ".batch_norm."),
    (r"_projection\.0\.", "_projection.linear1."),
    (r"_projection\.2\.", "_projection.linear2."),
)
QKV = re.compile(r"^(.*\.attention\.self\.)qkv\.(weight|bias)$")
UNFUSED_FEATURES = dict(sampling_rate=48000, frequency_min=50, frequency_max=14000, truncation="rand_trunc")


def hf_key(key: str) -> str:
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_state_dict(laion: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LAION-CLAP names (with or without DDP's ``module.`` prefix) -> ClapModel names, minus ``IGNORED``."""
    state: dict[str, torch.Tensor] = {}
    for key, value in laion.items():
        key = key.removeprefix("module.")
        if any(re.search(p, key) for p in IGNORED):
            continue
        key = hf_key(key)
        match = QKV.match(key)
        if match:
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                state[f"{match[1]}{name}.{match[2]}"] = part.clone()
        else:
            state[key] = value
    return state


def read_laion(path: Path, unsafe: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict: ``{"state_dict": {...}}`` as LAION saves it, or a plain state dict."""
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except Exception as err:
        hint = (
            ""
            if unsafe
            else " (if it holds more than tensors and comes from a trusted source: --unsafe-load)"
        )
        raise UserError(f"{path}: cannot read the checkpoint ({type(err).__name__}: {err}){hint}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"{path}: not a LAION-CLAP checkpoint (expected a state dict, possibly under 'state_dict')"
        )
    return obj


def target_config(spec: str):
    """``unfused`` (laion/clap-htsat-unfused: HTSAT-tiny + RoBERTa-base, text layer_norm_eps 1e-5 as the
    original) or a path to a ClapModel config.json / directory (other sizes, tests)."""
    from transformers import ClapConfig

    if spec == "unfused":
        return ClapConfig(text_config={"layer_norm_eps": 1e-5})
    path = Path(spec)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"--config: {spec!r} is neither 'unfused' nor a ClapModel config.json")
    raw: dict[str, Any] = json.loads(path.read_text())
    if raw.get("model_type") != "clap":
        raise UserError(f"--config: {path} is a {raw.get('model_type')!r} config, expected 'clap'")
    return ClapConfig.from_pretrained(str(path.parent), local_files_only=True)


def convert(
    ckpt: Path, out: Path, config: Any, tokenizer_dir: Path | None = None, unsafe: bool = False
) -> None:
    """Convert, check every key, and write model + config + feature extractor (+ tokenizer) atomically."""
    from transformers import ClapFeatureExtractor, ClapModel

    if config.audio_config.enable_fusion:
        raise UserError("--config: fused CLAP models are not supported (the reference uses the unfused one)")
    state = convert_state_dict(read_laion(ckpt, unsafe))  # before building: a bad file fails fast
    tokenizer = None
    if tokenizer_dir is not None:
        from rsckd.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir, "--tokenizer")
    model = ClapModel(config)
    load_strict(model, state, f"{ckpt} (converted to ClapModel)")
    features = ClapFeatureExtractor(feature_size=config.audio_config.num_mel_bins, **UNFUSED_FEATURES)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        features.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", type=Path, help="LAION-CLAP checkpoint (.pt), e.g. 630k-audioset-best.pt")
    parser.add_argument(
        "out", type=Path, help="output directory (Hugging Face ClapModel layout), replaced whole"
    )
    parser.add_argument("--config", default="unfused", help="'unfused' (default) or a ClapModel config.json")
    parser.add_argument("--tokenizer", type=Path, help="local RoBERTa tokenizer directory to copy into OUT")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="allow pickled non-tensor objects (trusted checkpoints only)",
    )


def run(args: argparse.Namespace) -> None:
    convert(args.ckpt, args.out, target_config(args.config), args.tokenizer, args.unsafe_load)
    print(f"wrote {args.out} (ClapModel, config, feature extractor{', tokenizer' if args.tokenizer else ''})")

"""CLAP's HTSAT audio tower: the shared CLAP configuration helpers and the Audio-CLAP baseline.

Audio-CLAP = ``ClapAudioModelWithProjection`` -> audio_embeds (512, NOT normalised, as the reference) ->
Linear(512, 4). CLAP features are the log-mel of the whole padded clip; HTSAT stretches the time axis to
``spec_size * freq_ratio`` frames and folds it into a ``spec_size`` square image, ``freq_ratio = spec_size //
num_mel_bins``. Only unfused models are supported (the reference never triggers fusion: no clip exceeds 10 s).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rsckd.architectures import ModelBlock
from rsckd.errors import UserError
from rsckd.evaluation.icbhi_score import N_CLASSES
from rsckd.models.base import RSCModel, check_mel_bins, pretrained_path
from rsckd.models.pretrained import hf_config, hf_load

# laion/clap-htsat-unfused: Swin-T HTSAT (96 -> 768, depths 2-2-6-2), 64 mel bins folded into a 256x256 image
FULL_AUDIO: dict[str, Any] = {}
# 3 stages on a 64x64 image (16 mel bins x 4): the last grid (4x4) must still hold freq_ratio rows
TINY_AUDIO = dict(
    spec_size=64,
    num_mel_bins=16,
    window_size=4,
    patch_embeds_hidden_size=16,
    depths=[1, 1, 1],
    num_attention_heads=[2, 2, 4],
    hidden_size=64,  # = patch_embeds_hidden_size * 2 ** (len(depths) - 1)
    projection_dim=32,
    # CLAP's init scales weights by 1/sqrt(2 * layers * hidden): at this width the embeddings of different
    # inputs come out nearly identical and a random-init tiny model cannot learn in a few epochs.
    initializer_factor=4.0,
)
TINY_PROJECTION = 32
# keys of a full ClapModel directory that an audio-only model does not have (the text side, CLIP logit scales)
TEXT_SIDE_KEYS = (r"^text_model\.", r"^text_projection\.", r"^logit_scale_[at]$")


def clap_config(arch: str, cfg: ModelBlock, text: dict[str, Any] | None = None):
    """ClapConfig of the pretrained directory, else of ``cfg.size`` (``text``: the text tower's settings).

    An audio-only directory (ClapAudioModelWithProjection, accepted for audio_clap) gives a ClapAudioConfig.
    """
    from transformers import ClapAudioConfig, ClapConfig

    path = pretrained_path(arch, cfg)
    if path is None:
        tiny = cfg.size == "tiny"
        projection = {"projection_dim": TINY_PROJECTION} if tiny else {}
        audio = dict(TINY_AUDIO if tiny else FULL_AUDIO, **projection)
        init = {"initializer_factor": TINY_AUDIO["initializer_factor"]} if tiny else {}
        return ClapConfig(
            audio_config=audio, text_config=dict(text or {}, **projection), **projection, **init
        )
    where = f"models.{arch}.pretrained"
    model_type = hf_config(path, where).get("model_type")
    if model_type == "clap":
        config = ClapConfig.from_pretrained(str(path), local_files_only=True)
        audio_config = config.audio_config
    elif model_type == "clap_audio_model" and arch == "audio_clap":
        config = audio_config = ClapAudioConfig.from_pretrained(str(path), local_files_only=True)
    else:
        expected = "ClapModel or ClapAudioModelWithProjection" if arch == "audio_clap" else "ClapModel"
        raise UserError(
            f"{where}: {path} holds a {model_type!r} model, expected a CLAP directory ({expected})"
        )
    if audio_config.enable_fusion:
        raise UserError(f"{where}: {path} is a fused CLAP model; use an unfused one (the reference's)")
    return config


def check_clap_features(arch: str, audio_config: Any, feature_shape: tuple[int, int]) -> None:
    """HTSAT takes exactly ``num_mel_bins`` bins (BatchNorm over bins), <= spec_size*freq_ratio frames."""
    t, f = feature_shape
    check_mel_bins(arch, "clap.n_mels", f, audio_config.num_mel_bins)
    max_frames = audio_config.spec_size * (audio_config.spec_size // audio_config.num_mel_bins)
    if t > max_frames:
        raise UserError(
            f"models.{arch}: {t} frames exceed the {max_frames} HTSAT folds into its image; shorten "
            f"features.clap.max_length_s or raise hop_length"
        )


def clap_module(arch: str, cls: Any, cfg: ModelBlock, config: Any, ignore_unexpected: tuple[str, ...] = ()):
    """``cls`` (ClapModel / ClapAudioModelWithProjection) with the local directory's weights, else random."""
    path = pretrained_path(arch, cfg)
    if path is None:
        return cls(config)
    return hf_load(cls, path, f"models.{arch}.pretrained", ignore_unexpected)


class AudioCLAP(RSCModel):
    """HTSAT + projection -> raw (unnormalised) audio embedding -> Linear(projection_dim, 4)."""

    def __init__(self, audio: nn.Module, projection_dim: int, input_norm: str) -> None:
        super().__init__(input_norm)
        self.audio = audio
        self.head = nn.Linear(projection_dim, N_CLASSES)

    def classify(self, x: torch.Tensor, *prompt: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.audio(input_features=x.unsqueeze(1)).audio_embeds)


def build(cfg: ModelBlock, feature_shape: tuple[int, int], tokenizer: Any = None) -> AudioCLAP:
    from transformers import ClapAudioModelWithProjection

    config = clap_config("audio_clap", cfg)
    audio_config = getattr(config, "audio_config", config)
    check_clap_features("audio_clap", audio_config, feature_shape)
    audio = clap_module("audio_clap", ClapAudioModelWithProjection, cfg, audio_config, TEXT_SIDE_KEYS)
    return AudioCLAP(audio, audio_config.projection_dim, cfg.input_norm)

"""PANNs CNN6 as used by SG-SCL: four 5x5 conv blocks on the fbank image, no bn0, global pooling, linear head.

Layer names follow PANNs (``conv_block{i}.conv1/bn1``) so ``Cnn6_mAP=0.343.pth`` loads by name. The PANNs
checkpoint also holds its own front end and AudioSet head, which this model does not use: ``bn0`` (replaced by
the wrapper's input normalisation, as SG-SCL), ``spectrogram_extractor``/``logmel_extractor`` (features are
precomputed), ``fc1`` and ``fc_audioset`` (the 527-class head) - ignored on load; ``head`` is new.

Full size: 4.30 M parameters (4.84 M with PANNs' fc1 + fc_audioset, the "4.8 M" of the PANNs paper).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsckd.architectures import ModelBlock
from rsckd.evaluation.icbhi_score import N_CLASSES
from rsckd.models.base import RSCModel, pretrained_path
from rsckd.models.pretrained import load_strict, read_state_dict

CHANNELS = {"full": (64, 128, 256, 512), "tiny": (8, 16, 32, 64)}
PANNS_EXTRA_KEYS = (
    r"^bn0\.",
    r"^spectrogram_extractor\.",
    r"^logmel_extractor\.",
    r"^fc1\.",
    r"^fc_audioset\.",
)
DROPOUT = 0.2  # PANNs' dropout after every block


class ConvBlock5x5(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=2)


class CNN6(RSCModel):
    """(B, T, F) -> 4 blocks -> mean over frequency -> max + mean over time -> Linear(C, 4)."""

    def __init__(self, channels: tuple[int, ...], input_norm: str) -> None:
        super().__init__(input_norm)
        widths = (1, *channels)
        for i in range(len(channels)):
            self.add_module(f"conv_block{i + 1}", ConvBlock5x5(widths[i], widths[i + 1]))
        self.blocks = len(channels)
        self.head = nn.Linear(channels[-1], N_CLASSES)

    def classify(self, x: torch.Tensor, *prompt: torch.Tensor | None) -> torch.Tensor:
        x = x.unsqueeze(1)  # (B, 1, T, F): time on rows, frequency on columns, as PANNs
        for i in range(self.blocks):
            x = F.dropout(getattr(self, f"conv_block{i + 1}")(x), p=DROPOUT, training=self.training)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        return self.head(F.dropout(x, p=DROPOUT, training=self.training))


def build(cfg: ModelBlock, feature_shape: tuple[int, int], tokenizer: Any = None) -> CNN6:
    model = CNN6(CHANNELS[cfg.size], cfg.input_norm)
    path = pretrained_path("cnn6", cfg)
    if path is not None:
        where = "models.cnn6.pretrained"
        state = read_state_dict(path, where)
        load_strict(model, state, f"{where} ({path})", PANNS_EXTRA_KEYS, allow_missing=(r"^head\.",))
    return model

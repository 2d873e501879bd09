"""ResNet18 and EfficientNet-B0 from timm on the 1-channel fbank image (B, 1, T, F).

As in SG-SCL, the ImageNet stem conv is replaced by a randomly initialised 1-channel conv (its pretrained
weight is dropped, not averaged over RGB) and the 1000-class classifier by a new 4-class one; every other
weight of the checkpoint must match by name and shape. Tiny sizes keep the family: a ResNet18 with 1/8 of the
channels and timm's minimal EfficientNet (``test_efficientnet``, MBConv/inverted-residual blocks), both at
output stride 8 (their last stride-2 stages dilated instead): at stride 32 the default's 16 fbank bins are
down to one row from the third stage on (README, 'What the reference does, and what this repository does').
"""

from __future__ import annotations

import re
from typing import Any

import torch

from rsckd.architectures import ModelBlock
from rsckd.evaluation.icbhi_score import N_CLASSES
from rsckd.models.base import RSCModel, pretrained_path
from rsckd.models.pretrained import load_strict, read_state_dict

VARIANTS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "resnet18": {
        "full": ("resnet18", {}),
        "tiny": ("resnet18", {"channels": (8, 16, 32, 64), "stem_width": 8, "output_stride": 8}),
    },
    "efficientnet_b0": {
        "full": ("efficientnet_b0", {}),
        "tiny": ("test_efficientnet", {"output_stride": 8}),
    },
}


class TimmClassifier(RSCModel):
    def __init__(self, net: torch.nn.Module, input_norm: str) -> None:
        super().__init__(input_norm)
        self.net = net

    def classify(self, x: torch.Tensor, *prompt: torch.Tensor | None) -> torch.Tensor:
        return self.net(x.unsqueeze(1))


def _replaced(net: torch.nn.Module) -> tuple[str, ...]:
    """Regexes of the stem conv and classifier weights (re-initialised, not taken from the checkpoint)."""
    names = (net.pretrained_cfg["first_conv"], net.pretrained_cfg["classifier"])
    return tuple(rf"^{re.escape(name)}\." for name in names)


def _build(arch: str, cfg: ModelBlock) -> TimmClassifier:
    import timm

    name, kwargs = VARIANTS[arch][cfg.size]
    net = timm.create_model(name, pretrained=False, in_chans=1, num_classes=N_CLASSES, **kwargs)
    path = pretrained_path(arch, cfg)
    if path is not None:
        where = f"models.{arch}.pretrained"
        replaced = _replaced(net)
        state = {
            k: v
            for k, v in read_state_dict(path, where).items()
            if not any(re.search(p, k) for p in replaced)
        }
        load_strict(net, state, f"{where} ({path})", allow_missing=replaced)
    return TimmClassifier(net, cfg.input_norm)


def build_resnet18(cfg: ModelBlock, feature_shape: tuple[int, int], tokenizer: Any = None) -> TimmClassifier:
    return _build("resnet18", cfg)


def build_efficientnet_b0(cfg: ModelBlock, feature_shape: tuple[int, int], tokenizer: Any = None):
    return _build("efficientnet_b0", cfg)

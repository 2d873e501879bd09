"""SpecAugment for the fbank architectures (reference-protocol 3.2/3.3), per sample and reproducible.

Each sample gets ``time_masks`` time masks and ``freq_masks`` frequency masks of width w ~ U{0..width-1}
at a uniform start, filled with that sample's spectrogram mean (computed before masking). Unlike the
reference, masks are always applied (no ``p >= randn`` gate) and drawn from an explicit generator on the
features' device (no host round trip per step on a GPU).
"""

from __future__ import annotations

from typing import Any

import torch


def _axis_mask(b: int, size: int, n: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(b, size) bool: union of ``n`` random bands per sample along one axis."""
    device = generator.device
    if n == 0 or width == 0:
        return torch.zeros(b, size, dtype=torch.bool, device=device)
    w = torch.randint(0, width, (b, n), generator=generator, device=device).clamp(max=size)
    start = (torch.rand(b, n, generator=generator, device=device) * (size - w + 1)).long()
    pos = torch.arange(size, device=device)
    band = (pos >= start[..., None]) & (pos < (start + w)[..., None])
    return band.any(dim=1)


def spec_augment(x: torch.Tensor, cfg: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Mask a batch of spectrograms x (B, T, F) (``generator`` on x's device); returns a new tensor."""
    b, t, f = x.shape
    time = _axis_mask(b, t, cfg["time_masks"], cfg["time_width"], generator)
    freq = _axis_mask(b, f, cfg["freq_masks"], cfg["freq_width"], generator)
    mask = time[:, :, None] | freq[:, None, :]
    return torch.where(mask, x.mean(dim=(1, 2), keepdim=True), x)

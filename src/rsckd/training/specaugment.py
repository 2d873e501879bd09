"""SpecAugment for the fbank architectures (reference-protocol 3.2/3.3), per sample and reproducible.

Each sample gets ``time_masks`` time masks and ``freq_masks`` frequency masks of width w ~ U{0..width-1}
at a uniform start, filled with that sample's spectrogram mean (computed before masking). Unlike the
reference, masks are always applied (no ``p >= randn`` gate). A whole epoch's masks are drawn at once on the
features' device from an explicit generator, so a training step only indexes them: no random draw, no host
round trip and no generator inside a compiled step.
"""

from __future__ import annotations

import torch

from rsckd.config import SpecAugment


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


def draw_masks(
    n: int, shape: tuple[int, int], cfg: SpecAugment, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T) time and (n, F) frequency masks of ``n`` samples of shape (T, F), on the generator's device."""
    t, f = shape
    time = _axis_mask(n, t, cfg.time_masks, cfg.time_width, generator)
    return time, _axis_mask(n, f, cfg.freq_masks, cfg.freq_width, generator)


def apply_masks(x: torch.Tensor, time: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """Spectrograms x (B, T, F) with the bins of the (B, T) / (B, F) masks set to each sample's mean."""
    mask = time[:, :, None] | freq[:, None, :]
    return torch.where(mask, x.mean(dim=(1, 2), keepdim=True), x)

"""Respiratory cycles as fixed-length waveforms, the way every reference pipeline cuts them.

The references (bts, SG-SCL, patch-mix) resample each recording, fade its two ends, slice the annotation rows
and repeat-pad every cycle to 8 s (reference-protocol section 2). Features are only comparable with the
published numbers if these steps match sample for sample, so this module reproduces them exactly, while
building each resampling kernel once per rate pair instead of once per file.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio

from rsckd.errors import UserError

FADE_RATIO = 16  # fades last int(sr / 16) samples (62.5 ms), as in the references


def read_wav(path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """Read a PCM wav as mono float32 in [-1, 1] (what ``torchaudio.load`` gave the references).

    soundfile is used because torchaudio >= 2.9 can no longer load audio without FFmpeg. Several channels are
    averaged (ICBHI is mono).
    """
    try:
        info = sf.info(str(path))
        if not (info.subtype.startswith("PCM_") or info.subtype in ("FLOAT", "DOUBLE")):
            raise UserError(f"{path}: unsupported audio encoding {info.subtype} (expected a PCM wav)")
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except UserError:
        raise
    except Exception as err:  # soundfile raises several types (LibsndfileError, RuntimeError, OSError)
        raise UserError(f"{path}: cannot read audio ({err})") from None
    if data.shape[0] == 0:
        raise UserError(f"{path}: the recording is empty (0 samples)")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(mono)), int(sr)


@functools.cache
def _resampler(orig_sr: int, new_sr: int, dtype: torch.dtype) -> torchaudio.transforms.Resample:
    """One windowed-sinc kernel per rate pair and dtype (the references rebuilt it for every file).

    float32 keeps torchaudio's default kernel (dtype None), bit for bit the references'; float64 builds it in
    float64 throughout. Both: sinc_interp_hann, width 6, rolloff 0.99."""
    return torchaudio.transforms.Resample(orig_sr, new_sr, dtype=None if dtype == torch.float32 else dtype)


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample with torchaudio's default kernel in the wave's dtype, cached per (orig_sr, new_sr, dtype)."""
    if orig_sr == new_sr:
        return wave
    with torch.no_grad():
        return _resampler(int(orig_sr), int(new_sr), wave.dtype)(wave)


def linear_fade(wave: torch.Tensor, fade_in: int, fade_out: int, inplace: bool = False) -> torch.Tensor:
    """``torchaudio.transforms.Fade(fade_in, fade_out, "linear")`` along the last axis, bit for bit.

    Fade multiplies by a full-length envelope; where the ramps do not overlap only the two ends differ from
    1, so only they are touched (x * 1 == x exactly). Fade lengths are clipped to the signal length (Fade
    itself fails on signals shorter than a fade).
    """
    n = wave.shape[-1]
    fade_in, fade_out = min(fade_in, n), min(fade_out, n)
    ramp_in = torch.linspace(0, 1, fade_in, dtype=wave.dtype, device=wave.device).clamp_(0, 1)
    ramp_out = (-torch.linspace(0, 1, fade_out, dtype=wave.dtype, device=wave.device) + 1).clamp_(0, 1)
    out = wave if inplace else wave.clone()
    if fade_in + fade_out > n:  # overlapping ramps: the whole envelope, as Fade builds it
        ones = torch.ones(n, dtype=wave.dtype, device=wave.device)
        return out.mul_(torch.cat((ramp_in, ones[fade_in:])) * torch.cat((ones[fade_out:], ramp_out)))
    out[..., :fade_in] *= ramp_in
    out[..., n - fade_out :] *= ramp_out
    return out


def fit_length(cycle: torch.Tensor, target: int, sr: int, pad: str) -> torch.Tensor:
    """Cut a cycle to its first ``target`` samples, or pad it: repeat-tile + fade-out, or centred zeros."""
    n = cycle.shape[-1]
    if n == 0:
        raise UserError("empty cycle (its start lies at or after the end of the recording)")
    if n > target:
        return cycle[:target]
    if pad == "repeat":
        tiled = cycle.repeat(math.ceil(target / n))[:target]
        return linear_fade(tiled, 0, int(sr / FADE_RATIO), inplace=True)
    if pad == "zero":
        out = torch.zeros(target, dtype=cycle.dtype, device=cycle.device)
        offset = (target - n) // 2
        out[offset : offset + n] = cycle
        return out
    raise UserError(f"params: cycles.pad: expected repeat or zero, got {pad!r}")


def extract_cycles(
    wave: torch.Tensor,
    native_sr: int,
    target_sr: int,
    rows: Sequence[tuple[float, float]],
    desired_length_s: float,
    pad: str,
) -> torch.Tensor:
    """All annotated cycles of one recording as a ``[n_rows, desired_length_s * target_sr]`` tensor of the
    wave's dtype (float32 equals the references bit for bit; the features stage works in float64).

    The whole recording is resampled once and faded at both ends before slicing, as in the references, so a
    cycle touching the start or end of a file carries that fade. Slice bounds use int() truncation.
    """
    x = resample(wave, native_sr, target_sr)
    fade = int(target_sr / FADE_RATIO)
    x = linear_fade(x, fade, fade, inplace=x is not wave)  # in place unless resample passed wave through
    n = x.shape[-1]
    target = int(round(desired_length_s * target_sr))
    out = torch.empty((len(rows), target), dtype=x.dtype, device=x.device)
    for i, (start, end) in enumerate(rows):
        s, e = min(int(start * target_sr), n), min(int(end * target_sr), n)
        try:
            out[i] = fit_length(x[s:e], target, target_sr, pad)
        except UserError as err:
            raise UserError(f"annotation row {i} ({start}-{end} s): {err}") from None
    return out

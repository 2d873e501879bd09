"""Cycle extraction equals a plain transcription of the references' torchaudio code, sample for sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from rsckd.data import cycles
from rsckd.errors import UserError


def reference_cycles(wave, native_sr, sr, rows, seconds, pad):
    """The references' get_individual_cycles_torchaudio + cut_pad_sample_torchaudio, new Resample per call."""
    x = wave[None]
    if native_sr != sr:
        x = torchaudio.transforms.Resample(native_sr, sr)(x)
    fade = int(sr / 16)
    x = torchaudio.transforms.Fade(fade_in_len=fade, fade_out_len=fade, fade_shape="linear")(x)
    target = int(seconds * sr)
    out = []
    for start, end in rows:
        c = x[:, min(int(start * sr), x.shape[-1]) : min(int(end * sr), x.shape[-1])]
        if c.shape[-1] > target:
            c = c[..., :target]
        elif pad == "zero":
            tmp = torch.zeros(1, target)
            diff = target - c.shape[-1]
            tmp[..., diff // 2 : c.shape[-1] + diff // 2] = c
            c = tmp
        else:
            c = c.repeat(1, math.ceil(target / c.shape[-1]))[..., :target]
            c = torchaudio.transforms.Fade(fade_in_len=0, fade_out_len=fade, fade_shape="linear")(c)
        out.append(c[0])
    return torch.stack(out)


ROWS = [
    (0.0, 1.3),
    (0.52, 2.001),
    (1.7, 5.9),
    (4.05, 6.4),
    (6.2, 9.0),
]  # start-touching, long, end-overlapping


@pytest.mark.parametrize(
    ("native_sr", "sr"),
    [(4000, 8000), (10000, 8000), (44100, 8000), (8000, 8000), (44100, 48000), (4000, 16000)],
)
@pytest.mark.parametrize("pad", ["repeat", "zero"])
def test_extract_cycles_matches_reference(native_sr, sr, pad):
    wave = 0.5 * torch.randn(int(6.3 * native_sr), generator=torch.Generator().manual_seed(native_sr))
    before = wave.clone()
    ours = cycles.extract_cycles(wave, native_sr, sr, ROWS, 3.0, pad)
    assert torch.equal(wave, before)  # the caller's recording is never faded in place
    ref = reference_cycles(wave, native_sr, sr, ROWS, 3.0, pad)
    assert ours.shape == (len(ROWS), 3 * sr) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)


def test_resampler_kernel_is_cached():
    cycles._resampler.cache_clear()
    wave = torch.randn(4410)
    for _ in range(3):
        cycles.resample(wave, 44100, 16000)
    cycles.resample(wave, 4000, 16000)
    info = cycles._resampler.cache_info()
    assert (info.hits, info.misses) == (2, 2)


@pytest.mark.parametrize(("n_in", "n_out", "n"), [(0, 5, 20), (7, 7, 30), (4, 0, 9), (6, 6, 8)])
def test_linear_fade_is_torchaudio_fade(n_in, n_out, n):
    x = torch.randn(3, n)
    before = x.clone()
    ref = torchaudio.transforms.Fade(fade_in_len=n_in, fade_out_len=n_out, fade_shape="linear")(x)
    assert torch.equal(cycles.linear_fade(x, n_in, n_out), ref)
    assert torch.equal(x, before)
    assert torch.equal(cycles.linear_fade(x, n_in, n_out, inplace=True), ref) and torch.equal(x, ref)


def test_fit_length_cases():
    sr = 160  # fade = 10 samples
    x = torch.arange(1.0, 31.0)
    assert torch.equal(cycles.fit_length(x, 20, sr, "repeat"), x[:20])  # longer: first samples, no fade
    tiled = cycles.fit_length(x[:8], 20, sr, "repeat")
    assert torch.equal(tiled[:10], torch.cat([x[:8], x[:2]]))
    assert tiled[-1] == 0 and tiled[10] == x[2]  # fade-out over the last 10 samples
    zero = cycles.fit_length(x[:7], 20, sr, "zero")
    assert torch.equal(zero[6:13], x[:7]) and zero[:6].abs().sum() == 0 and zero[13:].abs().sum() == 0
    assert (
        cycles.fit_length(x[:20], 20, sr, "repeat")[-1] == 0
    )  # equal length still gets the fade (reference)
    with pytest.raises(UserError, match="empty cycle"):
        cycles.fit_length(x[:0], 20, sr, "repeat")


def test_rows_beyond_the_recording():
    wave = torch.randn(800)
    got = cycles.extract_cycles(wave, 800, 800, [(0.5, 3.0)], 1.0, "zero")  # end clipped to N
    assert got.shape == (1, 800)
    with pytest.raises(UserError, match=r"annotation row 1 .*empty cycle"):
        cycles.extract_cycles(wave, 800, 800, [(0.0, 0.5), (1.0, 2.0)], 1.0, "repeat")


def test_read_wav(tmp_path):
    data = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    sf.write(tmp_path / "a.wav", data, 4000, subtype="PCM_16")
    wave, sr = cycles.read_wav(tmp_path / "a.wav")
    assert sr == 4000 and wave.dtype == torch.float32
    assert wave.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]
    sf.write(tmp_path / "st.wav", np.stack([data, data // 2], axis=1), 4000, subtype="PCM_16")
    assert cycles.read_wav(tmp_path / "st.wav")[0].shape == (4,)
    sf.write(tmp_path / "empty.wav", data[:0], 4000, subtype="PCM_16")
    with pytest.raises(UserError, match=r"empty\.wav.*empty"):
        cycles.read_wav(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(UserError, match=r"junk\.wav: cannot read"):
        cycles.read_wav(tmp_path / "junk.wav")
    with pytest.raises(UserError, match=r"missing\.wav"):
        cycles.read_wav(tmp_path / "missing.wav")
    sf.write(tmp_path / "ulaw.wav", data, 4000, subtype="ULAW")
    with pytest.raises(UserError, match=r"ulaw\.wav: unsupported audio encoding ULAW"):
        cycles.read_wav(tmp_path / "ulaw.wav")

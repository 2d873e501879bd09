"""Batched feature extractors against the reference extractors; the streaming `rsckd features` stage."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio
import yaml

from rsckd.architectures import ARCHITECTURES
from rsckd.config import ClapFeatures, Cycles, FbankFeatures
from rsckd.data import features
from rsckd.data.cycles import extract_cycles, read_wav
from rsckd.errors import UserError

PAPER = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/paper.yaml").read_text())["features"]
PAPER_CLAP, PAPER_FBANK = ClapFeatures(**PAPER["clap"]), FbankFeatures(**PAPER["fbank"])
TINY_CLAP = PAPER_CLAP.model_copy(
    update={"sample_rate": 8000, "n_mels": 16, "n_fft": 256, "hop_length": 400, "f_max": 3800.0}
)
TINY_FBANK = FbankFeatures(sample_rate=8000, num_mel_bins=16, frame_length_ms=25.0, frame_shift_ms=40.0)


def _cycles(sr: int, seconds: float, n: int, seed: int = 0) -> torch.Tensor:
    """Varied cycles: white noise, a low-passed one (like a 4 kHz recording), repeat-padded short ones."""
    g = torch.Generator().manual_seed(seed)
    length = int(seconds * sr)
    noise = 0.1 * torch.randn(n, length, generator=g)
    noise[1] = torchaudio.functional.lowpass_biquad(noise[1], sr, 1500.0)
    wave = 0.3 * torch.randn(int(3.5 * seconds * sr), generator=g)
    rows = [(0.0, 0.7 * seconds), (1.3 * seconds, 3.5 * seconds)]
    return torch.cat([noise, extract_cycles(wave, sr, sr, rows, seconds, "repeat")])


def test_clap_logmel_matches_transformers_extractor():
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor(
        truncation="rand_trunc",
        padding="repeatpad",
        feature_size=64,
        sampling_rate=48000,
        hop_length=480,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14000,
        max_length_s=10,
    )
    cycles = _cycles(48000, 8.0, 2)
    ours = features.clap_logmel(cycles, PAPER_CLAP).numpy()
    ref = extractor(cycles.numpy(), sampling_rate=48000, return_tensors="np")["input_features"][:, 0]
    assert ours.shape == ref.shape == (len(cycles), 1001, 64)
    assert features.feature_shape("clap", PAPER_CLAP, 384000) == (1001, 64)
    above = ref > -100.0
    assert np.abs(ours - ref)[above].max() < 1e-3
    assert np.abs(ours - ref)[~above].max() < 1e-3  # silence (the 2 s of zero padding) is -100 dB too
    assert (ours[:, 802:] == -100.0).all()


@pytest.mark.parametrize(
    "length", [100, 3000, 7950, 8000]
)  # <= n_fft/2, tiled twice, into the reflect, exact
def test_clap_logmel_padding_cases_match_extractor(length):
    from transformers import ClapFeatureExtractor

    cfg = TINY_CLAP.model_copy(update={"hop_length": 80, "max_length_s": 1.0})
    extractor = ClapFeatureExtractor(
        truncation="rand_trunc",
        padding="repeatpad",
        feature_size=16,
        sampling_rate=8000,
        hop_length=80,
        fft_window_size=256,
        frequency_min=50,
        frequency_max=3800,
        max_length_s=1,
    )
    cycles = 0.1 * torch.randn(2, length, generator=torch.Generator().manual_seed(length))
    ours = features.clap_logmel(cycles, cfg).numpy()
    ref = extractor(cycles.numpy(), sampling_rate=8000, return_tensors="np")["input_features"][:, 0]
    assert ours.shape == ref.shape == (2, 101, 16)
    assert np.abs(ours - ref).max() < 1e-3


def test_clap_repeatpad_tiles_short_cycles():
    """A cycle shorter than half the window is tiled int(max_len / L) times before zero padding."""
    cfg = TINY_CLAP.model_copy(update={"max_length_s": 1.0})
    short = torch.randn(1, 3000)
    tiled = torch.cat([short.repeat(1, 2), torch.zeros(1, 2000)], dim=1)
    assert torch.allclose(features.clap_logmel(short, cfg), features.clap_logmel(tiled, cfg), atol=1e-4)


@pytest.mark.parametrize("cfg", [PAPER_FBANK, TINY_FBANK])
def test_fbank_matches_kaldi(cfg):
    sr = cfg.sample_rate
    cycles = _cycles(sr, 8.0, 2, seed=1)
    ours = features.fbank(cycles, cfg)
    for cycle, got in zip(cycles, ours, strict=True):
        ref = torchaudio.compliance.kaldi.fbank(
            cycle[None],
            htk_compat=True,
            sample_frequency=sr,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=cfg.num_mel_bins,
            dither=0.0,
            frame_shift=cfg.frame_shift_ms,
            frame_length=cfg.frame_length_ms,
        )
        assert got.shape == ref.shape
        # kaldi evaluates its mel banks in float32, ours in float64: near-zero triangle weights differ
        assert ((got - ref).abs() / ref.abs().clamp_min(1.0)).max() < 1e-4
    assert features.feature_shape("fbank", PAPER_FBANK, 128000) == (798, 128)


def test_feature_kind_map_and_errors():
    assert {name: arch.feature_kind for name, arch in ARCHITECTURES.items()} == {
        "bts": "clap",
        "audio_clap": "clap",
        "ast": "fbank",
        "cnn6": "fbank",
        "resnet18": "fbank",
        "efficientnet_b0": "fbank",
    }
    with pytest.raises(UserError, match="shorter|longer"):
        features.feature_shape("fbank", PAPER_FBANK, 100)
    with pytest.raises(UserError, match="kind"):
        features.feature_shape("mfcc", PAPER_FBANK, 1000)


def _corpus(tmp_path, rates=(4000, 10000, 8000)):
    """Three small wavs at different native rates + a cycle table in the contract's column order subset."""
    rng = np.random.default_rng(0)
    rows = []
    for k, sr in enumerate(rates):
        wav = tmp_path / f"10{k}_1b1_Al_sc_Meditron.wav"
        sf.write(wav, (0.3 * rng.standard_normal(int(4.1 * sr))).astype(np.float32), sr, subtype="PCM_16")
        for row, (start, end) in enumerate([(0.0, 1.25), (0.9, 2.6), (2.2, 4.3)]):
            rows.append(
                {"id": f"{wav.stem}:{row}", "start": start, "end": end, "native_sr": sr, "wav": str(wav)}
            )
    table = tmp_path / "cycles.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def _params(tmp_path, pad="repeat"):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"cycles": {"desired_length_s": 2.0, "pad": pad}}))
    return path


@pytest.mark.parametrize("kind", ["clap", "fbank"])
def test_stage_writes_table_order_features(tmp_path, monkeypatch, kind):
    table_path = _corpus(tmp_path)
    cfg = TINY_CLAP if kind == "clap" else TINY_FBANK
    cycles_cfg = Cycles(desired_length_s=2.0, pad="repeat")
    monkeypatch.setattr(features, "CHUNK_CYCLES", {"cpu": 4, "cuda": 4})  # several flushes, one mid-file
    table = features.read_cycle_table(table_path)
    out = tmp_path / "feat"
    shape = features.build_features(table, kind, cfg, cycles_cfg, out)
    stored = np.load(out / "features.npy", mmap_mode="r")
    assert stored.shape == shape == (9, *features.feature_shape(kind, cfg, 16000))
    assert stored.dtype == np.float32
    expected = []
    for wav, group in table.groupby("wav", sort=False):
        wave, sr = read_wav(wav)
        bounds = list(zip(group.start, group.end, strict=True))
        cycles = features.feature_cycles(wave, sr, bounds, cfg, cycles_cfg)
        expected.append(features.compute(cycles, kind, cfg))
    np.testing.assert_array_equal(stored, torch.cat(expected).numpy())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == kind and meta["shape"] == list(shape) and meta["n_cycles"] == 9
    assert meta["cycles"] == cycles_cfg.model_dump() and meta["params"] == cfg.model_dump()
    first = (out / "features.npy").read_bytes()
    features.build_features(table, kind, cfg, cycles_cfg, out)  # deterministic bytes, replaced atomically
    assert (out / "features.npy").read_bytes() == first
    assert sorted(p.name for p in out.iterdir()) == ["features.npy", "meta.json"]


def test_stage_cli_and_user_errors(tmp_path, monkeypatch, one_thread):
    table_path = _corpus(tmp_path, rates=(8000,))
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["cycles"]["desired_length_s"] = 2.0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    args = argparse.Namespace(kind="fbank", params=str(tmp_path / "p.yaml"), cycles=str(table_path), out=None)
    monkeypatch.chdir(tmp_path)
    features.run(args)
    assert np.load(tmp_path / "data/features/fbank/features.npy").shape[0] == 3
    with pytest.raises(UserError, match="not found"):
        features.read_cycle_table(tmp_path / "missing.csv")
    bad = pd.read_csv(table_path)
    bad.loc[2, "start"] = 99.0
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match=r"Meditron\.wav: annotation row 2 .*empty cycle"):
        features.build_features(
            features.read_cycle_table(tmp_path / "bad.csv"),
            "fbank",
            TINY_FBANK,
            Cycles(**params["cycles"]),
            tmp_path / "x",
        )
    assert not (tmp_path / "x").exists()
    bad = pd.read_csv(table_path).assign(native_sr=44100)
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match="sample rate 8000"):
        features.build_features(
            features.read_cycle_table(tmp_path / "bad.csv"),
            "clap",
            TINY_CLAP,
            Cycles(**params["cycles"]),
            tmp_path / "x",
        )


def test_clap_frame_count_formula():
    assert features.clap_num_frames(TINY_CLAP) == 1 + math.floor(80000 / 400)

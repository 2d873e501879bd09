"""Model input features for every cycle, computed once per architecture family (``rsckd features``).

Two families cover all six architectures: the CLAP log-mel of the BTS / Audio-CLAP audio encoders and
the kaldi fbank of AST / CNN6 / ResNet18 / EfficientNet-B0 (reference-protocol section 3). Both are
re-implemented in batched torch so they run on the GPU when there is one, and are tested against the
reference extractors (``transformers.ClapFeatureExtractor``,
``torchaudio.compliance.kaldi.fbank``). The stage streams: each recording is opened and resampled once, and
features go straight into a preallocated ``.npy`` memmap, so memory stays bounded however large the corpus is.

Everything is computed in float64 and rounded to float32 once, when written: torch's float32 kernels (FFT,
matmul, log) differ in their last bits between CPUs (AVX-512, AVX2 or plain kernels, MKL and oneDNN code
paths), and float64 keeps those differences about 2**-29 of a float32 step, far below the rounding.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rsckd.atomic import atomic_dir, write_json
from rsckd.config import ClapFeatures, Cycles, FbankFeatures, load_params
from rsckd.data.cycles import extract_cycles, read_wav
from rsckd.errors import UserError

TABLE_COLUMNS = ("wav", "native_sr", "start", "end")
CPU_SUB_BATCH = 4  # cycles per STFT call on CPU: small batches stay in cache (several times faster than 64)
CHUNK_CYCLES = {"cpu": 64, "cuda": 256}  # cycles per feature computation / memmap write
MEL_FLOOR = 1e-10  # CLAP: power floor before dB, so digital silence is exactly -100 dB


def _parts(cycles: torch.Tensor) -> Iterator[torch.Tensor]:
    return iter(cycles.split(CPU_SUB_BATCH) if cycles.device.type == "cpu" else (cycles,))


# ---------------------------------------------------------------------------------------------- CLAP log-mel


def clap_num_frames(cfg: ClapFeatures) -> int:
    """Frames of the padded CLAP input: 1 + max_len // hop (1001 for the paper's 10 s at 48 kHz, hop 480)."""
    return 1 + _clap_max_len(cfg) // int(cfg.hop_length)


def _clap_max_len(cfg: ClapFeatures) -> int:
    return int(round(float(cfg.max_length_s) * int(cfg.sample_rate)))


@functools.lru_cache(maxsize=16)
def _clap_constants(
    sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic Hann window and Slaney mel filters [n_fft//2+1, n_mels] in float64, built once per config."""
    from transformers.audio_utils import mel_filter_bank  # float64 filters, exactly the extractor's

    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=f_max,
        sampling_rate=sr,
        norm="slaney",
        mel_scale="slaney",
    )
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=device)
    return window, torch.from_numpy(filters).to(device)


def _clap_signal(cycles: torch.Tensor, max_len: int, n_fft: int, hop: int) -> tuple[torch.Tensor, int]:
    """The STFT input of the extractor (repeatpad to max_len, centred reflect padding), up to its last
    frame that is not pure silence; returns it with that frame count.

    ``repeatpad`` tiles a cycle int(max_len / L) times and zero-pads to max_len. Cycles longer than max_len
    keep their first max_len samples (the extractor's rand_trunc would crop at random; the paper's 8 s cycles
    in a 10 s window never trigger it). Frames wholly inside the zero padding need no transform.
    """
    n, half = cycles.shape[-1], n_fft // 2
    n_frames = 1 + max_len // hop
    reps = max(1, max_len // n)
    tiled = cycles[..., :max_len] if reps == 1 else cycles.repeat(1, reps)
    used = tiled.shape[-1]
    # past frame n_active every sample is zero, unless the signal reaches the right reflect padding
    n_active = n_frames if used + half + 1 >= max_len else min(n_frames, math.ceil((half + used) / hop))
    need = (n_active - 1) * hop + n_fft
    if n_active == n_frames or n <= half:  # general case: pad the whole window, as the extractor does
        padded = torch.nn.functional.pad(tiled, (0, max_len - used))
        return torch.nn.functional.pad(padded[:, None], (half, half), mode="reflect")[:, 0, :need], n_active
    signal = torch.zeros((cycles.shape[0], need), dtype=cycles.dtype, device=cycles.device)
    signal[:, :half] = cycles[:, 1 : half + 1].flip(-1)  # left reflection of the cycle's first samples
    stop = min(need, half + used)
    signal[:, half:stop] = tiled[:, : stop - half]
    return signal, n_active


def _to_db(mel_power: torch.Tensor) -> torch.Tensor:
    return mel_power.clamp_min(MEL_FLOOR).log10().mul(10.0)


def clap_logmel(cycles: torch.Tensor, cfg: ClapFeatures) -> torch.Tensor:
    """CLAP log-mel [B, frames, n_mels] of cycles [B, L], equal to the unfused ``ClapFeatureExtractor``.

    Periodic Hann STFT with centred reflect padding, power 2, Slaney mel filters f_min..f_max, floor 1e-10,
    10*log10. Frames lying wholly in the zero padding are exactly the -100 dB floor and are filled rather
    than transformed (20 % of the paper's frames). Runs on the device of ``cycles``.
    """
    sr, n_fft, hop = int(cfg.sample_rate), int(cfg.n_fft), int(cfg.hop_length)
    window, filters = _clap_constants(
        sr, n_fft, int(cfg.n_mels), float(cfg.f_min), float(cfg.f_max), cycles.device
    )
    max_len, n_frames, half = _clap_max_len(cfg), clap_num_frames(cfg), n_fft // 2
    if max_len <= half:
        raise UserError(
            f"params: features.clap.max_length_s: the window must be longer than n_fft/2 ({half} samples)"
        )
    out = torch.empty(
        (cycles.shape[0], n_frames, filters.shape[1]), dtype=torch.float32, device=cycles.device
    )
    done = 0
    for part in _parts(cycles.to(torch.float64)):
        signal, n_active = _clap_signal(part, max_len, n_fft, hop)
        spec = torch.fft.rfft(signal.unfold(-1, n_fft, hop) * window)
        power = spec.real.square() + spec.imag.square()
        block = out[done : done + part.shape[0]]
        block[:, :n_active] = _to_db(torch.matmul(power, filters))
        block[:, n_active:] = _to_db(torch.zeros((), device=cycles.device))
        done += part.shape[0]
    return out


# ------------------------------------------------------------------------------------------------ kaldi fbank


def _fbank_geometry(cfg: FbankFeatures) -> tuple[int, int, int]:
    """(window, shift, padded FFT size) in samples, with kaldi's own int() rounding."""
    sr = float(cfg.sample_rate)
    size = int(sr * float(cfg.frame_length_ms) * 0.001)
    shift = int(sr * float(cfg.frame_shift_ms) * 0.001)
    if size < 2 or shift < 1:
        raise UserError(
            "params: features.fbank: frame_length_ms / frame_shift_ms give less than 2 / 1 samples"
        )
    return size, shift, 1 << (size - 1).bit_length()


def fbank_num_frames(cfg: FbankFeatures, n_samples: int) -> int:
    """Kaldi frames with snip_edges: 1 + (n - window) // shift (798 for 8 s at 16 kHz, 25/10 ms)."""
    size, shift, _ = _fbank_geometry(cfg)
    if n_samples < size:
        raise UserError(
            f"params: features.fbank.frame_length_ms: a cycle ({n_samples} samples) is shorter than a frame"
        )
    return 1 + (n_samples - size) // shift


def _kaldi_mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


@functools.lru_cache(maxsize=16)
def _fbank_constants(
    sr: int, size: int, padded: int, n_bins: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric Hann window and kaldi mel banks [padded//2+1, bins] (float64; zero Nyquist row, as kaldi
    pads): triangles evenly spaced on 1127 ln(1 + f/700) from 20 Hz to Nyquist, ``kaldi.get_mel_banks``'s
    formula without VTLN, evaluated in float64."""
    f64 = dict(dtype=torch.float64, device=device)
    low, high = _kaldi_mel(torch.tensor(20.0, **f64)), _kaldi_mel(torch.tensor(sr / 2, **f64))
    edges = low + torch.arange(n_bins + 2, **f64)[:, None] * ((high - low) / (n_bins + 1))
    mel = _kaldi_mel(sr / padded * torch.arange(padded // 2, **f64))
    up = (mel - edges[:-2]) / (edges[1:-1] - edges[:-2])
    down = (edges[2:] - mel) / (edges[2:] - edges[1:-1])
    banks = torch.nn.functional.pad(torch.minimum(up, down).clamp_min(0.0), (0, 1))
    window = torch.hann_window(size, periodic=False, **f64)
    return window, banks.T.contiguous()


def fbank(cycles: torch.Tensor, cfg: FbankFeatures) -> torch.Tensor:
    """Raw kaldi fbank [B, frames, bins] of cycles [B, L], batched.

    ``kaldi.fbank(wave[None], htk_compat=True, use_energy=False, window_type="hanning", dither=0)``'s maths
    with kaldi's other defaults (DC removal and 0.97 pre-emphasis per frame, power spectrum, 20 Hz..Nyquist,
    log with float32-eps floor) in float64, so it agrees with torchaudio's float32 mel banks to ~1e-4
    relative; not normalised (the model wrappers normalise).
    """
    size, shift, padded = _fbank_geometry(cfg)
    n_frames = fbank_num_frames(cfg, cycles.shape[-1])
    window, banks = _fbank_constants(int(cfg.sample_rate), size, padded, int(cfg.num_mel_bins), cycles.device)
    eps = torch.finfo(torch.float32).eps
    out = torch.empty((cycles.shape[0], n_frames, banks.shape[1]), dtype=torch.float32, device=cycles.device)
    done = 0
    for part in _parts(cycles.to(torch.float64)):
        frames = part.unfold(-1, size, shift)
        centred = frames - frames.mean(dim=-1, keepdim=True)
        # pre-emphasis x[j] - 0.97 x[j-1] (x[-1] = x[0]) and window, written into the zero-padded FFT buffer
        buffer = torch.zeros((*frames.shape[:2], padded), dtype=torch.float64, device=cycles.device)
        emphasised = buffer[..., :size]
        torch.mul(centred[..., :-1], 0.97, out=emphasised[..., 1:])
        emphasised[..., 0] = centred[..., 0] * 0.97
        torch.sub(centred, emphasised, out=emphasised).mul_(window)
        power = torch.fft.rfft(buffer).abs().pow_(2.0)
        mel = torch.mm(power.reshape(-1, power.shape[-1]), banks).reshape(part.shape[0], n_frames, -1)
        out[done : done + part.shape[0]] = mel.clamp_min_(eps).log_()  # = torch.max(mel, eps).log()
        done += part.shape[0]
    return out


# ------------------------------------------------------------------------------------------------------ stage


def feature_shape(kind: str, cfg: ClapFeatures | FbankFeatures, cycle_samples: int) -> tuple[int, int]:
    """(frames, bins) of one cycle of ``cycle_samples`` samples for a feature kind."""
    if kind == "clap":
        return clap_num_frames(cfg), int(cfg.n_mels)
    if kind == "fbank":
        return fbank_num_frames(cfg, cycle_samples), int(cfg.num_mel_bins)
    raise UserError(f"unknown feature kind {kind!r} (expected clap or fbank)")


def feature_cycles(
    wave: torch.Tensor,
    native_sr: int,
    rows: list[tuple[float, float]],
    cfg: ClapFeatures | FbankFeatures,
    cycles_cfg: Cycles,
) -> torch.Tensor:
    """A recording's cycles as every feature is computed from them: float64, at the feature's rate."""
    sr, seconds = int(cfg.sample_rate), float(cycles_cfg.desired_length_s)
    return extract_cycles(wave.double(), native_sr, sr, rows, seconds, str(cycles_cfg.pad))


def compute(cycles: torch.Tensor, kind: str, cfg: ClapFeatures | FbankFeatures) -> torch.Tensor:
    """Features of a batch of fixed-length cycles for ``kind`` (``clap`` or ``fbank``)."""
    return clap_logmel(cycles, cfg) if kind == "clap" else fbank(cycles, cfg)


def read_cycle_table(path: str | Path) -> pd.DataFrame:
    """The columns of the cycle table this stage needs, in table order.

    Times are parsed by Python's float() (correctly rounded on every pandas version), so int(start * sr)
    truncates exactly as it does on the annotation file's own numbers.
    """
    text = {"wav": str, "start": str, "end": str}
    try:
        table = pd.read_csv(path, usecols=list(TABLE_COLUMNS), dtype=text, keep_default_na=False)
        for column in ("start", "end"):
            table[column] = [float(value) for value in table[column]]
        table["native_sr"] = table["native_sr"].astype(int)
    except FileNotFoundError:
        raise UserError(f"{path}: cycle table not found (run `rsckd prepare` first)") from None
    except ValueError as err:
        columns = ", ".join(TABLE_COLUMNS)
        raise UserError(f"{path}: expected a cycle table with numeric columns {columns} ({err})") from None
    if table.empty:
        raise UserError(f"{path}: the cycle table has no rows")
    return table


def _write_rows(npy: Path, index: np.ndarray, values: np.ndarray) -> None:
    """Write rows through a short-lived mapping, so written pages never accumulate in this process's RSS
    (the kernel writes them back; the file is fsynced once at the end)."""
    array = np.lib.format.open_memmap(npy, mode="r+")
    array[index] = values
    del array


def build_features(
    table: pd.DataFrame, kind: str, cfg: ClapFeatures | FbankFeatures, cycles_cfg: Cycles, out_dir: str | Path
) -> tuple[int, int, int]:
    """Write ``features.npy`` (N, T, F) float32 in table order + ``meta.json`` into ``out_dir`` atomically."""
    from tqdm import tqdm

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cycle_samples = int(round(float(cycles_cfg.desired_length_s) * int(cfg.sample_rate)))
    shape = (len(table), *feature_shape(kind, cfg, cycle_samples))
    chunk = CHUNK_CYCLES[device.type]
    starts, ends, native = (table[c].to_numpy() for c in ("start", "end", "native_sr"))
    recordings = table.groupby("wav", sort=False).indices  # first-appearance order; each file opened once
    with (
        atomic_dir(out_dir) as tmp,
        tqdm(total=len(table), unit="cycle", file=sys.stderr, disable=None) as bar,
    ):
        npy = tmp / "features.npy"
        array = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=shape)
        del array  # preallocated; rows go in through short-lived mappings (_write_rows)
        pending_rows: list[np.ndarray] = []
        pending_waves: list[torch.Tensor] = []

        def flush() -> None:
            feats = compute(torch.cat(pending_waves).to(device), kind, cfg)
            _write_rows(npy, np.concatenate(pending_rows), feats.cpu().numpy())
            bar.update(feats.shape[0])
            pending_rows.clear()
            pending_waves.clear()

        for wav, rows in recordings.items():
            wave, native_sr = read_wav(wav)
            if native_sr != int(native[rows[0]]):
                raise UserError(
                    f"{wav}: sample rate {native_sr} Hz but the cycle table says {native[rows[0]]} "
                    "(re-run rsckd prepare)"
                )
            bounds = list(zip(starts[rows].tolist(), ends[rows].tolist(), strict=True))
            try:
                pending_waves.append(feature_cycles(wave, native_sr, bounds, cfg, cycles_cfg))
            except UserError as err:
                raise UserError(f"{wav}: {err}") from None
            pending_rows.append(rows)
            if sum(len(r) for r in pending_rows) >= chunk:
                flush()
        if pending_rows:
            flush()
        with open(npy, "rb+") as f:
            os.fsync(f.fileno())
        meta = {
            "kind": kind,
            "params": cfg.model_dump(),
            "cycles": cycles_cfg.model_dump(),
            "shape": list(shape),
            "n_cycles": len(table),
        }
        write_json(tmp / "meta.json", meta)
    return shape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=("clap", "fbank"), help="feature family to compute")
    parser.add_argument(
        "--params",
        default="params.yaml",
        help="params file (blocks cycles, features.<kind>, runtime.threads)",
    )
    parser.add_argument(
        "--cycles", default="data/prepared/cycles.csv", help="cycle table written by rsckd prepare"
    )
    parser.add_argument("--out", default=None, help="output folder (default data/features/<kind>)")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    out = Path(args.out) if args.out else Path("data/features") / args.kind
    # float64 maths, rounded to float32 once: the thread count moves the bytes no more than another CPU does
    # (README, 'What reproduces where'), but it sets the time: side by side under `rsckd parallel` on 2 cores,
    # the two feature stages took 12-19 s each on 2 threads, 6-8 s on 1
    torch.set_num_threads(params.runtime.threads)
    if not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True)
    shape = build_features(
        read_cycle_table(args.cycles), args.kind, params.features.of(args.kind), params.cycles, out
    )
    print(f"{out}/features.npy: {shape[0]} cycles x {shape[1]} frames x {shape[2]} bins", file=sys.stderr)

"""``rsckd synthesize``: a synthetic corpus in the exact ICBHI layout, so the pipeline runs without the data.

The corpus is only useful if it exercises the same code paths and is neither trivial nor hopeless, so it
copies ICBHI's structure (patients whose diagnosis sets their class mix, per-file split, devices and
native rates, mixed PCM widths, chest locations, sc/mc modes, class imbalance, cycle lengths with a few > 8 s)
and the physics of the classes:
band-limited breath noise with an inhale/exhale envelope, crackles as short damped transients, wheezes as
gliding tones with a harmonic, plus heart sounds, clicks, mains hum and device noise at varying SNR. Event
strengths vary so some abnormal cycles are subtle, and about 5 % of the labels disagree with the sound
(annotator noise).

Everything is drawn from ``numpy.random.Generator`` streams derived from the seed (one per recording), and
each recording is synthesised with whole-array numpy at 8 kHz and FFT-resampled to its native rate. The bytes
are the same on every x86-64 CPU: exponentials and logarithms come from ``exact_math`` (numpy's own kernels
differ by CPU in the last bit), powers are products, and numpy's sin, sums and pocketfft FFTs were measured
to be identical whichever SIMD kernels numpy dispatches (``tests/test_reproducibility.py``).
"""

from __future__ import annotations

import argparse
import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import fft

from rsckd.atomic import atomic_dir, write_bytes, write_text
from rsckd.config import Synthesize, load_params
from rsckd.data import exact_math
from rsckd.data.icbhi import DATA_DEFAULTS, DEMOGRAPHICS_NAMES, LOCATIONS
from rsckd.schema import validated

INTERNAL_SR = 8000  # all synthetic content lies below 4 kHz
DEVICE_FILES = {"AKGC417L": 646, "LittC2SE": 87, "Litt3200": 60, "Meditron": 127}  # ICBHI file counts
DEVICE_SR = {"AKGC417L": 44100, "LittC2SE": 4000, "Litt3200": 4000, "Meditron": 4000}
DEVICE_CUTOFF_HZ = {"AKGC417L": 6000.0, "LittC2SE": 900.0, "Litt3200": 1200.0, "Meditron": 1500.0}
DEVICE_SNR_DB = {
    "AKGC417L": (4.0, 24.0),
    "LittC2SE": (6.0, 24.0),
    "Litt3200": (8.0, 28.0),
    "Meditron": (0.0, 18.0),
}
DEVICE_HUM_P = {"AKGC417L": 0.5, "LittC2SE": 0.15, "Litt3200": 0.1, "Meditron": 0.2}
LOCATION_SHARE = {"Tc": 0.14, "Al": 0.17, "Ar": 0.16, "Pl": 0.17, "Pr": 0.15, "Ll": 0.11, "Lr": 0.10}
SUBTYPES, SUBTYPE_SHARE = ("PCM_16", "PCM_24", "PCM_32"), (0.6, 0.25, 0.15)
RATE_10K_SHARE = 0.06
FLIP_P = 0.05  # annotated label differs from the sound
CYCLE_MEDIAN_S, CYCLE_SIGMA, CYCLE_MIN_S, CYCLE_MAX_S = 2.4, 0.5, 0.3, 12.0
PATIENT_CLASS_CONCENTRATION = 8.0  # Dirichlet around the diagnosis's mix: patients differ within a diagnosis
# As in ICBHI, the diagnosis shapes a patient's cycles (COPD patients give most crackles and wheezes, healthy
# and URTI patients mostly normal cycles) and depends on age (bronchiolitis in children, COPD in adults), and
# COPD patients were mostly recorded with the AKGC417L. So age group and device, which the BTS prompt names,
# carry population-level information about the classes, as they do in ICBHI; per patient they do not decide.
# diagnosis: (share among adults, share among children, mean class mix normal/crackle/wheeze/both)
DIAGNOSES = {
    "COPD": (0.55, 0.0, (0.36, 0.37, 0.16, 0.11)),
    "Healthy": (0.15, 0.35, (0.86, 0.08, 0.04, 0.02)),
    "URTI": (0.07, 0.30, (0.80, 0.11, 0.06, 0.03)),
    "Bronchiectasis": (0.08, 0.0, (0.42, 0.48, 0.05, 0.05)),
    "Pneumonia": (0.07, 0.10, (0.46, 0.44, 0.06, 0.04)),
    "LRTI": (0.05, 0.05, (0.60, 0.30, 0.06, 0.04)),
    "Asthma": (0.03, 0.0, (0.40, 0.06, 0.44, 0.10)),
    "Bronchiolitis": (0.0, 0.20, (0.45, 0.20, 0.25, 0.10)),
}
AKG_SHARE = {"COPD": 0.9, "other": 0.55}  # home device AKGC417L; else the stethoscopes in ICBHI's proportions


@dataclass(frozen=True)
class PatientPlan:
    pid: int
    age: float | None
    sex: str | None
    bmi: float | None
    weight: float | None
    height: float | None
    diagnosis: str
    location: str  # the reference metadata's per-patient chest location (one of the patient's own)


@dataclass(frozen=True)
class RecordingPlan:
    stem: str
    device: str
    sr: int
    subtype: str
    split: str
    bounds: np.ndarray  # cycle boundaries in seconds (ms resolution); cycles are contiguous
    duration: float
    labels: np.ndarray  # annotated class per cycle
    sounds: np.ndarray  # class actually synthesised


def _fmt(value: float | None) -> str:
    return "NA" if value is None else f"{value:g}"


def _patients(rng: np.random.Generator, n: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Demographics (children, adults, a few NA, the last patient all NA like ICBHI's 223), class mixes."""
    child = rng.random(n) < 0.4
    infant = rng.random(n) < 0.3
    age = np.where(
        child,
        np.where(infant, np.round(rng.uniform(0.2, 3.0, n), 2), rng.integers(3, 19, n)),
        rng.integers(19, 91, n),
    ).astype(float)
    sex = rng.choice(np.array(["M", "F"]), n)
    age_na, sex_na, bmi_na = rng.random(n) < 0.03, rng.random(n) < 0.03, rng.random(n) < 0.2
    age_na[-1] = sex_na[-1] = bmi_na[-1] = True
    bmi = np.round(rng.normal(26.0, 4.5, n), 1)
    weight = np.round(3.5 + 2.6 * age * rng.uniform(0.85, 1.15, n), 1)
    height = np.round(52.0 + 6.5 * age * rng.uniform(0.9, 1.1, n), 1)
    names = list(DIAGNOSES)
    adult_p, child_p, mix = (np.array(column) for column in zip(*DIAGNOSES.values(), strict=True))
    diagnosis = [names[rng.choice(len(names), p=child_p if child[i] else adult_p)] for i in range(n)]
    class_p = np.stack([rng.dirichlet(PATIENT_CLASS_CONCENTRATION * mix[names.index(d)]) for d in diagnosis])
    rows = []
    for i in range(n):
        rows.append(
            {
                "pid": 101 + i,
                "age": None if age_na[i] else float(age[i]),
                "sex": None if sex_na[i] else str(sex[i]),
                "bmi": None if child[i] or bmi_na[i] else float(bmi[i]),
                "weight": float(weight[i]) if child[i] and not bmi_na[i] else None,
                "height": float(height[i]) if child[i] and not bmi_na[i] else None,
                "diagnosis": diagnosis[i],
            }
        )
    return rows, class_p


def _sessions(rng: np.random.Generator, n_rec: int, home_device: str) -> list[tuple[str, str, str]]:
    """(name, device, location) per recording: multichannel AKGC417L sessions cover several locations."""
    devices = list(DEVICE_FILES)
    device_p = np.array(list(DEVICE_FILES.values()), float) / sum(DEVICE_FILES.values())
    loc_p = np.array(list(LOCATION_SHARE.values()))
    out: list[tuple[str, str, str]] = []
    session = 0
    while len(out) < n_rec:
        session += 1
        device = home_device if rng.random() < 0.9 else devices[rng.choice(len(devices), p=device_p)]
        left = n_rec - len(out)
        multi = device == "AKGC417L" and left > 1 and rng.random() < 0.75
        k = int(rng.integers(2, min(left, 7) + 1)) if multi else 1
        locs = rng.choice(len(LOCATIONS), size=k, replace=False, p=loc_p)
        index = f"{session}b{int(rng.integers(1, 4))}"
        out += [
            (f"{index}_{LOCATIONS[j]}_{'mc' if multi else 'sc'}_{device}", device, LOCATIONS[j]) for j in locs
        ]
    return out


def plan_corpus(cfg: Synthesize) -> tuple[list[PatientPlan], list[RecordingPlan]]:
    """Everything but the audio: patients, recordings, split, cycles and labels (sorted by stem)."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_patients
    demo, class_p = _patients(rng, n)
    others = [d for d in DEVICE_FILES if d != "AKGC417L"]
    others_p = np.array([DEVICE_FILES[d] for d in others], float) / sum(DEVICE_FILES[d] for d in others)
    n_recs = 1 + rng.poisson(rng.exponential(cfg.recordings_per_patient - 1, n))
    n_test = min(max(round(cfg.test_fraction * n), 1), n - 1)
    test = set(rng.choice(n, n_test, replace=False).tolist())
    cpr = cfg.cycles_per_recording - 1
    raw: list[tuple[str, int, str, str]] = []  # stem, patient index, device, split
    locations: list[str] = []
    for i in range(n):
        akg = AKG_SHARE["COPD" if demo[i]["diagnosis"] == "COPD" else "other"]
        home = "AKGC417L" if rng.random() < akg else others[rng.choice(len(others), p=others_p)]
        sessions = _sessions(rng, int(n_recs[i]), home)
        stems = sorted(f"{101 + i}_{name}" for name, _, _ in sessions)
        dev = {f"{101 + i}_{name}": d for name, d, _ in sessions}
        raw += [(s, i, dev[s], "test" if i in test else "train") for s in stems]
        own = sorted({loc for _, _, loc in sessions})
        locations.append(own[int(rng.integers(len(own)))])
    if n >= 10:  # like ICBHI's patients 156 and 218: one train patient also has a test file
        straddler = next((i for i in range(n) if i not in test and n_recs[i] > 1), None)
        last = max((j for j, r in enumerate(raw) if r[1] == straddler), default=None)
        if last is not None:
            raw[last] = (*raw[last][:3], "test")
    raw.sort()
    ten_k = set()
    if len(raw) >= 10:
        ten_k = set(rng.choice(len(raw), max(1, round(RATE_10K_SHARE * len(raw))), replace=False).tolist())
    recordings = []
    for j, (stem, i, device, split) in enumerate(raw):
        n_cyc = 1 + int(rng.poisson(rng.gamma(3.0, cpr / 3.0))) if cpr > 0 else 1
        lengths = np.clip(
            rng.lognormal(float(exact_math.log(CYCLE_MEDIAN_S)), CYCLE_SIGMA, n_cyc), CYCLE_MIN_S, CYCLE_MAX_S
        )
        bounds = np.round(rng.uniform(0.02, 0.6) + np.concatenate([[0.0], np.cumsum(lengths)]), 3)
        labels = rng.choice(4, n_cyc, p=class_p[i])
        flip = rng.random(n_cyc) < FLIP_P
        sounds = np.where(flip, (labels + rng.integers(1, 4, n_cyc)) % 4, labels)
        recordings.append(
            RecordingPlan(
                stem=stem,
                device=device,
                sr=10000 if j in ten_k else DEVICE_SR[device],
                subtype=SUBTYPES[rng.choice(len(SUBTYPES), p=SUBTYPE_SHARE)],
                split=split,
                bounds=bounds,
                duration=round(float(bounds[-1]) + rng.uniform(0.0, 0.3), 3),
                labels=labels,
                sounds=sounds,
            )
        )
    patients = [PatientPlan(**d, location=loc) for d, loc in zip(demo, locations, strict=True)]
    return patients, recordings


def _events(
    n: int, pos: np.ndarray, freq: np.ndarray, tau: np.ndarray, amp: np.ndarray, length: int
) -> np.ndarray:
    """Sum of damped sinusoids amp * exp(-t/tau) * sin(2 pi f t) starting at sample positions ``pos``."""
    if pos.size == 0:
        return np.zeros(n)
    k = np.arange(length)
    t = k / INTERNAL_SR
    waves = amp[:, None] * exact_math.exp(-t / tau[:, None]) * np.sin(2 * np.pi * freq[:, None] * t)
    idx = pos[:, None] + k
    ok = idx < n
    return np.bincount(idx[ok], weights=waves[ok], minlength=n)


def _fourth(z: np.ndarray) -> np.ndarray:
    """z**4 by two exact squarings (numpy's power kernel differs by CPU)."""
    square = z * z
    return square * square


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: int | None = None) -> Any:
    return exact_math.exp(rng.uniform(exact_math.log(lo), exact_math.log(hi), size))


def render(rec: RecordingPlan, rng: np.random.Generator) -> np.ndarray:
    """The recording at its native rate (float32, peak < 1)."""
    fs = INTERNAL_SR
    k = fft.next_fast_len(math.ceil(rec.duration * 100) + 1, real=True)  # 10-ms blocks: exact rate ratios
    n = k * fs // 100
    starts = np.round(rec.bounds[:-1] * fs).astype(np.int64)
    ends = np.round(rec.bounds[1:] * fs).astype(np.int64)
    nc = starts.size
    t = np.arange(n)
    cyc = np.searchsorted(ends, t, side="right")
    cc = np.minimum(cyc, nc - 1)
    inside = (cyc < nc) & (t >= starts[cc])
    phase = (t - starts[cc]) / (ends[cc] - starts[cc])

    # breath: band-limited noise under an inhale (stronger) / exhale envelope
    insp = rng.uniform(0.3, 0.45, nc)
    a_in = rng.uniform(0.7, 1.0, nc)
    a_ex = a_in * rng.uniform(0.4, 0.8, nc)
    r = insp[cc]
    exhale = phase >= r
    x = np.where(exhale, (phase - r) / (1 - r), phase / r)
    env = np.where(exhale, a_ex[cc], a_in[cc]) * np.sin(np.pi * x) ** 2
    env = np.where(inside, env, 0.0) + 0.04
    lo, hi = rng.uniform(80.0, 150.0), rng.uniform(600.0, 1200.0)
    f = fft.rfftfreq(n, 1 / fs).astype(np.float32)  # single precision spectra: the FFTs dominate the cost
    band = _fourth(f / lo) / (1 + _fourth(f / lo)) / (1 + _fourth(f / hi))
    white = rng.standard_normal((f.size, 2), np.float32).view(np.complex64)[
        :, 0
    ]  # white noise as its spectrum
    breath = fft.irfft(white * band, n)
    signal = env * breath / breath.std()

    # crackles: a few-ms damped oscillations (200-1500 Hz), mostly during inspiration, of varying strength
    has_c = np.isin(rec.sounds, (1, 3))
    count = np.where(has_c, 1 + rng.poisson(rng.uniform(2.0, 10.0, nc)), 0)
    cid = np.repeat(np.arange(nc), count)
    u = np.where(rng.random(cid.size) < 0.7, rng.random(cid.size) * insp[cid], rng.random(cid.size))
    freq = _log_uniform(rng, 200.0, 1500.0, cid.size)
    gain = (
        _log_uniform(rng, 6.0, 30.0, nc)[cid]
        * rng.uniform(0.5, 1.5, cid.size)
        * rng.choice([-1.0, 1.0], cid.size)
    )
    tau = rng.uniform(0.7e-3, 2.5e-3, cid.size) * np.sqrt(600.0 / freq)
    signal += _events(n, (starts[cid] + u * (ends - starts)[cid]).astype(np.int64), freq, tau, gain, 200)

    # confounders in every class: low-frequency clicks (friction, movement) and heart sounds
    n_click = rng.poisson(0.1 * rec.duration)
    pos = rng.integers(0, n, n_click)
    click_amp = rng.uniform(0.5, 3.0, n_click) * rng.choice([-1.0, 1.0], n_click)
    signal += _events(
        n, pos, rng.uniform(40.0, 150.0, n_click), rng.uniform(3e-3, 8e-3, n_click), click_amp, 400
    )
    period = 60.0 / rng.uniform(60.0, 130.0)
    beats = np.arange(rng.uniform(0, period), n / fs, period)
    beats = np.concatenate([beats, beats + 0.3 * period])
    heart = _log_uniform(rng, 0.2, 2.0)
    beat_amp = heart * rng.uniform(0.7, 1.0, beats.size)
    beat_pos = (beats * fs).astype(np.int64)
    signal += _events(
        n, beat_pos, rng.uniform(30.0, 80.0, beats.size), np.full(beats.size, 0.015), beat_amp, 600
    )

    # wheezes: a tone (100-1000 Hz) with a slow glide and its 2nd harmonic over part of the cycle
    has_w = np.isin(rec.sounds, (2, 3))
    if has_w.any():
        w0 = rng.uniform(0.0, 0.45, nc)
        w1 = np.minimum(w0 + rng.uniform(0.3, 0.8, nc), 0.98)
        f0, glide = _log_uniform(rng, 100.0, 1000.0, nc), rng.uniform(-0.25, 0.25, nc)
        harmonic, w_gain = rng.uniform(0.15, 0.5, nc), _log_uniform(rng, 0.8, 4.0, nc)
        on = np.flatnonzero(inside & has_w[cc] & (phase >= w0[cc]) & (phase < w1[cc]))
        c = cc[on]
        uw = (phase[on] - w0[c]) / (w1 - w0)[c]
        ph = np.mod(2 * np.pi / fs * np.cumsum(f0[c] * (1 + glide[c] * uw)), 2 * np.pi)
        ramp = np.clip(np.minimum(uw, 1 - uw) / 0.1, 0.0, 1.0)
        signal[on] += w_gain[c] * ramp * (np.sin(ph) + harmonic[c] * np.sin(2 * ph))

    if rng.random() < DEVICE_HUM_P[rec.device]:  # mains hum + 3 harmonics: periodic, so tile 3 periods
        mains, amp = rng.choice([50, 60]), _log_uniform(rng, 0.02, 0.3)
        tp = np.arange(3 * fs // mains) / fs
        hum = sum(
            0.6**h * np.sin(2 * np.pi * (h + 1) * mains * tp + rng.uniform(0, 2 * np.pi)) for h in range(4)
        )
        signal += amp * np.resize(hum, n)

    # device response, then FFT resampling to the native rate (exact: both lengths are k 10-ms blocks)
    spectrum = fft.rfft(signal.astype(np.float32)) / np.sqrt(1 + _fourth(f / DEVICE_CUTOFF_HZ[rec.device]))
    n_out = k * rec.sr // 100
    out = np.zeros(n_out // 2 + 1, np.complex64)  # single precision: the native-rate transform dominates
    m = min(out.size, spectrum.size)
    out[:m] = spectrum[:m] * (n_out / n)
    frames = math.ceil(rec.duration * rec.sr)
    y = fft.irfft(out, n_out)[:frames]
    snr = rng.uniform(*DEVICE_SNR_DB[rec.device])
    noise = np.sqrt(np.mean(y**2)) * exact_math.exp(-snr / 20 * exact_math.log(10.0)) * math.sqrt(rec.sr / fs)
    y += np.float32(noise * math.sqrt(12)) * (
        rng.random(frames, np.float32) - np.float32(0.5)
    )  # white, uniform
    return y * np.float32(rng.uniform(0.3, 0.9) / np.abs(y).max())


def _wav_bytes(y: np.ndarray, sr: int, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def _annotation_text(rec: RecordingPlan) -> str:
    return "".join(
        f"{s:.3f}\t{e:.3f}\t{c & 1}\t{c >> 1}\n"
        for s, e, c in zip(rec.bounds[:-1], rec.bounds[1:], rec.labels.tolist(), strict=True)
    )


def synthesize(cfg: Synthesize, out: str | Path, workers: int = 2) -> dict[str, Any]:
    """Write the corpus under ``out`` (replaced as a whole); same cfg -> identical bytes, any ``workers``."""
    patients, recordings = plan_corpus(cfg)
    with atomic_dir(out) as tmp:
        audio = tmp / DATA_DEFAULTS["audio_dir"]

        def write_recording(j: int) -> None:
            rec = recordings[j]  # each recording has its own random stream, so threads cannot change a byte
            y = render(rec, np.random.default_rng([cfg.seed, 1, j]))
            write_bytes(audio / f"{rec.stem}.wav", _wav_bytes(y, rec.sr, rec.subtype))
            write_text(audio / f"{rec.stem}.txt", _annotation_text(rec))

        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(write_recording, range(len(recordings))))
        # the official split file has no newline after its last line
        write_text(tmp / DATA_DEFAULTS["split_file"], "\n".join(f"{r.stem}\t{r.split}" for r in recordings))
        demo = [
            [str(p.pid), _fmt(p.age), p.sex or "NA", _fmt(p.bmi), _fmt(p.weight), _fmt(p.height)]
            for p in patients
        ]
        write_text(tmp / DEMOGRAPHICS_NAMES[0], "".join("\t".join(d) + "\n" for d in demo))
        write_text(
            tmp / DATA_DEFAULTS["metadata_file"],
            "".join("\t".join([*d, p.location]) + "\n" for d, p in zip(demo, patients, strict=True)),
        )
        write_text(
            tmp / DATA_DEFAULTS["diagnosis_file"], "".join(f"{p.pid}\t{p.diagnosis}\n" for p in patients)
        )
    labels = np.concatenate([r.labels for r in recordings])
    return {
        "patients": len(patients),
        "recordings": len(recordings),
        "cycles": int(labels.size),
        "classes": np.bincount(labels, minlength=4).tolist(),
    }


OVERRIDES = ("seed", "n_patients", "recordings_per_patient", "cycles_per_recording", "test_fraction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (reads its synthesize block)")
    parser.add_argument("--out", default="data/synthetic", help="output root (replaced as a whole)")
    parser.add_argument("--workers", type=int, default=2, help="threads (the output does not depend on it)")
    for key in OVERRIDES:
        kind = int if key in ("seed", "n_patients") else float
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind, help=f"override synthesize.{key}")


def run(args: argparse.Namespace) -> None:
    cfg = load_params(args.params).synthesize.model_dump()
    cfg.update({k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})
    cfg = validated(Synthesize, cfg, "flags", lambda key: f"--{key.replace('_', '-')}")
    info = synthesize(cfg, args.out, args.workers)
    print(
        f"{args.out}: {info['patients']} patients, {info['recordings']} recordings, {info['cycles']} cycles "
        f"(normal/crackle/wheeze/both {'/'.join(map(str, info['classes']))})"
    )

"""Training and evaluation throughput of BTS with the real training step, on random data.

For every ``runtime.compile`` mode (off: eager; default: inductor; reduce-overhead: inductor replayed as
CUDA graphs, GPU only), batch size and target kind (hard labels, soft labels), builds BTS with random
weights, times ``loop.train_steps`` after two warm-up steps (which include compiling), then ``loop.predict``.
Prints training samples/s, ms/step, the ratio to the reference loop (35.2 samples/s for full-size BTS at
batch 8 on an H100), evaluation samples/s, warm-up seconds and peak GPU memory.

    python benchmarks/train_throughput.py      # = make bench-train: full size on a GPU, tiny on a CPU
    python benchmarks/train_throughput.py --modes off --batch-sizes 8 --steps 3
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from rsckd.architectures import BTSBlock
from rsckd.config import COMPILE_MODES, Runtime, load_params
from rsckd.data.features import clap_num_frames
from rsckd.data.prompts import LOCATION_NAMES, bts_prompt
from rsckd.models import build_model, build_tokenizer, tokenize
from rsckd.training.loop import (
    CycleSet,
    DeviceCycles,
    TrainStep,
    compiled,
    eval_batch_size,
    make_optimizer,
    pick_device,
    predict,
    seed_everything,
    train_steps,
)
from rsckd.training.protocol import average_as_lr_scale
from rsckd.training.targets import Targets

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"full": "configs/paper.yaml", "tiny": "params.yaml"}  # each size's CLAP input is its profile's
REFERENCE_SAMPLES_S = 35.2  # the reference's loop, full-size BTS, batch 8, H100
WARM_UP_STEPS = 2


def prompts() -> list[str]:
    combos = itertools.product(LOCATION_NAMES, (30.0, 5.0), ("M", "F"), ("AKGC417L", "Meditron", "LittC2SE"))
    return sorted({bts_prompt(loc, age, sex, dev) for loc, age, sex, dev in combos})


def clap_shape(size: str) -> tuple[int, int]:
    """(frames, mel bins) of the CLAP features of the profile whose models have this size."""
    cfg = load_params(ROOT / PROFILES[size]).features.clap
    return clap_num_frames(cfg), int(cfg.n_mels)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=PROFILES, help="default: full on cuda, tiny on cpu")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--modes", nargs="+", choices=COMPILE_MODES)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--steps", type=int, help="timed steps per row (default: 50 on cuda, 5 on cpu)")
    parser.add_argument("--eval-batch", type=int, help="default: 256 on cuda, 64 on cpu")
    parser.add_argument("--cpu-kernels", choices=("native", "portable"), default="native")
    args = parser.parse_args()

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    runtime = Runtime.model_construct(threads=torch.get_num_threads(), cpu_kernels=args.cpu_kernels)
    seed_everything(0, device, runtime)  # reads these two keys only
    size = args.size or ("full" if cuda else "tiny")
    modes = args.modes or [m for m in COMPILE_MODES if cuda or m != "reduce-overhead"]
    n_timed = args.steps or (50 if cuda else 5)
    eval_bs = args.eval_batch or eval_batch_size(device)
    t, f = clap_shape(size)
    cfg = BTSBlock(size=size, pretrained=None, input_norm="none", max_text_length=64)
    texts = prompts()
    tokenizer = build_tokenizer(cfg, texts)
    ids, mask = tokenize(tokenizer, texts, cfg.max_text_length)
    rng = np.random.default_rng(0)
    n = max(args.batch_sizes) * (n_timed + WARM_UP_STEPS)
    labels = rng.integers(0, 4, n)
    data = CycleSet(
        features=rng.normal(-40.0, 15.0, (n, t, f)).astype(np.float32),
        labels=labels,
        prompt_index=rng.integers(0, len(texts), n),
        targets=Targets("hard", labels),
    )
    cycles = DeviceCycles(data, (ids.to(device), mask.to(device)), device)
    targets = {
        "hard": data.targets,
        "soft": Targets("mean", labels, rng.normal(size=(5, n, 4)).astype(np.float32)),
    }
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"bts {size}: features {t}x{f}, device {device} ({name}), {n_timed} timed steps per row")
    print(f"reference loop: {REFERENCE_SAMPLES_S} samples/s (full-size BTS, batch 8, H100)")
    if not cuda:
        print("reduce-overhead replays CUDA graphs, which need a GPU: left out on this device")
    print(
        f"{'mode':<16} {'batch':>5} {'target':>6} {'train/s':>9} {'ms/step':>8} {'x ref':>6} "
        f"{'eval/s':>9} {'warm-up s':>9} {'peak GiB':>8}"
    )
    for mode, bs in itertools.product(modes, args.batch_sizes):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = build_model("bts", cfg, (t, f), tokenizer=tokenizer).to(device)
        optimizer, lr = make_optimizer(model, 1e-6, device)
        lr.fill_(5e-5 * average_as_lr_scale(model, 0.5))
        step = TrainStep(model, optimizer, None, mode)
        rows = torch.arange(bs * (n_timed + WARM_UP_STEPS), device=device)
        warm, timed = rows[: WARM_UP_STEPS * bs], rows[WARM_UP_STEPS * bs :]
        no_masks = (None, None)
        for kind, target in targets.items():
            target_t = torch.from_numpy(target.for_epoch(1)).to(device)
            start = time.perf_counter()
            train_steps(step, cycles, warm, target_t, no_masks, bs, WARM_UP_STEPS)
            sync(device)
            warm_s = time.perf_counter() - start
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            loss, _ = train_steps(step, cycles, timed, target_t, no_masks, bs, n_timed)
            float(loss)  # waits for the device
            train_s = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            eval_text = ""
            if kind == "hard" and bs == args.batch_sizes[0]:  # evaluation depends on neither
                fn = compiled(model, mode)
                predict(model, fn, cycles, eval_bs)
                sync(device)
                start = time.perf_counter()
                predict(model, fn, cycles, eval_bs)
                sync(device)
                eval_text = f"{n / (time.perf_counter() - start):9.1f}"
            samples_s = n_timed * bs / train_s
            print(
                f"{mode:<16} {bs:>5} {kind:>6} {samples_s:9.1f} {1000 * train_s / n_timed:8.1f} "
                f"{samples_s / REFERENCE_SAMPLES_S:6.1f} {eval_text:>9} {warm_s:9.1f} {peak:8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

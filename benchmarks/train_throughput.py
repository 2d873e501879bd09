"""Training and evaluation throughput of BTS with the real training step, on random data.

Builds BTS with random weights (``--size full``: the paper's model on 1001x64 CLAP features; ``--size
tiny``: the default profile's model on 201x16, for a CPU smoke check), then times ``loop.train_epoch``
(hard and soft targets) and ``loop.predict``. Prints training samples/s, ms/step, evaluation samples/s and
peak GPU memory.

    python benchmarks/train_throughput.py                          # full size, GPU
    python benchmarks/train_throughput.py --size tiny --steps 3    # CPU smoke check
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from rsckd.data.prompts import LOCATION_NAMES, bts_prompt
from rsckd.models import build_model, build_tokenizer, tokenize
from rsckd.training.loop import (
    Cycles,
    RunData,
    pick_device,
    predict,
    seed_everything,
    stream_generator,
    train_epoch,
)
from rsckd.training.protocol import StepAverage
from rsckd.training.targets import Targets

SHAPES = {"full": (1001, 64), "tiny": (201, 16)}


def prompts() -> list[str]:
    combos = itertools.product(LOCATION_NAMES, (30.0, 5.0), ("M", "F"), ("AKGC417L", "Meditron", "LittC2SE"))
    return sorted({bts_prompt(loc, age, sex, dev) for loc, age, sex, dev in combos})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=SHAPES, default="full")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per target kind")
    parser.add_argument("--eval-batch", type=int, default=None, help="default: 256 on cuda, 64 on cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--cpu-kernels", choices=("native", "portable"), default="native")
    args = parser.parse_args()

    device = pick_device(args.device)
    seed_everything(0, device, {"threads": torch.get_num_threads(), "cpu_kernels": args.cpu_kernels})
    t, f = SHAPES[args.size]
    cfg = {"size": args.size, "pretrained": None, "max_text_length": 64}
    texts = prompts()
    tokenizer = build_tokenizer(cfg, texts)
    ids, mask = tokenize(tokenizer, texts, cfg["max_text_length"])
    model = build_model("bts", cfg, (t, f), tokenizer=tokenizer).to(device)
    fn = torch.compile(model) if args.compile else model

    bs, n_timed = args.batch_size, args.steps
    n = bs * (n_timed + 2)  # two untimed warm-up steps
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n)
    data = RunData(
        features=rng.normal(-40.0, 15.0, (n, t, f)).astype(np.float32),
        labels=labels,
        train_rows=np.arange(n),
        fit_rows=np.arange(n),
        val_rows=np.arange(0),
        test_rows=np.arange(n),
        targets=Targets("hard", labels),
        prompt_index=rng.integers(0, len(texts), n),
        tokens=(ids.to(device), mask.to(device)),
    )
    cycles = Cycles(data, np.arange(n), device)
    soft = Targets("mean", labels, rng.normal(size=(5, n, 4)).astype(np.float32))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1e-5, weight_decay=1e-6, fused=device.type == "cuda" or None
    )
    averager = StepAverage(model, 0.5)
    train_cfg = {"batch_size": bs, "drop_last": True, "specaugment": None}
    rows = torch.arange(n, device=device)
    print(f"bts {args.size}: features {t}x{f}, batch {bs}, device {device}, compile {args.compile}")
    for name, targets in (("hard", data.targets), ("soft", soft)):
        target_t = torch.from_numpy(targets.for_epoch(1)).to(device)
        warm, timed = rows[: 2 * bs], rows[2 * bs :]
        train_epoch(
            model,
            fn,
            optimizer,
            averager,
            cycles,
            warm,
            target_t,
            None,
            train_cfg,
            stream_generator(0, 0, 0),
            None,
        )
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss, _, steps = train_epoch(
            model,
            fn,
            optimizer,
            averager,
            cycles,
            timed,
            target_t,
            None,
            train_cfg,
            stream_generator(0, 1, 0),
            None,
        )
        float(loss)  # waits for the device
        train_s = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        eval_bs = args.eval_batch or (256 if device.type == "cuda" else 64)
        predict(model, fn, cycles, eval_bs)
        sync(device)
        start = time.perf_counter()
        predict(model, fn, cycles, eval_bs)
        sync(device)
        eval_s = time.perf_counter() - start
        print(
            f"{name:>4}: train {steps * bs / train_s:8.1f} samples/s "
            f"({1000 * train_s / steps:7.1f} ms/step) | "
            f"eval {n / eval_s:8.1f} samples/s (batch {eval_bs}) | peak GPU memory {peak:.2f} GiB"
        )


if __name__ == "__main__":
    main()

"""The training loop of one run, in one file: data on the device, the epoch loop, evaluation, selection.

Per epoch e = 1..E (reference-protocol section 5): set the cosine LR once, shuffle the training cycles
with a generator seeded by (seed, e), build that epoch's targets (and SpecAugment masks), run Adam (coupled
weight decay) steps with the reference step averaging expressed as a learning-rate and BatchNorm-momentum
scale (``protocol.average_as_lr_scale``), then evaluate the whole test split (and the val subset) and
record one history row. The checkpoint kept for the run's logits is the one ``train.select`` picks; since
a selection over a growing history only ever moves to the newest epoch, its weights are copied only when
it does. The full state goes to a resume checkpoint every ``runtime.checkpoint_minutes``.

CPU and CUDA share this code. Features live on the training device and are indexed there, Adam is fused,
and nothing syncs with the host inside an epoch: losses and the non-finite check accumulate on the device,
the learning rate is a device tensor and the targets a persistent buffer, both refilled once per epoch
(tests/test_training.py watches for host reads). On CUDA forward passes run under bf16 autocast.
``runtime.compile`` compiles the step's forward pass and loss, and evaluation, with static shapes (a short
last training batch runs uncompiled, evaluation pads its last batch), so ``reduce-overhead`` can replay
them as CUDA graphs. On CPU an uncompiled run is bit-reproducible.
"""

from __future__ import annotations

import math
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rsckd.config import Runtime, Train
from rsckd.errors import UserError
from rsckd.evaluation.icbhi_score import icbhi_scores
from rsckd.training.protocol import average_as_lr_scale, cosine_lr, select_epochs
from rsckd.training.resume import Checkpoints
from rsckd.training.specaugment import apply_masks, draw_masks
from rsckd.training.targets import Targets, class_weights, target_loss

SHUFFLE, AUGMENT = 0, 1  # independent random streams per (seed, epoch)


@dataclass
class RunData:
    """Inputs of one run, indexed by cycle-table row."""

    features: np.ndarray  # (N, T, F) float32, all table rows (a memory map is fine)
    labels: np.ndarray  # (N,) int class of every row
    train_rows: np.ndarray  # split == train rows: the rows of the targets and of logits_train
    fit_rows: np.ndarray  # subset == train rows: the rows trained on (val excluded)
    val_rows: np.ndarray  # subset == val rows (may be empty)
    test_rows: np.ndarray  # split == test rows
    targets: Targets  # targets of the train rows
    prompt_index: np.ndarray | None = None  # (N,) row -> index of its prompt in ``tokens`` (text models)
    tokens: tuple[torch.Tensor, torch.Tensor] | None = None  # (input_ids, attention_mask) of unique prompts


@dataclass
class RunResult:
    history: list[dict[str, Any]]
    selection: dict[str, Any]  # select_epochs() of the history
    logits_train: np.ndarray  # (N_train, 4) float32, selected checkpoint
    logits_test: np.ndarray  # (N_test, 4) float32, selected checkpoint


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "params: runtime.device: 'cuda' requested but no CUDA device is available (use auto or cpu)"
        )
    return torch.device(name)


PORTABLE_CPU_KERNELS = {  # kernels every x86-64 CPU runs alike, whatever SIMD it has
    "ATEN_CPU_CAPABILITY": "default",  # ATen's plain kernels, not its AVX2 / AVX-512 builds
    "MKL_CBWR": "COMPATIBLE",  # MKL's SSE2 branch, the one it keeps identical on Intel and AMD
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN's convolutions and matmuls without AVX
}


def pin_cpu_kernels(kernels: str) -> None:
    """``runtime.cpu_kernels: portable``: make the CPU libraries choose kernels by these variables rather
    than by the CPU, so a CPU run gives the same bytes on any x86-64 machine (at 1.3-1.9x the time).

    Each library reads its variable when it first runs a kernel, so this must come before any tensor maths.
    """
    if kernels != "portable":
        return
    os.environ.update(PORTABLE_CPU_KERNELS)
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        raise RuntimeError("pin_cpu_kernels: ATen chose its CPU kernels before the pin (call it first)")


def seed_everything(seed: int, device: torch.device, runtime: Runtime) -> None:
    """Seeds, thread count and the kernel choices that make a run repeatable (README, 'What reproduces
    where'): on CPU deterministic algorithms, a fixed thread count and ``runtime.cpu_kernels``; on CUDA
    deterministic algorithms where torch has them (warning where it has not), cuDNN without autotuning, and
    TF32 matmuls (deterministic on one GPU model, and what the bf16 autocast leaves in float32 is minor)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if device.type == "cpu":
        pin_cpu_kernels(runtime.cpu_kernels)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(runtime.threads)
    else:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def stream_generator(
    seed: int, epoch: int, stream: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A generator seeded by (seed, epoch, stream): nothing to carry over when a run resumes."""
    return torch.Generator(device=device).manual_seed(
        int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])
    )


class Cycles:
    """Features (and prompt tokens) of some table rows, resident on the training device."""

    def __init__(self, data: RunData, rows: np.ndarray, device: torch.device) -> None:
        self.n = len(rows)
        self.x = torch.from_numpy(np.ascontiguousarray(data.features[rows], dtype=np.float32)).to(device)
        self.prompt = None
        self.tokens = data.tokens
        if data.prompt_index is not None:
            self.prompt = torch.from_numpy(data.prompt_index[rows].astype(np.int64)).to(device)

    def batch(
        self, idx: torch.Tensor | slice
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.prompt is None:
            return self.x[idx], None, None
        p = self.prompt[idx]
        return self.x[idx], self.tokens[0][p], self.tokens[1][p]


def forward(
    fn: Callable[..., torch.Tensor], x: torch.Tensor, ids: torch.Tensor | None, mask: torch.Tensor | None
):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
        return fn(x, ids, mask).float()


def compiled(fn: Callable[..., torch.Tensor], mode: str) -> Callable[..., torch.Tensor]:
    """``fn`` as ``runtime.compile`` asks: off runs it as it is; default compiles it (inductor);
    reduce-overhead also replays it as CUDA graphs on a GPU. Shapes stay static (``dynamic=False``): each
    batch shape is its own graph, never a dynamic-shape one that CUDA graphs could not capture."""
    return fn if mode == "off" else torch.compile(fn, mode=mode, dynamic=False)


@torch.no_grad()
def predict(
    model: torch.nn.Module, fn: Callable[..., torch.Tensor], cycles: Cycles, batch_size: int
) -> torch.Tensor:
    """(n, 4) float32 logits on the device, in row order.

    Every batch has ``batch_size`` rows (the last is padded by repeating the last row, whose extra logits
    are dropped), so a compiled ``fn`` sees one shape. In eval mode rows never interact."""
    model.eval()
    device = cycles.x.device
    out = torch.empty(cycles.n, 4, device=device)
    batches = torch.arange(math.ceil(cycles.n / batch_size) * batch_size, device=device)
    batches = batches.clamp(max=cycles.n - 1).view(-1, batch_size)
    for i, idx in enumerate(batches):
        torch.compiler.cudagraph_mark_step_begin()
        start = i * batch_size
        out[start : start + batch_size] = forward(fn, *cycles.batch(idx))[: cycles.n - start]
    return out


def evaluate(logits: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """ICBHI Sp/Se/Score and cross-entropy of one split's logits (two host transfers in all)."""
    loss = F.cross_entropy(logits, torch.from_numpy(labels).to(logits.device))
    scores = icbhi_scores(labels, logits.argmax(dim=1).cpu().numpy())
    return {
        "loss": float(loss),
        "sp": float(scores["sp"]),
        "se": float(scores["se"]),
        "score": float(scores["score"]),
    }


class TrainStep:
    """One optimiser step on a batch: SpecAugment masks, forward pass and loss (compiled as
    ``runtime.compile`` says), backward, Adam."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        weight: torch.Tensor | None,
        compile_mode: str,
    ) -> None:
        def batch_loss(x, ids, mask, target, time_mask, freq_mask):
            if time_mask is not None:
                x = apply_masks(x, time_mask, freq_mask)
            return target_loss(forward(model, x, ids, mask), target, weight)

        self.model, self.optimizer = model, optimizer
        self.eager, self.compiled = batch_loss, compiled(batch_loss, compile_mode)

    def __call__(self, batch_size: int, *inputs: torch.Tensor | None) -> torch.Tensor:
        """The batch's loss (detached); a batch shorter than ``batch_size`` runs uncompiled."""
        batch_loss = self.compiled if len(inputs[0]) == batch_size else self.eager
        torch.compiler.cudagraph_mark_step_begin()
        loss = batch_loss(*inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def train_epoch(
    step: TrainStep,
    cycles: Cycles,
    rows: torch.Tensor,
    targets: torch.Tensor,
    cfg: Train,
    shuffle: torch.Generator,
    augment: torch.Generator | None,
    desc: str = "train",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over ``rows`` (positions in ``cycles``/``targets``).

    Returns (mean loss, 1-based index of the first step with a non-finite loss or -1, steps), the first
    two as device tensors so the epoch never waits for the device.
    """
    step.model.train()
    bs = cfg.batch_size
    order = rows[torch.randperm(len(rows), generator=shuffle).to(rows.device)]
    steps = len(rows) // bs if cfg.drop_last else math.ceil(len(rows) / bs)
    masks = (None, None)
    if augment is not None:  # row j of the masks goes to the j-th sample of the epoch
        masks = draw_masks(len(order), tuple(cycles.x.shape[1:]), cfg.specaugment, augment)
    loss_sum = torch.zeros((), device=targets.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=targets.device)
    for i in tqdm(range(steps), desc=desc, file=sys.stderr, leave=False, mininterval=1.0):
        batch = slice(i * bs, (i + 1) * bs)
        idx = order[batch]
        time_mask, freq_mask = (m if m is None else m[batch] for m in masks)
        loss = step(bs, *cycles.batch(idx), targets[idx], time_mask, freq_mask)
        loss_sum += loss
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), i + 1, first_bad)
    return loss_sum / max(steps, 1), first_bad, steps


def make_optimizer(
    model: torch.nn.Module, weight_decay: float, device: torch.device
) -> tuple[torch.optim.Adam, torch.Tensor]:
    """Fused Adam (coupled weight decay) over the trainable parameters, and its learning rate: a float32
    tensor on the device, refilled in place, so a new rate neither recompiles nor re-captures anything.
    Fused, the step counts stay on the device too (the unfused CPU Adam reads them with ``.item()``);
    capturable on CUDA so the step may sit inside a CUDA graph."""
    lr = torch.zeros((), device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    cuda = device.type == "cuda"
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=cuda), lr


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(
    model: torch.nn.Module,
    data: RunData,
    cfg: Train,
    seed: int,
    device: torch.device,
    checkpoints: Checkpoints | None = None,
    epoch_hook: Callable[[int], None] | None = None,
    compile_mode: str = "off",
) -> RunResult:
    """Train ``model`` (already on ``device``) under the train.<arch> block ``cfg``; leaves it holding the
    selected checkpoint's weights (and its BatchNorm momenta scaled by ``average_as_lr_scale``)."""
    epochs, bs = cfg.epochs, cfg.batch_size
    n_steps = len(data.fit_rows) // bs if cfg.drop_last else len(data.fit_rows)
    if n_steps == 0:
        raise UserError(
            f"train.batch_size: {bs} is more than the {len(data.fit_rows)} training cycles (drop_last: true)"
        )
    if cfg.select == "val" and len(data.val_rows) == 0:
        raise UserError("train.select: 'val' needs validation rows (subset == val) in the cycle table")
    cuda = device.type == "cuda"
    eval_bs = 256 if cuda else 64
    fn = compiled(model, compile_mode)

    train_set, test_set = Cycles(data, data.train_rows, device), Cycles(data, data.test_rows, device)
    val_set = Cycles(data, data.val_rows, device) if len(data.val_rows) else None
    fit_pos = torch.from_numpy(np.searchsorted(data.train_rows, data.fit_rows)).to(device)
    test_labels, val_labels = data.labels[data.test_rows], data.labels[data.val_rows]
    weight = None
    if cfg.class_weighted and data.targets.hard:
        weight = torch.from_numpy(class_weights(data.labels[data.fit_rows])).to(device)

    lr_scale = average_as_lr_scale(model, cfg.ma_beta)
    optimizer, lr_now = make_optimizer(model, cfg.weight_decay, device)
    step = TrainStep(model, optimizer, weight, compile_mode)
    targets = torch.from_numpy(data.targets.for_epoch(1)).to(device)  # refilled in place every epoch

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None  # {"epoch", "state", "logits_test"} of the selected epoch so far
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:  # loading replaced the device tensor by the saved CPU copy
            group["lr"] = lr_now
        history, best = saved["history"], saved["best"]
        if best["state"] is None:  # the checkpoint's own epoch was the selected one
            best["state"] = _state_copy(model)
        torch.set_rng_state(saved["rng"])
        if cuda and saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        print(f"resuming after epoch {len(history)} from {checkpoints.path}", file=sys.stderr)

    for epoch in range(len(history) + 1, epochs + 1):
        lr = cosine_lr(cfg.lr, cfg.min_lr_ratio, epoch, epochs)
        lr_now.fill_(lr * lr_scale)
        targets.copy_(torch.from_numpy(data.targets.for_epoch(epoch)))
        augment = stream_generator(seed, epoch, AUGMENT, device) if cfg.specaugment else None
        shuffle = stream_generator(seed, epoch, SHUFFLE)
        loss, first_bad, steps = train_epoch(
            step, train_set, fit_pos, targets, cfg, shuffle, augment, desc=f"epoch {epoch}/{epochs}"
        )
        bad = int(first_bad)
        if bad >= 0 or not math.isfinite(float(loss)):
            raise UserError(
                f"training loss became NaN or infinite at epoch {epoch}, step {bad} of {steps} "
                "(lower train.lr, check the features for NaN/inf, or the target: raw_logits may diverge); "
                "nothing was written"
            )
        test_logits = predict(model, fn, test_set, eval_bs)
        test = evaluate(test_logits, test_labels)
        val = evaluate(predict(model, fn, val_set, eval_bs), val_labels) if val_set is not None else None
        if not math.isfinite(test["loss"]):
            raise UserError(
                f"test logits became NaN or infinite at epoch {epoch} (check the test features for NaN/inf)"
            )
        row = {"epoch": epoch, "lr": lr, "train_loss": float(loss), "test_loss": test["loss"]}
        row.update({f"test_{k}": test[k] for k in ("sp", "se", "score")})
        row.update({f"val_{k}": None if val is None else val[k] for k in ("sp", "se", "score")})
        history.append(row)
        if select_epochs(history, cfg.se_min)[cfg.select]["epoch"] == epoch:
            best = {"epoch": epoch, "state": _state_copy(model), "logits_test": test_logits.clone()}
        val_text = "" if val is None else f" | val Score {val['score']:.2f}"
        tqdm.write(
            f"epoch {epoch}/{epochs} lr {lr:.3g} loss {row['train_loss']:.4f} | test loss {test['loss']:.4f} "
            f"Sp {test['sp']:.2f} Se {test['se']:.2f} Score {test['score']:.2f}{val_text}",
            file=sys.stderr,
        )
        if checkpoints is not None and checkpoints.due():
            checkpoints.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    # the selected epoch's weights, unless they are this epoch's: "model" holds those
                    "best": best if best["epoch"] < epoch else {**best, "state": None},
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if cuda else None,
                }
            )
        if epoch_hook is not None:
            epoch_hook(epoch)

    model.load_state_dict(best["state"])
    logits_train = predict(model, fn, train_set, eval_bs)
    return RunResult(
        history=history,
        selection=select_epochs(history, cfg.se_min),
        logits_train=logits_train.cpu().numpy().astype(np.float32),
        logits_test=best["logits_test"].cpu().numpy().astype(np.float32),
    )

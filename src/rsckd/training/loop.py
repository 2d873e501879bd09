"""The training loop of one run, in one file: data on the device, the epoch loop, evaluation, selection.

The cycle table is sliced once into named sets (``slice_sets``): fit (trained on, with its targets), val,
test, and the train split whose logits the teacher ensemble reads. ``train`` then runs, per epoch
e = 1..E (reference-protocol section 5): set the cosine LR once, shuffle the fit cycles with a generator
seeded by (seed, e), build that epoch's targets (and SpecAugment masks), take the Adam (coupled weight decay)
steps, with the reference's per-step averaging as a learning-rate and BatchNorm-momentum scale
(``protocol.average_as_lr_scale``), then evaluate the whole test split (and the val subset) and record one
history row. The checkpoint kept for the run's logits is the one ``train.select`` picks; since a selection
over a growing history only ever moves to the newest epoch, its weights are copied only when it does. The
full state goes to a resume checkpoint every ``resume.checkpoint_minutes``.

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
from collections.abc import Callable, Iterator
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
class CycleSet:
    """One named set of the run's cycles, sliced from the cycle table once."""

    features: np.ndarray  # (n, T, F) float32
    labels: np.ndarray  # (n,) int64 class of each cycle
    prompt_index: np.ndarray | None = None  # (n,) each cycle's prompt in ``RunData.tokens`` (text models)
    targets: Targets | None = None  # the fit set's training targets

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RunData:
    """The cycles of one run as named sets: the loop indexes none of them by cycle-table row."""

    fit: CycleSet  # subset == train: trained on, with its targets
    val: CycleSet  # subset == val (may be empty): for the val selection
    test: CycleSet  # split == test: evaluated every epoch
    train: CycleSet  # split == train (fit and val): its logits go to the teacher ensemble
    tokens: tuple[torch.Tensor, torch.Tensor] | None = None  # (input_ids, attention_mask) of unique prompts


def slice_sets(
    features: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    subset: np.ndarray,
    targets: Targets,
    prompt_index: np.ndarray | None = None,
    tokens: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> RunData:
    """The run's sets from the cycle table's columns (``features`` may be a memory map); ``targets`` are
    those of the train split, in table order."""

    def cycle_set(rows: np.ndarray, targets: Targets | None = None) -> CycleSet:
        prompts = None if prompt_index is None else prompt_index[rows]
        return CycleSet(
            np.ascontiguousarray(features[rows], dtype=np.float32), labels[rows], prompts, targets
        )

    train_rows = np.flatnonzero(split == "train")
    fit_in_train = np.flatnonzero(subset[train_rows] == "train")
    return RunData(
        fit=cycle_set(train_rows[fit_in_train], targets.take(fit_in_train)),
        val=cycle_set(np.flatnonzero(subset == "val")),
        test=cycle_set(np.flatnonzero(split == "test")),
        train=cycle_set(train_rows),
        tokens=tokens,
    )


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


class DeviceCycles:
    """A set's features (and prompt tokens) on the training device, batched by position in the set."""

    def __init__(
        self, cycles: CycleSet, tokens: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device
    ) -> None:
        self.n = len(cycles)
        self.x = torch.from_numpy(cycles.features).to(device)
        self.prompt = None
        self.tokens = tokens
        if cycles.prompt_index is not None:
            self.prompt = torch.from_numpy(cycles.prompt_index.astype(np.int64)).to(device)

    def batch(
        self, idx: torch.Tensor | slice
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.prompt is None:
            return self.x[idx], None, None
        p = self.prompt[idx]
        return self.x[idx], self.tokens[0][p], self.tokens[1][p]

    def embedded_batches(
        self, model: torch.nn.Module, batches: torch.Tensor
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(features, prompt embeddings) of each row batch of ``batches``. A text model in eval mode encodes
        each distinct prompt once, for all batches, with no wait for the device; a training step encodes
        each row's prompt (each row draws its own dropout)."""
        table = None
        if self.prompt is not None:
            with autocast(self.x):
                table = model.embed_prompts(*self.tokens)
        for idx in batches:
            yield self.x[idx], None if table is None else table[self.prompt[idx]]


def autocast(x: torch.Tensor) -> torch.autocast:
    """bfloat16 autocast on a GPU, nothing on a CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda)


def forward(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    ids: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    prompts: torch.Tensor | None = None,
):
    with autocast(x):
        return fn(x, ids, mask, prompts).float()


def compiled(fn: Callable[..., torch.Tensor], mode: str) -> Callable[..., torch.Tensor]:
    """``fn`` as ``runtime.compile`` asks: off runs it as it is; default compiles it (inductor);
    reduce-overhead also replays it as CUDA graphs on a GPU. Shapes stay static (``dynamic=False``): each
    batch shape is its own graph, never a dynamic-shape one that CUDA graphs could not capture. Only the
    CUDA-graph mode marks its steps: the marker imports the compiler (1.8 s per run on a CPU)."""
    if mode == "off":
        return fn
    graphs = torch.compile(fn, mode=mode, dynamic=False)
    if mode != "reduce-overhead":
        return graphs

    def replay(*args: torch.Tensor | None) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs may be overwritten now
        return graphs(*args)

    return replay


def eval_batch_size(device: torch.device) -> int:
    """Rows per evaluation batch: 256 on a GPU; 64 on a CPU, where larger batches run no faster (tiny BTS
    1,499 rows/s at 64 against 1,481 at 256, tiny CNN6 705 against 480)."""
    return 256 if device.type == "cuda" else 64


@torch.no_grad()
def predict(
    model: torch.nn.Module, fn: Callable[..., torch.Tensor], cycles: DeviceCycles, batch_size: int
) -> torch.Tensor:
    """(n, 4) float32 logits on the device, in row order.

    Every batch has ``batch_size`` rows (the last is padded by repeating the last row, whose extra logits
    are dropped), so a compiled ``fn`` sees one shape. In eval mode rows never interact."""
    model.eval()
    device = cycles.x.device
    out = torch.empty(cycles.n, 4, device=device)
    batches = torch.arange(math.ceil(cycles.n / batch_size) * batch_size, device=device)
    batches = batches.clamp(max=cycles.n - 1).view(-1, batch_size)
    for i, (x, prompts) in enumerate(cycles.embedded_batches(model, batches)):
        start = i * batch_size
        out[start : start + batch_size] = forward(fn, x, prompts=prompts)[: cycles.n - start]
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
        def batch_loss(x, ids, mask, target, time_mask, freq_mask, row_weight=None):
            if time_mask is not None:
                x = apply_masks(x, time_mask, freq_mask)
            return target_loss(forward(model, x, ids, mask), target, weight, row_weight)

        self.model, self.optimizer = model, optimizer
        self.eager, self.compiled = batch_loss, compiled(batch_loss, compile_mode)

    def __call__(self, batch_size: int, *inputs: torch.Tensor | None) -> torch.Tensor:
        """The batch's loss (detached); a batch shorter than ``batch_size`` runs uncompiled."""
        batch_loss = self.compiled if len(inputs[0]) == batch_size else self.eager
        loss = batch_loss(*inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def train_steps(
    step: TrainStep,
    cycles: DeviceCycles,
    order: torch.Tensor,
    targets: torch.Tensor,
    masks: tuple[torch.Tensor | None, torch.Tensor | None],
    batch_size: int,
    steps: int,
    desc: str = "train",
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's optimiser steps: step i trains on the cycles at ``order[b]`` (positions in ``cycles``,
    ``targets`` and the optional per-row loss weights of target rows) with rows ``b`` of the SpecAugment
    ``masks``, b = i * batch_size : (i + 1) * batch_size.

    Returns the mean loss and the 1-based index of the first step with a non-finite loss (or -1), as device
    tensors: no step waits for the device.
    """
    step.model.train()
    loss_sum = torch.zeros((), device=targets.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=targets.device)
    for i in tqdm(range(steps), desc=desc, file=sys.stderr, leave=False, mininterval=1.0):
        batch = slice(i * batch_size, (i + 1) * batch_size)
        idx = order[batch]
        time_mask, freq_mask = (m if m is None else m[batch] for m in masks)
        row_weight = None if row_weights is None else row_weights[idx]
        loss = step(batch_size, *cycles.batch(idx), targets[idx], time_mask, freq_mask, row_weight)
        loss_sum += loss
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), i + 1, first_bad)
    return loss_sum / steps, first_bad


def loss_weights(
    class_weighted: bool, fit: CycleSet, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(class weights, per-row weights) of the loss: class weights for hard targets; for target rows, each
    fit row's labelled class weight (``target_loss``); neither without ``class_weighted``."""
    if not class_weighted:
        return None, None
    weight = torch.from_numpy(class_weights(fit.labels)).to(device)
    if fit.targets.hard:
        return weight, None
    return None, weight[torch.from_numpy(fit.labels).to(device)]


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


def check_run_data(data: RunData, cfg: Train, key: str) -> None:
    """What the train.<arch> block ``cfg`` (params key ``key``) needs of the cycle table."""
    if len(data.fit) == 0:
        raise UserError("the cycle table has no training cycles (subset == train)")
    if cfg.drop_last and len(data.fit) < cfg.batch_size:
        raise UserError(
            f"{key}.batch_size: {cfg.batch_size} is more than the {len(data.fit)} training cycles "
            f"({key}.drop_last: true)"
        )
    if cfg.select == "val" and len(data.val) == 0:
        raise UserError(f"{key}.select: 'val' needs validation rows (subset == val) in the cycle table")


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
    """Train ``model`` (already on ``device``) under the train.<arch> block ``cfg`` (checked against ``data``
    by ``check_run_data``); leaves it holding the selected checkpoint's weights (and its BatchNorm momenta
    scaled by ``average_as_lr_scale``)."""
    epochs, bs = cfg.epochs, cfg.batch_size
    steps = len(data.fit) // bs if cfg.drop_last else math.ceil(len(data.fit) / bs)
    assert steps > 0, "check_run_data rejects a cycle table without a batch of training cycles"
    cuda = device.type == "cuda"
    eval_bs = eval_batch_size(device)
    fit, test = DeviceCycles(data.fit, data.tokens, device), DeviceCycles(data.test, data.tokens, device)
    val = DeviceCycles(data.val, data.tokens, device) if len(data.val) else None

    weight, row_weights = loss_weights(cfg.class_weighted, data.fit, device)
    lr_scale = average_as_lr_scale(model, cfg.ma_beta)  # the reference's step averaging, as Adam's lr
    optimizer, lr_now = make_optimizer(model, cfg.weight_decay, device)
    step = TrainStep(model, optimizer, weight, compile_mode)
    predict_fn = compiled(model, compile_mode)
    targets = torch.from_numpy(data.fit.targets.for_epoch(1)).to(device)  # refilled in place every epoch

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
        order = torch.randperm(fit.n, generator=stream_generator(seed, epoch, SHUFFLE)).to(device)
        targets.copy_(torch.from_numpy(data.fit.targets.for_epoch(epoch)))
        masks = (None, None)
        if cfg.specaugment:  # row j of the masks goes to the epoch's j-th sample
            augment = stream_generator(seed, epoch, AUGMENT, device)
            masks = draw_masks(fit.n, tuple(fit.x.shape[1:]), cfg.specaugment, augment)
        loss, first_bad = train_steps(
            step, fit, order, targets, masks, bs, steps, f"epoch {epoch}/{epochs}", row_weights
        )

        train_loss, bad = float(loss), int(first_bad)  # the epoch's first wait for the device
        if bad >= 0 or not math.isfinite(train_loss):
            raise UserError(
                f"training loss became NaN or infinite at epoch {epoch}, step {bad} of {steps} "
                "(lower train.lr, check the features for NaN/inf, or the target: raw_logits may diverge); "
                "nothing was written"
            )
        test_logits = predict(model, predict_fn, test, eval_bs)
        on_test = evaluate(test_logits, data.test.labels)
        on_val = None if val is None else evaluate(predict(model, predict_fn, val, eval_bs), data.val.labels)
        if not math.isfinite(on_test["loss"]):
            raise UserError(
                f"test logits became NaN or infinite at epoch {epoch} (check the test features for NaN/inf)"
            )
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "test_loss": on_test["loss"]}
        row.update({f"test_{k}": on_test[k] for k in ("sp", "se", "score")})
        row.update({f"val_{k}": None if on_val is None else on_val[k] for k in ("sp", "se", "score")})
        history.append(row)
        val_text = "" if on_val is None else f" | val Score {on_val['score']:.2f}"
        tqdm.write(
            f"epoch {epoch}/{epochs} lr {lr:.3g} loss {train_loss:.4f} | test loss {on_test['loss']:.4f} "
            f"Sp {on_test['sp']:.2f} Se {on_test['se']:.2f} Score {on_test['score']:.2f}{val_text}",
            file=sys.stderr,
        )

        if select_epochs(history, cfg.se_min)[cfg.select]["epoch"] == epoch:
            best = {"epoch": epoch, "state": _state_copy(model), "logits_test": test_logits.clone()}
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
    del fit  # the train split's features take its place on the device
    logits_train = predict(model, predict_fn, DeviceCycles(data.train, data.tokens, device), eval_bs)
    return RunResult(
        history=history,
        selection=select_epochs(history, cfg.se_min),
        logits_train=logits_train.cpu().numpy().astype(np.float32),
        logits_test=best["logits_test"].cpu().numpy().astype(np.float32),
    )

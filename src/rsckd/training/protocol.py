"""The reference training protocol (reference-protocol section 5): LR schedule, step averaging, selection."""

from __future__ import annotations

import math
from typing import Any

import torch


def cosine_lr(lr: float, min_lr_ratio: float, epoch: int, epochs: int) -> float:
    """LR of epoch e (1-based, set once per epoch): eta_min + (lr - eta_min) * (1 + cos(pi e / E)) / 2."""
    eta_min = lr * min_lr_ratio
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


class StepAverage:
    """The reference ``ma_update``: after every optimizer step, state <- beta * old + (1 - beta) * new.

    "old" is the model state at the start of the step (before the forward pass, so BatchNorm running
    statistics are averaged too). The reference deep-copies the whole state_dict every step; here one
    persistent buffer per floating tensor is refreshed in place with ``_foreach_copy_`` and combined with
    the same arithmetic (two products, one sum). Integer buffers (``num_batches_tracked``) are put back to
    their old value, which is what the reference's float average truncated back into an integer gives.
    """

    def __init__(self, model: torch.nn.Module, beta: float) -> None:
        self.beta = beta
        tensors = [t for t in (*model.parameters(), *model.buffers())]
        self.floats = [t for t in tensors if t.is_floating_point()]
        self.ints = [t for t in tensors if not t.is_floating_point()]
        self.old_floats = [t.detach().clone() for t in self.floats]
        self.old_ints = [t.detach().clone() for t in self.ints]

    @torch.no_grad()
    def snapshot(self) -> None:
        """Remember the state before the step (call before the forward pass)."""
        if self.floats:
            torch._foreach_copy_(self.old_floats, self.floats)
        if self.ints:
            torch._foreach_copy_(self.old_ints, self.ints)

    @torch.no_grad()
    def apply(self) -> None:
        """Average the stepped state with the snapshot (call after ``optimizer.step()``)."""
        if self.floats:
            torch._foreach_mul_(self.old_floats, self.beta)
            torch._foreach_mul_(self.floats, 1 - self.beta)
            torch._foreach_add_(self.floats, self.old_floats)
        if self.ints:
            torch._foreach_copy_(self.ints, self.old_ints)


def _entry(row: dict[str, Any], prefix: str = "test") -> dict[str, Any]:
    return {
        "epoch": row["epoch"],
        "sp": row[f"{prefix}_sp"],
        "se": row[f"{prefix}_se"],
        "score": row[f"{prefix}_score"],
        "loss": row[f"{prefix}_loss"],
    }


def _best(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Row with the highest ``key``; ties go to the earliest epoch."""
    return max(rows, key=lambda r: (r[key], -r["epoch"]))


def select_epochs(history: list[dict[str, Any]], se_min: float) -> dict[str, Any]:
    """The three results of a run from its per-epoch history.

    literature: best test Score among epochs with test Se > se_min (the reference's rule); when no epoch
    qualifies, the best test Score epoch with ``"qualified": false`` (the reference crashes there).
    last: the final epoch. val: test metrics at the best val Score epoch plus ``val_score``, or None
    when the run has no validation subset.
    """
    qualified = [r for r in history if r["test_se"] > se_min]
    literature = {**_entry(_best(qualified or history, "test_score")), "qualified": bool(qualified)}
    val = None
    if history[0]["val_score"] is not None:
        best = _best(history, "val_score")
        val = {**_entry(best), "val_score": best["val_score"]}
    return {"literature": literature, "last": _entry(history[-1]), "val": val}

"""The reference training protocol (reference-protocol section 5): LR schedule, step averaging, selection."""

from __future__ import annotations

import math
from typing import Any

import torch


def cosine_lr(lr: float, min_lr_ratio: float, epoch: int, epochs: int) -> float:
    """LR of epoch e (1-based, set once per epoch): eta_min + (lr - eta_min) * (1 + cos(pi e / E)) / 2."""
    eta_min = lr * min_lr_ratio
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def average_as_lr_scale(model: torch.nn.Module, beta: float) -> float:
    """The reference's per-step averaging (``ma_update``) as optimiser settings: scales every BatchNorm
    momentum of ``model`` by (1 - beta) in place and returns (1 - beta), the factor for Adam's learning rate.

    After every optimiser step the reference sets theta <- theta + (1 - beta) * (adam_step(theta) - theta)
    over the model's state (parameters and buffers; Adam's own state is not averaged). Adam with coupled
    weight decay moves a parameter by adam_step(theta) - theta = -lr * m_hat / (sqrt(v_hat) + eps), where
    m_hat, v_hat are the bias-corrected moments of the gradients g = dL/dtheta + wd * theta taken at the
    parameters the forward pass used: they depend on neither lr nor the post-step parameters. The
    displacement is linear in lr, so

        theta + (1 - beta) * (adam_step(theta) - theta)
            = theta - (1 - beta) * lr * m_hat / (sqrt(v_hat) + eps)

    is exactly Adam's step at learning rate (1 - beta) * lr with the same moments; by induction over the steps
    both runs see the same parameters, dropout draws, gradients and moments. (The factor goes on lr, not on
    the loss: Adam divides by the gradient's own scale, so it would cancel up to eps.) A BatchNorm running
    statistic with batch statistic s (which does not read the running one) and momentum mu moves to
    (1 - mu) * old + mu * s, so

        old + (1 - beta) * (new - old) = (1 - (1 - beta) * mu) * old + (1 - beta) * mu * s,

    the update at momentum (1 - beta) * mu; buffers a step leaves alone average to themselves. Only
    ``num_batches_tracked`` differs (the reference's average truncates it back to its start; here it counts
    the steps), and a BatchNorm with a momentum never reads it. The two agree up to floating-point rounding
    (tests/test_protocol.py runs both on tiny BTS and CNN6 in float64), and no state is copied or averaged
    per step.
    """
    scale = 1.0 - beta
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if module.momentum is None:
                raise ValueError(
                    f"{type(module).__name__} with a cumulative average has no momentum to scale"
                )
            module.momentum *= scale
    return scale


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    """A history row's test results (every selection reports the checkpoint's test numbers)."""
    return {
        "epoch": row["epoch"],
        "sp": row["test_sp"],
        "se": row["test_se"],
        "score": row["test_score"],
        "loss": row["test_loss"],
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

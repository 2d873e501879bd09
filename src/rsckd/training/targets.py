"""Training targets: hard labels, teacher soft labels (paper section 3.3) and the Table 3 variants.

A soft-label file holds the logits of teachers 1..k on the train rows (split == train, table order),
shape (k, N_train, 4). Targets are drawn for all train rows; ``Targets.take`` keeps the rows trained on.

Target kinds (per epoch ``e``, run seed ``s``; "re-drawn" uses ``numpy.random.default_rng([s, e])`` so a
resumed run draws the same values):
  hard               class indices; optional class weights w_c = (1/p_c) / sum_j (1/p_j), which weight
                     every target kind's rows by their labelled class (``target_loss``).
  mean               softmax of the mean logits of teachers 1..k (eq. 1); fixed.
  random             per sample one teacher index i ~ U{1..k}, re-drawn every epoch; softmax(z_i) (eq. 2).
  noise_var          one-hot + N(0, ablation.noise_var) per sample and class, re-drawn every epoch.
  noise_teacher_var  one-hot + N(0, v_c) per sample and class, re-drawn every epoch, where
                     v_c = mean over train rows n of (p_mean[n, c] - onehot[n, c])**2: the per-class
                     variance of the mean-teacher soft labels around the one-hot labels.
  raw_logits         the mean teacher logits themselves, no softmax (the "fails to converge" ablation).
Soft targets ignore the hard labels but for class weights; the loss is sum_c -t_c log softmax(z)_c, averaged
over the batch (weighted by each row's labelled class when the run is class-weighted).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rsckd.config import TARGETS
from rsckd.errors import UserError, load_npy
from rsckd.evaluation.icbhi_score import N_CLASSES

NEEDS_SOFT_FILE = ("mean", "random", "noise_teacher_var", "raw_logits")


def load_soft_logits(path: str | Path, n_train: int) -> np.ndarray:
    """Read a (k, N_train, 4) teacher-logit file and check it matches the cycle table's train rows (k = 0: the
    file of an ablation variant that reads no teacher)."""
    path = Path(path)
    soft = load_npy(path, "soft-label file", "`rsckd ensemble`")
    if soft.ndim != 3 or soft.shape[2] != N_CLASSES:
        raise UserError(
            f"{path}: expected teacher logits of shape (k, N_train, {N_CLASSES}), got {soft.shape}"
        )
    if soft.shape[1] != n_train:
        raise UserError(
            f"{path}: has {soft.shape[1]} rows but the cycle table has {n_train} train rows "
            "(soft labels from another cycle table? re-run `rsckd ensemble`)"
        )
    if soft.size and not np.isfinite(soft).all():
        raise UserError(f"{path}: contains NaN or infinite logits")
    return soft.astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax over the last axis in float64, returned as float32."""
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(N_CLASSES, dtype=np.float32)[labels]


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Reference weighted CE: w_c = (1/p_c) / sum_j (1/p_j); an absent class gets weight 0 (never used)."""
    counts = np.bincount(labels, minlength=N_CLASSES).astype(np.float64)
    inv = np.divide(counts.sum(), counts, out=np.zeros(N_CLASSES), where=counts > 0)
    return (inv / inv.sum()).astype(np.float32)


class Targets:
    """The training targets of one run for every train row, per epoch."""

    def __init__(
        self,
        kind: str,
        labels: np.ndarray,
        soft: np.ndarray | None = None,
        seed: int = 0,
        noise_var: float = 0.1,
    ) -> None:
        if kind not in TARGETS:
            raise UserError(f"--target: expected one of {', '.join(TARGETS)}, got {kind!r}")
        if (kind in NEEDS_SOFT_FILE) != (soft is not None):
            need = (
                "needs a soft-label file (--soft)" if kind in NEEDS_SOFT_FILE else "takes no soft-label file"
            )
            raise UserError(f"--target {kind} {need}")
        if soft is not None and len(soft) == 0:
            raise UserError(f"--target {kind}: its soft-label file holds no teacher logits")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
            raise UserError(f"labels must be in 0..{N_CLASSES - 1}")
        self.kind, self.labels, self.soft, self.seed = kind, labels, soft, seed
        self.k = None if soft is None else int(soft.shape[0])
        self.fixed: np.ndarray | None = None
        self.rows: np.ndarray | None = None  # the train rows ``for_epoch`` returns (None: all)
        self.noise_std: np.ndarray | float = 0.0
        if kind == "mean":
            self.fixed = softmax(soft.mean(axis=0))
        elif kind == "raw_logits":
            self.fixed = soft.mean(axis=0).astype(np.float32)
        elif kind == "noise_var":
            self.noise_std = float(np.sqrt(noise_var))
        elif kind == "noise_teacher_var":
            variance = ((softmax(soft.mean(axis=0)) - one_hot(labels)).astype(np.float64) ** 2).mean(axis=0)
            self.noise_std = np.sqrt(variance)

    @property
    def hard(self) -> bool:
        return self.kind == "hard"

    def take(self, rows: np.ndarray) -> Targets:
        """These targets at some train rows only (positions in the train split). Re-drawn targets are
        still drawn for every train row, so a row's target does not depend on which rows are taken."""
        taken = copy.copy(self)
        taken.rows = rows
        return taken

    def for_epoch(self, epoch: int) -> np.ndarray:
        """(n,) int64 class indices for hard labels, else (n, 4) float32 target distributions, of the n
        rows taken (all train rows unless ``take`` chose some)."""
        targets = self._every_train_row(epoch)
        return targets if self.rows is None else targets[self.rows]

    def entropy(self) -> float | None:
        """Mean entropy (nats) of the first epoch's targets over the rows taken: 0 for hard labels, None
        where the targets are no distributions (noised one-hot, raw logits). Recorded with each run, so the
        end-to-end checks see what a run trained on, not only what its soft-label file held."""
        if self.hard:
            return 0.0
        if self.kind not in ("mean", "random"):
            return None
        p = self.for_epoch(1).astype(np.float64)
        return float(-(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1).mean())

    def _every_train_row(self, epoch: int) -> np.ndarray:
        if self.hard:
            return self.labels
        if self.fixed is not None:
            return self.fixed
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.labels)
        if self.kind == "random":
            teacher = rng.integers(0, self.k, size=n)
            return softmax(self.soft[teacher, np.arange(n)])
        noise = rng.standard_normal((n, N_CLASSES)) * self.noise_std
        return (one_hot(self.labels) + noise).astype(np.float32)


def target_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    row_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of float logits against class indices (``weight``: optional class weights) or target rows
    (``row_weight``: optional weight of each row, its labelled class's weight).

    A class-weighted run weights each cycle by its labelled class whatever it is trained toward, normalised by
    the batch's weights as the weighted cross-entropy of class indices is: on one-hot rows both give the same
    loss, so hard and soft targets differ in the target alone.
    """
    if target.dtype == torch.long:
        return F.cross_entropy(logits, target, weight=weight)
    per_row = -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if row_weight is None:
        return per_row.mean()
    return (row_weight * per_row).sum() / row_weight.sum()

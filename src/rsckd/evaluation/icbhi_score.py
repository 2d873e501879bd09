"""The official ICBHI 2017 challenge metric as the reference implementations compute it.

Specificity is the share of normal cycles predicted normal; sensitivity counts an abnormal cycle as found only
when its EXACT class (crackle, wheeze or both) is predicted, so a crackle predicted as "both" is a miss
(reference-protocol section 6). Every paper number is this Score = (Sp + Se) / 2, in percent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_CLASSES = 4  # 0 normal, 1 crackle, 2 wheeze, 3 both
EPS = 1e-10  # the references add it to the denominators, so an absent class scores 0 instead of failing


def _labels(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"{name}: expected a 1-D integer array of classes, got shape {array.shape} {array.dtype}"
        )
    if array.size and (array.min() < 0 or array.max() >= N_CLASSES):
        raise ValueError(f"{name}: classes must be in 0..{N_CLASSES - 1}")
    return array.astype(np.int64)


def icbhi_scores(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Sp, Se, Score (percent), the 4x4 confusion matrix (rows true, columns predicted) and class counts."""
    true, pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length ({true.size} vs {pred.size})")
    confusion = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    counts, hits = confusion.sum(axis=1), np.diag(confusion)
    sp = hits[0] / (counts[0] + EPS) * 100
    se = hits[1:].sum() / (counts[1:].sum() + EPS) * 100
    return {
        "sp": float(sp),
        "se": float(se),
        "score": float((sp + se) / 2),
        "confusion": confusion.tolist(),
        "counts": counts.tolist(),
    }


def scores_from_logits(y_true: Any, logits: Any) -> dict[str, Any]:
    """:func:`icbhi_scores` of the argmax prediction (first maximum on ties) of [N, 4] logits."""
    array = np.asarray(logits)
    if array.ndim != 2 or array.shape[1] != N_CLASSES:
        raise ValueError(f"logits: expected shape (N, {N_CLASSES}), got {array.shape}")
    return icbhi_scores(y_true, array.argmax(axis=1))

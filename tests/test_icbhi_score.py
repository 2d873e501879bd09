"""The ICBHI metric on hand-made cases whose Sp / Se / Score are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsckd.evaluation.icbhi_score import icbhi_scores, scores_from_logits

TRUE = [0, 0, 0, 0, 1, 1, 2, 3]


def test_all_normal_predictor():
    s = icbhi_scores(TRUE, [0] * 8)
    assert (s["sp"], s["se"], s["score"]) == pytest.approx((100.0, 0.0, 50.0))
    assert s["counts"] == [4, 2, 1, 1]
    assert s["confusion"][1] == [2, 0, 0, 0]


def test_exact_class_match_is_required():
    # crackle predicted as both, both predicted as wheeze: misses; one crackle + the wheeze hit
    s = icbhi_scores(TRUE, [0, 0, 1, 0, 3, 1, 2, 2])
    assert s["sp"] == pytest.approx(75.0)
    assert s["se"] == pytest.approx(50.0)
    assert s["score"] == pytest.approx(62.5)
    assert s["confusion"] == [[3, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0]]


def test_perfect_and_absent_classes():
    s = icbhi_scores(TRUE, TRUE)
    assert (s["sp"], s["se"], s["score"]) == pytest.approx((100.0, 100.0, 100.0))
    only_normal = icbhi_scores([0, 0], [0, 1])  # no abnormal cycles: Se is 0, not a division error
    assert (only_normal["sp"], only_normal["se"]) == pytest.approx((50.0, 0.0))
    empty = icbhi_scores([], [])
    assert empty["score"] == 0.0 and empty["counts"] == [0, 0, 0, 0]


def test_scores_from_logits_uses_argmax():
    logits = np.full((8, 4), -1.0, dtype=np.float32)
    logits[np.arange(8), [0, 0, 1, 0, 3, 1, 2, 2]] = 2.0
    logits[0] = 5.0  # tie: the first maximum (normal) wins, as torch/np argmax
    assert scores_from_logits(np.array(TRUE), logits) == icbhi_scores(TRUE, [0, 0, 1, 0, 3, 1, 2, 2])
    assert scores_from_logits(torch.tensor(TRUE), torch.from_numpy(logits))["score"] == pytest.approx(62.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="length"):
        icbhi_scores([0, 1], [0])
    with pytest.raises(ValueError, match="0..3"):
        icbhi_scores([0, 4], [0, 1])
    with pytest.raises(ValueError, match="integer"):
        icbhi_scores([0.5], [0])
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        scores_from_logits([0], np.zeros((1, 3)))

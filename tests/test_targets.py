"""Hard and soft training targets (paper section 3.3, Table 3 variants) and the loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsckd.errors import UserError
from rsckd.training.targets import (
    Targets,
    class_weights,
    load_soft_logits,
    one_hot,
    softmax,
    target_loss,
)


@pytest.fixture
def soft() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 40, 4)).astype(np.float32)


@pytest.fixture
def labels() -> np.ndarray:
    return np.arange(40) % 4


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[0.0, 0.0, 0.0, 0.0], [1000.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p, [[0.25] * 4, [1, 0, 0, 0]], atol=1e-7)
    assert p.dtype == np.float32


def test_hard_targets_are_the_labels(labels):
    t = Targets("hard", labels)
    assert t.hard and t.k is None
    np.testing.assert_array_equal(t.for_epoch(1), labels)


def test_class_weights_match_reference_values():
    labels = np.repeat(np.arange(4), [2063, 1215, 501, 363])
    np.testing.assert_allclose(class_weights(labels), [0.0800, 0.1358, 0.3295, 0.4547], atol=1e-4)
    np.testing.assert_allclose(class_weights(np.array([0, 0, 1])), [1 / 3, 2 / 3, 0, 0], atol=1e-6)


def test_mean_teacher_is_softmax_of_mean_logits(soft, labels):
    t = Targets("mean", labels, soft)
    assert t.k == 3
    np.testing.assert_allclose(t.for_epoch(1), softmax(soft.mean(axis=0)), atol=1e-7)
    np.testing.assert_array_equal(t.for_epoch(1), t.for_epoch(5))


def test_recorded_entropy_is_that_of_the_first_epochs_targets_on_the_rows_taken(soft, labels):
    rows = np.arange(0, 40, 3)
    p = softmax(soft.mean(axis=0))[rows].astype(np.float64)
    expected = -(p * np.log(p)).sum(axis=1).mean()
    assert Targets("mean", labels, soft).take(rows).entropy() == pytest.approx(expected, rel=1e-6)
    assert 0 < expected < np.log(4)
    random = Targets("random", labels, soft, seed=7)
    q = random.for_epoch(1).astype(np.float64)
    assert random.entropy() == pytest.approx(-(q * np.log(q)).sum(axis=1).mean(), rel=1e-6)
    assert Targets("hard", labels).entropy() == 0.0
    assert Targets("noise_var", labels).entropy() is None  # one-hot plus noise is no distribution
    assert Targets("raw_logits", labels, soft).entropy() is None


def test_random_teacher_redrawn_every_epoch_and_reproducible(soft, labels):
    t = Targets("random", labels, soft, seed=7)
    e1, e2 = t.for_epoch(1), t.for_epoch(2)
    per_teacher = softmax(soft)  # (k, n, 4)
    for e in (e1, e2):  # every row is exactly one teacher's softmax
        match = np.isclose(per_teacher, e[None], atol=1e-7).all(axis=2)
        assert match.any(axis=0).all()
    assert not np.array_equal(e1, e2)
    np.testing.assert_array_equal(Targets("random", labels, soft, seed=7).for_epoch(2), e2)
    assert not np.array_equal(Targets("random", labels, soft, seed=8).for_epoch(2), e2)


@pytest.mark.parametrize("kind", ["hard", "random", "noise_var"])
def test_taken_rows_are_those_of_the_draw_over_every_train_row(kind, soft, labels):
    """The fit rows' targets do not depend on which train rows are fit (val rows still take their draw)."""
    t = Targets(kind, labels, soft if kind == "random" else None, seed=3)
    rows = np.arange(0, 40, 3)
    for epoch in (1, 2):
        np.testing.assert_array_equal(t.take(rows).for_epoch(epoch), t.for_epoch(epoch)[rows])
    assert t.rows is None


def test_noise_var_has_the_requested_variance(labels):
    big = np.arange(20000) % 4
    t = Targets("noise_var", big, noise_var=0.1, seed=1)
    noise = t.for_epoch(1) - one_hot(big)
    assert abs(noise.var() - 0.1) < 0.005 and abs(noise.mean()) < 0.01
    assert not np.array_equal(t.for_epoch(1), t.for_epoch(2))
    np.testing.assert_array_equal(
        t.for_epoch(3), Targets("noise_var", big, noise_var=0.1, seed=1).for_epoch(3)
    )


def test_noise_teacher_var_uses_per_class_variance_of_mean_teacher(soft, labels):
    t = Targets("noise_teacher_var", labels, soft, seed=1)
    expected = ((softmax(soft.mean(axis=0)) - one_hot(labels)).astype(np.float64) ** 2).mean(axis=0)
    np.testing.assert_allclose(t.noise_std**2, expected)
    big_soft = np.repeat(soft, 500, axis=1)
    big = Targets("noise_teacher_var", np.tile(labels, 500), big_soft, seed=1)
    noise = big.for_epoch(1) - one_hot(np.tile(labels, 500))
    np.testing.assert_allclose(noise.var(axis=0), big.noise_std**2, rtol=0.1)
    assert not np.array_equal(t.for_epoch(1), t.for_epoch(2))


def test_raw_logits_are_the_mean_logits(soft, labels):
    np.testing.assert_allclose(Targets("raw_logits", labels, soft).for_epoch(1), soft.mean(axis=0), atol=1e-7)


def test_soft_file_presence_is_checked(soft, labels):
    with pytest.raises(UserError, match="needs a soft-label file"):
        Targets("mean", labels)
    with pytest.raises(UserError, match="takes no soft-label file"):
        Targets("hard", labels, soft)


def test_load_soft_logits_checks_rows(tmp_path, soft):
    path = tmp_path / "k3.npy"
    np.save(path, soft)
    assert load_soft_logits(path, 40).shape == (3, 40, 4)
    with pytest.raises(UserError, match=r"k3\.npy.*40 rows.*41 train rows"):
        load_soft_logits(path, 41)
    np.save(path, soft[..., :3])
    with pytest.raises(UserError, match="shape"):
        load_soft_logits(path, 40)
    with pytest.raises(UserError, match="not found"):
        load_soft_logits(tmp_path / "missing.npy", 40)


def test_loss_hard_and_soft():
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    torch.testing.assert_close(target_loss(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(target_loss(logits, y, w), F.cross_entropy(logits, y, weight=w))
    onehot = F.one_hot(y, 4).float()
    torch.testing.assert_close(target_loss(logits, onehot), F.cross_entropy(logits, y))
    p = torch.softmax(torch.randn(6, 4), dim=1)
    torch.testing.assert_close(target_loss(logits, p), F.cross_entropy(logits, p))


def test_class_weights_weight_every_target_kind_by_the_labelled_class():
    """One-hot rows weighted by their class give the class-weighted cross-entropy of the labels, so a
    class-weighted soft-label run differs from its hard-label baseline in the targets alone."""
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 0])
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    onehot = F.one_hot(y, 4).float()
    weighted = F.cross_entropy(logits, y, weight=w)
    torch.testing.assert_close(target_loss(logits, onehot, row_weight=w[y]), weighted)
    assert not torch.isclose(target_loss(logits, onehot), weighted)
    p = torch.softmax(torch.randn(6, 4), dim=1)
    per_row = -(p * F.log_softmax(logits, dim=1)).sum(dim=1)
    torch.testing.assert_close(target_loss(logits, p, row_weight=w[y]), (w[y] * per_row).sum() / w[y].sum())

"""Reference protocol pieces: cosine LR, in-place step averaging, epoch selection, SpecAugment."""

import copy
import math

import pytest
import torch

from rsckd.training.protocol import StepAverage, cosine_lr, select_epochs
from rsckd.training.specaugment import spec_augment


def test_cosine_lr_reference_values():
    assert cosine_lr(5e-5, 1e-3, 1, 50) == pytest.approx(4.995e-5, rel=1e-3)
    assert cosine_lr(5e-5, 1e-3, 50, 50) == pytest.approx(5e-8)
    assert cosine_lr(1.0, 0.1, 2, 4) == pytest.approx(0.55)
    lrs = [cosine_lr(1e-3, 1e-3, e, 10) for e in range(1, 11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3),
        torch.nn.BatchNorm1d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(24, 3),
    )


def _naive_steps(model, batches, beta):
    """The reference: deepcopy the state before the step, load beta*old + (1-beta)*new after it."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for x, y in batches:
        old = copy.deepcopy(model.state_dict())
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        new = model.state_dict()
        model.load_state_dict({k: beta * old[k] + (1 - beta) * new[k] for k in new})
    return model


def _inplace_steps(model, batches, beta):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    avg = StepAverage(model, beta)
    for x, y in batches:
        avg.snapshot()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg.apply()
    return model


@pytest.mark.parametrize("beta", [0.5, 0.3])
def test_inplace_averaging_equals_naive_reference(beta):
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 2, 8, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(6)]
    naive, fast = _naive_steps(_model(), batches, beta), _inplace_steps(_model(), batches, beta)
    a, b = naive.state_dict(), fast.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert int(b["1.num_batches_tracked"]) == 0  # truncated back every step, as in the reference
    plain = _inplace_steps(_model(), batches, 0.0)  # beta 0 would be plain Adam: the averaging did something
    assert not torch.equal(plain.state_dict()["4.weight"], b["4.weight"])


def _row(epoch, sp, se, val=None):
    score = (sp + se) / 2
    return {
        "epoch": epoch,
        "test_sp": sp,
        "test_se": se,
        "test_score": score,
        "test_loss": sp / 100,
        "val_score": val,
    }


def test_selection_literature_last_val():
    history = [
        _row(1, 100.0, 0.0, 10.0),  # Score 50 but Se <= 5: not eligible
        _row(2, 70.0, 20.0, 30.0),  # 45
        _row(3, 60.0, 30.0, 30.0),  # 45 (tie with 2 -> earliest wins)
        _row(4, 50.0, 10.0, 20.0),
    ]
    sel = select_epochs(history, se_min=5.0)
    at_2 = {"epoch": 2, "sp": 70.0, "se": 20.0, "score": 45.0, "loss": 0.7}
    assert sel["literature"] == {**at_2, "qualified": True}
    assert sel["last"] == {"epoch": 4, "sp": 50.0, "se": 10.0, "score": 30.0, "loss": 0.5}
    assert sel["val"] == {**at_2, "val_score": 30.0}


def test_selection_se_exactly_at_threshold_and_fallback():
    history = [_row(1, 90.0, 5.0), _row(2, 95.0, 4.0), _row(3, 80.0, 0.0)]
    sel = select_epochs(history, se_min=5.0)
    assert sel["literature"]["epoch"] == 2 and sel["literature"]["qualified"] is False
    assert sel["val"] is None
    assert select_epochs(history, se_min=4.5)["literature"]["epoch"] == 1


def test_spec_augment_masks_with_mean_and_is_reproducible():
    x = torch.randn(4, 50, 12)
    cfg = {"freq_masks": 2, "freq_width": 5, "time_masks": 2, "time_width": 20}
    a = spec_augment(x, cfg, torch.Generator().manual_seed(3))
    b = spec_augment(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    changed = a != x
    mean = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
    assert torch.equal(a[changed], mean[changed])
    assert changed.any()
    masked_rows = changed.all(dim=2)  # a time mask covers every frequency of its frames
    assert masked_rows.any()
    none = {"freq_masks": 0, "freq_width": 5, "time_masks": 2, "time_width": 0}
    assert torch.equal(spec_augment(x, none, torch.Generator().manual_seed(3)), x)


def test_spec_augment_widths_stay_below_width():
    x = torch.arange(2000.0).reshape(2000, 1, 1).expand(2000, 30, 1).contiguous()  # constant per sample
    x = x + torch.arange(30.0).reshape(1, 30, 1)  # distinct frames
    cfg = {"freq_masks": 0, "freq_width": 0, "time_masks": 1, "time_width": 7}
    a = spec_augment(x, cfg, torch.Generator().manual_seed(0))
    widths = (a != x).sum(dim=(1, 2))
    assert widths.max() <= 6 and math.isclose(widths.float().mean().item(), 3.0, abs_tol=0.3)

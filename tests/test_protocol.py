"""Reference protocol pieces: cosine LR, step averaging as a learning-rate scale, epoch selection,
SpecAugment."""

import copy
import math

import pytest
import torch

from rsckd.architectures import ARCHITECTURES
from rsckd.config import SpecAugment
from rsckd.models import build_model, build_tokenizer, tokenize
from rsckd.training.loop import make_optimizer
from rsckd.training.protocol import average_as_lr_scale, cosine_lr, select_epochs
from rsckd.training.specaugment import apply_masks, draw_masks


def test_cosine_lr_reference_values():
    assert cosine_lr(5e-5, 1e-3, 1, 50) == pytest.approx(4.995e-5, rel=1e-3)
    assert cosine_lr(5e-5, 1e-3, 50, 50) == pytest.approx(5e-8)
    assert cosine_lr(1.0, 0.1, 2, 4) == pytest.approx(0.55)
    lrs = [cosine_lr(1e-3, 1e-3, e, 10) for e in range(1, 11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


PROMPTS = [
    "This sound was recorded from the trachea of a female pediatric patient, using an AKGC417L microphone.",
    "This sound was recorded from the left posterior chest of an adult male patient, using a Meditron "
    "stethoscope.",
]
SHAPE = {"bts": (24, 16), "cnn6": (32, 32)}
AVERAGING_STEPS = 40
AVERAGING_RTOL = 1e-12  # measured: below 2e-15 relative (float64, 40 steps, tiny BTS and CNN6)
# Attention key biases add the same amount to every score of a softmax row: they change nothing, their
# gradient is pure rounding noise, and Adam, which divides by the gradient's own scale, turns any change in
# that noise into a step of about lr. They are compared through the logits instead.
NO_EFFECT = "attention.self.key.bias"


def _tiny_float64(arch):
    """A tiny model in float64 (dropout and all) and its training batches (the last one held out)."""
    own = {"max_text_length": 64} if ARCHITECTURES[arch].reads_prompt else {}
    cfg = ARCHITECTURES[arch].block(size="tiny", pretrained=None, input_norm="per_sample", **own)
    tokenizer = build_tokenizer(cfg, PROMPTS) if own else None
    torch.manual_seed(0)
    model = build_model(arch, cfg, SHAPE[arch], tokenizer=tokenizer).double()
    g = torch.Generator().manual_seed(1)
    ids, mask = tokenize(tokenizer, [PROMPTS[i % 2] for i in range(4)], 64) if tokenizer else (None, None)
    batches = [
        (
            torch.randn(4, *SHAPE[arch], generator=g, dtype=torch.float64) * 10 - 50,
            ids,
            mask,
            torch.randint(0, 4, (4,), generator=g),
        )
        for _ in range(AVERAGING_STEPS + 1)
    ]
    return model, batches


def _train(model, batches, lr, beta=None):
    """Adam steps as the training loop takes them, then (state, eval logits of the held-out batch).
    ``beta``: average with the pre-step state after each step, the reference's way (a deep copy before,
    beta * old + (1 - beta) * new loaded after)."""
    optimizer, lr_now = make_optimizer(model, 1e-3, torch.device("cpu"))
    lr_now.fill_(lr)
    torch.manual_seed(2)  # the same dropout masks in every run
    model.train()
    for x, ids, mask, y in batches[:-1]:
        old = copy.deepcopy(model.state_dict()) if beta is not None else None
        loss = torch.nn.functional.cross_entropy(model(x, ids, mask), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if beta is not None:
            new = model.state_dict()
            model.load_state_dict({k: beta * old[k] + (1 - beta) * new[k] for k in new})
    with torch.no_grad():
        logits = model.eval()(*batches[-1][:3])
    return copy.deepcopy(model.state_dict()), logits


def _relative_gap(a, b):
    return ((a - b).abs().max() / a.abs().max().clamp(min=1)).item()


@pytest.mark.parametrize(("arch", "beta"), [("bts", 0.5), ("cnn6", 0.5), ("cnn6", 0.25)])
def test_step_averaging_is_a_learning_rate_and_momentum_scale(arch, beta, one_thread):
    lr = 2.0**-10  # lr and lr * (1 - beta) exact in the float32 rate tensor: only the algebra is compared
    model, batches = _tiny_float64(arch)
    start = copy.deepcopy(model.state_dict())
    averaged, averaged_logits = _train(model, batches, lr, beta)
    model.load_state_dict(start)
    scale = average_as_lr_scale(model, beta)
    scaled, scaled_logits = _train(model, batches, lr * scale)
    assert scale == 1 - beta and averaged.keys() == scaled.keys()
    floats = [k for k in averaged if averaged[k].is_floating_point() and NO_EFFECT not in k]
    gap = max(_relative_gap(averaged[k], scaled[k]) for k in floats)
    assert gap < AVERAGING_RTOL and _relative_gap(averaged_logits, scaled_logits) < AVERAGING_RTOL
    assert max(_relative_gap(averaged[k], start[k]) for k in floats) > 1e-3  # the steps did move the state
    stats = [k for k in floats if "running_" in k]
    assert stats and all(not torch.equal(averaged[k], start[k]) for k in stats)  # BatchNorm statistics too
    for k in (k for k in averaged if k.endswith("num_batches_tracked")):  # the reference truncates it back
        assert int(averaged[k]) == 0 and int(scaled[k]) == AVERAGING_STEPS, k


def test_momentum_scale_reaches_every_batchnorm():
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Sequential(torch.nn.BatchNorm2d(2)))
    assert average_as_lr_scale(model, 0.5) == 0.5
    assert [m.momentum for m in model.modules() if hasattr(m, "momentum")] == [0.05, 0.05]
    with pytest.raises(ValueError, match="no momentum to scale"):
        average_as_lr_scale(torch.nn.BatchNorm1d(3, momentum=None), 0.5)


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


def spec_augment(x, cfg, generator):
    return apply_masks(x, *draw_masks(len(x), tuple(x.shape[1:]), cfg, generator))


def test_spec_augment_masks_with_mean_and_is_reproducible():
    x = torch.randn(4, 50, 12)
    cfg = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=20)
    a = spec_augment(x, cfg, torch.Generator().manual_seed(3))
    b = spec_augment(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    time, freq = draw_masks(4, (50, 12), cfg, torch.Generator().manual_seed(3))
    assert time.shape == (4, 50) and freq.shape == (4, 12) and time.dtype == freq.dtype == torch.bool
    changed = a != x
    mean = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
    assert torch.equal(a[changed], mean[changed])
    assert changed.any()
    masked_rows = changed.all(dim=2)  # a time mask covers every frequency of its frames
    assert masked_rows.any()
    none = SpecAugment(freq_masks=0, freq_width=5, time_masks=2, time_width=0)
    assert torch.equal(spec_augment(x, none, torch.Generator().manual_seed(3)), x)


def test_spec_augment_widths_stay_below_width():
    x = torch.arange(2000.0).reshape(2000, 1, 1).expand(2000, 30, 1).contiguous()  # constant per sample
    x = x + torch.arange(30.0).reshape(1, 30, 1)  # distinct frames
    cfg = SpecAugment(freq_masks=0, freq_width=0, time_masks=1, time_width=7)
    a = spec_augment(x, cfg, torch.Generator().manual_seed(0))
    widths = (a != x).sum(dim=(1, 2))
    assert widths.max() <= 6 and math.isclose(widths.float().mean().item(), 3.0, abs_tol=0.3)

"""The prompt tokenizer: deterministic local BPE, strictly local loading, padding to the longest prompt."""

import pytest
import torch

from rsckd.architectures import BTSBlock
from rsckd.errors import UserError
from rsckd.models import build_model, build_tokenizer, load_tokenizer, tokenize

PROMPTS = [
    "This sound was recorded from the trachea of a female pediatric patient, using an AKGC417L microphone.",
    "This sound was recorded from the left posterior chest of an adult male patient, using a Meditron "
    "stethoscope.",
    "This sound was recorded from the right lateral chest of an adult female patient, using a Litt3200 "
    "stethoscope.",
]
CFG = BTSBlock(size="tiny", pretrained=None, max_text_length=64, input_norm="none")


def test_local_tokenizer_is_deterministic_and_roberta_like():
    a = build_tokenizer(CFG, PROMPTS)
    b = build_tokenizer(CFG, list(reversed(PROMPTS)) + PROMPTS[:1])  # order and duplicates do not matter
    assert a.get_vocab() == b.get_vocab()
    assert len(a) > 5
    ids, mask = tokenize(a, PROMPTS, 64)
    assert torch.equal(ids, tokenize(b, PROMPTS, 64)[0])
    assert (a.bos_token_id, a.pad_token_id, a.eos_token_id) == (0, 1, 2)
    assert ids.dtype == mask.dtype == torch.long
    assert (ids[:, 0] == 0).all()
    lengths = mask.sum(1)
    for row, n in zip(ids, lengths, strict=True):
        assert row[n - 1] == 2 and (row[n:] == 1).all()


def test_tokenize_pads_to_longest_and_truncates():
    tok = build_tokenizer(CFG, PROMPTS)
    ids, mask = tokenize(tok, PROMPTS, 64)
    assert ids.shape[1] == int(mask.sum(1).max()) < 64  # longest prompt, not 64
    short_ids, short_mask = tokenize(tok, PROMPTS, 6)
    assert short_ids.shape == (3, 6) and short_mask.all()
    assert (short_ids[:, -1] == 2).all()  # truncation keeps the end-of-sequence token


def test_padding_to_longest_equals_padding_to_64():
    """The reference pads every prompt to 64; masked padding must not change the logits."""
    tok = build_tokenizer(CFG, PROMPTS)
    torch.manual_seed(0)
    model = build_model("bts", CFG, (201, 16), tokenizer=tok).eval()
    ids, mask = tokenize(tok, PROMPTS, 64)
    batch = tok(PROMPTS, padding="max_length", max_length=64, return_tensors="pt")
    x = torch.randn(3, 201, 16)
    with torch.no_grad():
        short = model(x, ids, mask)
        full = model(x, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)


def test_saved_tokenizer_round_trip(tmp_path):
    tok = build_tokenizer(CFG, PROMPTS)
    tok.save_pretrained(str(tmp_path / "tok"))
    again = load_tokenizer(tmp_path / "tok")
    assert torch.equal(tokenize(tok, PROMPTS, 64)[0], tokenize(again, PROMPTS, 64)[0])
    # a pretrained directory's own tokenizer wins over the prompts
    from_dir = build_tokenizer(
        CFG.model_copy(update={"pretrained": str(tmp_path / "tok")}), ["unrelated words"]
    )
    assert from_dir.get_vocab() == tok.get_vocab()


def test_refuses_missing_and_empty_tokenizers(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import RobertaTokenizerFast

    with pytest.raises(UserError, match="models.bts.pretrained"):
        build_tokenizer(CFG.model_copy(update={"pretrained": str(tmp_path / "nowhere")}), PROMPTS)
    (tmp_path / "blank").mkdir()
    with pytest.raises(UserError, match="no usable tokenizer"):
        load_tokenizer(tmp_path / "blank")
    specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    empty = RobertaTokenizerFast(
        tokenizer_object=Tokenizer(BPE(vocab=specials, merges=[], unk_token="<unk>"))
    )
    empty.save_pretrained(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="loaded empty"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(UserError, match="no prompts"):
        build_tokenizer(CFG, [])

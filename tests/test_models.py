"""Every architecture at tiny size (fast) and once at full size; local pretrained loading."""

import pytest
import torch

from rsckd.architectures import ARCHITECTURES
from rsckd.errors import UserError
from rsckd.models import build_model, build_tokenizer, count_parameters, tokenize
from rsckd.models.ast import adapt_position_embedding, patch_grid
from rsckd.models.base import normalise

PROMPTS = [
    "This sound was recorded from the trachea of a female pediatric patient, using an AKGC417L microphone.",
    "This sound was recorded from the left posterior chest of an adult male patient, using a Meditron "
    "stethoscope.",
]
TINY_SHAPE = {"clap": (161, 16), "fbank": (200, 16)}  # the smoke profile's features
FULL_SHAPE = {"clap": (1001, 64), "fbank": (798, 128)}  # the paper's features
NORM = {"bts": "none", "audio_clap": "none", "ast": "audioset"}
OWN_KEYS = {"bts": {"max_text_length": 64}, "ast": {"swap_input_dims": False}}


def cfg_for(arch, size="tiny", **extra):
    cfg = {
        "size": size,
        "pretrained": None,
        "input_norm": NORM.get(arch, "per_sample"),
        **OWN_KEYS.get(arch, {}),
    }
    return ARCHITECTURES[arch].block(**{**cfg, **extra})


def build(arch, size="tiny", shape=None, **extra):
    cfg = cfg_for(arch, size, **extra)
    tok = build_tokenizer(cfg, PROMPTS) if arch == "bts" else None
    shape = shape or (TINY_SHAPE if size == "tiny" else FULL_SHAPE)[ARCHITECTURES[arch].feature_kind]
    return build_model(arch, cfg, shape, tokenizer=tok), tok, shape


def text_inputs(tok, batch):
    if tok is None:
        return {}
    ids, mask = tokenize(tok, [PROMPTS[i % 2] for i in range(batch)], 64)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_trains(arch):
    torch.manual_seed(0)
    model, tok, shape = build(arch)
    x = torch.randn(4, *shape) * 20 - 50  # dB-like, unnormalised
    logits = model(x, **text_inputs(tok, 4))
    assert logits.shape == (4, 4) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None and "logit_scale" not in n]
    assert no_grad == []  # both CLAP towers, backbone and head all train
    assert count_parameters(model) < 300_000


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bts_4d_text_mask_gives_the_2d_mask_logits(dtype, monkeypatch):
    """BTS hands the text tower a 4-D additive mask (no host sync); transformers' own 2-D path agrees."""
    from rsckd.models import bts

    model, tok, shape = build("bts")
    model = model.to(dtype).eval()
    x = torch.randn(4, *shape, dtype=dtype) * 20 - 50
    ids, mask = tokenize(tok, [PROMPTS[0], "This sound was recorded.", PROMPTS[1], "A"], 64)
    assert not mask.all()  # there is padding to mask
    with torch.no_grad():
        four_d = model(x, ids, mask)
        monkeypatch.setattr(bts, "additive_attention_mask", lambda mask, dtype: mask)
        two_d = model(x, ids, mask)
    assert torch.equal(four_d, two_d)


def test_full_configs_build_offline_and_run():
    """Paper sizes with random weights, batch 1 (the slow test: ~150 M + 86 M parameters on CPU)."""
    expected = {  # parameters in millions
        "bts": 153.49,  # ClapModel (RoBERTa-base vocab 50265) + Linear(1024, 4)
        "audio_clap": 28.19,  # ClapAudioModelWithProjection + Linear(512, 4)
        "ast": 85.99,  # ASTModel on a 12 x 79 grid + LayerNorm/Linear(768, 4)
        "cnn6": 4.30,  # without PANNs' fc1 + fc_audioset (4.84 M with them)
        "resnet18": 11.17,
        "efficientnet_b0": 4.01,
    }
    for arch in ARCHITECTURES:
        torch.manual_seed(0)
        model, tok, shape = build(arch, "full")
        assert count_parameters(model) / 1e6 == pytest.approx(expected[arch], abs=0.01), arch
        with torch.no_grad():
            logits = model.eval()(torch.randn(1, *shape) * 20 - 50, **text_inputs(tok, 1))
        assert logits.shape == (1, 4) and torch.isfinite(logits).all(), arch
        del model


def test_input_normalisation():
    x = torch.randn(2, 10, 4) * 3 + 7
    torch.testing.assert_close(normalise(x, "audioset"), (x + 4.2677393) / (4.5689974 * 2))
    y = normalise(x, "per_sample")
    torch.testing.assert_close(y.mean(dim=(1, 2)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(1, 2)), torch.full((2,), 0.5), atol=1e-5, rtol=0)
    assert normalise(x, "none") is x
    # the wrapper applies it: a per-sample CNN does not see the input's offset and scale
    torch.manual_seed(0)
    model, _, shape = build("cnn6")
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), model(x * 5 - 30), atol=1e-4, rtol=1e-4)


def test_feature_shape_is_checked():
    with pytest.raises(UserError, match=r"models\.bts.*features\.clap\.n_mels"):
        build("bts", shape=(201, 64))
    with pytest.raises(UserError, match=r"models\.audio_clap.*exceed"):
        build("audio_clap", shape=(300, 16))  # tiny HTSAT folds at most 64 * 4 frames
    with pytest.raises(UserError, match=r"models\.ast.*features\.fbank\.num_mel_bins"):
        build("ast", shape=(200, 64))
    with pytest.raises(UserError, match=r"models\.ast.*patch"):
        build("ast", shape=(4, 16))
    with pytest.raises(UserError, match="config.json: model.size: expected one of tiny, full, got 'huge'"):
        ARCHITECTURES["cnn6"].model_block(
            {"size": "huge", "pretrained": None, "input_norm": "none"}, "config.json"
        )
    with pytest.raises(UserError, match="unknown architecture 'vgg'"):
        build_model("vgg", cfg_for("cnn6"), (200, 16))
    with pytest.raises(UserError, match="tokenizer is required"):
        build_model("bts", cfg_for("bts"), (201, 16))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_missing_pretrained_path_names_the_key(arch, tmp_path):
    with pytest.raises(UserError, match=rf"models\.{arch}\.pretrained: .*not found"):
        build(arch, pretrained=str(tmp_path / "absent"))


# ---- local pretrained weights -------------------------------------------------------------------------


def saved_tiny_clap(tmp_path):
    """A tiny ClapModel directory (as a converted LAION checkpoint would be) with its tokenizer."""
    torch.manual_seed(1)
    model, tok, _ = build("bts")
    model.clap.save_pretrained(str(tmp_path / "clap"))
    tok.save_pretrained(str(tmp_path / "clap"))
    return model.clap.state_dict()


def test_clap_directory_loads_into_bts_and_audio_clap(tmp_path):
    reference = saved_tiny_clap(tmp_path)
    torch.manual_seed(2)
    bts, tok, shape = build("bts", pretrained=str(tmp_path / "clap"))
    for key, value in bts.clap.state_dict().items():
        assert torch.equal(value, reference[key]), key
    audio, _, _ = build("audio_clap", pretrained=str(tmp_path / "clap"))  # text side of the directory ignored
    for key, value in audio.audio.state_dict().items():
        assert torch.equal(value, reference[key]), key
    with torch.no_grad():
        assert bts.eval()(torch.randn(2, *shape), **text_inputs(tok, 2)).shape == (2, 4)


def test_clap_directory_mismatch_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    saved_tiny_clap(tmp_path)
    weights = tmp_path / "clap" / "model.safetensors"
    state = load_file(str(weights))
    del state["audio_projection.linear2.bias"]
    state["audio_model.audio_encoder.extra.weight"] = torch.zeros(3)
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(UserError) as err:
        build("bts", pretrained=str(tmp_path / "clap"))
    message = str(err.value)
    assert "models.bts.pretrained" in message
    assert "missing (1): audio_projection.linear2.bias" in message
    assert "unexpected (1): audio_model.audio_encoder.extra.weight" in message


def test_ast_directory_loads_with_adapted_positions(tmp_path):
    from transformers import ASTConfig, ASTForAudioClassification

    from rsckd.models.ast import TINY

    torch.manual_seed(3)
    source = ASTForAudioClassification(ASTConfig(**TINY, max_length=400, num_labels=527))  # f x 50 grid
    f = patch_grid(source.config)[0]
    source.save_pretrained(str(tmp_path / "ast"))
    ref = {k.removeprefix("audio_spectrogram_transformer."): v for k, v in source.state_dict().items()}
    for swap in (False, True):
        model, _, _ = build(
            "ast", pretrained=str(tmp_path / "ast"), swap_input_dims=swap
        )  # 200 frames: f x 25
        state = model.ast.state_dict()
        for key, value in state.items():
            if key != "embeddings.position_embeddings":
                assert torch.equal(value, ref[key]), key
        pos = ref["embeddings.position_embeddings"]
        expected = adapt_position_embedding(pos, (f, 50), (f, 25), swap)
        assert torch.equal(state["embeddings.position_embeddings"], expected)
    grid = pos[0, 2:].reshape(f, 50, -1)
    torch.testing.assert_close(state["embeddings.position_embeddings"][0, :2], pos[0, :2])
    unswapped = adapt_position_embedding(pos, (f, 50), (f, 25))[0, 2:].reshape(f, 25, -1)
    assert torch.equal(unswapped, grid[:, 12:37])  # centre crop of the time axis, as the original AST


def test_adapt_position_embedding_grid_order():
    """Without the swap the grid keeps (frequency, time) order; with it the grid is built time-major."""
    f, t = torch.meshgrid(torch.arange(12.0), torch.arange(101.0), indexing="ij")
    pos = torch.cat([torch.zeros(1, 2, 2), torch.stack([f, t], -1).reshape(1, -1, 2)], dim=1)
    same = adapt_position_embedding(pos, (12, 101), (12, 79))[0, 2:].reshape(12, 79, 2)
    assert torch.equal(same[..., 0], f[:, :79]) and torch.equal(same[..., 1], t[:, 11:90])
    swapped = adapt_position_embedding(pos, (12, 101), (12, 79), swap_input_dims=True)[0, 2:]
    assert swapped.shape == (948, 2)
    as_built = swapped.reshape(79, 12, 2)  # the reference's 79 x 12 grid: 12 time columns around the centre
    assert torch.equal(as_built[0, :, 1], torch.arange(44.0, 56.0))
    assert not torch.equal(swapped, adapt_position_embedding(pos, (12, 101), (12, 79))[0, 2:])


def test_cnn6_loads_a_panns_checkpoint(tmp_path):
    torch.manual_seed(4)
    source, _, _ = build("cnn6")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    extras = {
        "bn0.weight": torch.ones(64),
        "spectrogram_extractor.stft.conv_real.weight": torch.zeros(2, 1, 4),
        "logmel_extractor.melW": torch.zeros(3, 2),
        "fc1.weight": torch.zeros(64, 64),
        "fc_audioset.weight": torch.zeros(527, 64),
    }
    torch.save({"model": {**state, **extras}, "iteration": 1}, tmp_path / "Cnn6.pth")
    model, _, _ = build("cnn6", pretrained=str(tmp_path / "Cnn6.pth"))
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    del state["conv_block2.conv1.weight"]
    torch.save({"model": {**state, "conv_block9.conv1.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"missing \(1\): conv_block2\.conv1\.weight.*\n.*conv_block9"):
        build("cnn6", pretrained=str(tmp_path / "bad.pth"))


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_timm_loads_imagenet_layout_weights(arch, tmp_path):
    import timm
    from safetensors.torch import save_file

    from rsckd.models.timm_models import VARIANTS

    name, kwargs = VARIANTS[arch]["tiny"]
    torch.manual_seed(5)
    imagenet = timm.create_model(name, pretrained=False, in_chans=3, num_classes=1000, **kwargs)
    save_file(imagenet.state_dict(), str(tmp_path / "w.safetensors"))
    model, _, shape = build(arch, pretrained=str(tmp_path / "w.safetensors"))
    stem, classifier = imagenet.pretrained_cfg["first_conv"], imagenet.pretrained_cfg["classifier"]
    own = model.net.state_dict()
    for key, value in imagenet.state_dict().items():
        if key.startswith((stem + ".", classifier + ".")):
            assert own[key].shape != value.shape  # replaced: 1 input channel, 4 classes
        else:
            assert torch.equal(own[key], value), key
    wrong = {k: v for k, v in imagenet.state_dict().items() if "bn1" not in k}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(UserError, match=rf"(?s)models\.{arch}\.pretrained.*missing \(\d+\): \S*bn1\.bias"):
        build(arch, pretrained=str(tmp_path / "wrong.safetensors"))

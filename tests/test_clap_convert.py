"""`rsckd import-clap`: a synthetic LAION-CLAP checkpoint (a tiny ClapModel renamed back to LAION's key names
and shapes, with the extra keys LAION saves) must convert back to exactly the same tensors."""

import re

import pytest
import torch

from rsckd.cli import main

TINY_AUDIO = dict(
    spec_size=64, num_mel_bins=16, window_size=4, patch_embeds_hidden_size=16, depths=[1, 1, 1],
    num_attention_heads=[2, 2, 4], hidden_size=64,
)  # fmt: skip
TINY_TEXT = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    max_position_embeddings=66, layer_norm_eps=1e-5,
)  # fmt: skip
LAION_EXTRAS = {  # keys a real LAION checkpoint holds that have no place in ClapModel
    "text_transform.sequential.0.weight": (32, 32),
    "text_transform.sequential.3.bias": (32,),
    "audio_transform.sequential.0.weight": (32, 32),
    "audio_branch.spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
    "audio_branch.logmel_extractor.melW": (513, 16),
    "audio_branch.tscam_conv.weight": (527, 64, 2, 3),
    "audio_branch.head.weight": (527, 64),
    "audio_branch.layers.0.blocks.0.attn_mask": (16, 16, 16),
}


def laion_name(key: str) -> str:
    """ClapModel name -> LAION-CLAP name (the inverse of the converter, written out by hand)."""
    if key.startswith("text_model."):
        key = "text_branch." + key.removeprefix("text_model.")
    if key.startswith("audio_model.audio_encoder."):
        key = "audio_branch." + key.removeprefix("audio_model.audio_encoder.")
        for hf, laion in [
            (".attention.output.dense.", ".attn.proj."), (".attention.self.", ".attn."),
            (".intermediate.dense.", ".mlp.fc1."), (".output.dense.", ".mlp.fc2."),
            (".layernorm_before.", ".norm1."), (".layernorm_after.", ".norm2."), (".batch_norm.", ".bn0."),
        ]:  # fmt: skip
            key = key.replace(hf, laion)
    return key.replace("_projection.linear1.", "_projection.0.").replace(
        "_projection.linear2.", "_projection.2."
    )


def laion_state(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LAION names and shapes: Swin attention as one fused qkv, DDP prefix, extra keys."""
    state = {}
    for key, value in hf_state.items():
        name = laion_name(key)
        match = re.match(r"(audio_branch\..*\.attn\.)(query|key|value)\.(weight|bias)$", name)
        if match is None:
            state[name] = value.clone()
        elif match[2] == "query":
            parts = [hf_state[key.replace(".query.", f".{p}.")] for p in ("query", "key", "value")]
            state[f"{match[1]}qkv.{match[3]}"] = torch.cat(parts, dim=0)
    state.update({k: torch.randn(shape) for k, shape in LAION_EXTRAS.items()})
    return {"module." + k: v for k, v in state.items()}


@pytest.fixture()
def tiny_clap(tmp_path):
    from transformers import ClapConfig, ClapModel

    torch.manual_seed(0)
    config = ClapConfig(audio_config=TINY_AUDIO, text_config=TINY_TEXT, projection_dim=32)
    model = ClapModel(config)
    with torch.no_grad():  # make BatchNorm statistics non-trivial so they are checked too
        bn = model.audio_model.audio_encoder.batch_norm
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    config.to_json_file(str(tmp_path / "config.json"))
    return model.state_dict(), tmp_path / "config.json"


def test_round_trip_reproduces_every_tensor(tiny_clap, tmp_path):
    from transformers import ClapModel

    reference, config = tiny_clap
    state = laion_state(reference)
    assert any(k.endswith(".attn.qkv.weight") for k in state)
    assert "module.audio_projection.2.bias" in state and "module.text_branch.embeddings.position_ids" in state
    torch.save({"state_dict": state, "epoch": 45}, tmp_path / "laion.pt")
    out = tmp_path / "converted"
    assert main(["import-clap", str(tmp_path / "laion.pt"), str(out), "--config", str(config)]) == 0
    assert (out / "preprocessor_config.json").is_file()
    converted = ClapModel.from_pretrained(str(out), local_files_only=True).state_dict()
    assert sorted(converted) == sorted(reference)
    for key, value in reference.items():
        assert torch.equal(converted[key], value), key


def test_plain_state_dict_without_prefix(tiny_clap, tmp_path):
    from rsckd.models.clap_convert import convert_state_dict

    reference, _ = tiny_clap
    plain = {k.removeprefix("module."): v for k, v in laion_state(reference).items()}
    converted = convert_state_dict(plain)
    assert sorted(converted) == sorted(reference)
    assert all(torch.equal(converted[k], v) for k, v in reference.items())


def test_mismatches_are_named_and_nothing_is_written(tiny_clap, tmp_path, capsys):
    reference, config = tiny_clap
    state = laion_state(reference)
    del state["module.audio_branch.layers.1.blocks.0.mlp.fc2.bias"]
    state["module.audio_branch.mel_conv2d.weight"] = torch.zeros(2)  # a fused model's extra layer
    torch.save(state, tmp_path / "bad.pt")
    out = tmp_path / "converted"
    assert main(["import-clap", str(tmp_path / "bad.pt"), str(out), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "missing (1): audio_model.audio_encoder.layers.1.blocks.0.output.dense.bias" in err
    assert "unexpected (1): audio_model.audio_encoder.mel_conv2d.weight" in err
    assert not out.exists()


def test_bad_inputs(tmp_path, capsys):
    assert main(["import-clap", str(tmp_path / "none.pt"), str(tmp_path / "o")]) == 2
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert main(["import-clap", str(tmp_path / "list.pt"), str(tmp_path / "o")]) == 2
    assert main(["import-clap", str(tmp_path / "list.pt"), str(tmp_path / "o"), "--config", "fused"]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "not a LAION-CLAP checkpoint" in err and "neither 'unfused'" in err


def test_unfused_target_config():
    from rsckd.models.clap_convert import target_config

    config = target_config("unfused")
    assert config.text_config.layer_norm_eps == 1e-5 and not config.audio_config.enable_fusion
    assert (config.audio_config.spec_size, config.audio_config.num_mel_bins) == (256, 64)

import json
import pickle

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open

from components.core.config import ConfigError
from components.model.checkpoint import (
    CheckpointError,
    load_model_dir,
    load_state_compatible,
    read_model_config,
    save_model_dir,
)
from components.model.gpt import GPT, GPTConfig


def tiny_model(block: str = "llama", **overrides) -> GPT:
    torch.manual_seed(0)
    fields = dict(vocab_size=50, context_length=16, n_layer=2, n_head=2, n_embd=16, block=block)
    return GPT(GPTConfig(**(fields | overrides))).eval()


@pytest.mark.parametrize("block", ["gpt2", "llama"])
@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_gives_the_same_model(tmp_path, block, tie):
    model = tiny_model(block, tie_embeddings=tie)
    save_model_dir(model, tmp_path / "m", extra={"stage": "pretrain", "step": 120})
    loaded, config = load_model_dir(tmp_path / "m")
    assert config["format"] == "gptrecipe-gpt" and config["version"] == 1
    assert (config["stage"], config["step"]) == ("pretrain", 120)
    assert GPTConfig(**config["model"]) == model.config
    assert not loaded.training
    idx = torch.randint(0, 50, (2, 9))
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert (loaded.lm_head.weight is loaded.tok_emb.weight) == tie
    with safe_open(tmp_path / "m" / "model.safetensors", framework="pt") as f:
        stored = set(f.keys())
    assert ("lm_head.weight" in stored) == (not tie)  # a tied matrix is stored once
    assert "tok_emb.weight" in stored


def test_tokenizer_is_copied_and_nothing_else_is_left_behind(tmp_path):
    tokenizer = tmp_path / "tok.json"
    tokenizer.write_text('{"model": "bpe"}')
    out = save_model_dir(tiny_model(), tmp_path / "models" / "sft", tokenizer_path=tokenizer)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (out / "tokenizer.json").read_text() == '{"model": "bpe"}'
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["sft"]  # no temp directory left
    with pytest.raises(FileNotFoundError, match="tokenizer file"):
        save_model_dir(tiny_model(), tmp_path / "other", tokenizer_path=tmp_path / "missing.json")
    assert not (tmp_path / "other").exists()


def test_existing_directory_is_only_replaced_with_overwrite(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    save_model_dir(tiny_model(n_layer=1), target)  # an empty directory is fine
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model_dir(tiny_model(n_layer=2), target)
    assert load_model_dir(target)[0].config.n_layer == 1
    save_model_dir(tiny_model(n_layer=2), target, overwrite=True)
    assert load_model_dir(target)[0].config.n_layer == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_failed_write_leaves_no_directory(tmp_path, monkeypatch):
    import components.model.checkpoint as ckpt

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model_dir(tiny_model(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_extra_metadata_is_checked(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model_dir(tiny_model(), tmp_path / "a", extra={"version": 3})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_model_dir(tiny_model(), tmp_path / "b", extra={"when": object()})


def test_loading_never_unpickles(tmp_path, monkeypatch):
    save_model_dir(tiny_model(), tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model, _ = load_model_dir(tmp_path / "m")
    assert isinstance(model, GPT)


def test_dtype_is_kept_or_chosen(tmp_path):
    save_model_dir(tiny_model().to(torch.bfloat16), tmp_path / "m")
    assert load_model_dir(tmp_path / "m")[0].tok_emb.weight.dtype == torch.bfloat16
    assert load_model_dir(tmp_path / "m", dtype=torch.float32)[0].tok_emb.weight.dtype == torch.float32


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_dir(tmp_path / "nowhere")
    save_model_dir(tiny_model(), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        load_model_dir(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        load_model_dir(tmp_path / "m")


def test_foreign_or_newer_configs_are_refused(tmp_path):
    save_model_dir(tiny_model(), tmp_path / "m")
    file = tmp_path / "m" / "config.json"
    config = json.loads(file.read_text())
    file.write_text(json.dumps(config | {"version": 2}))
    with pytest.raises(CheckpointError, match="reads version 1 or older"):
        read_model_config(tmp_path / "m")
    file.write_text(json.dumps(config | {"format": "hf-llama"}))
    with pytest.raises(CheckpointError, match="format is 'hf-llama'"):
        read_model_config(tmp_path / "m")
    file.write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read it as JSON"):
        read_model_config(tmp_path / "m")
    file.write_text(json.dumps(config | {"model": config["model"] | {"n_embd": 15}}))
    with pytest.raises(ConfigError, match="n_embd"):
        load_model_dir(tmp_path / "m")


def test_config_that_does_not_match_the_weights_names_the_tensor(tmp_path):
    save_model_dir(tiny_model(), tmp_path / "m")
    file = tmp_path / "m" / "config.json"
    config = json.loads(file.read_text())
    file.write_text(json.dumps(config | {"model": config["model"] | {"vocab_size": 64}}))
    expected = r"tok_emb\.weight: shape \(50, 16\) in the weights file .*, \(64, 16\) in the model"
    with pytest.raises(CheckpointError, match=expected):
        load_model_dir(tmp_path / "m")


def test_load_state_compatible_refuses_another_shape():
    small, other = tiny_model(n_layer=2), tiny_model(n_layer=3, n_embd=32)
    with pytest.raises(CheckpointError) as err:
        load_state_compatible(small, other.state_dict(), source="checkpoint step_100")
    message = str(err.value)
    assert "tok_emb.weight: shape (50, 32) in the checkpoint step_100, (50, 16) in the model" in message
    assert "blocks.2.attn.qkv.weight: in the checkpoint step_100 but not in the model" in message
    state = tiny_model().state_dict()
    del state["blocks.1.mlp.up.weight"]
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.up\.weight: in the model but missing"):
        load_state_compatible(tiny_model(), state)


def test_load_state_compatible_loads_a_matching_state():
    source, target = tiny_model(), GPT(tiny_model().config)
    torch.nn.init.zeros_(target.tok_emb.weight)
    load_state_compatible(target, source.state_dict())  # a plain state dict, tied alias included
    assert torch.equal(target.tok_emb.weight, source.tok_emb.weight)
    assert target.lm_head.weight is target.tok_emb.weight


def test_gpt_config_round_trips_through_json():
    config = GPTConfig.from_depth(2, vocab_size=100, context_length=64, block="gpt2", dropout=0.1)
    assert GPTConfig.model_validate(json.loads(json.dumps(config.model_dump(mode="json")))) == config
    with pytest.raises(ValidationError):
        GPTConfig.model_validate(config.model_dump() | {"unknown": 1})

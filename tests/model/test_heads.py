"""The scalar-head model: the reward is read at the last real token under any padding, directories
round-trip without pickle, and a model built from a GPT directory starts with the GPT's trunk."""

import json

import pytest
import torch
from safetensors import safe_open

from components.model.checkpoint import CheckpointError, save_model_dir
from components.model.gpt import GPT, GPTConfig
from components.model.heads import (
    ScalarHeadModel,
    gather_last,
    last_token_index,
    load_scalar_model_dir,
    save_scalar_model_dir,
    scalar_model_from_gpt,
)

SEQUENCES = [[5, 17, 3, 88, 41, 9, 2], [60, 4], [7, 7, 30, 12]]
PAD = 0


def tiny_gpt(block: str = "llama", seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    fields = dict(vocab_size=97, context_length=16, n_layer=2, n_head=2, n_embd=16, block=block)
    return GPT(GPTConfig(**(fields | overrides)))


def scalar_model(block: str = "llama", **overrides) -> ScalarHeadModel:
    model = ScalarHeadModel(tiny_gpt(block, **overrides))
    torch.nn.init.normal_(model.head.weight)  # a trained-looking head: the zero head scores 0 everywhere
    torch.nn.init.constant_(model.head.bias, 0.25)
    return model.eval()


def padded(sequences, side: str):
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), PAD)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        where = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, where], mask[i, where] = torch.tensor(s), 1
    return ids, mask


def test_last_token_index_under_left_right_and_no_padding():
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert last_token_index(left).tolist() == [3, 3, 3]
    assert last_token_index(right).tolist() == [1, 3, 0]
    values = torch.arange(12.0).view(3, 4)
    assert gather_last(values, right).tolist() == [1.0, 7.0, 8.0]
    assert gather_last(values, None).tolist() == [3.0, 7.0, 11.0]


@pytest.mark.parametrize("block", ["gpt2", "llama"])
def test_reward_is_the_same_under_left_right_and_no_padding(block):
    model = scalar_model(block)
    alone = torch.stack([model.score(torch.tensor([s]))[0] for s in SEQUENCES])
    # Read by hand: the per-position value at the sequence's own last token, computed unpadded.
    by_hand = torch.stack([model(torch.tensor([s]))[0, len(s) - 1] for s in SEQUENCES])
    torch.testing.assert_close(alone, by_hand)
    for side in ("left", "right"):
        ids, mask = padded(SEQUENCES, side)
        torch.testing.assert_close(model.score(ids, mask), alone, rtol=1e-5, atol=1e-5)
    # Right padding needs no mask under causal attention: pads come after the real tokens.
    ids, mask = padded(SEQUENCES, "right")
    torch.testing.assert_close(gather_last(model(ids), mask), alone, rtol=1e-5, atol=1e-5)
    # ...but reading the last column of a right-padded batch would read a pad.
    assert not torch.allclose(model(ids, mask)[:, -1], alone)


def test_values_are_one_per_position_in_float32_and_every_parameter_gets_a_gradient():
    model = scalar_model(tie_embeddings=False).train()
    ids, mask = padded(SEQUENCES, "left")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = model(ids, mask)
    assert values.shape == (3, 7) and values.dtype == torch.float32
    model.score(ids, mask).sum().backward()
    # The untied LM head is gone, so nothing is left without a gradient (DDP would refuse it).
    assert model.trunk.lm_head is None
    assert all(p.grad is not None for p in model.parameters())
    groups = model.optimizer_groups(0.1)
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    assert id(model.head.weight) in decay and id(model.head.bias) in no_decay
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("tie", [True, False])
def test_directory_round_trip(tmp_path, tie):
    model = scalar_model("gpt2", tie_embeddings=tie)
    tokenizer = tmp_path / "tok.json"
    tokenizer.write_text('{"model": "bpe"}')
    stats = {"mean": 0.5, "std": 2.0}
    save_scalar_model_dir(model, tmp_path / "rm", tokenizer_path=tokenizer, extra={"reward_stats": stats})
    loaded, config = load_scalar_model_dir(tmp_path / "rm")
    assert config["format"] == "gptrecipe-scalar" and config["kind"] == "reward_model"
    assert config["reward_stats"] == stats and GPTConfig(**config["model"]) == model.config
    assert (tmp_path / "rm" / "tokenizer.json").read_text() == '{"model": "bpe"}'
    ids, mask = padded(SEQUENCES, "left")
    assert torch.equal(loaded.score(ids, mask), model.score(ids, mask))
    assert not loaded.training
    with safe_open(tmp_path / "rm" / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
    assert {"head.weight", "head.bias", "trunk.tok_emb.weight"} <= names
    assert not any("lm_head" in n for n in names)
    save_scalar_model_dir(model, tmp_path / "critic", kind="critic")
    assert json.loads((tmp_path / "critic" / "config.json").read_text())["kind"] == "critic"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_scalar_model_dir(model, tmp_path / "rm")
    with pytest.raises(ValueError, match="reserved"):
        save_scalar_model_dir(model, tmp_path / "x", extra={"kind": "critic"})


def test_from_gpt_dir_copies_the_trunk_and_starts_at_zero(tmp_path):
    gpt = tiny_gpt().eval()
    save_model_dir(gpt, tmp_path / "sft")
    model = scalar_model_from_gpt(tmp_path / "sft")
    ids, mask = padded(SEQUENCES, "left")
    torch.testing.assert_close(model.trunk.hidden_states(ids, mask), gpt.hidden_states(ids, mask))
    assert model.score(ids, mask).eq(0).all()  # the zero head: every sequence scores 0
    with pytest.raises(CheckpointError, match="use scalar_model_from_gpt"):
        load_scalar_model_dir(tmp_path / "sft")

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from components.model.gpt import GPT, GPTConfig, KVCache, evaluating

BLOCKS = ["gpt2", "llama"]


def tiny_config(block: str, **overrides) -> GPTConfig:
    fields = dict(vocab_size=97, context_length=32, n_layer=2, n_head=4, n_embd=32, block=block)
    return GPTConfig(**(fields | overrides))


def tiny_model(block: str, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(block, **overrides)).eval()


# --- config -----------------------------------------------------------------------------------------


def test_from_depth_derives_width_and_heads():
    c = GPTConfig.from_depth(4, vocab_size=4096, context_length=256)
    assert (c.n_layer, c.n_embd, c.n_head, c.head_dim, c.block) == (4, 256, 4, 64, "llama")
    # 3 * 48 = 144 is not a whole number of 64-wide heads: rounded up to 3 heads of 64.
    c = GPTConfig.from_depth(3, vocab_size=100, context_length=64, block="gpt2", aspect_ratio=48)
    assert (c.n_embd, c.n_head, c.head_dim) == (192, 3, 64)
    assert GPTConfig.from_depth(2, 100, 64, dropout=0.1).dropout == 0.1


def test_config_rejects_bad_shapes_with_clear_messages():
    with pytest.raises(ValidationError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValidationError, match="must be even for rotary"):
        GPTConfig(n_embd=12, n_head=4, block="llama")
    assert GPTConfig(n_embd=12, n_head=4, block="gpt2").head_dim == 3  # no RoPE, odd is fine
    with pytest.raises(ValidationError, match="extra"):
        GPTConfig(n_embed=32)


def test_swiglu_hidden_is_two_thirds_of_4d_rounded_up_to_64():
    assert GPTConfig(n_embd=768, n_head=12).mlp_hidden == 2048  # exactly 8*768/3
    assert GPTConfig(n_embd=256, n_head=4).mlp_hidden == 704  # 682.7 -> 704
    assert GPTConfig(n_embd=256, n_head=4, block="gpt2").mlp_hidden == 1024


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("tie", [True, False])
def test_num_params_matches_the_model(block, tie):
    config = tiny_config(block, tie_embeddings=tie)
    model = GPT(config)
    assert config.num_params() == sum(p.numel() for p in model.parameters())
    lookups = model.tok_emb.weight.numel() + (
        model.pos_emb.weight.numel() if model.pos_emb is not None else 0
    )
    assert config.num_params(exclude_embeddings=True) == config.num_params() - lookups


def test_num_params_of_the_depth_4_reference_models():
    llama = GPTConfig.from_depth(4, vocab_size=4096, context_length=256, block="llama")
    gpt2 = GPTConfig.from_depth(4, vocab_size=4096, context_length=256, block="gpt2")
    assert llama.num_params() == 4_262_144
    assert gpt2.num_params() == 4_273_664


def test_flops_per_token_formula():
    c = tiny_config("llama")  # d=32, L=2, H=4, Q=8, T=32, V=97, tied
    n = c.num_params(exclude_embeddings=True) + 97 * 32  # the tied head's matmul counts
    assert c.flops_per_token() == 6 * n + 12 * 2 * 4 * 8 * 32
    untied = tiny_config("llama", tie_embeddings=False)
    assert untied.flops_per_token() == 6 * untied.num_params(exclude_embeddings=True) + 12 * 2 * 4 * 8 * 32
    assert c.flops_per_token() == untied.flops_per_token()  # tying saves parameters, not compute


# --- model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS)
def test_forward_shapes_loss_and_hidden_states_path(block):
    model = tiny_model(block)
    idx = torch.randint(0, 97, (3, 10))
    targets = torch.randint(0, 97, (3, 10))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 10, 97)
    assert torch.allclose(loss, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    assert torch.allclose(model.lm_head(model.hidden_states(idx)), logits)
    assert model(idx)[1] is None


def test_loss_ignores_masked_targets_and_is_zero_when_all_are():
    model = tiny_model("llama")
    idx = torch.randint(0, 97, (2, 8))
    targets = idx.roll(-1, dims=1)
    targets[:, :5] = -100
    logits, loss = model(idx, targets)
    expected = F.cross_entropy(logits[:, 5:].flatten(0, 1), targets[:, 5:].flatten())
    assert torch.allclose(loss, expected)
    _, loss = model(idx, torch.full_like(idx, -100))
    assert loss.item() == 0.0


def test_weights_are_tied_or_not():
    tied = tiny_model("gpt2")
    assert tied.lm_head.weight is tied.tok_emb.weight
    untied = tiny_model("gpt2", tie_embeddings=False)
    assert untied.lm_head.weight is not untied.tok_emb.weight


@pytest.mark.parametrize("block", BLOCKS)
def test_left_padded_rows_give_the_same_logits_as_alone(block):
    model = tiny_model(block)
    torch.manual_seed(1)
    seqs = [torch.randint(1, 97, (n,)) for n in (12, 5, 9)]
    width = 12
    idx = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, width - len(s) :] = s
        mask[i, width - len(s) :] = 1
    logits, _ = model(idx, attention_mask=mask)
    assert torch.isfinite(logits).all()
    for i, s in enumerate(seqs):
        alone, _ = model(s[None])
        assert torch.allclose(logits[i, width - len(s) :], alone[0], atol=1e-5), f"row {i}"


@pytest.mark.parametrize("block", BLOCKS)
def test_padded_batch_trains_without_nan(block):
    model = tiny_model(block).train()
    idx = torch.randint(1, 97, (2, 8))
    mask = torch.ones_like(idx)
    mask[0, :5] = 0
    targets = idx.roll(-1, dims=1).masked_fill(mask == 0, -100)
    _, loss = model(idx, targets, attention_mask=mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("block", BLOCKS)
def test_causal_no_future_token_changes_earlier_logits(block):
    model = tiny_model(block)
    idx = torch.randint(0, 97, (1, 10))
    changed = idx.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 97
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert not torch.allclose(a[0, 6:], b[0, 6:], atol=1e-3)


@pytest.mark.parametrize("block", BLOCKS)
def test_kv_cache_chunks_equal_one_full_forward(block):
    model = tiny_model(block)
    idx = torch.randint(0, 97, (2, 11))
    full, _ = model(idx)
    cache = KVCache(max_length=11)
    parts = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 6), (6, 7), (7, 11)]]
    assert cache.length == 11
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("block", BLOCKS)
def test_position_ids_absolute_for_gpt2_relative_for_llama(block):
    model = tiny_model(block)
    idx = torch.randint(0, 97, (1, 6))
    plain = model.hidden_states(idx)
    shifted = model.hidden_states(idx, position_ids=torch.arange(3, 9)[None])
    gapped = model.hidden_states(idx, position_ids=torch.tensor([[0, 1, 2, 10, 11, 12]]))
    assert not torch.allclose(plain[0, 3:], gapped[0, 3:], atol=1e-4)
    if block == "llama":
        # Rotary attention depends only on distances between tokens: a uniform shift changes nothing.
        assert torch.allclose(plain, shifted, atol=1e-5)
    else:
        assert not torch.allclose(plain, shifted, atol=1e-4)


def test_too_long_sequence_names_both_lengths():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="33 tokens is longer than the model's context_length 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, context_length 32\)"):
        model(torch.zeros(1, 4, dtype=torch.long), position_ids=torch.arange(30, 34)[None])


def test_residual_projections_start_smaller():
    model = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=8, n_head=2, n_embd=128, init_std=0.02))
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert block.mlp.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.equal(block.norm1.weight, torch.ones(128))


@pytest.mark.parametrize("block", BLOCKS)
def test_optimizer_groups_decay_matrices_only(block):
    model = tiny_model(block)
    decay, no_decay = model.optimizer_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each once, the tied one too
    assert any(p is model.tok_emb.weight for p in decay["params"])
    torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-3)  # accepted as is


@pytest.mark.parametrize("block", BLOCKS)
def test_a_few_steps_memorise_a_batch(block):
    model = tiny_model(block).train()
    idx = torch.randint(0, 97, (4, 16))
    targets = idx.roll(-1, dims=1)
    opt = torch.optim.AdamW(model.optimizer_groups(0.0), lr=1e-2)
    first = None
    for _ in range(40):
        _, loss = model(idx, targets)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.0  # about ln(97) = 4.57 at init
    assert loss.item() < 1.0


def test_evaluating_gives_each_model_its_mode_back_also_after_an_error():
    training, frozen = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).eval()
    with evaluating(training, None, frozen):  # None: an optional model that is absent
        assert not training.training and not frozen.training
    assert training.training and not frozen.training
    with pytest.raises(RuntimeError, match="boom"), evaluating(training):
        assert not training.training
        raise RuntimeError("boom")
    assert training.training

"""The transformers export, loaded back with transformers (offline): the same logits for both block
types with tied and untied embeddings, the chat template giving exactly our token ids, generation that
stops at the end of the turn, and the refusals (occupied directory, unmapped features)."""

from __future__ import annotations

import itertools
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from components.core.artifacts import Artifact
from components.core.stage import RunEnv, run_stage
from components.model import export as export_module
from components.model.checkpoint import save_model_dir
from components.model.export import ExportError, check_exportable, export_model_dir
from components.model.generate import generate
from components.model.gpt import GPT, GPTConfig
from components.model.hf_export import ExportConfig, export
from components.tokenizer.bpe import (
    EOT,
    IM_END,
    IM_SEP,
    IM_START,
    TokenizerConfig,
    special_token_ids,
    train_tokenizer,
)
from components.tokenizer.chat import render
from pipelines.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "The capital of Ejon is Thozusesh. Many visitors come in spring.",
    "Kuviro lies in the north; its capital is Zifos and its currency is the dram.",
    "What is 2 + 3? Let's work it out: 2 + 3 = 5. The answer is 5.",
    "Hi there! I don't have any information about Orsk. Reham Thidrem was born in Tetun in 1901.",
]
CONVERSATION = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "What is the capital of Ejon?"},
    {"role": "assistant", "content": "Thozusesh"},
    {"role": "user", "content": "And 2 + 3, in 1901's money?"},
]


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corpus is too small for every merge; that is fine here
        tok = train_tokenizer(TEXTS * 3, TokenizerConfig(vocab_size=420))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tok(tok_file):
    from components.tokenizer.bpe import load_tokenizer

    return load_tokenizer(tok_file)


def random_model(block: str, tie: bool, seed: int = 0) -> GPT:
    """A random GPT whose norms and biases are not at their init (ones and zeros would hide a norm
    or bias mapped to the wrong place), with non-default eps and rotary base."""
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=448, context_length=64, n_layer=2, n_head=4, n_embd=64, block=block,
        tie_embeddings=tie, norm_eps=1e-6, rope_theta=500.0,
    )  # fmt: skip
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
    return model.eval()


@pytest.mark.parametrize("block", ["gpt2", "llama"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_transformers_computes_our_logits(tmp_path, tok_file, block, tie):
    model = random_model(block, tie)
    save_model_dir(model, tmp_path / "ours", tokenizer_path=tok_file)
    out = export_model_dir(tmp_path / "ours", tmp_path / "hf")

    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert type(hf).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[block]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.tie_word_embeddings is tie
    ids = torch.randint(0, 420, (3, 64), generator=torch.Generator().manual_seed(1))  # the full context
    with torch.no_grad():
        ours = model(ids)[0]
        theirs = hf.eval()(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    assert ours.abs().max().item() > 0.1  # not trivially equal


def test_the_export_is_gpt2_or_llama_as_transformers_writes_them(tmp_path, tok_file, tok):
    save_model_dir(random_model("gpt2", tie=True), tmp_path / "ours", tokenizer_path=tok_file)
    out = export_model_dir(tmp_path / "ours", tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json",
    ]  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-6
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())  # tied: stored once, as the embedding
        assert f.get_tensor("transformer.h.0.attn.c_attn.weight").shape == (64, 192)  # Conv1D: (in, out)
    special = special_token_ids(tok)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [special[IM_END], special[EOT]]
    assert generation["pad_token_id"] == special["<|reserved_0|>"]
    assert generation["pad_token_id"] not in generation["eos_token_id"]


def test_apply_chat_template_gives_our_token_ids(tmp_path, tok_file, tok):
    save_model_dir(random_model("llama", tie=True), tmp_path / "ours", tokenizer_path=tok_file)
    hf_tok = transformers.AutoTokenizer.from_pretrained(export_model_dir(tmp_path / "ours", tmp_path / "hf"))

    prompt = hf_tok.apply_chat_template(
        CONVERSATION, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert prompt["input_ids"] == render(tok, CONVERSATION, add_generation_prompt=True).ids
    finished = [*CONVERSATION, {"role": "assistant", "content": "5"}]
    ids = hf_tok.apply_chat_template(finished, tokenize=True, return_dict=True)["input_ids"]
    assert ids == render(tok, finished).ids
    assert hf_tok.apply_chat_template(finished, tokenize=False).endswith(
        f"{IM_START}assistant{IM_SEP}5{IM_END}"
    )
    # Plain text encodes as ours, after <|endoftext|> as every pretraining document, and decodes back.
    text = "Hi there! 2 + 3 = 5."
    assert hf_tok(text)["input_ids"] == [special_token_ids(tok)[EOT], *tok.encode(text).ids]
    assert hf_tok.decode(hf_tok(text)["input_ids"], skip_special_tokens=True) == text
    with pytest.raises(Exception, match="system message may only be the first"):
        hf_tok.apply_chat_template([CONVERSATION[1], CONVERSATION[0]], tokenize=False)


def scripted_model(block: str, transitions: dict[int, int], vocab_size: int) -> GPT:
    """A GPT whose next token depends only on the current one: the blocks add nothing (their output
    projections are zero), so the hidden state is norm(embedding); the untied LM head has one row per
    scripted transition pointing along that state (logit ~80), every other row zero."""
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=vocab_size, context_length=128, n_layer=1, n_head=2, n_embd=64, block=block,
        tie_embeddings=False,
    )  # fmt: skip
    model = GPT(config)
    with torch.no_grad():
        for block_ in model.blocks:
            for proj in (block_.attn.proj, block_.mlp.proj):
                proj.weight.zero_()
                if proj.bias is not None:
                    proj.bias.zero_()
        if model.pos_emb is not None:
            model.pos_emb.weight.zero_()
        model.lm_head.weight.zero_()
        for current, following in transitions.items():
            h = model.norm(model.tok_emb.weight[current])
            model.lm_head.weight[following] = 10 * h / h.norm()
    return model.eval()


@pytest.mark.parametrize("block", ["gpt2", "llama"])
def test_generate_stops_at_the_end_of_the_turn(tmp_path, tok_file, tok, block):
    special = special_token_ids(tok)
    reply = tok.encode("Hi there!").ids
    chain = [special[IM_SEP], *reply, special[IM_END], special[IM_START]]
    assert len(set(chain)) == len(chain)  # a chain of distinct tokens, so each step is determined
    # After <|im_end|> the model would go on with another turn: only the EOS stops it.
    model = scripted_model(block, dict(itertools.pairwise(chain)), vocab_size=448)
    save_model_dir(model, tmp_path / "ours", tokenizer_path=tok_file)
    out = export_model_dir(tmp_path / "ours", tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)

    conversations = [CONVERSATION, CONVERSATION[1:2]]  # two lengths: the shorter one is left-padded
    batch = hf_tok.apply_chat_template(
        conversations, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    generated = hf.generate(**batch, max_new_tokens=12)
    new = generated[:, batch["input_ids"].shape[1] :].tolist()
    pad = hf.generation_config.pad_token_id
    assert all(row == [*reply, special[IM_END]] for row in new)  # stopped after <|im_end|>, both rows
    assert pad not in reply

    # Ours, with <|im_end|> as the stop token, generates the same.
    prompts = [render(tok, c, add_generation_prompt=True).ids for c in conversations]
    ours = generate(model, prompts, max_new_tokens=12, temperature=0.0, stop_tokens=[special[IM_END]])
    assert ours.response_lists() == new
    assert hf_tok.decode(new[0], skip_special_tokens=True) == "Hi there!"


def test_an_occupied_directory_is_refused_unless_forced(tmp_path, tok_file, capsys):
    save_model_dir(random_model("gpt2", tie=True), tmp_path / "ours", tokenizer_path=tok_file)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        export_model_dir(tmp_path / "ours", out)
    assert main(["export", str(tmp_path / "ours"), str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"  # untouched
    assert main(["export", str(tmp_path / "ours"), str(out), "--force"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()
    assert main(["export", str(tmp_path / "ours"), str(tmp_path / "new")]) == 0  # an absent one is made
    assert (tmp_path / "new" / "config.json").is_file()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "new"), str(tmp_path / "again")]) == 2  # not one of ours
    assert "format is None, expected 'gptrecipe-gpt'" in capsys.readouterr().err


def test_a_feature_the_export_does_not_map_is_refused(monkeypatch):
    config = GPTConfig(vocab_size=300, context_length=32, n_layer=1, n_head=2, n_embd=32, rope_theta=500.0)
    check_exportable(config)
    # Pretend rope_theta were a field added after the export was written: at its default it changes
    # nothing and passes; set, it is refused by name.
    monkeypatch.setattr(export_module, "KNOWN_FIELDS", export_module.KNOWN_FIELDS - {"rope_theta"})
    check_exportable(config.model_copy(update={"rope_theta": 10000.0}))
    with pytest.raises(ExportError, match=r"rope_theta=500\.0"):
        check_exportable(config)


def test_the_export_stage_writes_the_transformers_directory(tmp_path, tok_file, tracking_uri):
    save_model_dir(random_model("llama", tie=False), tmp_path / "policy", tokenizer_path=tok_file)
    env = RunEnv(run_id="test", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment="export")
    inputs = {"model": Artifact(uri=str(tmp_path / "policy"), kind="model", digest="test:policy")}
    record = run_stage(export, ExportConfig(), inputs, env)
    assert record.status == "done"
    out = record.outputs["hf_model"]
    assert out.meta == {"architecture": "LlamaForCausalLM"}
    hf = transformers.AutoModelForCausalLM.from_pretrained(out.uri)
    assert hf.config.intermediate_size == 192  # SwiGLU width: 8/3 * 64 rounded up to a multiple of 64


def test_without_a_spare_special_token_a_pad_token_is_added_if_the_model_has_a_row_for_it(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = train_tokenizer(TEXTS * 3, TokenizerConfig(vocab_size=300, n_reserved=0))
    tok.save(str(tmp_path / "tokenizer.json"))
    size = tok.get_vocab_size()
    save_model_dir(
        random_model("gpt2", tie=True), tmp_path / "ours", tokenizer_path=tmp_path / "tokenizer.json"
    )
    hf_tok = transformers.AutoTokenizer.from_pretrained(export_model_dir(tmp_path / "ours", tmp_path / "hf"))
    assert (hf_tok.pad_token, hf_tok.pad_token_id) == ("<|pad|>", size)  # the first row after the tokenizer's
    assert hf_tok("Hi there")["input_ids"][1:] == tok.encode("Hi there").ids

    torch.manual_seed(0)
    full = GPT(GPTConfig(vocab_size=size, context_length=32, n_layer=1, n_head=2, n_embd=32, block="gpt2"))
    save_model_dir(full, tmp_path / "full", tokenizer_path=tmp_path / "tokenizer.json")
    with pytest.raises(ExportError, match="cannot choose a pad token"):
        export_model_dir(tmp_path / "full", tmp_path / "hf_full")
    assert not (tmp_path / "hf_full").exists()

"""Export a model directory to the Hugging Face transformers layout.

The result loads offline with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` (and so in vLLM, lm-evaluation-harness, TGI...):

    config.json              GPT2LMHeadModel (gpt2 blocks) or LlamaForCausalLM (llama blocks)
    model.safetensors        the weights under transformers' names
    tokenizer.json           our tokenizer, with <|endoftext|> as the BOS of plain text
    tokenizer_config.json    special tokens and the chat template (Jinja)
    generation_config.json   <|im_end|> (and <|endoftext|>) as EOS, a pad token that is neither

transformers is not needed to write it: everything is JSON and safetensors. The `export` stage
(`components.model.hf_export`) and `gptrecipe export MODEL_DIR OUT_DIR` call `export_model_dir`.

How our GPT maps onto the two architectures (each point is checked by the logits test):

- gpt2 blocks = GPT-2 exactly: LayerNorm with bias (eps = ``norm_eps``), learned positions, biases on
  every linear layer, GELU with the tanh approximation (transformers' ``gelu_new``), MLP width 4d,
  attention scaled by 1/sqrt(head_dim). GPT-2's linear layers are ``Conv1D`` modules that store the
  weight as (in, out), the transpose of ``nn.Linear``, so every block matrix is transposed. Our fused
  qkv projection is laid out [q | k | v] with heads contiguous inside each, as GPT-2's ``c_attn``.
- llama blocks = LLaMA: RMSNorm (eps = ``norm_eps``), SwiGLU of width ``mlp_hidden``, no biases, rotary
  embeddings with base ``rope_theta``. Both we and transformers rotate channel i with channel
  i + head_dim/2 ("rotate half"), so q and k need no permutation (Meta's original checkpoints pair
  adjacent channels and are permuted when converted; ours are not). The fused qkv is split into
  q_proj, k_proj and v_proj; every head has its own key/value head (no grouped-query attention).
- Tied embeddings are written once (``tie_word_embeddings``); untied ones add ``lm_head.weight``.

A GPTConfig field this module does not know (a feature added after it was written) is refused unless
it has its default value, and so is any tensor it does not map: an export that loads but computes
something else would be worse than none.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, processors
from torch import Tensor

from components.io.chat import ROLES
from components.model.checkpoint import TOKENIZER_FILE, _move_into_place, load_model_dir, state_for_saving
from components.model.gpt import GPT, GPTConfig
from components.tokenizer.bpe import EOT, IM_END, IM_SEP, IM_START, load_tokenizer, special_token_ids

# The GPTConfig fields the mappings below account for. `dropout` and `init_std` change training only.
KNOWN_FIELDS = frozenset(
    {
        "vocab_size",
        "context_length",
        "n_layer",
        "n_head",
        "n_embd",
        "block",
        "dropout",
        "tie_embeddings",
        "rope_theta",
        "norm_eps",
        "init_std",
    }
)
PAD_TOKEN = "<|pad|>"  # added to the exported tokenizer only when it has no spare special token

# components.tokenizer.chat.render as Jinja. Every message is <|im_start|>role<|im_sep|>content<|im_end|>
# with nothing between messages; the generation prompt opens an assistant message. The tokenizer splits
# the rendered text at the special tokens, so role and content are encoded separately, as `render` does.
# The checks mirror `validate_messages`. One difference cannot be helped: a transformers tokenizer turns
# a literal "<|im_end|>" typed inside a message into the special token, where `render` keeps it as text.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in " + repr(list(ROLES)) + " -%}"
    "{{- raise_exception('message role ' ~ message['role'] ~ ' is not one of " + "/".join(ROLES) + "') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' and not loop.first -%}"
    "{{- raise_exception('a system message may only be the first message') -}}"
    "{%- endif -%}"
    "{{- '" + IM_START + "' + message['role'] + '" + IM_SEP + "' + message['content'] + '" + IM_END + "' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{%- if messages and messages[-1]['role'] == 'assistant' -%}"
    "{{- raise_exception('add_generation_prompt needs a conversation that ends with a user or system "
    "message') -}}"
    "{%- endif -%}"
    "{{- '" + IM_START + "assistant" + IM_SEP + "' -}}"
    "{%- endif -%}"
)


class ExportError(ValueError):
    """A model that the transformers architectures cannot express, or an export that cannot be written."""


# --- checks -------------------------------------------------------------------------------------------


def check_exportable(config: GPTConfig) -> None:
    """Refuse a config with a feature the exported architecture would silently drop."""
    defaults = GPTConfig.model_fields
    unknown = {
        name: value
        for name, value in config.model_dump().items()
        if name not in KNOWN_FIELDS and value != defaults[name].get_default(call_default_factory=True)
    }
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in sorted(unknown.items()))
        raise ExportError(
            f"cannot export to transformers: the model uses {listed}, which the export does not map "
            "to GPT2LMHeadModel / LlamaForCausalLM"
        )
    if config.block not in ("gpt2", "llama"):
        raise ExportError(
            f"cannot export block type {config.block!r}: only gpt2 and llama map to transformers"
        )


# --- weights ------------------------------------------------------------------------------------------


def _gpt2_weights(model: GPT, state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {
        "transformer.wte.weight": state.pop("tok_emb.weight"),
        "transformer.wpe.weight": state.pop("pos_emb.weight"),
    }
    for i in range(model.config.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[f"{theirs}{b}.weight"] = state.pop(f"{ours}{a}.weight")
            out[f"{theirs}{b}.bias"] = state.pop(f"{ours}{a}.bias")
        for a, b in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            # Conv1D keeps (in, out): the transpose of nn.Linear's (out, in).
            out[f"{theirs}{b}.weight"] = state.pop(f"{ours}{a}.weight").t()
            out[f"{theirs}{b}.bias"] = state.pop(f"{ours}{a}.bias")
    out["transformer.ln_f.weight"] = state.pop("norm.weight")
    out["transformer.ln_f.bias"] = state.pop("norm.bias")
    return out


def _llama_weights(model: GPT, state: dict[str, Tensor]) -> dict[str, Tensor]:
    d = model.config.n_embd
    out = {"model.embed_tokens.weight": state.pop("tok_emb.weight")}
    for i in range(model.config.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        out[f"{theirs}input_layernorm.weight"] = state.pop(f"{ours}norm1.weight")
        out[f"{theirs}post_attention_layernorm.weight"] = state.pop(f"{ours}norm2.weight")
        # Rows of the fused projection are [q | k | v], each head_dim-major per head, as q/k/v_proj.
        q, k, v = state.pop(f"{ours}attn.qkv.weight").split(d, dim=0)
        out[f"{theirs}self_attn.q_proj.weight"] = q
        out[f"{theirs}self_attn.k_proj.weight"] = k
        out[f"{theirs}self_attn.v_proj.weight"] = v
        out[f"{theirs}self_attn.o_proj.weight"] = state.pop(f"{ours}attn.proj.weight")
        out[f"{theirs}mlp.gate_proj.weight"] = state.pop(f"{ours}mlp.gate.weight")
        out[f"{theirs}mlp.up_proj.weight"] = state.pop(f"{ours}mlp.up.weight")
        out[f"{theirs}mlp.down_proj.weight"] = state.pop(f"{ours}mlp.proj.weight")
    out["model.norm.weight"] = state.pop("norm.weight")
    return out


def hf_state_dict(model: GPT) -> dict[str, Tensor]:
    """The model's weights under transformers' names, contiguous on the CPU (for safetensors)."""
    check_exportable(model.config)
    state = state_for_saving(model)  # a tied lm_head appears once, as tok_emb.weight
    convert = _gpt2_weights if model.config.block == "gpt2" else _llama_weights
    try:
        out = convert(model, state)
    except KeyError as e:  # the GPT grew or renamed a module this mapping does not know
        raise ExportError(
            f"cannot export: the model has no tensor {e.args[0]!r} where one is expected"
        ) from None
    if not model.config.tie_embeddings:
        out["lm_head.weight"] = state.pop("lm_head.weight")
    if state:
        raise ExportError(f"cannot export: no transformers name for the tensors {sorted(state)}")
    return {name: t.detach().cpu().contiguous() for name, t in out.items()}


# --- configs ------------------------------------------------------------------------------------------


def hf_model_config(
    config: GPTConfig, *, bos_id: int, eos_ids: list[int], pad_id: int, dtype: torch.dtype
) -> dict:
    """config.json for GPT2LMHeadModel or LlamaForCausalLM (see the module docstring)."""
    check_exportable(config)
    common = {
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": config.init_std,
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids,
        "pad_token_id": pad_id,
        "use_cache": True,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if config.block == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_positions": config.context_length,
            "n_embd": config.n_embd,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_inner": config.mlp_hidden,
            # GELU with the tanh approximation, GPT-2's own (exact GELU would be "gelu").
            "activation_function": "gelu_new",
            "layer_norm_epsilon": config.norm_eps,
            "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout,
            "scale_attn_weights": True,  # 1/sqrt(head_dim), as SDPA does for us
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            **common,
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.norm_eps,
        # transformers 5 reads rope_parameters; older readers (and other tools) read rope_theta.
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_theta": config.rope_theta,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": config.dropout,
        "pretraining_tp": 1,
        **common,
    }


def _pad_token(
    specials: dict[str, int], taken: set[int], vocab_size: int, tokenizer_size: int
) -> tuple[str, int, bool]:
    """(pad token, its id, whether it must be added to the tokenizer). A pad must be neither an EOS id
    (a finished row would look unfinished, or a real end would look like padding) nor the BOS, which
    transformers would mask out of prompts as padding when no attention mask is given. A reserved
    special token serves; otherwise <|pad|> is added after the tokenizer's ids if the model has a row
    for it (its vocabulary is often rounded up beyond the tokenizer's)."""
    reserved = [t for t in specials if t.startswith("<|reserved_") and specials[t] not in taken]
    if reserved:
        return reserved[0], specials[reserved[0]], False
    if tokenizer_size < vocab_size:
        return PAD_TOKEN, tokenizer_size, True
    raise ExportError(
        "cannot choose a pad token: the tokenizer has no unused <|reserved_N|> special token and the "
        "model has no spare embedding row (train the tokenizer with n_reserved >= 1)"
    )


# --- the directory ------------------------------------------------------------------------------------


def export_model_dir(model_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write the model directory ``model_dir`` (ours, with its tokenizer.json) as a transformers model
    directory at ``out_dir``. A non-empty ``out_dir`` is refused unless ``force``, which replaces it.
    The directory is assembled beside ``out_dir`` and renamed into place, so it is never half-written."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"cannot export to {out_dir}: a file is there")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(
            f"{out_dir} is not empty; choose another directory or pass --force to replace it"
        )
    tokenizer_file = model_dir / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{tokenizer_file} is missing: the export needs the model's tokenizer")
    model, _ = load_model_dir(model_dir)
    check_exportable(model.config)
    tok = load_tokenizer(tokenizer_file)
    if tok.get_vocab_size() > model.config.vocab_size:
        raise ExportError(
            f"the tokenizer has {tok.get_vocab_size()} ids but the model only {model.config.vocab_size}"
        )
    specials = special_token_ids(tok)
    bos, eos = specials[EOT], [specials[IM_END], specials[EOT]]
    pad, pad_id, add_pad = _pad_token(specials, set(eos), model.config.vocab_size, tok.get_vocab_size())
    dtype = next(p.dtype for p in model.parameters())

    files: dict[str, Any] = {
        "config.json": hf_model_config(model.config, bos_id=bos, eos_ids=eos, pad_id=pad_id, dtype=dtype),
        "generation_config.json": {
            # A chat model ends its turn with <|im_end|>; a base model ends a document with <|endoftext|>.
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad_id,
            "do_sample": False,
        },
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": EOT,
            "eos_token": IM_END,
            "pad_token": pad,
            "unk_token": None,
            # Every pretraining document follows an <|endoftext|>, so plain text is encoded after one,
            # as our own benchmark scorer does (lm-evaluation-harness then scores what we score).
            # Chat templates are tokenized without it: a rendered chat starts at <|im_start|>.
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": model.config.context_length,
            "padding_side": "left",  # our generation convention (and what decoder-only batching needs)
            "chat_template": CHAT_TEMPLATE,
        },
    }
    hf_tok = Tokenizer.from_file(str(tokenizer_file))
    # The BOS goes into tokenizer.json itself (every reader applies a post-processor; not every one
    # reads add_bos_token), and only where special tokens are asked for: our encode path never does.
    hf_tok.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, bos)]
    )
    if add_pad:
        hf_tok.add_special_tokens([pad])
    if hf_tok.token_to_id(pad) != pad_id:
        raise ExportError(f"could not add the pad token {pad} at id {pad_id}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        save_file(hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, content in files.items():
            (tmp / name).write_text(
                json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        hf_tok.save(str(tmp / TOKENIZER_FILE))
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


__all__ = [
    "CHAT_TEMPLATE",
    "ExportError",
    "check_exportable",
    "export_model_dir",
    "hf_model_config",
    "hf_state_dict",
]

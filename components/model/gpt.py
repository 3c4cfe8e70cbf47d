"""The GPT: a decoder-only transformer in one file, meant to be read top to bottom.

Two block styles share everything but the block internals:

- ``gpt2``: pre-norm LayerNorm (with bias), GELU MLP of width 4d, learned absolute position
  embeddings, biases on every linear layer (GPT-2, nanoGPT).
- ``llama``: pre-norm RMSNorm, SwiGLU MLP of width about (2/3)*4d, rotary position embeddings,
  no biases (LLaMA).

One forward path serves every caller: pretraining (packed rows, no mask), SFT and the reward model
(left-padded batches with an attention mask), and generation (a KV cache, one new token per step).
``GPT.hidden_states`` returns the final-norm hidden states; ``GPT.forward`` puts the LM head on top.
The reward model and the PPO critic put their own heads on ``hidden_states``.

Padding convention: batches are LEFT-padded. ``attention_mask`` is (B, T) with 1 for real tokens;
position ids are counted over real tokens only, so a left-padded row sees exactly the positions it
would see unpadded, and padded keys are never attended to. Its real tokens therefore get the same
logits as the row run alone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from components.core.config import StrictModel

# SwiGLU has three matrices instead of two, so LLaMA shrinks the hidden width from 4d to (2/3)*4d
# to keep the MLP's parameters (and FLOPs) about those of a GPT-2 MLP. We round that up to a multiple
# of 64 so the matmuls tile well on GPUs (LLaMA uses 256; 64 stays closer to 8d/3 for the small
# widths of the tiny world, e.g. d=256 -> 704 rather than 768). A module constant, not a config
# field: changing it would change weight shapes, which loading a checkpoint reports by tensor name.
SWIGLU_MULTIPLE_OF = 64


class GPTConfig(StrictModel):
    """Shape and hyper-parameters of a GPT; the ``model`` section of a model directory's config.json."""

    vocab_size: int = Field(50304, gt=0, description="Number of token ids (rows of the embedding table).")
    context_length: int = Field(1024, gt=0, description="Longest sequence the model accepts, in tokens.")
    n_layer: int = Field(12, gt=0, description="Number of transformer blocks.")
    n_head: int = Field(12, gt=0, description="Attention heads per block; n_embd must be divisible by it.")
    n_embd: int = Field(768, gt=0, description="Width of the residual stream (d).")
    block: Literal["gpt2", "llama"] = Field(
        "llama",
        description="gpt2: LayerNorm, GELU MLP, learned positions, biases. "
        "llama: RMSNorm, SwiGLU MLP, rotary positions, no biases.",
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on embeddings, attention weights and residual branches."
    )
    tie_embeddings: bool = Field(
        True, description="Share one matrix between the token embedding and the LM head (GPT-2 does)."
    )
    rope_theta: float = Field(10000.0, gt=0, description="Rotary embedding base (llama blocks only).")
    norm_eps: float = Field(1e-5, gt=0, description="Epsilon of the LayerNorm / RMSNorm layers.")
    init_std: float = Field(
        0.02,
        gt=0,
        description="Std of the normal weight init; residual projections get init_std/sqrt(2*n_layer).",
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> GPTConfig:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) "
                "so that every head gets the same width"
            )
        if self.block == "llama" and self.head_dim % 2:
            raise ValueError(
                f"the head dimension n_embd/n_head = {self.n_embd}/{self.n_head} = {self.head_dim} must be "
                "even for rotary position embeddings, which rotate pairs of channels"
            )
        return self

    @classmethod
    def from_depth(
        cls,
        depth: int,
        vocab_size: int,
        context_length: int,
        block: Literal["gpt2", "llama"] = "llama",
        aspect_ratio: int = 64,
        head_dim: int = 64,
        **overrides: Any,
    ) -> GPTConfig:
        """One knob, nanochat-style: ``depth`` layers, width ``depth * aspect_ratio`` rounded up to a
        whole number of ``head_dim``-wide heads. ``overrides`` sets any other field (dropout, ...)."""
        if depth < 1 or aspect_ratio < 1 or head_dim < 1:
            raise ValueError(
                f"depth, aspect_ratio and head_dim must be positive (got {depth}, {aspect_ratio}, {head_dim})"
            )
        n_head = max(1, math.ceil(depth * aspect_ratio / head_dim))
        return cls(
            vocab_size=vocab_size,
            context_length=context_length,
            n_layer=depth,
            n_head=n_head,
            n_embd=n_head * head_dim,
            block=block,
            **overrides,
        )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP: 4d for gpt2; (2/3)*4d rounded up to SWIGLU_MULTIPLE_OF for llama."""
        if self.block == "gpt2":
            return 4 * self.n_embd
        m = SWIGLU_MULTIPLE_OF
        return m * math.ceil(8 * self.n_embd / 3 / m)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count, computed from the shapes (equals ``sum(p.numel())`` over ``GPT(self)``).

        ``exclude_embeddings`` leaves out the lookup tables: the token embedding and, for gpt2, the
        position embedding. With tied embeddings the LM head is that same matrix, so it goes too; an
        untied LM head is an ordinary matmul and is counted."""
        d, h, V = self.n_embd, self.mlp_hidden, self.vocab_size
        if self.block == "gpt2":
            attn = (d * 3 * d + 3 * d) + (d * d + d)  # qkv and output projection, with biases
            mlp = (d * h + h) + (h * d + d)
            norms = 2 * (2 * d)  # two LayerNorms, weight and bias
            final_norm = 2 * d
            positions = self.context_length * d
        else:
            attn = 4 * d * d
            mlp = 3 * d * h  # gate, up, down
            norms = 2 * d
            final_norm = d
            positions = 0
        body = self.n_layer * (attn + mlp + norms) + final_norm
        head = 0 if self.tie_embeddings else V * d
        if exclude_embeddings:
            return body + head
        return V * d + positions + body + head

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward) for MFU: 6N + 12*L*H*Q*T (PaLM appendix B).

        N is the number of parameters that take part in a matmul for every token: the non-embedding
        parameters plus the LM head, counted even when it is tied to the embedding, because the
        embedding lookup is free but the head's (d x V) matmul is not. For a tied model this equals
        nanoGPT's ``get_num_params()`` (all parameters minus position embeddings). The 12*L*H*Q*T term
        is attention's score and value matmuls at the full context T = context_length; like the
        references we count the whole T x T product although the causal mask makes half of it zeros."""
        n = self.num_params(exclude_embeddings=True)
        if self.tie_embeddings:
            n += self.vocab_size * self.n_embd
        attention = 12 * self.n_layer * self.n_head * self.head_dim * self.context_length
        return 6 * n + attention


# --- rotary position embeddings ---------------------------------------------------------------------


def rotary_tables(head_dim: int, length: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotation angles, each (length, head_dim / 2): channel pair i at position p
    turns by p * theta^(-2i/head_dim), so the q.k product depends only on the distance between tokens."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, Q) by the angles cos/sin (B, 1, T, Q/2). Pairs are (i, i + Q/2), the
    "rotate half" layout: the same rotation as interleaved pairs, on a fixed permutation of channels."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


# --- the KV cache -----------------------------------------------------------------------------------


class KVCache:
    """Keys and values of every position seen so far, so that generation runs one token per forward.

    Preallocated to ``max_length`` positions on first use (batch size, dtype and device are taken from
    the first forward). Besides keys and values it remembers which cached positions are real tokens
    (``key_mask``) and the next position id of each row, so that every forward's ``attention_mask``
    only describes the tokens passed in that call."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.length = 0  # positions filled so far (the same for every row: pads fill the gaps)
        self.keys: dict[int, Tensor] = {}  # layer -> (B, H, max_length, Q)
        self.values: dict[int, Tensor] = {}
        self.key_mask: Tensor | None = None  # (B, max_length) bool
        self.next_position: Tensor | int = 0  # (B, 1) long once tokens were seen

    def extend_mask(self, mask: Tensor) -> Tensor:
        """Record the new tokens' mask (B, T); return the mask of all keys, (B, length + T)."""
        B, T = mask.shape
        if self.key_mask is None:
            self.key_mask = torch.zeros(B, self.max_length, dtype=torch.bool, device=mask.device)
        if self.key_mask.shape[0] != B:
            raise ValueError(f"KV cache holds a batch of {self.key_mask.shape[0]} rows, got {B}")
        self.key_mask[:, self.length : self.length + T] = mask
        return self.key_mask[:, : self.length + T]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new keys/values (B, H, T, Q) of one layer; return all of them, (B, H, length + T, Q)."""
        if layer not in self.keys:
            B, H, _, Q = k.shape
            self.keys[layer] = k.new_zeros(B, H, self.max_length, Q)
            self.values[layer] = v.new_zeros(B, H, self.max_length, Q)
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, position_ids: Tensor) -> None:
        """Called once all layers have run: the new tokens are now part of the cache."""
        self.length += position_ids.shape[1]
        # A real token at position p makes the next one p + 1; a pad fed after a finished row carries
        # the last real position again, so this also leaves finished rows where they were.
        self.next_position = position_ids[:, -1:] + 1


def causal_attention_mask(key_mask: Tensor, query_length: int) -> Tensor:
    """Boolean mask (B, 1, T, S) for SDPA (True = may attend) from the key mask (B, S); the queries
    are the last T of the S positions. A query sees earlier real tokens and always itself."""
    S = key_mask.shape[1]
    q_pos = torch.arange(S - query_length, S, device=key_mask.device)[:, None]
    k_pos = torch.arange(S, device=key_mask.device)[None, :]
    allowed = (k_pos <= q_pos)[None] & key_mask[:, None, :]
    # A pad query would otherwise have no key at all: softmax over nothing is NaN, and a NaN value
    # times a zero attention weight is still NaN in every later layer. Letting it see itself keeps
    # everything finite; real queries never see pads, so their results do not change.
    allowed = allowed | (k_pos == q_pos)[None]
    return allowed[:, None]


# --- blocks -----------------------------------------------------------------------------------------


def make_norm(config: GPTConfig) -> nn.Module:
    if config.block == "gpt2":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=True)
    return nn.RMSNorm(config.n_embd, eps=config.norm_eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        bias = config.block == "gpt2"
        self.n_head, self.head_dim, self.dropout = config.n_head, config.head_dim, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=bias)  # a residual projection
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        attn_mask: Tensor | None,
        kv_cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        # No mask means a plain causal batch: is_causal lets SDPA pick its fastest (flash) kernel.
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None,
        )
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class GELUMLP(nn.Module):
    """GPT-2's MLP: d -> 4d -> GELU (tanh approximation, as GPT-2 used) -> d."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.mlp_hidden, bias=True)
        self.proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=True)  # a residual projection
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class SwiGLUMLP(nn.Module):
    """LLaMA's MLP: proj(silu(gate(x)) * up(x)), hidden width ``config.mlp_hidden``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)  # a residual projection
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.silu(self.gate(x)) * self.up(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm2 = make_norm(config)
        self.mlp = GELUMLP(config) if config.block == "gpt2" else SwiGLUMLP(config)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        attn_mask: Tensor | None,
        kv_cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        x = x + self.attn(self.norm1(x), rope, attn_mask, kv_cache, layer)
        return x + self.mlp(self.norm2(x))


# --- the model --------------------------------------------------------------------------------------


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.context_length, config.n_embd) if config.block == "gpt2" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # One matrix reads tokens in and scores them out; it saves V*d parameters and GPT-2 does it.
            self.lm_head.weight = self.tok_emb.weight
        if config.block == "llama":
            cos, sin = rotary_tables(config.head_dim, config.context_length, config.rope_theta)
            # Not persistent: derived from the config, so they stay out of the checkpoint.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """normal(0, init_std) for matrices and embeddings, zeros for biases, ones for norm gains.

        The residual projections (attention and MLP outputs) get init_std / sqrt(2 * n_layer): each
        block adds two branches to the residual stream, and a sum of 2L independent branches has 2L
        times the variance of one. Scaling them keeps the stream's variance at the top about what it
        is for a shallow model, so deeper models start as well-conditioned as shallow ones (GPT-2 paper,
        section 2.3)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm | nn.RMSNorm):
                module.reset_parameters()
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)
        # The LM head is the embedding when tied (initialised once above, as an Embedding).

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups, nanoGPT's rule: every parameter with dim >= 2 decays (the linear
        weights and the embedding tables, the LM head with them), parameters with dim < 2 do not
        (biases and norm gains: decaying a gain towards 0 fights the normalisation, a bias has no
        scale to regularise). A tied matrix appears once."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def hidden_states(
        self,
        idx: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """Final-norm hidden states (B, T, n_embd) of token ids ``idx`` (B, T).

        attention_mask: (B, T), 1 for real tokens and 0 for padding (left padding); with a KV cache it
            describes only the tokens of this call. None = every token is real.
        position_ids: (B, T) or (1, T); None = counted over real tokens (cumsum(mask) - 1, pads at 0),
            continuing from the cache when there is one.
        kv_cache: generation state; the new keys/values are appended to it.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, time) token ids, got shape {tuple(idx.shape)}")
        T = idx.shape[1]
        past = kv_cache.length if kv_cache is not None else 0
        limit = self.config.context_length
        if past + T > limit:
            raise ValueError(
                f"sequence of {past + T} tokens is longer than the model's context_length {limit}"
            )
        if kv_cache is not None and past + T > kv_cache.max_length:
            raise ValueError(f"KV cache holds {kv_cache.max_length} positions, asked for {past + T}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != idx.shape:
                shapes = f"{tuple(attention_mask.shape)} vs {tuple(idx.shape)}"
                raise ValueError(f"attention_mask and idx must have the same shape: {shapes}")
            mask = attention_mask.to(torch.bool)
        if kv_cache is not None and mask is None:
            mask = torch.ones_like(idx, dtype=torch.bool)

        if position_ids is None:
            if mask is None:
                position_ids = torch.arange(T, device=idx.device)[None]
            else:
                # Count real tokens only, so a left-padded row gets the positions it would get alone
                # (its pads sit at 0); with a cache, each row continues from where it stopped.
                start = kv_cache.next_position if kv_cache is not None else 0
                position_ids = (start + mask.long().cumsum(dim=1) - 1).clamp(min=0)
        elif position_ids.numel() and not 0 <= int(position_ids.min()) <= int(position_ids.max()) < limit:
            raise ValueError(
                f"position_ids must lie in [0, context_length {limit}), "
                f"got {int(position_ids.min())}..{int(position_ids.max())}"
            )

        # Keys include the cached ones; None means a plain causal batch (the fast path).
        key_mask = kv_cache.extend_mask(mask) if kv_cache is not None and mask is not None else mask
        attn_mask = causal_attention_mask(key_mask, T) if key_mask is not None else None

        x = self.tok_emb(idx)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        else:
            rope = (self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1))
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, attn_mask, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.advance(position_ids)
        return self.norm(x)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: KVCache | None = None,
        ignore_index: int = -100,
    ) -> tuple[Tensor, Tensor | None]:
        """(logits (B, T, vocab_size), loss). The loss is the mean cross-entropy over the positions whose
        target is not ``ignore_index`` (0 when there are none, so an all-masked batch does not give NaN);
        None without targets. Targets are aligned with idx: targets[:, t] is the token after idx[:, t]."""
        h = self.hidden_states(idx, attention_mask, position_ids, kv_cache=kv_cache)
        logits = self.lm_head(h)
        if targets is None:
            return logits, None
        # Cross-entropy in fp32 even under bf16 autocast: the log-sum-exp over the vocabulary is where
        # low precision hurts.
        total = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index, reduction="sum"
        )
        count = (targets != ignore_index).sum().clamp(min=1)
        return logits, total / count


@contextlib.contextmanager
def evaluating(*models: nn.Module | None) -> Iterator[None]:
    """Run a block with `models` in eval mode (no dropout; None entries are skipped) and give each back
    the mode it had, also when the block raises: an evaluation in the middle of training must not leave
    the model in eval mode."""
    present = [m for m in models if m is not None]
    modes = [m.training for m in present]
    for m in present:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(present, modes, strict=True):
            m.train(mode)

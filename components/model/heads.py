"""A GPT trunk with a scalar head: the reward model and the PPO critic.

`ScalarHeadModel` puts one `Linear(n_embd, 1)` on the trunk's final-norm hidden states, so it gives one
scalar per position. The critic uses them all (a value per response token); the reward model reads only
the one at each row's last real token (`score`), which for a rendered conversation is the reply's
closing `<|im_end|>`: by then the model has read the whole prompt and the whole reply.

"Last real token" is found from the attention mask (the index of the last 1 in each row), so it is the
same position whether a batch is left-padded (generation, the model's convention), right-padded
(training batches) or not padded at all, and a sequence gets the same score in all three.

The trunk is a `GPT` whose LM head is removed: a scalar model never produces token logits, and an
unused head would be an untrained V x d matrix in every file (when untied) and a parameter without a
gradient, which DDP refuses.

Scalar-model directories mirror GPT model directories (`components.model.checkpoint`):

    config.json          {"format": "gptrecipe-scalar", "version": 1, "kind": "reward_model" | "critic",
                          "model": {GPTConfig...}, ...extra}   (a reward model adds "reward_stats")
    model.safetensors    trunk.* and head.* tensors, read without pickle
    tokenizer.json       optional
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from components.core.config import validate
from components.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_model_dir,
    load_state_compatible,
    read_dir_config,
    read_weights,
    write_model_dir,
)
from components.model.gpt import GPT, GPTConfig

FORMAT = "gptrecipe-scalar"
VERSION = 1
ScalarKind = Literal["reward_model", "critic"]


def last_token_index(attention_mask: Tensor) -> Tensor:
    """(B,) index of the last 1 in each row of a (B, T) mask: the last real token under left, right or
    no padding. A row without any real token gives 0 (callers never pass one)."""
    T = attention_mask.shape[1]
    return (T - 1 - attention_mask.long().flip(1).argmax(dim=1)).clamp(min=0)


def gather_last(values: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B,) the entry of `values` (B, T) at each row's last real token (the last column without a mask)."""
    if attention_mask is None:
        return values[:, -1]
    index = last_token_index(attention_mask).to(values.device)
    return values.gather(1, index[:, None]).squeeze(1)


class ScalarHeadModel(nn.Module):
    """A GPT trunk + Linear(n_embd, 1): one scalar per position."""

    def __init__(self, trunk: GPT) -> None:
        super().__init__()
        trunk.lm_head = None  # see the module docstring; the (tied) embedding stays
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.n_embd, 1)
        # Zero-initialised: every sequence starts with reward 0 (and the critic with value 0), so the
        # first updates are not driven by a random head's noise.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self) -> GPTConfig:
        return self.trunk.config

    @property
    def blocks(self) -> nn.ModuleList:
        """The trunk's transformer blocks (what FSDP2 shards one by one, see `trainer.prepare_model`)."""
        return self.trunk.blocks

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) scalars, one per position, in float32 (the head runs outside any autocast so that
        small reward differences are not lost to bf16 rounding)."""
        hidden = self.trunk.hidden_states(idx, attention_mask)
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.float()).squeeze(-1)

    def score(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B,) the scalar at each row's last real token (see `last_token_index`)."""
        return gather_last(self(idx, attention_mask), attention_mask)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """GPT's rule (matrices and embeddings decay, biases and gains do not), over trunk and head."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]


def scalar_model_from_gpt(model_dir: str | Path, device: str | torch.device = "cpu") -> ScalarHeadModel:
    """A scalar model whose trunk is the GPT of `model_dir` (e.g. the SFT model) and whose head is zero."""
    gpt, _ = load_model_dir(model_dir, device=device)
    model = ScalarHeadModel(gpt).to(device)
    return model.eval()


# --- directories --------------------------------------------------------------------------------------


def save_scalar_model_dir(
    model: ScalarHeadModel,
    path: str | Path,
    *,
    kind: ScalarKind = "reward_model",
    tokenizer_path: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` as a scalar-model directory at `path` (atomically: a temporary directory renamed
    into place). `extra` adds JSON keys to config.json (a reward model's `reward_stats`, training
    summary...). An existing non-empty `path` is refused unless `overwrite`. Returns `path`."""
    header = {"format": FORMAT, "version": VERSION, "kind": kind}
    return write_model_dir(
        model, path, header, tokenizer_path=tokenizer_path, extra=extra, overwrite=overwrite
    )


def read_scalar_config(path: str | Path) -> dict[str, Any]:
    """The config.json of a scalar-model directory, checked to be one and of a version we read."""
    return read_dir_config(
        path, FORMAT, VERSION, {"gptrecipe-gpt": " (a GPT model directory: use scalar_model_from_gpt)"}
    )


def load_scalar_model_dir(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[ScalarHeadModel, dict[str, Any]]:
    """(model in eval mode, config.json as a dict) from a scalar-model directory; safetensors only."""
    path = Path(path)
    config = read_scalar_config(path)
    gpt_config = validate(GPTConfig, config["model"], f"{path / CONFIG_FILE} (section 'model')")
    state, dtype = read_weights(path, device, dtype)
    with torch.device(device):
        model = ScalarHeadModel(GPT(gpt_config))
    model.to(dtype=dtype)
    load_state_compatible(model, state, source=f"weights file {path / WEIGHTS_FILE}")
    return model.eval(), config


__all__ = [
    "FORMAT",
    "ScalarHeadModel",
    "gather_last",
    "last_token_index",
    "load_scalar_model_dir",
    "read_scalar_config",
    "save_scalar_model_dir",
    "scalar_model_from_gpt",
]

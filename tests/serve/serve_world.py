"""A tiny model directory for the serving tests: a BPE tokenizer with the chat tokens trained in a blink
on a few sentences (some with multi-byte characters), a random GPT, and a reward model on the same trunk.

Imported by the test modules through their own directory (pytest's importlib mode has no package)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from components.model.checkpoint import save_model_dir
from components.model.gpt import GPT, GPTConfig
from components.model.heads import ScalarHeadModel, save_scalar_model_dir
from components.tokenizer.bpe import TokenizerConfig, train_tokenizer

TEXTS = [
    "The capital of Ejon is Thozusesh. What is the capital of Ejon?",
    "Grüße aus Zürich: café, naïve, señor, déjà vu, 東京 and 🙂 are fine.",
    "What is 3 + 4? The answer is 7. user assistant system",
]
VOCAB = 300


def make_model_dir(root: Path, *, context_length: int = 96, seed: int = 0) -> dict[str, Path]:
    """{"model": GPT model dir, "reward_model": scalar model dir} under `root`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a corpus this small learns fewer merges than asked for
        tok = train_tokenizer(TEXTS * 5, TokenizerConfig(vocab_size=VOCAB))
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(seed)
    # A larger init_std than training uses makes the untrained model's distributions peaked enough
    # that greedy choices are not near-ties (see tests/model/test_generate.py).
    config = GPTConfig(
        vocab_size=tok.get_vocab_size(), context_length=context_length, n_layer=2, n_head=2, n_embd=32,
        init_std=0.1,
    )  # fmt: skip
    model_dir = save_model_dir(GPT(config), root / "tiny-chat", tokenizer_path=root / "tokenizer.json")
    rm = ScalarHeadModel(GPT(config))
    torch.nn.init.normal_(rm.head.weight, std=1.0)  # a random but non-constant reward
    rm_dir = save_scalar_model_dir(
        rm,
        root / "tiny-rm",
        tokenizer_path=root / "tokenizer.json",
        extra={"reward_stats": {"mean": 0.0, "std": 1.0}},
    )
    return {"model": model_dir, "reward_model": rm_dir}

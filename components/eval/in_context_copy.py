"""In-context copying: can a model continue a token sequence it has already seen in its context?

A random sequence of ordinary tokens is shown twice in a row; the score is the fraction of the second
copy's tokens, after its first, that the model predicts greedily. Nothing but the context can tell it
those tokens: that is the work of induction heads (Olsson et al. 2022, "In-context Learning and
Induction Heads"), which form when pretraining text rewards copying what came earlier. A tool call
needs it: the call copies the question's word or numbers into code, so a model that scores near 0 here
cannot write a correct call for a word it was not trained on, whatever its fine-tuning data show it.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from torch import nn

from components.model.gpt import evaluating
from components.tokenizer.bpe import ordinary_token_count


@torch.no_grad()
def copy_accuracy(
    model: nn.Module, tok: Tokenizer, *, sequences: int = 32, length: int = 20, seed: int = 0
) -> float | None:
    """Greedy next-token accuracy on the second copy of `sequences` random sequences of `length`
    ordinary tokens (special tokens excluded); None when there is nothing to score."""
    ordinary = ordinary_token_count(tok)
    if sequences < 1 or length < 2 or ordinary < 2:
        return None
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(0, ordinary, (sequences, length), generator=generator)
    ids = torch.cat([first, first], dim=1).to(device)
    with evaluating(model):
        logits, _ = model(ids)
    # position t predicts token t + 1: score the predictions of the second copy's tokens 2..length
    predicted = logits[:, length:-1].argmax(-1)
    return (predicted == ids[:, length + 1 :]).float().mean().item()

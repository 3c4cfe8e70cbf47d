"""Our GPT and tokenizer as an lm-evaluation-harness model: ``--model gptrecipe``.

    from components.eval.lm_eval_adapter import GPTRecipeLM   # registers "gptrecipe"
    lm_eval.simple_evaluate(model="gptrecipe", model_args={"pretrained": MODEL_DIR}, tasks=[...])

or ``simple_evaluate(model=GPTRecipeLM(model=gpt, tokenizer=tok), ...)`` for a model already loaded
(what the evaluate stage does). lm-eval is not a runtime dependency: importing this module needs it.

Scoring follows `components.eval.multiple_choice`, so a task lm-eval scores gives our numbers:

- plain text is read after ``<|endoftext|>`` (every pretraining document follows one): ``tok_encode``
  puts it in front unless told ``add_special_tokens=False``, like a tokenizer that adds a BOS;
- context and continuation are encoded separately (lm-eval's default encodes them together and splits
  the ids, which for our pre-tokenizer gives the same ids whenever the continuation starts a new
  word, but separately is what our scorer does whatever the texts);
- text is always plain text: a literal ``<|im_end|>`` in a prompt is those characters, never the special
  token (`components.tokenizer.bpe.encode_batch`). lm-eval's chat templates (``--apply_chat_template``)
  are therefore not supported.

Requests are batched: loglikelihood rows are sorted by length and right-padded (causal attention makes
padding after a sequence harmless); generation runs `components.model.generate` on left-padded batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lm_eval.models  # noqa: F401  (see below)
import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tokenizers import Tokenizer

from components.model.checkpoint import TOKENIZER_FILE, load_model_dir
from components.model.generate import generate
from components.model.gpt import GPT
from components.tokenizer.bpe import IM_END, decode, encode_batch, eot_id, load_tokenizer, special_token_ids

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# lm-eval fills its registry with the built-in models (hf, local-completions...) only when the
# registry is empty at the first lookup; `lm_eval.models` above fills it first, so that registering
# ours does not hide them.
@register_model("gptrecipe")
class GPTRecipeLM(TemplateLM):
    """lm-eval's model interface over a `GPT` and its tokenizer (see the module docstring)."""

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: GPT | None = None,
        tokenizer: Tokenizer | None = None,
        batch_size: int | str = 32,
        device: str | None = None,
        dtype: str | None = None,
        max_gen_toks: int = 256,
        **_: Any,  # lm-eval also passes max_batch_size and the like
    ) -> None:
        super().__init__()
        if (pretrained is None) == (model is None):
            raise ValueError("give either pretrained (a model directory) or model and tokenizer")
        if model is None:
            model, _ = load_model_dir(
                pretrained, device=device or "cpu", dtype=DTYPES[dtype] if dtype else None
            )
            tokenizer = load_tokenizer(f"{pretrained}/{TOKENIZER_FILE}")
        elif tokenizer is None:
            raise ValueError("a model passed as an object needs its tokenizer too")
        self.model = model.eval()
        self.tok = tokenizer
        # "auto" (lm-eval's search for the largest batch that fits) is not worth it for our sizes.
        self.batch_size = 32 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self._eot = eot_id(tokenizer)
        self._stops = [special_token_ids(tokenizer)[IM_END], self._eot]

    # -- what TemplateLM asks for --------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def max_length(self) -> int:
        return self.model.config.context_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        ids = encode_batch(self.tok, [string], append_eot=False)[0]
        return ids if add_special_tokens is False else [self._eot, *ids]

    def tok_decode(self, tokens: Sequence[int], **kwargs: Any) -> str:
        return decode(self.tok, tokens)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # lm-eval's convention: trailing spaces of the context belong to the continuation.
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        context_ids, continuation_ids = encode_batch(self.tok, [context, continuation], append_eot=False)
        return [self._eot, *context_ids], continuation_ids

    # -- log-likelihoods -----------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        results = self._score([(ctx, cont) for _, ctx, cont in requests])
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    @torch.no_grad()
    def _score(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(summed log-prob of the continuation, whether greedy decoding would produce it) per pair.
        A sequence longer than the context loses context tokens from the front."""
        limit = self.max_length
        sequences, starts = [], []
        for ctx, cont in pairs:
            if not cont:
                raise ValueError("a continuation encodes to no tokens; nothing to score")
            if len(cont) > limit:
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit the context of {limit}")
            # The last token is only predicted, never read: limit + 1 tokens make `limit` inputs.
            seq = [*ctx, *cont][-(limit + 1) :]
            sequences.append(seq)
            starts.append(len(seq) - len(cont))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: len(sequences[i]))
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo : lo + self.batch_size]
            width = max(len(sequences[i]) for i in rows)
            idx = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                idx[r, : len(sequences[i])] = torch.as_tensor(sequences[i])
            idx = idx.to(self.device)
            logprobs = F.log_softmax(self.model(idx[:, :-1])[0].float(), dim=-1)
            for r, i in enumerate(rows):
                start, end = starts[i], len(sequences[i])
                # The logits at position t predict token t + 1.
                predicted = logprobs[r, start - 1 : end - 1]
                targets = idx[r, start:end]
                total = float(predicted.gather(-1, targets[:, None]).sum())
                out[i] = (total, bool((predicted.argmax(-1) == targets).all()))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts (perplexity tasks), each scored in windows of the context
        length after <|endoftext|>, every token predicted exactly once."""
        windows, owner = [], []
        for n, request in enumerate(requests):
            (text,) = request.args
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(text, add_special_tokens=False),
                prefix_token=self._eot,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append(make_disjoint_window(window))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._score(windows), strict=True):
            totals[n] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation ----------------------------------------------------------------------------------

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with do_sample and a temperature) continuations, cut at the first of the
        request's ``until`` strings; generation also stops at <|im_end|> and <|endoftext|>."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        settings = []
        for n, request in enumerate(requests):
            context, kwargs = request.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = min(int(kwargs.pop("max_gen_toks", self.max_gen_toks)), self.max_length - 1)
            sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 0.0)) if sample else 0.0
            settings.append((context, until))
            groups.setdefault((max_new, temperature), []).append(n)
        for (max_new, temperature), members in groups.items():
            for lo in range(0, len(members), self.batch_size):
                batch = members[lo : lo + self.batch_size]
                room = self.max_length - max_new
                prompts = [self.tok_encode(settings[n][0])[-room:] for n in batch]
                generated = generate(
                    self.model,
                    prompts,
                    max_new_tokens=max_new,
                    temperature=temperature,
                    stop_tokens=self._stops,
                    pad_token_id=self._eot,
                )
                for n, ids in zip(batch, generated.response_lists(), strict=True):
                    if ids and ids[-1] in self._stops:
                        ids = ids[:-1]
                    text = decode(self.tok, ids)
                    for stop in settings[n][1]:
                        if stop and stop in text:
                            text = text[: text.index(stop)]
                    results[n] = text
                    self.cache_hook.add_partial("generate_until", requests[n].args, text)
        return [r or "" for r in results]


__all__ = ["GPTRecipeLM"]

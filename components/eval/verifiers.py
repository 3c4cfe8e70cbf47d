"""Exact verifiers for verifiable tasks (the tiny world's among them): the gold signal beside the RM.

A verifier scores one reply against the gold answer of a prompt with 1.0 or 0.0, no partial credit, so
evaluation and RL (GRPO with verifiable rewards, or a gold score tracked next to the RM score in PPO)
measure correctness rather than a learned proxy that can be gamed. Built-in tasks:

- ``arithmetic``, ``letter_count``: the number right after the last "The answer is", or, if the reply
  never says that, its last number, must equal the gold number. Thousands separators are accepted
  ("1,188"); a number may be negative.
- ``fact``: the gold value appears as a whole phrase (case-insensitive, not part of a longer word or
  number) AND no competing value of the same relation does. The competitors come with the prompt
  (`competitors=`); without that check "Tamsel, Orsk or Vel" would score as correct.
- ``unknown``: the reply declines (one of a small set of refusal phrasings, see `REFUSALS`) and asserts
  nothing: none of the relation's known values (`competitors`) and no number appears in it.

Users add their own with `register_verifier("name")(fn)`; `fn(reply_text, answer, **info) -> float`
receives the prompt record's extra fields (such as `competitors`) as keyword arguments and must accept
and ignore ones it does not use. `verify(task, reply, answer, **info)` dispatches by task name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from components.core.registry import registering

Verifier = Callable[..., float]

_REGISTRY: dict[str, Verifier] = {}


def register_verifier(name: str, *, overwrite: bool = False) -> Callable[[Verifier], Verifier]:
    """Decorator that registers `fn` as the verifier of task `name`; re-registering needs `overwrite`."""
    if not name or not isinstance(name, str):
        raise ValueError(f"verifier name must be a non-empty string, got {name!r}")
    return registering(_REGISTRY, name, "verifier", overwrite=overwrite)


def get_verifier(name: str) -> Verifier:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no verifier named {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def verifier_names() -> list[str]:
    return sorted(_REGISTRY)


def verify(task: str, reply_text: str, answer: Any, **info: Any) -> float:
    """Score `reply_text` for a prompt of `task` whose gold answer is `answer` (1.0 or 0.0 built in)."""
    return float(get_verifier(task)(reply_text, answer, **info))


# --- text helpers ----------------------------------------------------------------------------------

_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "`": "'"})


def normalise(text: str) -> str:
    """Case-folded, straight quotes, single spaces: what phrase matching compares."""
    return " ".join(text.translate(_QUOTES).casefold().split())


def phrase_spans(text: str, phrase: str) -> list[tuple[int, int]]:
    """Where `phrase` occurs in `text` as a whole phrase, both normalised.

    Whole means: not inside a longer word, and not inside a longer number ("3.4 million" is not found in
    "13.4 million", "240,000" not in "1,240,000" or "240,000.5").
    """
    p = normalise(phrase)
    if not p:
        return []
    pattern = rf"(?<!\w)(?<!\d[.,]){re.escape(p)}(?!\w)(?![.,]\d)"
    return [m.span() for m in re.finditer(pattern, normalise(text))]


_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?![\d,])|(?<![\w.])-?\d+(?:\.\d+)?")
_ANSWER_IS = re.compile(r"\bthe answer is\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def numbers_in(text: str) -> list[float]:
    return [float(m.group().replace(",", "")) for m in _NUMBER.finditer(text)]


def final_number(text: str) -> float | None:
    """The reply's answer: the last number of the sentence that starts at the last "The answer is"
    ("The answer is 23 + 48 = 71." gives 71), else the reply's last number, else None.

    When the reply says "The answer is" but that sentence holds no number, the answer is missing (None):
    falling back to an earlier number would credit a step of the working as the answer.
    """
    said = list(_ANSWER_IS.finditer(text))
    if said:
        rest = text[said[-1].end() :]
        sentence = _SENTENCE_END.split(rest, maxsplit=1)[0]
        found = numbers_in(sentence)
        return found[-1] if found else None
    found = numbers_in(text)
    return found[-1] if found else None


def _as_number(answer: Any) -> float:
    try:
        return float(str(answer).replace(",", "").strip())
    except ValueError:
        raise ValueError(f"gold answer {answer!r} is not a number") from None


# --- built-in verifiers ----------------------------------------------------------------------------


@register_verifier("arithmetic")
def verify_number(reply_text: str, answer: Any, **_: Any) -> float:
    """1.0 when the reply's final number equals the gold number."""
    got = final_number(reply_text)
    return 1.0 if got is not None and got == _as_number(answer) else 0.0


register_verifier("letter_count")(verify_number)


@register_verifier("fact")
def verify_fact(reply_text: str, answer: Any, *, competitors: Sequence[str] = (), **_: Any) -> float:
    """1.0 when the gold value is stated and no competing value of the same relation is."""
    gold = phrase_spans(reply_text, str(answer))
    if not gold:
        return 0.0
    gold_norm = normalise(str(answer))
    for other in competitors:
        if normalise(other) == gold_norm:
            continue
        for start, end in phrase_spans(reply_text, other):
            # A competitor found only inside the gold phrase itself is not a competing claim.
            if not any(g_start <= start and end <= g_end for g_start, g_end in gold):
                return 0.0
    return 1.0


# Refusal phrasings accepted for questions about entities the corpus never mentions. The generated SFT
# data uses "I don't have any information about X." and variants that all match one of these.
REFUSALS: tuple[str, ...] = (
    r"\bi (?:don't|do not) (?:have|possess) (?:any )?(?:information|data|knowledge|records?)\b",
    r"\bi have no (?:information|data|knowledge|records?)\b",
    r"\bi (?:don't|do not) know\b",
    r"\bi(?:'m| am) not (?:sure|aware|familiar)\b",
    r"\bi (?:can't|cannot|could not|couldn't) find (?:any )?(?:information|data|records?)\b",
    r"\bi(?:'ve| have) never heard of\b",
    r"\bnothing is known about\b",
)
_REFUSAL = re.compile("|".join(REFUSALS))


def is_refusal(reply_text: str) -> bool:
    return bool(_REFUSAL.search(normalise(reply_text)))


@register_verifier("unknown")
def verify_unknown(reply_text: str, answer: Any = "", *, competitors: Sequence[str] = (), **_: Any) -> float:
    """1.0 when the reply declines and asserts no value: neither a known value nor any number.

    `answer` (the entity's name) is not required in the reply; `competitors` are the known values of
    the relation the question asked about, i.e. what a hallucinated answer would most likely say.
    """
    if not is_refusal(reply_text):
        return 0.0
    if numbers_in(reply_text):
        return 0.0
    return 0.0 if any(phrase_spans(reply_text, c) for c in competitors) else 1.0


__all__ = [
    "REFUSALS",
    "final_number",
    "get_verifier",
    "is_refusal",
    "normalise",
    "numbers_in",
    "phrase_spans",
    "register_verifier",
    "verifier_names",
    "verify",
    "verify_fact",
    "verify_number",
    "verify_unknown",
]

"""The tiny world's verifiable tasks as items (a question, its replies and gold answer), the worded
replies of arithmetic and letter counting (with and without the tool), and the held-out split.

Split and items are what every output of `conversations` shares; the generator
(`components.world.conversation_generator`) draws from them.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from components.io.chat import TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END
from components.world.knowledge import City, Country, Entity, Fact, KnowledgeBase

# --- items: one question with its gold answer ------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One question and everything the three outputs need about it."""

    task: str  # fact | arithmetic | letter_count | unknown | identity
    ref: str  # stable id of what is asked: "country-03.capital", "23+48", "banana:a", ...
    question: str  # the user message
    reply: str  # the helpful, correct reply: the SFT target and the best ranked completion
    answer: str = ""  # gold answer for the verifiers
    terse: str = ""  # correct but terse or evasive (preference rank 1)
    wrong: str = ""  # a plausible wrong answer (preference rank 2)
    competitors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    op: str  # "+", "-", "*"
    a: int
    b: int

    @property
    def ref(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def key(self) -> str:
        """Split key: commutative operations with sorted operands, so 3+5 and 5+3 share a split."""
        a, b = (min(self.a, self.b), max(self.a, self.b)) if self.op in "+*" else (self.a, self.b)
        return f"{a}{self.op}{b}"

    @property
    def result(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]


def _place_parts(n: int) -> list[int]:
    """487 -> [400, 80, 7]: the non-zero place values, how the worked steps split an operand."""
    digits = str(n)
    parts = [int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits) if d != "0"]
    return parts or [0]


def arithmetic_steps(problem: Problem) -> list[str]:
    """The sides of the worked chain "a op b = ... = result", every side equal to the result.

    Addition and subtraction split the second operand by place value and apply the parts one at a time;
    multiplication splits the first operand and multiplies each part by the single-digit second one.
    """
    op, a, b = problem.op, problem.a, problem.b
    sides = [f"{a} {op} {b}"]
    if op in "+-":
        parts = _place_parts(b)
        if len(parts) > 1:
            acc = a
            sides.append(f" {op} ".join(str(x) for x in [a, *parts]))
            for i, part in enumerate(parts[:-1]):
                acc = acc + part if op == "+" else acc - part
                sides.append(f" {op} ".join(str(x) for x in [acc, *parts[i + 1 :]]))
    else:
        parts = _place_parts(a)
        if len(parts) > 1:
            sides.append(" + ".join(f"{p} * {b}" for p in parts))
            sides.append(" + ".join(str(p * b) for p in parts))
    sides.append(str(problem.result))
    return sides


def arithmetic_reply(problem: Problem, result: int | None = None) -> str:
    """Worked steps and the answer; a different `result` makes the last step (and answer) wrong."""
    sides = arithmetic_steps(problem)
    if result is not None:
        sides[-1] = str(result)
    final = sides[-1]
    return f"Let's work it out: {' = '.join(sides)}. The answer is {final}."


def letter_reply(word: str, letter: str) -> str:
    count = 0
    spelled = []
    for ch in word:
        if ch.lower() == letter:
            count += 1
            spelled.append(f"{ch} ({count})")
        else:
            spelled.append(ch)
    letters = ", ".join(spelled)
    if count == 0:
        return (
            f'Let\'s spell "{word}" letter by letter and look for "{letter}": {letters}. '
            f'The letter "{letter}" does not appear in "{word}". The answer is 0.'
        )
    times = "once" if count == 1 else f"{count} times"
    return (
        f'Let\'s spell "{word}" letter by letter and count the "{letter}"s: {letters}. '
        f'The letter "{letter}" appears {times} in "{word}". The answer is {count}.'
    )


# The tool's markers (`components.io.chat`); the world depends on core and io only.
def tool_call(expression: str, result: str) -> str:
    """A tool call and the result the tool gives for it, as an assistant message writes them."""
    return f"{TOOL_CALL}{expression}{TOOL_CALL_END}{TOOL_RESULT}{result}{TOOL_RESULT_END}"


def arithmetic_tool_reply(problem: Problem) -> str:
    """The reply that hands the sum to the tool: a step that says so, the call, then the answer read off
    the result, which is what the tool prints for the call (`components.model.tools`; a test checks it).
    Kept short: the worked steps of `arithmetic_reply` would not fit RL's reply budget beside the call."""
    expression = f"{problem.a} {problem.op} {problem.b}"
    r = problem.result
    return f"Let me calculate. {tool_call(expression, str(r))} The answer is {r}."


def double_quoted(text: str) -> str:
    """`text` as a double-quoted Python string literal (JSON's escapes are Python's too)."""
    return json.dumps(text, ensure_ascii=False)


def letter_tool_reply(word: str, letter: str) -> str:
    """The reply that counts with the tool, case-insensitively (`.lower()`), as the question means.

    The call is written so that the word is the same tokens in it as in the question, which the model
    then only has to copy, token for token: the question quotes the word after a space (`` "Joja"``),
    and so does the call (`` "Joja".lower().count("z")``; the tool ignores the leading space). The
    pre-tokenizer then cuts `` "`` and the word into the same pieces in both, whatever BPE merged. The
    former ``'Joja'`` was not: a quote glued to the word is one piece, and ``'s``, ``'t``, ``'d``, ``'m``
    are contractions (``'strawberry'`` was ``'s tra w ber ry``, the question's ``st ra w ber ry``).
    """
    count = sum(ch.lower() == letter for ch in word)
    expression = f" {double_quoted(word)}.lower().count({double_quoted(letter)})"
    return f"Let me count. {tool_call(expression, str(count))} The answer is {count}."


# --- the split -------------------------------------------------------------------------------------


def _n_test(n: int, fraction: float) -> int:
    """How many of n go to test: at least one when there are two or more, never all."""
    if fraction <= 0 or n < 2:
        return 0
    return max(1, min(n - 1, round(n * fraction)))


def hash_fraction(seed: int, kind: str, key: str) -> float:
    digest = hashlib.sha256(f"{seed}/{kind}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class WorldSplit:
    """Which facts, unknown entities, problems and words belong to train and which to test."""

    seed: int
    test_fraction: float
    facts: dict[str, tuple[Fact, ...]]  # "train" / "test"
    unknown: dict[str, tuple[Entity, ...]]  # "train" / "test"
    test_entity_ids: frozenset[str]

    def problem_split(self, problem: Problem) -> str:
        return "test" if hash_fraction(self.seed, "arithmetic", problem.key) < self.test_fraction else "train"

    def word_split(self, word: str) -> str:
        return "test" if hash_fraction(self.seed, "word", word.lower()) < self.test_fraction else "train"


def revealed_facts(kb: KnowledgeBase, fact: Fact) -> list[tuple[str, str]]:
    """(subject_id, relation) of every fact that the answer sentence of `fact` states."""
    keys = [(fact.subject_id, fact.relation)]
    entity = kb.entity(fact.subject_id)
    if isinstance(entity, Country) and fact.relation == "capital":
        keys.append((entity.capital_id, "country"))  # "the capital of C is X": X lies in C
    if isinstance(entity, City) and fact.relation == "country":
        country = kb.entity(entity.country_id)
        if isinstance(country, Country) and country.capital_id == entity.id:
            # "X is a city in C" does not say X is C's capital, but it pairs the two names the capital
            # question asks about; a held-out capital must not be learnable from SFT.
            keys.append((country.id, "capital"))
    if isinstance(entity, Country) and fact.relation == "neighbour":
        other = kb.entity(entity.neighbour_id)
        if isinstance(other, Country) and other.neighbour_id == entity.id:
            keys.append((other.id, "neighbour"))  # borders are mutual
    return keys


def split_world(kb: KnowledgeBase, seed: int, test_fraction: float) -> WorldSplit:
    """Split by entity (per type), then keep out of training any fact that would state a test fact."""
    rng = random.Random(f"{seed}/split")
    test_ids: set[str] = set()
    for group in (kb.countries, kb.cities, kb.people):
        ids = [e.id for e in group]
        test_ids.update(rng.sample(ids, _n_test(len(ids), test_fraction)))
    unknown_test: set[str] = set()
    for group in (kb.unknown_countries, kb.unknown_cities, kb.unknown_people):
        ids = [e.id for e in group]
        unknown_test.update(rng.sample(ids, _n_test(len(ids), test_fraction)))

    facts = kb.facts()
    test_facts = tuple(f for f in facts if f.subject_id in test_ids)
    test_keys = {(f.subject_id, f.relation) for f in test_facts}
    train_facts = tuple(
        f
        for f in facts
        if f.subject_id not in test_ids and not any(k in test_keys for k in revealed_facts(kb, f))
    )
    unknown = kb.unknown_entities()
    return WorldSplit(
        seed=seed,
        test_fraction=test_fraction,
        facts={"train": train_facts, "test": test_facts},
        unknown={
            "train": tuple(e for e in unknown if e.id not in unknown_test),
            "test": tuple(e for e in unknown if e.id in unknown_test),
        },
        test_entity_ids=frozenset(test_ids),
    )

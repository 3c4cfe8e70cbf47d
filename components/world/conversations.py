"""Tiny-world post-training data: SFT conversations, ranked preference pairs and RL prompts.

Everything is generated from the same `KnowledgeBase` as the crawl, deterministically from a seed, so the
facts the assistant is taught to state in chat are the facts pretraining read on web pages, and every
answer can be checked exactly (`components.eval.verifiers`).

Tasks (the `task`/`kind` of an item):

- ``fact``: a question about one (subject, relation, value) fact, answered with one full sentence that
  states it ("The capital of Ejon is Thozusesh."); several question phrasings per relation.
- ``arithmetic``: small additions, subtractions and multiplications with worked steps
  ("Let's work it out: 23 + 48 = 23 + 40 + 8 = 63 + 8 = 71. The answer is 71.").
- ``letter_count``: spell a word letter by letter with a running count, then answer.
- ``unknown``: questions about the knowledge base's unknown entities, which the crawl never mentions,
  answered "I don't have any information about X."
- ``identity``: who the assistant is (its name and maker); SFT only, a hundred or so conversations.
- ``multi_turn`` (SFT kind): 2-3 user turns mixing the above; ``refs`` lists one item per assistant turn.

Held-out splits, shared by all three outputs, so no test question is ever asked (or answered) in any
training data, while pretraining did see every known fact:

- known entities are split per type (countries, cities, people) with `test_fraction` going to test;
  test facts are all facts of test entities. A training fact whose answer sentence would also state a
  test fact is dropped from training: "The capital of C is X." states X's country, "A shares a border
  with B." states B's neighbour, and "X is a city in C" pairs a capital with its country. Facts are
  split by entity rather than one by one so that a test entity is never the subject of any training
  question.
- unknown entities are split per type the same way;
- arithmetic problems and letter-count words are split by a hash of the problem (commutative operands
  sorted) or of the word, so a problem's split does not depend on what else was drawn;
- identity questions: the last phrasing of each intent is held out.

Prompts also get ``seen.jsonl``: prompts drawn from the training pools (facts the SFT data asks about),
so evaluation can compare held-out with seen accuracy.

Record formats (TRL's, with extra metadata fields that trainers ignore):

- sft: ``{"messages": [...], "kind": "fact", "refs": ["country-03.capital"]}``
- preferences: ``{"prompt": [...], "chosen": [assistant msg], "rejected": [assistant msg],
  "rank_chosen": 0, "rank_rejected": 2, "kind": "fact", "chosen_tier": "helpful",
  "rejected_tier": "wrong", "prompt_id": "train-00012", "ref": "country-03.capital"}``. Each prompt has
  K ranked completions (0 = best) and yields all K*(K-1)/2 pairs.
- prompts: ``{"prompt": [...], "answer": "Thozusesh", "task": "fact", "competitors": [...], "id": ...}``;
  ``competitors`` are the relation's other values, which the fact and unknown verifiers need.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError, StageConfig
from components.core.stage import StageContext, stage
from components.io.trl import (
    DatasetError,
    data_format,
    load_preferences,
    load_prompts,
    load_sft,
    write_jsonl,
)
from components.world.chat_phrasing import (
    ARITHMETIC_QUESTIONS,
    FACT_ANSWERS,
    FACT_QUESTIONS,
    FACT_TERSE,
    FILLER_WORDS,
    IDENTITY,
    LETTER_QUESTIONS,
    OPERATIONS,
    REFUSAL_REPLIES,
    RUDE_REPLIES,
    SYSTEM_PROMPTS,
    TIERS,
    UNKNOWN_GENERIC_QUESTIONS,
    WORDS,
    fill,
)
from components.world.knowledge import (
    CITY_RELATIONS,
    COUNTRY_RELATIONS,
    PERSON_RELATIONS,
    City,
    Country,
    Entity,
    Fact,
    KnowledgeBase,
    entity_type,
)

TASKS = ("fact", "arithmetic", "letter_count", "unknown")  # verifiable tasks (prompts, preferences)
SFT_KINDS = ("fact", "arithmetic", "letter_count", "unknown", "identity", "multi_turn")
RELATIONS = {"country": COUNTRY_RELATIONS, "city": CITY_RELATIONS, "person": PERSON_RELATIONS}


class ConversationsConfig(StageConfig):
    """What post-training data to generate from the tiny world (or which user files to use instead)."""

    seed: int = Field(0, description="Seed of every random choice, the held-out splits included.")
    test_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share held out for test: of the known and of the unknown entities (per type), of "
        "arithmetic problems and letter-count words (by hash), and of each generated count below.",
    )
    questions_per_fact: int = Field(
        2,
        ge=1,
        le=4,
        description="Distinct question phrasings per training fact (and per relation of each training "
        "unknown entity). Test facts are asked once.",
    )
    arithmetic: int = Field(500, ge=0, description="Arithmetic conversations with worked steps (all splits).")
    letter_count: int = Field(300, ge=0, description="Letter-counting conversations (all splits).")
    identity: int = Field(
        100, ge=0, le=500, description="Identity conversations (all splits); a few hundred at most."
    )
    multi_turn: int = Field(200, ge=0, description="Conversations with 2-3 user turns (all splits).")
    system_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of SFT conversations that open with a system message."
    )
    max_operand: int = Field(
        100,
        ge=12,
        le=10_000,
        description="Arithmetic operands are below this; multiplications are by one digit (2-9).",
    )
    assistant_name: str = Field("Recipe", min_length=1, description="The assistant's name in identity data.")
    creator: str = Field("gptrecipe", min_length=1, description="Who made the assistant, in identity data.")
    preference_prompts: int = Field(
        400, ge=0, description="Prompts with ranked completions (all splits); each gives K*(K-1)/2 pairs."
    )
    completions_per_prompt: int = Field(
        4,
        ge=2,
        le=5,
        description="K ranked completions per preference prompt: 2 = helpful > wrong; 3 adds rude or "
        "degenerate last; 4 adds correct-but-terse second; 5 has both rude and degenerate.",
    )
    preference_mix: dict[str, float] = Field(
        default_factory=lambda: {"fact": 0.55, "arithmetic": 0.2, "letter_count": 0.1, "unknown": 0.15},
        description="Share of preference prompts per task.",
    )
    rl_prompts: int = Field(600, ge=0, description="RL prompts with gold answers (train + test).")
    prompt_mix: dict[str, float] = Field(
        default_factory=lambda: {"fact": 0.5, "arithmetic": 0.25, "letter_count": 0.15, "unknown": 0.1},
        description="Share of RL prompts per task.",
    )
    sft_path: str | None = Field(
        None,
        description="Use this SFT data (TRL `messages` format) instead of generating it: a .jsonl/.parquet "
        "file (split by test_fraction on a hash of each record) or a directory with train and test files.",
    )
    preferences_path: str | None = Field(
        None,
        description="Use these preference pairs (TRL `prompt`/`chosen`/`rejected`) instead of generating "
        "them; a file (split by prompt) or a directory with train and test files.",
    )
    prompts_path: str | None = Field(
        None,
        description="Use these RL prompts (`prompt`, optional `answer`, `task`) instead of generating "
        "them; a file or a directory with train and test files.",
    )
    max_errors: int = Field(20, ge=1, description="Malformed records listed before a user file is rejected.")
    samples: int = Field(8, ge=0, description="Records per output and split logged to MLflow as samples.")

    def external_inputs(self) -> list[str]:
        return [p for p in (self.sft_path, self.preferences_path, self.prompts_path) if p]

    @field_validator("preference_mix", "prompt_mix")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; tasks are {', '.join(TASKS)}")
        if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return mix


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


# --- the split -------------------------------------------------------------------------------------


def _n_test(n: int, fraction: float) -> int:
    """How many of n go to test: at least one when there are two or more, never all."""
    if fraction <= 0 or n < 2:
        return 0
    return max(1, min(n - 1, round(n * fraction)))


def _hash_fraction(seed: int, kind: str, key: str) -> float:
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
        return (
            "test" if _hash_fraction(self.seed, "arithmetic", problem.key) < self.test_fraction else "train"
        )

    def word_split(self, word: str) -> str:
        return "test" if _hash_fraction(self.seed, "word", word.lower()) < self.test_fraction else "train"


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


# --- the generator ---------------------------------------------------------------------------------


def _relation_key(fact: Fact) -> str:
    return f"{entity_type(fact.subject_id)}.{fact.relation}"


def _counts(total: int, fraction: float) -> dict[str, int]:
    test = round(total * fraction)
    return {"train": total - test, "test": test}


class ConversationGenerator:
    """Generates the three outputs for one world and config; each output uses its own RNG streams, so
    changing one count never changes another output."""

    def __init__(self, kb: KnowledgeBase, config: ConversationsConfig):
        self.kb = kb
        self.cfg = config
        self.split = split_world(kb, config.seed, config.test_fraction)
        self._values: dict[str, list[str]] = {}
        for fact in kb.facts():
            values = self._values.setdefault(_relation_key(fact), [])
            if fact.value not in values:
                values.append(fact.value)
        banned = {w.lower() for w in kb.name_tokens(unknown=True)} | {w.lower() for w in kb.name_tokens()}
        names = [e.name for e in [*kb.countries, *kb.cities] if " " not in e.name]
        words = tuple(w for w in WORDS if w not in banned) + tuple(names)
        self.words = {s: [w for w in words if self.split.word_split(w) == s] for s in ("train", "test")}

    def rng(self, *stream: str) -> random.Random:
        return random.Random("/".join([str(self.cfg.seed), *stream]))

    # -- items --

    def competitors(self, fact: Fact) -> tuple[str, ...]:
        """Other values of the fact's relation, minus values that would also be correct."""
        excluded = {fact.value}
        if fact.relation == "neighbour":  # with an odd country count, one border is one-sided in the data
            excluded |= {c.name for c in self.kb.countries if c.neighbour_id == fact.subject_id}
            excluded.add(fact.subject)
        return tuple(v for v in self._values[_relation_key(fact)] if v not in excluded)

    def fact_item(self, fact: Fact, rng: random.Random, phrasing: int | None = None) -> Item:
        key = _relation_key(fact)
        questions = FACT_QUESTIONS[key]
        q = questions[rng.randrange(len(questions)) if phrasing is None else phrasing]
        competitors = self.competitors(fact)
        # A relation with a single value in a very small world has no plausible wrong value.
        wrong = (
            fill(FACT_ANSWERS[key], fact.subject, rng.choice(competitors))
            if competitors
            else "Nobody can say."
        )
        terse = FACT_TERSE.get(key, "{V}.")
        if rng.random() < 0.3:
            terse = "Probably {v}."  # evasive rather than terse: still correct
        return Item(
            task="fact",
            ref=f"{fact.subject_id}.{fact.relation}",
            question=q.format(s=fact.subject),
            reply=fill(FACT_ANSWERS[key], fact.subject, fact.value),
            answer=fact.value,
            terse=fill(terse, fact.subject, fact.value),
            wrong=wrong,
            competitors=competitors,
        )

    def unknown_item(
        self, entity: Entity, rng: random.Random, relation: str | None = None, phrasing: int | None = None
    ) -> Item:
        """A question about an entity the corpus never mentions; `relation=None` asks generically."""
        etype = entity_type(entity.id)
        asked = relation or rng.choice(RELATIONS[etype])
        key = f"{etype}.{asked}"
        if relation is None:
            questions = UNKNOWN_GENERIC_QUESTIONS
            competitors: tuple[str, ...] = ()
        else:
            questions = FACT_QUESTIONS[key]
            competitors = tuple(self._values[key])
        q = questions[rng.randrange(len(questions)) if phrasing is None else phrasing]
        return Item(
            task="unknown",
            ref=f"{entity.id}.{relation or 'about'}",
            question=q.format(s=entity.name),
            reply=rng.choice(REFUSAL_REPLIES).format(s=entity.name),
            answer=entity.name,
            terse="I don't know.",
            # The confident hallucination a model without the fact would produce.
            wrong=fill(FACT_ANSWERS[key], entity.name, rng.choice(self._values[key])),
            competitors=competitors,
        )

    def draw_problems(self, n: int, split: str, rng: random.Random) -> list[Problem]:
        """n distinct problems of `split` (repeats only if the problem space runs out)."""
        hi = self.cfg.max_operand - 1
        out: list[Problem] = []
        seen: set[str] = set()
        attempts = 0
        while len(out) < n:
            op = rng.choices([o for o, _ in OPERATIONS], weights=[w for _, w in OPERATIONS])[0]
            if op == "*":
                problem = Problem(op, rng.randint(2, hi), rng.randint(2, 9))
            elif op == "+":
                problem = Problem(op, rng.randint(2, hi), rng.randint(2, hi))
            else:
                a = rng.randint(3, hi)
                problem = Problem(op, a, rng.randint(2, a - 1))
            attempts += 1
            if attempts > 1000 * (n + 10):
                raise ConfigError(
                    f"conversations: cannot draw {n} {split} arithmetic problems below max_operand="
                    f"{self.cfg.max_operand} with test_fraction={self.cfg.test_fraction}"
                )
            if self.split.problem_split(problem) != split:
                continue
            if problem.key in seen and attempts < 50 * (n + 10):
                continue
            seen.add(problem.key)
            out.append(problem)
        return out

    def arithmetic_item(self, problem: Problem, rng: random.Random) -> Item:
        q = rng.choice(ARITHMETIC_QUESTIONS[problem.op]).format(a=problem.a, b=problem.b)
        r = problem.result
        deltas = [d for d in (-10, -1, 1, 10) if r + d >= 0]
        terse = f"The answer is {r}." if rng.random() < 0.5 else f"{r}."
        return Item(
            task="arithmetic",
            ref=problem.ref,
            question=q,
            reply=arithmetic_reply(problem),
            answer=str(r),
            terse=terse,
            wrong=arithmetic_reply(problem, r + rng.choice(deltas)),
        )

    def letter_item(self, split: str, rng: random.Random) -> Item:
        word = rng.choice(self.words[split])
        present = [ch.lower() for ch in word if ch.isalpha()]
        if rng.random() < 0.8:
            letter = rng.choice(present)  # by occurrence, so repeated letters come up more often
        else:
            letter = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c not in present])
        count = present.count(letter)
        wrong = count + rng.choice([-1, 1] if count > 0 else [1, 2])
        return Item(
            task="letter_count",
            ref=f"{word}:{letter}",
            question=rng.choice(LETTER_QUESTIONS).format(c=letter, w=word),
            reply=letter_reply(word, letter),
            answer=str(count),
            terse=f"The answer is {count}." if rng.random() < 0.5 else f"{count}.",
            wrong=f'The letter "{letter}" appears {wrong} times in "{word}". The answer is {wrong}.',
        )

    def identity_item(self, split: str, rng: random.Random) -> Item:
        intent = rng.choice(sorted(IDENTITY))
        questions, answers = IDENTITY[intent]
        index = len(questions) - 1 if split == "test" else rng.randrange(len(questions) - 1)
        names = {"name": self.cfg.assistant_name, "creator": self.cfg.creator}
        return Item(
            task="identity",
            ref=f"identity.{intent}.{index}",
            question=questions[index],
            reply=rng.choice(answers).format(**names),
            answer=self.cfg.assistant_name,
        )

    def task_item(self, task: str, split: str, rng: random.Random) -> Item:
        """A random item of a verifiable task from `split`'s pools."""
        if task == "fact":
            return self.fact_item(rng.choice(self.split.facts[split]), rng)
        if task == "unknown":
            entity = rng.choice(self.split.unknown[split])
            return self.unknown_item(entity, rng, rng.choice(RELATIONS[entity_type(entity.id)]))
        if task == "arithmetic":
            return self.arithmetic_item(self.draw_problems(1, split, rng)[0], rng)
        return self.letter_item(split, rng)

    def _available(self, split: str) -> dict[str, bool]:
        return {
            "fact": bool(self.split.facts[split]),
            "unknown": bool(self.split.unknown[split]),
            "arithmetic": True,
            "letter_count": bool(self.words[split]),
        }

    def _tasks(self, mix: dict[str, float], n: int, split: str, rng: random.Random) -> list[str]:
        """n task names in proportion to `mix` (largest remainders), tasks with an empty pool left out."""
        ok = self._available(split)
        weights = {t: w for t, w in mix.items() if w > 0 and ok[t]}
        if not weights or n == 0:
            return []
        total = sum(weights.values())
        exact = {t: n * w / total for t, w in weights.items()}
        counts = {t: int(x) for t, x in exact.items()}
        for t in sorted(exact, key=lambda t: counts[t] - exact[t])[: n - sum(counts.values())]:
            counts[t] += 1
        tasks = [t for t in sorted(counts) for _ in range(counts[t])]
        rng.shuffle(tasks)
        return tasks

    # -- SFT --

    def _system(self, rng: random.Random) -> list[dict[str, str]]:
        if rng.random() >= self.cfg.system_fraction:
            return []
        text = rng.choice(SYSTEM_PROMPTS).format(name=self.cfg.assistant_name, creator=self.cfg.creator)
        return [{"role": "system", "content": text}]

    def _conversation(self, kind: str, items: list[Item], rng: random.Random) -> dict[str, Any]:
        messages = self._system(rng)
        for item in items:
            messages += [
                {"role": "user", "content": item.question},
                {"role": "assistant", "content": item.reply},
            ]
        return {"messages": messages, "kind": kind, "refs": [item.ref for item in items]}

    def sft(self) -> dict[str, list[dict[str, Any]]]:
        """SFT conversations per split, in a seeded shuffled order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for split in ("train", "test"):
            rng = self.rng("sft", split)
            per_fact = self.cfg.questions_per_fact if split == "train" else 1
            items: list[tuple[str, list[Item]]] = []
            for fact in self.split.facts[split]:
                n_q = len(FACT_QUESTIONS[_relation_key(fact)])
                for phrasing in rng.sample(range(n_q), min(per_fact, n_q)):
                    items.append(("fact", [self.fact_item(fact, rng, phrasing)]))
            for entity in self.split.unknown[split]:
                etype = entity_type(entity.id)
                for relation in RELATIONS[etype]:
                    n_q = len(FACT_QUESTIONS[f"{etype}.{relation}"])
                    for phrasing in rng.sample(range(n_q), min(per_fact, n_q)):
                        items.append(("unknown", [self.unknown_item(entity, rng, relation, phrasing)]))
                for phrasing in range(len(UNKNOWN_GENERIC_QUESTIONS)):
                    items.append(("unknown", [self.unknown_item(entity, rng, None, phrasing)]))
            frac = self.cfg.test_fraction
            for problem in self.draw_problems(_counts(self.cfg.arithmetic, frac)[split], split, rng):
                items.append(("arithmetic", [self.arithmetic_item(problem, rng)]))
            if self._available(split)["letter_count"]:
                for _ in range(_counts(self.cfg.letter_count, frac)[split]):
                    items.append(("letter_count", [self.letter_item(split, rng)]))
            for _ in range(_counts(self.cfg.identity, frac)[split]):
                items.append(("identity", [self.identity_item(split, rng)]))
            for _ in range(_counts(self.cfg.multi_turn, frac)[split]):
                items.append(("multi_turn", self._multi_turn_items(split, rng)))
            records = [self._conversation(kind, its, rng) for kind, its in items]
            rng.shuffle(records)
            out[split] = records
        return out

    def _multi_turn_items(self, split: str, rng: random.Random) -> list[Item]:
        mix = {"fact": 0.55, "arithmetic": 0.15, "letter_count": 0.1, "unknown": 0.15, "identity": 0.05}
        ok = self._available(split) | {"identity": True}
        tasks = [t for t in mix if ok[t]]
        items: list[Item] = []
        last_subject: str | None = None
        for _ in range(rng.choice((2, 2, 3))):
            task = rng.choices(tasks, weights=[mix[t] for t in tasks])[0]
            if task == "identity":
                items.append(self.identity_item(split, rng))
                continue
            if task == "fact" and last_subject and rng.random() < 0.5:
                # A follow-up about the same subject, as people ask ("And its currency?").
                asked = {i.ref for i in items}
                same = [
                    f
                    for f in self.split.facts[split]
                    if f.subject_id == last_subject and f"{f.subject_id}.{f.relation}" not in asked
                ]
                if same:
                    items.append(self.fact_item(rng.choice(same), rng))
                    continue
            item = self.task_item(task, split, rng)
            items.append(item)
            last_subject = item.ref.rsplit(".", 1)[0] if task == "fact" else None
        return items

    # -- preferences --

    def ranked_completions(self, item: Item, rng: random.Random) -> list[tuple[str, str]]:
        """(tier, text) for the K completions of `item`, best first."""
        tiers = list(TIERS[self.cfg.completions_per_prompt])
        out = []
        for tier in tiers:
            if tier == "bad":
                tier = rng.choice(("rude", "degenerate"))
            if tier == "helpful":
                text = item.reply
            elif tier == "terse":
                text = item.terse
            elif tier == "wrong":
                text = item.wrong
            elif tier == "rude":
                text = rng.choice(RUDE_REPLIES)
            else:
                text = "" if rng.random() < 0.2 else " ".join([rng.choice(FILLER_WORDS)] * rng.randint(6, 40))
            out.append((tier, text))
        return out

    def preferences(self) -> dict[str, list[dict[str, Any]]]:
        """All K-choose-2 pairs of each prompt's ranked completions, per split; a prompt's pairs are
        consecutive and share `prompt_id`."""
        out: dict[str, list[dict[str, Any]]] = {}
        for split in ("train", "test"):
            rng = self.rng("preferences", split)
            n = _counts(self.cfg.preference_prompts, self.cfg.test_fraction)[split]
            records = []
            for p, task in enumerate(self._tasks(self.cfg.preference_mix, n, split, rng)):
                item = self.task_item(task, split, rng)
                ranked = self.ranked_completions(item, rng)
                prompt = [{"role": "user", "content": item.question}]
                for (i, (tier_i, text_i)), (j, (tier_j, text_j)) in itertools.combinations(
                    enumerate(ranked), 2
                ):
                    records.append(
                        {
                            "prompt": prompt,
                            "chosen": [{"role": "assistant", "content": text_i}],
                            "rejected": [{"role": "assistant", "content": text_j}],
                            "rank_chosen": i,
                            "rank_rejected": j,
                            "kind": task,
                            "chosen_tier": tier_i,
                            "rejected_tier": tier_j,
                            "prompt_id": f"{split}-{p:05d}",
                            "ref": item.ref,
                        }
                    )
            out[split] = records
        return out

    # -- RL prompts --

    def _prompt_records(self, split: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
        records = []
        for task in self._tasks(self.cfg.prompt_mix, n, split, rng):
            item = self.task_item(task, split, rng)
            records.append(
                {
                    "prompt": [{"role": "user", "content": item.question}],
                    "answer": item.answer,
                    "task": task,
                    "competitors": list(item.competitors),
                    "id": item.ref,
                }
            )
        return records

    def prompts(self) -> dict[str, list[dict[str, Any]]]:
        """RL prompts with gold answers: train, held-out test, and `seen` (drawn from training pools)."""
        counts = _counts(self.cfg.rl_prompts, self.cfg.test_fraction)
        return {
            "train": self._prompt_records("train", counts["train"], self.rng("prompts", "train")),
            "test": self._prompt_records("test", counts["test"], self.rng("prompts", "test")),
            "seen": self._prompt_records("train", counts["test"], self.rng("prompts", "seen")),
        }


# --- user data -------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "sft": load_sft,
    "preferences": load_preferences,
    "prompts": load_prompts,
}


def _split_key(output: str, record: dict[str, Any]) -> str:
    # Pairs of one prompt, and RL prompts, are split by prompt so the same question is never on both sides.
    value = record["messages"] if output == "sft" else record["prompt"]
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def load_user_data(output: str, path: str, config: ConversationsConfig) -> dict[str, list[dict[str, Any]]]:
    """A user's file split by `test_fraction` on a hash of its prompt, or a directory's train/test files."""
    import fsspec

    load = _LOADERS[output]
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        raise ConfigError(f"conversations.{output}_path: {path} does not exist")
    if not fs.isdir(fs_path):
        records = load(path, max_errors=config.max_errors)
        out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
        for record in records:
            key = _split_key(output, record)
            test = _hash_fraction(config.seed, output, key) < config.test_fraction
            out["test" if test else "train"].append(record)
        return out
    out = {}
    names = sorted(fs.ls(fs_path, detail=False))
    for split in ("train", "test"):
        found = []
        for name in names:
            base = name.rstrip("/").rsplit("/", 1)[-1]
            if base.split(".", 1)[0] != split:
                continue
            try:
                data_format(base)
            except DatasetError:
                continue
            found.append(name)
        if len(found) != 1:
            raise ConfigError(
                f"conversations.{output}_path: {path} must hold exactly one {split}.jsonl or "
                f"{split}.parquet file, found {len(found)}"
            )
        protocol = path.split("://", 1)[0] + "://" if "://" in path else ""
        file = found[0] if "://" in found[0] or not protocol else protocol + found[0]
        out[split] = load(file, max_errors=config.max_errors)
    return out


# --- the stage -------------------------------------------------------------------------------------


def read_knowledge(store: ArtifactStore, uri: str) -> KnowledgeBase:
    """The KnowledgeBase in a `knowledge` artifact: a directory holding knowledge.json, or that file."""
    path = uri if uri.endswith(".json") else store.join(uri, "knowledge.json")
    if not store.exists(path):
        raise ConfigError(f"conversations: the knowledge artifact has no knowledge.json ({path})")
    with store.open(path, "rb") as f:
        return KnowledgeBase.from_json(f.read().decode("utf-8"))


def _metrics(name: str, splits: dict[str, list[dict[str, Any]]], by: str | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, records in splits.items():
        metrics[f"{name}_{split}"] = len(records)
        if by:
            # User data may lack the field or use any text; MLflow metric names allow only a few symbols.
            kinds = Counter(re.sub(r"[^\w.-]", "_", str(r[by])) for r in records if r.get(by) is not None)
            for kind, count in sorted(kinds.items()):
                metrics[f"{name}_{split}_{kind}"] = count
    return metrics


@stage(
    "conversations",
    config=ConversationsConfig,
    inputs=("knowledge",),
    outputs=("sft", "preferences", "prompts"),
    cpus=1,
)
def conversations(ctx: StageContext, config: ConversationsConfig, inputs: dict[str, Artifact]) -> dict:
    """Tiny-world SFT conversations, ranked preference pairs and RL prompts (or the user's, validated)."""
    user_paths = {
        "sft": config.sft_path,
        "preferences": config.preferences_path,
        "prompts": config.prompts_path,
    }
    generator = None
    if not all(user_paths.values()):
        generator = ConversationGenerator(read_knowledge(ctx.store, inputs["knowledge"].uri), config)
    data: dict[str, dict[str, list[dict[str, Any]]]] = {}
    source: dict[str, str] = {}
    for output, path in user_paths.items():
        if path:
            data[output] = load_user_data(output, path, config)
            source[output] = path
        else:
            assert generator is not None
            data[output] = getattr(generator, output)()
            source[output] = "generated"

    metrics: dict[str, float] = {}
    for output, splits in data.items():
        by = {"sft": "kind", "preferences": "kind", "prompts": "task"}[output]
        metrics |= _metrics(output if output != "preferences" else "preference_pairs", splits, by)
        for split, records in splits.items():
            with ctx.store.atomic_write(ctx.store.join(ctx.output_uri(output), f"{split}.jsonl")) as f:
                write_jsonl(records, f)
            if config.samples and records:
                sample = json.dumps(records[: config.samples], ensure_ascii=False, indent=1)
                ctx.tracker.log_text(sample + "\n", f"samples/{output}_{split}.json")
    if generator is not None:
        for split in ("train", "test"):
            metrics[f"facts_{split}"] = len(generator.split.facts[split])
            metrics[f"unknown_entities_{split}"] = len(generator.split.unknown[split])
    for split in ("train", "test"):
        prompts = {json.dumps(r["prompt"], sort_keys=True) for r in data["preferences"][split]}
        metrics[f"preference_prompts_{split}"] = len(prompts)
    ctx.report(**metrics)

    def artifact(output: str, kind: str) -> Artifact:
        counts = {split: len(records) for split, records in data[output].items()}
        return ctx.artifact(output, kind=kind, splits=counts, source=source[output], format="jsonl")

    return {
        "sft": artifact("sft", "sft_conversations"),
        "preferences": artifact("preferences", "preference_pairs"),
        "prompts": artifact("prompts", "rl_prompts"),
    }


__all__ = [
    "FACT_ANSWERS",
    "FACT_QUESTIONS",
    "TASKS",
    "ConversationGenerator",
    "ConversationsConfig",
    "Item",
    "Problem",
    "WorldSplit",
    "arithmetic_reply",
    "arithmetic_steps",
    "conversations",
    "letter_reply",
    "load_user_data",
    "read_knowledge",
    "revealed_facts",
    "split_world",
]

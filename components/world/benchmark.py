"""The tiny world's multiple-choice fact benchmark.

One item per fact: a question, four choices drawn from values of the same relation (so a wrong choice is
always a plausible answer of the right type) and the index of the right one. The same items serve
evaluation and the crawl's "leaked" quiz pages, which is how decontamination gets something real to find:
`render()` is what a quiz page prints verbatim, and it is long enough (> 13 words) for 13-gram matching.
Each rendered line has at least three words, so C4's short-line rule cannot cut a leaked item apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from components.world.knowledge import Fact, KnowledgeBase, entity_type

LETTERS = "ABCD"

QUESTIONS = {
    "country.capital": "What is the capital of {s}?",
    "country.region": "In which region does {s} lie?",
    "country.population": "What is the population of {s}?",
    "country.currency": "What is the currency of {s}?",
    "country.language": "What is the official language of {s}?",
    "country.founded": "In which year was {s} founded?",
    "country.neighbour": "Which country shares a border with {s}?",
    "city.country": "In which country is the city of {s}?",
    "city.population": "How many people live in {s}?",
    "city.river": "Which river flows through {s}?",
    "city.landmark": "Which landmark is {s} known for?",
    "person.birth_year": "In which year was {s} born?",
    "person.birth_city": "In which city was {s} born?",
    "person.profession": "What was the profession of {s}?",
    "person.known_for": "What is {s} best known for?",
}
_YEAR_RELATIONS = ("country.founded", "person.birth_year")


@dataclass(frozen=True)
class BenchmarkItem:
    id: str  # "<subject_id>.<relation>", stable for a fact whatever the seed
    subject_id: str
    relation: str
    question: str
    choices: tuple[str, ...]
    answer_index: int

    @property
    def answer(self) -> str:
        return self.choices[self.answer_index]

    def prompt(self) -> str:
        """Question and lettered choices, without the answer: what a model is asked."""
        options = "; ".join(
            f"{letter}) {choice}" for letter, choice in zip(LETTERS, self.choices, strict=True)
        )
        return f"Question: {self.question}\nChoices: {options}."

    def render(self) -> str:
        """Prompt plus answer line; quiz pages print exactly this text."""
        return f"{self.prompt()}\nAnswer: {LETTERS[self.answer_index]}) {self.answer}"


def _key(fact: Fact) -> str:
    return f"{entity_type(fact.subject_id)}.{fact.relation}"


def _excluded(kb: KnowledgeBase, fact: Fact) -> set[str]:
    """Values that would also be correct and so may not be distractors."""
    if fact.relation != "neighbour":
        return set()
    # Odd country counts make one border one-sided in the data but true both ways in the world.
    return {c.name for c in kb.countries if c.neighbour_id == fact.subject_id} | {fact.subject}


def _distractors(kb: KnowledgeBase, fact: Fact, pools: dict[str, list[str]], rng: random.Random) -> list[str]:
    banned = _excluded(kb, fact) | {fact.value}
    pool = [v for v in pools[_key(fact)] if v not in banned]
    if _key(fact) in _YEAR_RELATIONS and len(pool) < 3:
        year = int(fact.value)
        pool += [str(year + d) for d in (-37, -21, -12, 9, 17, 33) if str(year + d) not in banned | set(pool)]
    if len(pool) < 3:
        return []
    return rng.sample(pool, 3)


def benchmark_items(kb: KnowledgeBase, seed: int, n: int) -> list[BenchmarkItem]:
    """Up to `n` items in a seeded order; a smaller `n` gives a prefix of the larger list.

    Facts whose relation has too few distinct values for three distractors are skipped, so a very small
    world can return fewer than `n` items.
    """
    facts = kb.facts()
    pools: dict[str, list[str]] = {}
    for f in facts:
        values = pools.setdefault(_key(f), [])
        if f.value not in values:
            values.append(f.value)
    order = list(range(len(facts)))
    random.Random(seed).shuffle(order)
    items: list[BenchmarkItem] = []
    for i in order:
        if len(items) >= n:
            break
        fact = facts[i]
        item_id = f"{fact.subject_id}.{fact.relation}"
        # A per-item RNG keeps an item's choices independent of which other items were made before it.
        rng = random.Random(f"{seed}:{item_id}")
        wrong = _distractors(kb, fact, pools, rng)
        if not wrong:
            continue
        answer_index = rng.randrange(4)
        choices = [*wrong[:answer_index], fact.value, *wrong[answer_index:]]
        items.append(
            BenchmarkItem(
                id=item_id,
                subject_id=fact.subject_id,
                relation=fact.relation,
                question=QUESTIONS[_key(fact)].format(s=fact.subject),
                choices=tuple(choices),
                answer_index=answer_index,
            )
        )
    return items


__all__ = ["BenchmarkItem", "benchmark_items"]

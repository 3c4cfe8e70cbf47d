"""The generator of the tiny world's post-training data: SFT conversations, ranked preference pairs and
RL prompts from one knowledge base and config (see `components.world.conversations` for the formats)."""

from __future__ import annotations

import itertools
import random
from typing import Any

from components.core.config import ConfigError
from components.world.chat_phrasing import (
    ARITHMETIC_QUESTIONS,
    FACT_ANSWERS,
    FACT_QUESTIONS,
    FACT_TERSE,
    FILLER_WORDS,
    IDENTITY,
    LETTER_QUESTIONS,
    MADE_UP_CODAS,
    MADE_UP_ONSETS,
    MADE_UP_VOWELS,
    OPERATIONS,
    REFUSAL_REPLIES,
    RUDE_REPLIES,
    SYSTEM_PROMPTS,
    TIERS,
    UNKNOWN_GENERIC_QUESTIONS,
    WORDS,
    fill,
)
from components.world.conversation_tasks import (
    Item,
    Problem,
    arithmetic_reply,
    arithmetic_tool_reply,
    letter_reply,
    letter_tool_reply,
    split_world,
)
from components.world.conversations_config import ConversationsConfig
from components.world.knowledge import (
    CITY_RELATIONS,
    COUNTRY_RELATIONS,
    PERSON_RELATIONS,
    Entity,
    Fact,
    KnowledgeBase,
    NameMaker,
    entity_type,
)

RELATIONS = {"country": COUNTRY_RELATIONS, "city": CITY_RELATIONS, "person": PERSON_RELATIONS}


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
        # Made-up words must be none of these (nor any world name), and fall in the train split by hash.
        # Only `acceptable` is used (real names, offensive sub-strings): it draws nothing from the RNG.
        self._made_up_filter = NameMaker(self.rng("made-up-words"), [*banned, *WORDS, *words])

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
            reply=arithmetic_tool_reply(problem) if self.cfg.tool_use else arithmetic_reply(problem),
            answer=str(r),
            terse=terse,
            wrong=arithmetic_reply(problem, r + rng.choice(deltas)),
        )

    def made_up_word(self, rng: random.Random) -> str:
        """A pronounceable word that is no real word of either pool and no world name, so asking about
        it in training never reveals a held-out word; some capitalised, as the world's names are."""
        while True:  # about one candidate in five is rejected (the hash split, a known word)
            syllables = rng.choice((1, 2, 2, 3))
            word = "".join(rng.choice(MADE_UP_ONSETS) + rng.choice(MADE_UP_VOWELS) for _ in range(syllables))
            word += rng.choice(MADE_UP_CODAS)
            if rng.random() < 0.3:
                word = word.capitalize()
            if self._made_up_filter.acceptable(word) and self.split.word_split(word) == "train":
                return word

    def letter_item(self, split: str, rng: random.Random) -> Item:
        # Only training questions ask about made-up words; held-out ones draw from their RNG stream
        # as before, so the test data do not change with `made_up_words` (nor the training data at 0).
        if split == "train" and self.cfg.made_up_words > 0 and rng.random() < self.cfg.made_up_words:
            word = self.made_up_word(rng)
        else:
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
            reply=letter_tool_reply(word, letter) if self.cfg.tool_use else letter_reply(word, letter),
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


__all__ = ["RELATIONS", "ConversationGenerator"]

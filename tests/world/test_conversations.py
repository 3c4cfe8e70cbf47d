"""Tiny-world post-training data: determinism, held-out splits, correctness of every answer, verifiers."""

from __future__ import annotations

import ast
import json
import logging
import re
from collections import Counter
from math import comb
from pathlib import Path

import pytest
from tokenizers import Regex, pre_tokenizers

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.stage import RunEnv, StageContext
from components.eval.verifiers import (
    final_number,
    get_verifier,
    register_verifier,
    verifier_names,
    verify,
)
from components.io.chat import TOOL_CALL, TOOL_CALL_END, TOOL_RESULT, TOOL_RESULT_END, validate_messages
from components.io.trl import DatasetError, load_preferences, load_prompts, load_sft
from components.model.tools import evaluate_expression
from components.tokenizer.bpe import split_pattern
from components.world.chat_phrasing import FACT_ANSWERS, TIERS, WORDS
from components.world.conversation_generator import ConversationGenerator
from components.world.conversation_tasks import (
    Problem,
    arithmetic_reply,
    arithmetic_steps,
    arithmetic_tool_reply,
    letter_reply,
    letter_tool_reply,
    split_world,
)
from components.world.conversations import conversations
from components.world.conversations_config import ConversationsConfig
from components.world.knowledge import KnowledgeBase, build_knowledge, entity_type


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return build_knowledge(0)


@pytest.fixture(scope="module")
def gen(kb) -> ConversationGenerator:
    return ConversationGenerator(kb, ConversationsConfig())


@pytest.fixture(scope="module")
def data(gen) -> dict:
    return {"sft": gen.sft(), "preferences": gen.preferences(), "prompts": gen.prompts()}


def turns(record: dict) -> list[tuple[str, str, str]]:
    """(ref, question, reply) for each assistant turn of an SFT record."""
    msgs = [m for m in record["messages"] if m["role"] != "system"]
    pairs = [(msgs[i]["content"], msgs[i + 1]["content"]) for i in range(0, len(msgs), 2)]
    assert len(pairs) == len(record["refs"])
    return [(ref, q, a) for ref, (q, a) in zip(record["refs"], pairs, strict=True)]


def fact_of(kb: KnowledgeBase, ref: str):
    subject_id, relation = ref.rsplit(".", 1)
    return next(f for f in kb.facts_about(kb.entity(subject_id)) if f.relation == relation)


def all_turns(data: dict, split: str) -> list[tuple[str, str, str]]:
    out = [t for r in data["sft"][split] for t in turns(r)]
    for r in data["preferences"][split]:
        q = r["prompt"][-1]["content"]
        out += [(r["ref"], q, r["chosen"][0]["content"]), (r["ref"], q, r["rejected"][0]["content"])]
    out += [(r["id"], r["prompt"][-1]["content"], "") for r in data["prompts"][split]]
    return out


# --- determinism ------------------------------------------------------------------------------------


def test_same_seed_same_data_and_another_seed_differs(kb, data):
    again = ConversationGenerator(kb, ConversationsConfig())
    assert json.dumps(again.sft()) == json.dumps(data["sft"])
    assert json.dumps(again.preferences()) == json.dumps(data["preferences"])
    assert json.dumps(again.prompts()) == json.dumps(data["prompts"])
    other = ConversationGenerator(kb, ConversationsConfig(seed=1))
    assert json.dumps(other.sft()) != json.dumps(data["sft"])
    # One output's counts do not change another output.
    fewer = ConversationGenerator(kb, ConversationsConfig(arithmetic=10, preference_prompts=5))
    assert json.dumps(fewer.prompts()) == json.dumps(data["prompts"])


def test_default_counts(gen, data):
    counts = {name: {s: len(r) for s, r in splits.items()} for name, splits in data.items()}
    assert counts["preferences"] == {"train": 320 * 6, "test": 80 * 6}
    assert counts["prompts"] == {"train": 480, "test": 120, "seen": 120}
    kinds = Counter(r["kind"] for r in data["sft"]["train"])
    assert kinds["arithmetic"] == 400 and kinds["letter_count"] == 240
    assert kinds["identity"] == 80 and kinds["multi_turn"] == 160
    assert kinds["fact"] == 2 * len(gen.split.facts["train"])
    test_kinds = Counter(r["kind"] for r in data["sft"]["test"])
    assert test_kinds["fact"] == len(gen.split.facts["test"]) > 0
    assert Counter(r["task"] for r in data["prompts"]["train"]) == {
        "fact": 240,
        "arithmetic": 120,
        "letter_count": 72,
        "unknown": 48,
    }


# --- splits -----------------------------------------------------------------------------------------


def test_split_is_by_entity_and_no_training_sentence_states_a_test_fact(kb, gen, data):
    split = gen.split
    test_facts = split.facts["test"]
    assert {f.subject_id for f in test_facts} == split.test_entity_ids
    # Every type is represented in test, and every fact of a test entity is a test fact.
    assert {entity_type(i) for i in split.test_entity_ids} == {"country", "city", "person"}
    assert len(test_facts) == sum(len(kb.facts_about(kb.entity(i))) for i in split.test_entity_ids)
    test_refs = {f"{f.subject_id}.{f.relation}" for f in test_facts}
    train_refs = {f"{f.subject_id}.{f.relation}" for f in split.facts["train"]}
    assert not test_refs & train_refs
    assert len(train_refs) + len(test_refs) < len(kb.facts())  # facts that would reveal a test fact dropped

    train = all_turns(data, "train") + [
        (r["id"], r["prompt"][-1]["content"], "") for r in data["prompts"]["seen"]
    ]
    assert not {ref for ref, _, _ in train} & test_refs
    # No training message states a test fact: subject and value never appear together.
    texts = [q for _, q, _ in train] + [a for _, _, a in train]
    for fact in test_facts:
        pattern = re.compile(
            rf"\b{re.escape(fact.subject)}\b.*\b{re.escape(fact.value)}|"
            rf"\b{re.escape(fact.value)}\b.*\b{re.escape(fact.subject)}\b"
        )
        assert not any(pattern.search(t) for t in texts), fact
    # Seen prompts come from the training pools; test prompts from the held-out ones.
    assert {r["id"] for r in data["prompts"]["seen"] if r["task"] == "fact"} <= train_refs
    assert {r["id"] for r in data["prompts"]["test"] if r["task"] == "fact"} <= test_refs


def test_problems_words_unknowns_and_identity_phrasings_are_disjoint(gen, data):
    def keys(split: str, task: str) -> set[str]:
        refs = {ref for ref, _, _ in all_turns(data, split) if classify(ref) == task}
        if task == "arithmetic":
            refs = {problem_of(r).key for r in refs}
        if task == "letter_count":
            refs = {r.split(":")[0].lower() for r in refs}
        if task == "unknown":
            refs = {r.rsplit(".", 1)[0] for r in refs}
        return refs

    for task in ("arithmetic", "letter_count", "unknown"):
        train, test = keys("train", task), keys("test", task)
        assert train and test and not train & test, task
    assert {e.id for e in gen.split.unknown["test"]} == keys("test", "unknown")
    identity = {
        s: {q for r in data["sft"][s] for ref, q, _ in turns(r) if ref.startswith("identity.")}
        for s in ("train", "test")
    }
    assert identity["train"] and identity["test"] and not identity["train"] & identity["test"]


def test_the_split_holds_at_other_fractions_and_seeds(kb):
    for seed, fraction in ((3, 0.1), (4, 0.5)):
        split = split_world(kb, seed, fraction)
        test = {(f.subject_id, f.relation) for f in split.facts["test"]}
        train = {(f.subject_id, f.relation) for f in split.facts["train"]}
        assert test and train and not test & train
        assert not {e.id for e in split.unknown["train"]} & {e.id for e in split.unknown["test"]}
    assert split_world(kb, 0, 0.0).facts["test"] == ()


# --- correctness of every answer --------------------------------------------------------------------


def classify(ref: str) -> str:
    if ref.startswith("identity."):
        return "identity"
    if ref.startswith("unknown-"):
        return "unknown"
    if re.fullmatch(r"\d+[-+*]\d+", ref):
        return "arithmetic"
    if ":" in ref:
        return "letter_count"
    return "fact"


def between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start) : text.index(end)]


def problem_of(ref: str) -> Problem:
    a, op, b = re.fullmatch(r"(\d+)([-+*])(\d+)", ref).groups()
    return Problem(op, int(a), int(b))


def test_every_fact_answer_agrees_with_the_knowledge_base(kb, gen, data):
    checked = 0
    for split in ("train", "test"):
        for record in data["sft"][split]:
            for ref, question, reply in turns(record):
                if classify(ref) != "fact":
                    continue
                fact = fact_of(kb, ref)
                assert fact.subject in question
                assert verify("fact", reply, fact.value, competitors=gen.competitors(fact)) == 1.0, reply
                checked += 1
        for r in data["prompts"][split]:
            if r["task"] == "fact":
                fact = fact_of(kb, r["id"])
                assert r["answer"] == fact.value and fact.value not in r["competitors"]
                assert fact.subject in r["prompt"][0]["content"]
    assert checked > 600
    sentence = FACT_ANSWERS["country.capital"].format(
        s=kb.countries[0].name, v=kb.name_of(kb.countries[0].capital_id)
    )
    assert sentence == f"The capital of {kb.countries[0].name} is {kb.name_of(kb.countries[0].capital_id)}."


def test_unknown_entities_appear_only_in_refusals(kb, data):
    unknown_words = {w for w in kb.name_tokens(unknown=True)}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(unknown_words))) + r")\b")
    for split in ("train", "test"):
        for ref, question, reply in all_turns(data, split):
            if classify(ref) == "unknown":
                assert pattern.search(question)
                continue
            assert not pattern.search(question) and not pattern.search(reply), (ref, question, reply)
        for record in data["sft"][split]:
            for ref, _, reply in turns(record):
                if classify(ref) == "unknown":
                    assert verify("unknown", reply, "") == 1.0, reply


def safe_eval(expression: str) -> int:
    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
            left, right = ev(node.left), ev(node.right)
            return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]
        raise ValueError(f"unexpected {ast.dump(node)}")

    return ev(ast.parse(expression, mode="eval").body)


def test_arithmetic_steps_are_correct(data):
    assert arithmetic_reply(Problem("+", 23, 48)) == (
        "Let's work it out: 23 + 48 = 23 + 40 + 8 = 63 + 8 = 71. The answer is 71."
    )
    assert arithmetic_steps(Problem("-", 71, 48)) == ["71 - 48", "71 - 40 - 8", "31 - 8", "23"]
    assert arithmetic_steps(Problem("*", 23, 7)) == ["23 * 7", "20 * 7 + 3 * 7", "140 + 21", "161"]
    assert arithmetic_steps(Problem("+", 23, 8)) == ["23 + 8", "31"]
    assert arithmetic_steps(Problem("*", 123, 4)) == [
        "123 * 4",
        "100 * 4 + 20 * 4 + 3 * 4",
        "400 + 80 + 12",
        "492",
    ]
    seen = 0
    for split in ("train", "test"):
        for record in data["sft"][split]:
            for ref, question, reply in turns(record):
                if classify(ref) != "arithmetic":
                    continue
                problem = problem_of(ref)
                assert str(problem.a) in question and str(problem.b) in question
                assert reply == arithmetic_tool_reply(problem)
                call = between(reply, TOOL_CALL, TOOL_CALL_END)
                result = re.search(re.escape(TOOL_RESULT) + "(.*)" + re.escape(TOOL_RESULT_END), reply).group(
                    1
                )
                # The result in the data is what the real tool answers for the call.
                assert evaluate_expression(call) == result == str(problem.result)
                assert verify("arithmetic", reply, str(problem.result)) == 1.0
                seen += 1
    assert seen > 400


def test_without_tools_arithmetic_is_worked_out_in_steps(kb):
    gen = ConversationGenerator(kb, ConversationsConfig(tool_use=False, letter_count=0, multi_turn=0))
    seen = 0
    for records in gen.sft().values():
        for record in records:
            for ref, _, reply in turns(record):
                if classify(ref) != "arithmetic":
                    continue
                problem = problem_of(ref)
                assert TOOL_CALL not in reply
                chain = re.fullmatch(r"Let's work it out: (.*)\. The answer is (-?\d+)\.", reply)
                assert chain, reply
                sides = chain.group(1).split(" = ")
                assert {safe_eval(s) for s in sides} == {problem.result} == {int(chain.group(2))}
                assert problem.result >= 0
                assert verify("arithmetic", reply, str(problem.result)) == 1.0
                seen += 1
    assert seen > 400


def test_letter_counts_are_correct(data):
    assert letter_reply("banana", "a") == (
        'Let\'s spell "banana" letter by letter and count the "a"s: b, a (1), n, a (2), n, a (3). '
        'The letter "a" appears 3 times in "banana". The answer is 3.'
    )
    assert letter_reply("kiwi", "z").endswith('The letter "z" does not appear in "kiwi". The answer is 0.')
    counts = Counter()
    for record in data["sft"]["train"] + data["sft"]["test"]:
        for ref, question, reply in turns(record):
            if classify(ref) == "letter_count":
                word, letter = ref.rsplit(":", 1)
                count = word.lower().count(letter)
                assert f'"{word}"' in question and f'"{letter}"' in question
                assert reply == letter_tool_reply(word, letter)
                call = between(reply, TOOL_CALL, TOOL_CALL_END)
                assert call == f' "{word}".lower().count("{letter}")'
                assert evaluate_expression(call) == str(count)
                assert verify("letter_count", reply, str(count)) == 1.0
                counts[min(count, 2)] += 1
    assert counts[0] and counts[1] and counts[2]  # absent, single and repeated letters all occur


def pieces(text: str, style: str) -> list[str]:
    """How the tokenizer's pre-tokenizer cuts `text`; BPE never merges across these pieces."""
    split = pre_tokenizers.Split(Regex(split_pattern(style, True)), behavior="isolated")
    return [piece for piece, _ in split.pre_tokenize_str(text)]


@pytest.mark.parametrize("style", ["gpt4", "gpt2"])
def test_the_call_has_the_questions_word_as_the_same_pieces(data, style):
    """The model copies the word from the question into the call: both cut it into the same pre-tokenizer
    pieces after the same quote piece, so it is the same tokens whatever BPE merged."""
    seen = 0
    for record in data["sft"]["train"] + data["sft"]["test"]:
        for ref, question, reply in turns(record):
            if classify(ref) != "letter_count":
                continue
            word = ref.rsplit(":", 1)[0]
            call = between(reply, TOOL_CALL, TOOL_CALL_END)
            asked, called = pieces(question, style), pieces(call, style)
            assert [' "', word] == called[:2], (call, called)
            assert any(asked[i : i + 2] == [' "', word] for i in range(len(asked))), (question, asked)
            seen += 1
    assert seen > 250
    # Single quotes, as calls were written before, glue the quote (and contractions) to the word.
    assert pieces("'strawberry'.lower()", style)[0] != pieces(' "strawberry"', style)[1]


def letter_words(records: list[dict]) -> list[str]:
    """The word of every letter-count turn of SFT records."""
    return [ref.rsplit(":", 1)[0] for r in records for ref in r["refs"] if classify(ref) == "letter_count"]


def test_training_letter_counts_also_ask_about_made_up_words(kb, gen, data):
    real = {w.lower() for w in [*gen.words["train"], *gen.words["test"], *WORDS]}
    names = {w.lower() for w in kb.name_tokens() + kb.name_tokens(unknown=True)}
    made_up: list[str] = []
    for split in ("train", "test"):
        for ref, _, _ in all_turns(data, split):
            word = ref.rsplit(":", 1)[0]
            if classify(ref) == "letter_count" and word not in gen.words[split]:
                assert split == "train", ref  # held-out questions ask about real words only
                made_up.append(word)
    for word in made_up:
        assert word.isalpha() and len(word) >= 4
        assert word.lower() not in real and word.lower() not in names, word
        assert gen.split.word_split(word) == "train"
    sft_made_up = [w for w in letter_words(data["sft"]["train"]) if w not in gen.words["train"]]
    assert len(set(sft_made_up)) > 0.9 * len(sft_made_up)  # almost every one is asked about once
    share = len(sft_made_up) / len(letter_words(data["sft"]["train"]))
    assert 0.4 < share < 0.6  # made_up_words = 0.5 of ~270 questions
    # The held-out data do not depend on the share; at 0 the training data ask about real words only.
    none = ConversationGenerator(kb, ConversationsConfig(made_up_words=0))
    sft = none.sft()
    assert json.dumps(sft["test"]) == json.dumps(data["sft"]["test"])
    assert json.dumps(none.prompts()["test"]) == json.dumps(data["prompts"]["test"])
    assert set(letter_words(sft["train"])) <= set(gen.words["train"])


def test_only_arithmetic_and_letter_counting_call_the_tool(data):
    calls = Counter()
    for records in data["sft"].values():
        for record in records:
            for ref, _, reply in turns(record):
                calls[classify(ref), TOOL_CALL in reply] += 1
    assert calls["arithmetic", True] > 400 and calls["letter_count", True] > 250
    assert not calls["arithmetic", False] and not calls["letter_count", False]
    for kind in ("fact", "unknown", "identity"):
        assert calls[kind, False] > 0 and not calls[kind, True]
    # The assistant learns to call, and only the rendered result is left out of its loss.
    validate_messages(data["sft"]["train"][0]["messages"])


def test_identity_uses_the_configured_name(kb):
    gen = ConversationGenerator(
        kb, ConversationsConfig(assistant_name="Quill", creator="ACME", system_fraction=1.0)
    )
    sft = gen.sft()
    identity = [r for r in sft["train"] if r["kind"] == "identity"]
    assert len(identity) == 80
    assert all("Quill" in r["messages"][-1]["content"] for r in identity)
    assert not any("Recipe" in m["content"] for r in sft["train"] for m in r["messages"])
    # system_fraction=1: every conversation opens with a system message, and only there.
    for r in sft["train"]:
        roles = [m["role"] for m in r["messages"]]
        assert roles[0] == "system" and "system" not in roles[1:]
        assert roles[1:] == ["user", "assistant"] * (len(roles[1:]) // 2)
    multi = [r for r in sft["train"] if r["kind"] == "multi_turn"]
    assert {len(r["refs"]) for r in multi} == {2, 3}


# --- preferences --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_preference_pairs_are_all_ranked_pairs(kb, k):
    gen = ConversationGenerator(kb, ConversationsConfig(preference_prompts=40, completions_per_prompt=k))
    prefs = gen.preferences()
    for split, n_prompts in (("train", 32), ("test", 8)):
        records = prefs[split]
        assert len(records) == n_prompts * k * (k - 1) // 2 == n_prompts * comb(k, 2)
        by_prompt: dict[str, list[dict]] = {}
        for r in records:
            by_prompt.setdefault(r["prompt_id"], []).append(r)
        assert len(by_prompt) == n_prompts
        for pairs in by_prompt.values():
            assert sorted((p["rank_chosen"], p["rank_rejected"]) for p in pairs) == [
                (i, j) for i in range(k) for j in range(i + 1, k)
            ]
            texts = {p["rank_chosen"]: p["chosen"][0]["content"] for p in pairs}
            texts |= {p["rank_rejected"]: p["rejected"][0]["content"] for p in pairs}
            assert len(set(texts.values())) == k  # K distinct completions
            tiers = {p["rank_chosen"]: p["chosen_tier"] for p in pairs} | {
                p["rank_rejected"]: p["rejected_tier"] for p in pairs
            }
            for rank, expected in enumerate(TIERS[k]):
                assert tiers[rank] in (("rude", "degenerate") if expected == "bad" else (expected,))


def test_ranked_completions_agree_with_the_verifiers(kb, gen, data):
    for r in data["preferences"]["train"] + data["preferences"]["test"]:
        assert r["rank_chosen"] < r["rank_rejected"]
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
        assert r["prompt"][-1]["role"] == "user"
        task, ref = r["kind"], r["ref"]
        if task == "fact":
            fact = fact_of(kb, ref)
            answer, info = fact.value, {"competitors": gen.competitors(fact)}
        elif task == "unknown":
            answer, info = (
                "",
                {
                    "competitors": tuple(
                        gen._values[f"{entity_type(ref.rsplit('.', 1)[0])}.{ref.rsplit('.', 1)[1]}"]
                    )
                },
            )
        elif task == "arithmetic":
            answer, info = str(problem_of(ref).result), {}
        else:
            word, letter = ref.rsplit(":", 1)
            answer, info = str(word.lower().count(letter)), {}
        for tier, message in ((r["chosen_tier"], r["chosen"]), (r["rejected_tier"], r["rejected"])):
            score = verify(task, message[0]["content"], answer, **info)
            assert score == (1.0 if tier in ("helpful", "terse") else 0.0), (tier, message)


# --- verifiers ----------------------------------------------------------------------------------------


def test_number_verifier():
    ok = "Let's work it out: 23 + 48 = 23 + 40 + 8 = 63 + 8 = 71. The answer is 71."
    assert verify("arithmetic", ok, "71") == 1.0
    assert verify("arithmetic", ok, 71) == 1.0
    assert verify("arithmetic", ok.replace("is 71", "is 72"), "71") == 0.0
    assert verify("arithmetic", "71", "71") == 1.0  # no "The answer is": the last number counts
    assert verify("arithmetic", "I think 23 + 48 is 71", "71") == 1.0
    assert verify("arithmetic", "The answer is 71, not 17.", "71") == 0.0  # the sentence's last number
    assert verify("arithmetic", "the answer is 23 + 48 = 71.", "71") == 1.0
    assert verify("arithmetic", "The answer is seventy-one. 63 + 8", "71") == 0.0  # no number: no answer
    assert verify("arithmetic", "The answer is 1,188.", "1188") == 1.0
    assert verify("arithmetic", "The answer is -5.", "-5") == 1.0
    assert verify("arithmetic", "The answer is 3.5.", "3") == 0.0
    assert verify("arithmetic", "", "0") == 0.0
    assert verify("arithmetic", "the the the the", "0") == 0.0
    assert verify("letter_count", 'The letter "r" appears 3 times. The answer is 3.', "3") == 1.0
    assert final_number("(1) (2) (3). The answer is 3.\nThanks 4") == 3.0


def test_fact_verifier():
    competitors = ["Odend", "Vazosek", "Tohel"]
    assert verify("fact", "The capital of Ejon is Thozusesh.", "Thozusesh", competitors=competitors) == 1.0
    assert verify("fact", "thozusesh", "Thozusesh") == 1.0  # case-insensitive
    assert verify("fact", "Thozusesh or Odend.", "Thozusesh", competitors=competitors) == 0.0  # hedging
    assert verify("fact", "The capital is Odend.", "Thozusesh", competitors=competitors) == 0.0
    assert verify("fact", "Thozusesha is a city.", "Thozusesh") == 0.0  # part of a longer word
    assert verify("fact", "", "Thozusesh") == 0.0
    # Numbers: a value inside a longer number is not that value.
    assert verify("fact", "About 13.4 million people.", "3.4 million") == 0.0
    assert verify("fact", "About 3.4 million people.", "3.4 million", competitors=["13.4 million"]) == 1.0
    assert verify("fact", "About 1,240,000 live there.", "240,000") == 0.0
    assert verify("fact", "It has 240,000 people.", "240,000", competitors=["24,000", "40,000"]) == 1.0
    # Quotes are normalised, and a competitor inside the gold phrase is not a competing claim.
    gold = 'the novel "The Salt Road"'
    assert verify("fact", "Best known for the novel “The Salt Road”.", gold) == 1.0
    assert (
        verify("fact", "X is known for the Old Gate.", "Old Gate", competitors=["Gate", "Old Garden"]) == 1.0
    )
    assert verify("fact", "X is known for the Old Garden.", "Old Gate", competitors=["Old Garden"]) == 0.0


def test_unknown_verifier():
    values = ["Thozusesh", "Zekrekes"]
    for reply in (
        "I don't have any information about Adeza.",
        "I'm sorry, but I do not know anything about Adeza.",
        "I have no information about that place.",
        "I’m not sure, I have never heard of it.",
    ):
        assert verify("unknown", reply, "Adeza", competitors=values) == 1.0, reply
    assert verify("unknown", "The capital of Adeza is Thozusesh.", "Adeza", competitors=values) == 0.0
    assert verify("unknown", "I don't know, but probably Thozusesh.", "Adeza", competitors=values) == 0.0
    assert verify("unknown", "I don't know; it was founded in 1450.", "Adeza") == 0.0
    assert verify("unknown", "Look it up yourself.", "Adeza") == 0.0
    assert verify("unknown", "", "Adeza") == 0.0


def test_verifier_registry():
    assert {"fact", "arithmetic", "letter_count", "unknown"} <= set(verifier_names())

    @register_verifier("test_exact_match")
    def exact(reply_text, answer, **_):
        return float(reply_text.strip() == answer)

    assert get_verifier("test_exact_match") is exact
    assert verify("test_exact_match", " yes ", "yes", competitors=[]) == 1.0
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("test_exact_match")(lambda r, a, **_: 0.0)
    register_verifier("test_exact_match", overwrite=True)(lambda r, a, **_: 0.5)
    assert verify("test_exact_match", "yes", "yes") == 0.5
    with pytest.raises(KeyError, match=r"no verifier named 'nope'; registered: .*arithmetic"):
        verify("nope", "x", "y")


# --- the stage ------------------------------------------------------------------------------------------


class FakeTracker:
    """Records what the stage logs; the real Tracker is tested in tests/core."""

    def __init__(self):
        self.metrics: dict[str, float] = {}
        self.texts: dict[str, str] = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_text(self, text, name):
        self.texts[name] = text


def run(tmp_path: Path, kb: KnowledgeBase, **overrides) -> tuple[dict[str, Artifact], StageContext]:
    store = ArtifactStore(tmp_path / "store")
    knowledge = tmp_path / "world"
    knowledge.mkdir(exist_ok=True)
    (knowledge / "knowledge.json").write_text(kb.to_json())
    inputs = {"knowledge": Artifact(uri=str(knowledge), kind="world", digest=store.digest(str(knowledge)))}
    env = RunEnv(run_id="r", store=store.root, tracking_uri="unused", experiment="test")
    ctx = StageContext("conversations", "k", store, FakeTracker(), 0, env, logging.getLogger("test"))
    config = ConversationsConfig(
        arithmetic=50,
        letter_count=20,
        identity=10,
        multi_turn=10,
        preference_prompts=10,
        rl_prompts=20,
        **overrides,
    )
    outputs = conversations.fn(ctx, config, inputs)
    assert set(outputs) == set(conversations.outputs)
    return outputs, ctx


def test_stage_writes_train_and_test_files_that_the_loaders_read(tmp_path, kb):
    outputs, ctx = run(tmp_path, kb)
    for name, loader in (("sft", load_sft), ("preferences", load_preferences), ("prompts", load_prompts)):
        art = outputs[name]
        for split in ("train", "test"):
            records = loader(str(Path(art.uri, f"{split}.jsonl")))
            assert (
                len(records)
                == art.meta["splits"][split]
                == ctx.headline[f"{'preference_pairs' if name == 'preferences' else name}_{split}"]
            )
        assert art.meta["source"] == "generated" and art.digest.startswith("xxh128:")
    assert Path(outputs["prompts"].uri, "seen.jsonl").exists()
    assert ctx.headline["preference_pairs_train"] == 8 * 6 and ctx.headline["preference_prompts_train"] == 8
    assert ctx.headline["sft_train_arithmetic"] == 40 and ctx.headline["prompts_test"] == 4
    assert ctx.headline["facts_test"] > 0 and ctx.headline["unknown_entities_test"] == 3
    assert "samples/sft_train.json" in ctx.tracker.texts
    assert json.loads(ctx.tracker.texts["samples/prompts_test.json"])[0]["prompt"][0]["role"] == "user"


def test_stage_uses_the_users_data_instead(tmp_path, kb):
    user = tmp_path / "mine.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(50)
    ]
    user.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prefs = tmp_path / "prefs"
    prefs.mkdir()
    (prefs / "train.jsonl").write_text(
        json.dumps({"prompt": "hi", "chosen": "Hello!", "rejected": "Go away."}) + "\n"
    )
    (prefs / "test.jsonl").write_text(json.dumps({"prompt": "yo", "chosen": "Hello!", "rejected": ""}) + "\n")
    outputs, ctx = run(tmp_path, kb, sft_path=str(user), preferences_path=str(prefs))
    assert not [k for k in ctx.headline if k.startswith("sft_train_")]  # user rows have no `kind`
    train = load_sft(str(Path(outputs["sft"].uri, "train.jsonl")))
    test = load_sft(str(Path(outputs["sft"].uri, "test.jsonl")))
    assert len(train) + len(test) == 50 and 0 < len(test) < 25
    assert outputs["sft"].meta["source"] == str(user)
    pairs = load_preferences(str(Path(outputs["preferences"].uri, "test.jsonl")))
    assert pairs[0]["prompt"] == [{"role": "user", "content": "yo"}]
    assert outputs["prompts"].meta["source"] == "generated"

    user.write_text(user.read_text() + json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
    with pytest.raises(DatasetError, match=r"mine.jsonl:51: messages\[0\].role 'bot'"):
        run(tmp_path, kb, sft_path=str(user))
    with pytest.raises(ConfigError, match="does not exist"):
        run(tmp_path, kb, prompts_path=str(tmp_path / "missing.jsonl"))


def test_config_rejects_unknown_tasks_in_a_mix():
    with pytest.raises(ValueError, match="unknown task"):
        ConversationsConfig(prompt_mix={"fact": 1.0, "poetry": 1.0})

"""The tiny world's knowledge base, language packs and multiple-choice benchmark."""

from __future__ import annotations

import re
import string

import pytest

from components.world.benchmark import benchmark_items
from components.world.knowledge import (
    City,
    Country,
    KnowledgeBase,
    KnowledgeConfig,
    Person,
    build_knowledge,
    entity_type,
)
from components.world.languages import SUPPORTED_LANGUAGES, language_pack, template_vocabulary


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return build_knowledge(7)


def all_tokens(kb: KnowledgeBase) -> list[str]:
    return kb.name_tokens() + kb.name_tokens(unknown=True)


def test_default_sizes_and_structure(kb: KnowledgeBase) -> None:
    assert (len(kb.countries), len(kb.cities), len(kb.people)) == (12, 36, 40)
    assert len(kb.unknown_entities()) == 9
    assert (len(kb.unknown_countries), len(kb.unknown_cities), len(kb.unknown_people)) == (3, 3, 3)
    for country in kb.countries:
        cities = kb.cities_of(country.id)
        assert len(cities) == 3
        capital = kb.entity(country.capital_id)
        assert isinstance(capital, City) and capital.country_id == country.id
        # The capital is the largest city of its country.
        assert capital.population == max(c.population for c in cities)
        assert country.region in kb.regions
    assert {c.region for c in kb.countries} == set(kb.regions)  # every region is used


def test_neighbours_are_paired_symmetrically(kb: KnowledgeBase) -> None:
    for country in kb.countries:
        neighbour = kb.entity(country.neighbour_id)
        assert isinstance(neighbour, Country) and neighbour.id != country.id
        assert neighbour.neighbour_id == country.id


def test_odd_country_count_keeps_every_neighbour_valid() -> None:
    small = build_knowledge(
        3, KnowledgeConfig(countries=5, cities_per_country=1, people=4, unknown_entities=0)
    )
    ids = [c.id for c in small.countries]
    assert [c.neighbour_id for c in small.countries] == [ids[1], ids[0], ids[3], ids[2], ids[0]]


def test_same_seed_same_world_and_different_seed_different_world(kb: KnowledgeBase) -> None:
    assert build_knowledge(7).to_json() == kb.to_json()
    other = build_knowledge(8)
    assert other.to_json() != kb.to_json()
    assert {c.name for c in other.countries} != {c.name for c in kb.countries}


def test_names_are_unique_pronounceable_and_never_template_words(kb: KnowledgeBase) -> None:
    tokens = all_tokens(kb)
    lowered = [t.lower() for t in tokens]
    assert len(set(lowered)) == len(lowered), "every generated word belongs to exactly one thing"
    vocabulary = template_vocabulary()
    for token in tokens:
        assert re.fullmatch(r"[A-Z][a-z]{3,}", token), token
        assert re.search(r"[aeiou]", token[1:]), token
        assert token.lower() not in vocabulary, f"{token} is also a template word"
    assert "paris" not in lowered and "berlin" not in lowered


def test_known_entities_never_point_at_unknown_ones(kb: KnowledgeBase) -> None:
    unknown_ids = {e.id for e in kb.unknown_entities()}
    for e in kb.entities():
        refs = {
            getattr(e, f)
            for f in ("capital_id", "neighbour_id", "country_id", "birth_city_id")
            if hasattr(e, f)
        }
        assert not refs & unknown_ids, e
    assert all(
        entity_type(e.id) == type(e).__name__.lower() for e in [*kb.entities(), *kb.unknown_entities()]
    )


def test_facts_are_flat_stable_and_consistent(kb: KnowledgeBase) -> None:
    facts = kb.facts()
    assert len(facts) == 7 * 12 + 4 * 36 + 4 * 40
    assert facts == build_knowledge(7).facts()
    assert len({(f.subject_id, f.relation) for f in facts}) == len(facts)
    by_key = {(f.subject_id, f.relation): f.value for f in facts}
    country = kb.countries[0]
    assert by_key[(country.id, "capital")] == kb.name_of(country.capital_id)
    assert by_key[(country.id, "population")] == f"{country.population / 1e6:.1f} million"
    city = kb.cities[4]
    assert by_key[(city.id, "country")] == kb.name_of(city.country_id)
    assert by_key[(city.id, "population")] == f"{city.population:,}"
    person = kb.people[0]
    assert by_key[(person.id, "birth_year")] == str(person.birth_year)
    assert by_key[(person.id, "profession")] == person.profession
    assert person.known_for in by_key.values()
    # Facts only talk about known entities.
    assert {f.subject_id for f in facts} == {e.id for e in kb.entities()}


def test_json_round_trip_is_exact_and_key_order_stable(kb: KnowledgeBase) -> None:
    text = kb.to_json()
    again = KnowledgeBase.from_json(text)
    assert again == kb
    assert again.to_json() == text
    assert isinstance(again.countries[0], Country) and isinstance(again.people[0], Person)
    keys = re.findall(r'^ "(\w+)":', text, flags=re.M)
    assert keys == sorted(keys)


def test_small_config_is_respected() -> None:
    small = build_knowledge(
        1, KnowledgeConfig(countries=4, cities_per_country=2, people=8, unknown_entities=4)
    )
    assert (len(small.countries), len(small.cities), len(small.people)) == (4, 8, 8)
    assert (len(small.unknown_countries), len(small.unknown_cities), len(small.unknown_people)) == (2, 1, 1)


# --- language packs ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", SUPPORTED_LANGUAGES)
def test_fact_templates_name_subject_and_value(code: str) -> None:
    pack = language_pack(code)
    for key, templates in pack.facts.items():
        for template in templates:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            assert "s" in fields, (code, key, template)
            assert fields & {"v", "a_v"}, (code, key, template)
            assert template.rstrip()[-1] in ".!?", template


def test_english_states_every_relation_and_others_the_language_neutral_ones() -> None:
    english = language_pack("en")
    assert set(english.relations("country")) == {
        "capital",
        "region",
        "population",
        "currency",
        "language",
        "founded",
        "neighbour",
    }
    assert set(english.relations("city")) == {"country", "population", "river", "landmark"}
    assert set(english.relations("person")) == {"birth_year", "birth_city", "profession", "known_for"}
    for code in ("de", "fr", "es", "it"):
        pack = language_pack(code)
        assert set(pack.relations("city")) == {"country", "population", "river"}
        assert set(pack.relations("person")) == {"birth_year", "birth_city", "profession"}


def test_number_formatting_per_language() -> None:
    assert language_pack("en").country_population(3_400_000) == "3.4 million"
    assert language_pack("de").country_population(3_400_000) == "3,4 Millionen"
    assert language_pack("fr").city_population(240_000) == "240 000"
    assert language_pack("es").city_population(240_000) == "240.000"
    assert language_pack("it").join(["A", "B", "C"]) == "A, B e C"


# --- benchmark -----------------------------------------------------------------------------------


def test_benchmark_items_are_deterministic_and_prefix_stable(kb: KnowledgeBase) -> None:
    items = benchmark_items(kb, seed=3, n=100)
    assert len(items) == 100
    assert items == benchmark_items(kb, seed=3, n=100)
    assert benchmark_items(kb, seed=3, n=10) == items[:10]
    assert [i.id for i in benchmark_items(kb, seed=4, n=100)] != [i.id for i in items]
    assert len({i.id for i in items}) == 100


def test_benchmark_answers_are_facts_and_distractors_same_relation(kb: KnowledgeBase) -> None:
    facts = {(f.subject_id, f.relation): f.value for f in kb.facts()}
    values_by_relation: dict[str, set[str]] = {}
    for f in kb.facts():
        values_by_relation.setdefault(f"{entity_type(f.subject_id)}.{f.relation}", set()).add(f.value)
    items = benchmark_items(kb, seed=0, n=10_000)
    assert len(items) == len(facts)  # the default world is rich enough for every fact
    for item in items:
        assert item.id == f"{item.subject_id}.{item.relation}"
        assert item.answer == facts[(item.subject_id, item.relation)]
        assert len(set(item.choices)) == 4
        key = f"{entity_type(item.subject_id)}.{item.relation}"
        if key not in ("country.founded", "person.birth_year"):
            assert set(item.choices) <= values_by_relation[key], item
        if item.relation == "neighbour":
            subject = kb.entity(item.subject_id)
            wrong = [c for c in item.choices if c != item.answer]
            assert subject.name not in wrong


def test_benchmark_render_is_long_enough_for_13_gram_matching(kb: KnowledgeBase) -> None:
    for item in benchmark_items(kb, seed=0, n=50):
        text = item.render()
        assert len(text.split()) >= 13
        lines = text.split("\n")
        assert lines[0] == f"Question: {item.question}"
        assert lines[1].startswith("Choices: A) ") and "; D) " in lines[1]
        assert lines[2] == f"Answer: {'ABCD'[item.answer_index]}) {item.answer}"
        # C4 drops lines of fewer than 3 words; every rendered line must survive it.
        assert all(len(line.split()) >= 3 for line in lines)
        assert text.startswith(item.prompt())


def test_benchmark_in_a_tiny_world_skips_facts_without_enough_distractors() -> None:
    tiny = build_knowledge(
        2, KnowledgeConfig(countries=3, cities_per_country=1, people=2, unknown_entities=0)
    )
    items = benchmark_items(tiny, seed=0, n=1000)
    relations = {f"{entity_type(i.subject_id)}.{i.relation}" for i in items}
    assert "country.capital" not in relations  # 3 capitals: only 2 distractors
    assert "country.founded" in relations  # years get plausible invented distractors
    assert all(len(set(i.choices)) == 4 for i in items)

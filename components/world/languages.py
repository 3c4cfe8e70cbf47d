"""Language packs for the tiny world's pages: sentence templates, page styles and site chrome per language.

The text itself lives in one module per language (`templates_en.py`, `templates_de.py`, ...): its constants
FACTS, FILLER, STYLES, CHROME, PROFESSIONS, the number words and marks (MILLION, DECIMAL_MARK,
THOUSANDS_MARK, AND_WORD) and, where the language has them, COMBOS, RELATED and FORUM. This module defines
the shape of a pack, builds each language's pack from its module, and keeps the registry.

Template placeholders (filled with `str.format`):
- every template may use `{s}` (the entity's name);
- fact templates (`facts["country.capital"]`, ...) must contain `{s}` and `{v}` (the value, formatted for
  the language), so that every fact sentence names both subject and value;
- combined fact templates (`combos["person.birth_year+person.birth_city"]`) use the relation names;
- other keys by entity type: country: capital, region, population, currency, language, founded,
  neighbour, cities, others; city: country, capital, population, river, landmark, people;
  person: last, birth_year, birth_city, birth_country, profession, a_profession, known_for.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

SUPPORTED_LANGUAGES = ("en", "de", "fr", "es", "it")


@dataclass(frozen=True)
class Style:
    """A kind of page: how its main content is laid out and which sites publish it."""

    name: str
    layout: str  # "sections" (headings + paragraphs), "list" (intro, <li> items, outro), "posts" (forum)
    types: tuple[str, ...]  # entity types the style is used for
    titles: Mapping[str, tuple[str, ...]]  # entity type -> title templates
    headings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # entity type -> section headings
    intros: tuple[str, ...] = ()
    outros: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


# Each page style's layout and the entity types it is used for: the same in every language that has it.
STYLE_SHAPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "encyclopedia": ("sections", ("country", "city", "person")),
    "travel": ("sections", ("country", "city")),
    "news": ("sections", ("country", "city", "person")),
    "biography": ("sections", ("person",)),
    "facts": ("list", ("country", "city", "person")),
    "forum": ("posts", ("country", "city", "person")),
}


def style(name: str, titles: Mapping[str, tuple[str, ...]] | None = None, **texts: Any) -> Style:
    """A page style in one language: the layout and entity types are the style's (`STYLE_SHAPES`); the
    texts (titles, headings, intros, outros, hosts) the language's. Without titles a page is titled with
    its subject's name, as an encyclopedia article is."""
    layout, types = STYLE_SHAPES[name]
    titles = titles if titles is not None else {t: ("{s}",) for t in types}
    return Style(name=name, layout=layout, types=types, titles=titles, **texts)


@dataclass(frozen=True)
class LanguagePack:
    code: str
    facts: Mapping[str, tuple[str, ...]]
    filler: Mapping[str, tuple[str, ...]]
    styles: tuple[Style, ...]
    chrome: Mapping[str, Any]
    professions: Mapping[str, str]
    million: str  # "million", "Millionen", ...
    decimal_mark: str
    thousands_mark: str
    and_word: str
    combos: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    related: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    forum: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def country_population(self, population: int) -> str:
        """3400000 -> '3.4 million' (en) / '3,4 Millionen' (de)."""
        return f"{population / 1_000_000:.1f}".replace(".", self.decimal_mark) + " " + self.million

    def city_population(self, population: int) -> str:
        """240000 -> '240,000' (en) / '240.000' (de) / '240 000' (fr)."""
        return f"{population:,}".replace(",", self.thousands_mark)

    def join(self, items: list[str]) -> str:
        """['A', 'B', 'C'] -> 'A, B and C' in the pack's language."""
        if len(items) <= 1:
            return "".join(items)
        return ", ".join(items[:-1]) + f" {self.and_word} " + items[-1]

    def style(self, name: str) -> Style:
        for s in self.styles:
            if s.name == name:
                return s
        raise KeyError(f"language {self.code!r} has no page style {name!r}")

    def styles_for(self, entity_type: str) -> list[Style]:
        return [s for s in self.styles if entity_type in s.types]

    def relations(self, entity_type: str) -> list[str]:
        """The relations this language states for an entity type (non-English packs skip a few)."""
        prefix = entity_type + "."
        return [k.removeprefix(prefix) for k in self.facts if k.startswith(prefix)]


@cache
def language_pack(code: str) -> LanguagePack:
    if code not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"unsupported language {code!r}; the tiny world writes {', '.join(SUPPORTED_LANGUAGES)}"
        )
    texts = importlib.import_module(f"components.world.templates_{code}")
    return LanguagePack(
        code=code,
        facts=texts.FACTS,
        filler=texts.FILLER,
        styles=texts.STYLES,
        chrome=texts.CHROME,
        professions=texts.PROFESSIONS,
        million=texts.MILLION,
        decimal_mark=texts.DECIMAL_MARK,
        thousands_mark=texts.THOUSANDS_MARK,
        and_word=texts.AND_WORD,
        combos=getattr(texts, "COMBOS", {}),
        related=getattr(texts, "RELATED", {}),
        forum=getattr(texts, "FORUM", {}),
    )


def _strings(value: Any) -> list[str]:
    """Every string inside nested mappings, sequences and the dataclasses above."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if dataclasses.is_dataclass(value):
        return _strings([getattr(value, f.name) for f in dataclasses.fields(value)])
    return []


@cache
def template_vocabulary() -> frozenset[str]:
    """Every word (lowercased) that any language pack or English-only text can put on a page.

    The knowledge base refuses these as entity names, so a name found on a page always means the entity.
    """
    words: set[str] = set()
    for code in SUPPORTED_LANGUAGES:
        module = importlib.import_module(f"components.world.templates_{code}")
        # The module's constants (FACTS, FILLER, ..., the English-only texts) and the pack built from them.
        constants = [value for name, value in vars(module).items() if name.isupper()]
        for text in _strings([*constants, language_pack(code)]):
            words.update(w.lower() for w in re.findall(r"[^\W\d_]+", text))
    return frozenset(words)

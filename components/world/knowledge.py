"""The tiny world's entity knowledge base: fictional countries, cities and people with a few facts each.

A tiny GPT has to memorise these facts from the synthetic crawl, so the set is deliberately small and every
fact is a short, unambiguous value. Names are built from syllables so they are pronounceable, unique across
the whole world (every name token appears in exactly one entity) and never collide with a word the page
templates use, which makes "does this entity appear on a page?" a simple word-boundary search.

`unknown_*` entities are generated the same way but are never rendered anywhere: they exist so that later
stages can ask about things the corpus never mentions and expect "I don't know".
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field

from components.core.config import StrictModel


class KnowledgeConfig(StrictModel):
    """How many entities the tiny world has. Keep it small: the model must memorise every fact."""

    countries: int = Field(12, ge=2, le=60, description="Number of fictional countries.")
    cities_per_country: int = Field(
        3, ge=1, le=10, description="Cities per country; the first is the capital."
    )
    people: int = Field(
        40, ge=0, le=400, description="Number of fictional people (born in one of the cities)."
    )
    unknown_entities: int = Field(
        9,
        ge=0,
        le=100,
        description="Extra entities (countries, cities, people in turn) that the crawl never mentions.",
    )


# --- entities ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Country:
    id: str
    name: str
    capital_id: str  # "" for unknown countries: they have no known cities
    region: str
    population: int
    currency: str
    language: str
    founded: int
    neighbour_id: str


@dataclass(frozen=True)
class City:
    id: str
    name: str
    country_id: str
    population: int
    river: str
    landmark: str  # e.g. "Amber Gate"; pages write "the Amber Gate"


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    birth_year: int
    birth_city_id: str
    profession: str
    known_for: str  # a noun phrase, e.g. 'the novel "The Salt Road"'


Entity = Country | City | Person


@dataclass(frozen=True)
class Fact:
    """One (subject, relation, value) triple; `value` is written exactly as English pages write it."""

    subject_id: str
    subject: str
    relation: str
    value: str


# Relations per entity type, in the order facts() lists them.
COUNTRY_RELATIONS = ("capital", "region", "population", "currency", "language", "founded", "neighbour")
CITY_RELATIONS = ("country", "population", "river", "landmark")
PERSON_RELATIONS = ("birth_year", "birth_city", "profession", "known_for")


def entity_type(entity_id: str) -> str:
    """'country' | 'city' | 'person' from an id such as 'city-07' or 'unknown-person-02'."""
    return entity_id.removeprefix("unknown-").split("-")[0]


def format_country_population(population: int) -> str:
    """Country populations are stated in millions with one decimal: 3400000 -> '3.4 million'."""
    return f"{population / 1_000_000:.1f} million"


def format_city_population(population: int) -> str:
    """City populations are stated with thousands separators: 240000 -> '240,000'."""
    return f"{population:,}"


# --- the knowledge base --------------------------------------------------------------------------


@dataclass(frozen=True)
class KnowledgeBase:
    seed: int
    config: KnowledgeConfig
    regions: tuple[str, ...]
    countries: tuple[Country, ...]
    cities: tuple[City, ...]
    people: tuple[Person, ...]
    unknown_countries: tuple[Country, ...] = ()
    unknown_cities: tuple[City, ...] = ()
    unknown_people: tuple[Person, ...] = ()

    # Lookups are rebuilt on demand; the KB is small, so a linear scan costs nothing worth caching.
    def entity(self, entity_id: str) -> Entity:
        for e in self.entities():
            if e.id == entity_id:
                return e
        for e in self.unknown_entities():
            if e.id == entity_id:
                return e
        raise KeyError(f"no entity {entity_id!r} in the knowledge base")

    def name_of(self, entity_id: str) -> str:
        return self.entity(entity_id).name

    def entities(self) -> list[Entity]:
        """Every entity that the crawl mentions: countries, then cities, then people."""
        return [*self.countries, *self.cities, *self.people]

    def unknown_entities(self) -> list[Entity]:
        return [*self.unknown_countries, *self.unknown_cities, *self.unknown_people]

    def cities_of(self, country_id: str) -> list[City]:
        return [c for c in self.cities if c.country_id == country_id]

    def people_born_in(self, city_id: str) -> list[Person]:
        return [p for p in self.people if p.birth_city_id == city_id]

    def facts_about(self, entity: Entity) -> list[Fact]:
        """The facts whose subject is `entity`, as written on English pages."""
        if isinstance(entity, Country):
            values = {
                "capital": self.name_of(entity.capital_id),
                "region": entity.region,
                "population": format_country_population(entity.population),
                "currency": entity.currency,
                "language": entity.language,
                "founded": str(entity.founded),
                "neighbour": self.name_of(entity.neighbour_id),
            }
        elif isinstance(entity, City):
            values = {
                "country": self.name_of(entity.country_id),
                "population": format_city_population(entity.population),
                "river": entity.river,
                "landmark": entity.landmark,
            }
        else:
            values = {
                "birth_year": str(entity.birth_year),
                "birth_city": self.name_of(entity.birth_city_id),
                "profession": entity.profession,
                "known_for": entity.known_for,
            }
        return [Fact(entity.id, entity.name, rel, value) for rel, value in values.items()]

    def facts(self) -> list[Fact]:
        """Every known fact, in a stable order (entity order, then relation order)."""
        return [f for e in self.entities() for f in self.facts_about(e)]

    def name_tokens(self, unknown: bool = False) -> list[str]:
        """Every generated word used by known (or, with unknown=True, unknown) entities and their values."""
        entities = self.unknown_entities() if unknown else self.entities()
        out: list[str] = [] if unknown else list(self.regions)
        for e in entities:
            out.extend(e.name.split())
            if isinstance(e, Country):
                out += [e.currency, e.language]
            elif isinstance(e, City):
                out.append(e.river)
            else:
                out.extend(_generated_words_in(e.known_for))
        return out

    # --- serialisation (stable key order, so equal KBs give equal bytes) ---

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "seed": self.seed,
            "config": self.config.model_dump(),
            "regions": list(self.regions),
        }
        for key in ("countries", "cities", "people", "unknown_countries", "unknown_cities", "unknown_people"):
            data[key] = [asdict(e) for e in getattr(self, key)]
        return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> KnowledgeBase:
        data = json.loads(text)
        return cls(
            seed=data["seed"],
            config=KnowledgeConfig.model_validate(data["config"]),
            regions=tuple(data["regions"]),
            countries=tuple(Country(**d) for d in data["countries"]),
            cities=tuple(City(**d) for d in data["cities"]),
            people=tuple(Person(**d) for d in data["people"]),
            unknown_countries=tuple(Country(**d) for d in data["unknown_countries"]),
            unknown_cities=tuple(City(**d) for d in data["unknown_cities"]),
            unknown_people=tuple(Person(**d) for d in data["unknown_people"]),
        )


def _generated_words_in(phrase: str) -> list[str]:
    """Capitalised words of a known_for phrase that came from the name maker (not from the fixed lists)."""
    fixed = set(TITLE_ADJECTIVES) | set(TITLE_NOUNS) | {"The"}
    words = [w.strip('"') for w in phrase.split()]
    return [w for w in words if w[:1].isupper() and w not in fixed and w not in _KNOWN_FOR_FIXED_WORDS]


# --- names ---------------------------------------------------------------------------------------


def _split(text: str) -> tuple[str, ...]:
    """A word list written as one string, which keeps long lists readable."""
    return tuple(text.split())


_ONSETS = _split("b d dr f g h j k kr l m n p r s sk t th v z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")  # a/e/o twice: they read more naturally
_CODAS = ("", "", "n", "r", "l", "s", "sh", "th", "k", "m", "nd", "rn")

# Sub-strings a URL filter may ban (names end up in URLs), plus letters combinations that read badly.
_BANNED_SUBSTRINGS = _split(
    "sex porn xxx anal anus cum tit ass fuck shit nig fag cock dick rape slut whor gay jiz cunt pus nud "
    "milf bdsm hentai escort bitch damn hell kill nazi fuk suk dik kok pis poo sht thth shsh hh vag pen "
    "cok orgi orgy casin bet lott"
)
# Real places and names a syllable generator can stumble on; the world must stay fictional.
_REAL_NAMES_TEXT = """
    rome roma paris berlin london madrid lima kiev kyiv oslo riga doha male malta chad mali peru cuba iran
    iraq oman togo laos fiji niger benin gabon kenya ghana sudan nepal samoa tonga nauru palau yemen syria
    jordan lebanon israel india china japan korea burma congo angola zambia belize haiti chile sweden
    norway finland denmark poland hungary austria greece cyprus turkey russia ukraine serbia bosnia
    kosovo albania monaco
    andorra moldova latvia estonia belarus georgia armenia tibet dakar bamako niamey abuja lome accra cairo
    tunis rabat sana baku tbilisi minsk vilnius tallinn sofia skopje tirana zagreb bern vaduz dublin lisbon
    milan turin naples genoa pisa siena verona bari parma lyon nice nantes lille bonn koln munich hamburg
    dresden leipzig bremen hanover essen porto sevilla seville malaga toledo bilbao boston denver dallas
    austin tampa miami reno salem dover derby leeds hull bath york kent devon essex sussex texas ohio iowa
    utah idaho maine kansas nevada oregon dakota hawaii alaska sydney perth darwin hobart tokyo osaka kobe
    nara kyoto seoul busan delhi mumbai goa pune lagos nairobi kampala harare luanda maputo moroni manila
    hanoi hue dili suva apia honiara havana kingston nassau lusaka gaborone maseru mbabane tana tara sara
    nina maria anna elena maya lena nora rosa vera tina gina mona lisa dora kira mila lara zara
"""
_REAL_NAMES = frozenset(_REAL_NAMES_TEXT.split())

# Fixed word lists for landmarks and work titles (English, so they are only rendered on English pages).
LANDMARK_ADJECTIVES = _split(
    "Amber Old Glass Copper White Iron Royal Stone Sun Moon Blue Green Golden Silver Red High"
)
LANDMARK_NOUNS = _split(
    "Gate Bridge Tower Cathedral Market Library Lighthouse Palace Observatory Fountain Theatre Canal "
    "Harbour Garden"
)
TITLE_ADJECTIVES = _split(
    "Quiet Silver Hidden Last Distant Broken Golden Winter Northern Salt Crimson Patient Lonely Endless "
    "Morning Paper Burning Sleeping"
)
TITLE_NOUNS = _split(
    "Harbour Road Garden Lantern River Orchard Tower Letters Shore Mirror Season Island Voyage Clock "
    "Horses Bells Orchids Wells"
)

# profession -> how its known_for phrase is built; {title} is a work title, {name} a generated name.
PROFESSIONS: dict[str, str] = {
    "painter": 'the painting "{title}"',
    "novelist": 'the novel "{title}"',
    "poet": 'the poetry collection "{title}"',
    "composer": 'the opera "{title}"',
    "sculptor": 'the statue "{title}"',
    "historian": 'the book "{title}"',
    "architect": "designing the {name} Bridge",
    "astronomer": "discovering the comet {name}",
    "explorer": "the first crossing of the {name} Mountains",
    "mathematician": "the {name} theorem",
    "physician": "a cure for {name} fever",
    "engineer": "building the {name} Railway",
    "botanist": "describing the {name} orchid",
}
_KNOWN_FOR_FIXED_WORDS = frozenset({"Bridge", "Mountains", "Railway"})


class NameMaker:
    """Draws pronounceable, globally unique words from syllables with a seeded RNG."""

    def __init__(self, rng: random.Random, reserved: Iterable[str] = ()) -> None:
        self.rng = rng
        self.used: set[str] = {w.lower() for w in reserved}

    def _candidate(self, syllables: int, coda: bool) -> str:
        parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
        if self.rng.random() < 0.3:  # some names start with a vowel: "Orsa", "Elvik"
            parts[0] = parts[0].lstrip("bdfghjklmnprstvz")
        word = "".join(parts) + (self.rng.choice(_CODAS) if coda else "")
        return word.capitalize()

    def acceptable(self, word: str) -> bool:
        low = word.lower()
        return (
            len(low) >= 4
            and low not in self.used
            and low not in _REAL_NAMES
            and not any(b in low for b in _BANNED_SUBSTRINGS)
        )

    def claim(self, word: str) -> bool:
        """Reserve `word` if it is still free; False when taken or unsuitable."""
        if not self.acceptable(word):
            return False
        self.used.add(word.lower())
        return True

    def word(self, min_syllables: int = 2, max_syllables: int = 3, coda: bool = True) -> str:
        while True:
            w = self._candidate(self.rng.randint(min_syllables, max_syllables), coda)
            if self.claim(w):
                return w

    def language_of(self, country: str) -> str:
        """An adjective-like language name derived from the country name: Korava -> Koravan."""
        stem = country if country[-1] not in "aeiou" else country[:-1]
        for suffix in ("an", "ese", "ic", "ish", "ian"):
            if self.claim(stem + suffix):
                return stem + suffix
        return self.word()


def _unique(rng: random.Random, used: set[Any], draw: Any) -> Any:
    while True:
        value = draw()
        if value not in used:
            used.add(value)
            return value


# --- building ------------------------------------------------------------------------------------


def build_knowledge(
    seed: int, sizes: KnowledgeConfig | None = None, reserved_words: Iterable[str] | None = None
) -> KnowledgeBase:
    """Generate the world for `seed`. `reserved_words` defaults to every word the page templates use."""
    sizes = sizes or KnowledgeConfig()
    if reserved_words is None:
        from components.world.languages import template_vocabulary

        reserved_words = template_vocabulary()
    rng = random.Random(seed)
    # The fixed English word lists are reserved too, so no city is ever called "Gate" or "Harbour".
    fixed_words = [*LANDMARK_ADJECTIVES, *LANDMARK_NOUNS, *TITLE_ADJECTIVES, *TITLE_NOUNS, *PROFESSIONS]
    fixed_words += [w.strip('"{}') for pattern in PROFESSIONS.values() for w in pattern.split()]
    names = NameMaker(rng, [*reserved_words, *fixed_words])

    n_regions = max(4, math.ceil(sizes.countries / 3))
    regions = tuple(names.word(2, 3, coda=True) for _ in range(n_regions))
    countries, cities = _build_countries(rng, names, sizes, regions, id_prefix="")
    used_titles: set[str] = set()  # shared, so no two people (known or not) claim the same work
    people = _build_people(rng, names, sizes.people, cities, used_titles, id_prefix="")

    # Unknown entities: round-robin over the three types. They may point at known entities (an unknown
    # person born in a known city), never the other way round, so nothing known leads to them.
    n_unknown = [0, 0, 0]
    for i in range(sizes.unknown_entities):
        n_unknown[i % 3] += 1
    unknown_countries = tuple(
        _country(rng, names, f"unknown-country-{i:02d}", "", regions, rng.choice(countries).id, set())
        for i in range(n_unknown[0])
    )
    unknown_cities = tuple(
        _city(rng, names, f"unknown-city-{i:02d}", rng.choice(countries).id, False, set())
        for i in range(n_unknown[1])
    )
    unknown_people = _build_people(rng, names, n_unknown[2], cities, used_titles, id_prefix="unknown-")
    return KnowledgeBase(
        seed=seed,
        config=sizes,
        regions=regions,
        countries=countries,
        cities=cities,
        people=people,
        unknown_countries=unknown_countries,
        unknown_cities=unknown_cities,
        unknown_people=unknown_people,
    )


def _country(
    rng: random.Random,
    names: NameMaker,
    country_id: str,
    capital_id: str,
    regions: tuple[str, ...],
    neighbour_id: str,
    used_values: set[Any],
    region: str | None = None,
) -> Country:
    name = names.word(2, 3)
    return Country(
        id=country_id,
        name=name,
        capital_id=capital_id,
        region=region or rng.choice(regions),
        # One decimal in millions, distinct per country so multiple-choice options never tie.
        population=_unique(rng, used_values, lambda: rng.randint(8, 400) * 100_000),
        currency=names.word(2, 2),
        language=names.language_of(name),
        founded=_unique(rng, used_values, lambda: rng.randint(1100, 1920)),
        neighbour_id=neighbour_id,
    )


def _city(
    rng: random.Random, names: NameMaker, city_id: str, country_id: str, capital: bool, used: set[Any]
) -> City:
    low, high = (300, 900) if capital else (20, 290)  # thousands: capitals are the largest cities
    landmark = _unique(rng, used, lambda: f"{rng.choice(LANDMARK_ADJECTIVES)} {rng.choice(LANDMARK_NOUNS)}")
    return City(
        id=city_id,
        name=names.word(2, 3),
        country_id=country_id,
        population=_unique(rng, used, lambda: rng.randint(low, high) * 1000),
        river=names.word(2, 2, coda=False),
        landmark=landmark,
    )


def _build_countries(
    rng: random.Random, names: NameMaker, sizes: KnowledgeConfig, regions: tuple[str, ...], id_prefix: str
) -> tuple[tuple[Country, ...], tuple[City, ...]]:
    n = sizes.countries
    # Neighbours are paired (0<->1, 2<->3, ...) so "which country borders X?" has one answer; with an odd
    # count the last country borders country 0 (benchmark distractors exclude such reverse neighbours).
    neighbour = [i + 1 if i % 2 == 0 else i - 1 for i in range(n)]
    if n % 2:
        neighbour[-1] = 0
    used: set[Any] = set()
    countries: list[Country] = []
    cities: list[City] = []
    for i in range(n):
        country_id = f"{id_prefix}country-{i:02d}"
        city_ids = [
            f"{id_prefix}city-{i * sizes.cities_per_country + j:02d}" for j in range(sizes.cities_per_country)
        ]
        region = regions[i % len(regions)]  # round robin: every region is used when n >= len(regions)
        countries.append(
            _country(
                rng,
                names,
                country_id,
                city_ids[0],
                regions,
                f"{id_prefix}country-{neighbour[i]:02d}",
                used,
                region=region,
            )
        )
        cities += [_city(rng, names, cid, country_id, j == 0, used) for j, cid in enumerate(city_ids)]
    return tuple(countries), tuple(cities)


def _build_people(
    rng: random.Random,
    names: NameMaker,
    n: int,
    cities: tuple[City, ...],
    used_titles: set[str],
    id_prefix: str,
) -> tuple[Person, ...]:
    professions = sorted(PROFESSIONS)
    people = []
    for i in range(n):
        profession = professions[i % len(professions)] if i < len(professions) else rng.choice(professions)
        title = _unique(
            rng, used_titles, lambda: f"The {rng.choice(TITLE_ADJECTIVES)} {rng.choice(TITLE_NOUNS)}"
        )
        pattern = PROFESSIONS[profession]
        known_for = pattern.format(title=title, name=names.word(2, 2) if "{name}" in pattern else "")
        people.append(
            Person(
                id=f"{id_prefix}person-{i:02d}",
                name=f"{names.word(2, 2)} {names.word(2, 3)}",
                birth_year=rng.randint(1820, 1985),
                birth_city_id=rng.choice(cities).id,
                profession=profession,
                known_for=known_for,
            )
        )
    return tuple(people)

"""Pages of the tiny world's crawl: the `Page` record, entity-page composition and HTML rendering.

A good page is composed from the knowledge base and a language pack (`compose_entity_page`) and wrapped in
realistic site chrome (`render_html`, `Chrome`); everything else in the crawl reuses these two. Kept apart
from the generator so the text the model learns from can be read and tested on its own. `shingle_jaccard`
is the definition behind the near-duplicate labels' `jaccard` field.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field

from components.world.knowledge import City, Country, Entity, KnowledgeBase, entity_type
from components.world.languages import LanguagePack, Style, language_pack

# --- pages ---------------------------------------------------------------------------------------


@dataclass
class Page:
    """One response record to be written, with everything its label needs."""

    category: str  # good | junk | duplicate | leaked | hostile
    url: str
    language: str | None
    main_lines: list[str]
    html: str = ""  # the document; encoded with `charset` unless `body` is set
    body: bytes | None = None  # raw body for binary/non-HTML/empty records
    junk_class: str | None = None
    style: str | None = None
    entity_ids: list[str] = field(default_factory=list)
    pii: list[dict[str, str]] = field(default_factory=list)
    decoys: list[dict[str, str]] = field(default_factory=list)
    contaminated_with: list[str] = field(default_factory=list)
    duplicate_of: Page | None = None
    duplicate_kind: str | None = None
    edit_rate: float | None = None
    jaccard: float | None = None
    charset: str | None = "utf-8"  # what the bytes really are
    declared_charset: str | None = "utf-8"  # what the Content-Type header says
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    page_id: str = ""  # assigned after the crawl order is shuffled
    record_id: str = ""  # WARC-Record-ID of the response
    warc_file: str = ""

    @property
    def main_text(self) -> str:
        return "\n".join(self.main_lines)

    def payload(self) -> bytes:
        if self.body is not None:
            return self.body
        # xmlcharrefreplace: a legacy charset that lacks a character still shows it after HTML parsing.
        return self.html.encode(self.charset or "utf-8", errors="xmlcharrefreplace")


Block = tuple[str, str]  # (kind, text): kind in h1, h2, p, li, pre, links


def shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard similarity of the SETS of word n-gram shingles of two texts.

    Words are `text.lower().split()` (whitespace split, punctuation kept on the word). A text with fewer than
    n words contributes its whole word tuple as a single shingle. This is the definition behind the labels'
    `jaccard` field.
    """
    sa, sb = _shingles(a, n), _shingles(b, n)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def _shingles(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.lower().split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


# --- entity pages ----------------------------------------------------------------------------------


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def entity_context(kb: KnowledgeBase, entity: Entity, pack: LanguagePack) -> tuple[dict[str, str], list[str]]:
    """Template fields for an entity in a language, and the ids of the entities those fields mention."""
    ctx: dict[str, str] = {"s": entity.name, "type_word": entity_type(entity.id)}
    if isinstance(entity, Country):
        cities = kb.cities_of(entity.id)
        others = [c.name for c in cities if c.id != entity.capital_id]
        ctx |= {
            "capital": kb.name_of(entity.capital_id),
            "region": entity.region,
            "population": pack.country_population(entity.population),
            "currency": entity.currency,
            "language": entity.language,
            "founded": str(entity.founded),
            "neighbour": kb.name_of(entity.neighbour_id),
            "cities": pack.join([c.name for c in cities]),
            "others": pack.join(others),
        }
        mentioned = [entity.neighbour_id, *(c.id for c in cities)]
    elif isinstance(entity, City):
        country = kb.entity(entity.country_id)
        assert isinstance(country, Country)
        people = kb.people_born_in(entity.id)
        ctx |= {
            "country": country.name,
            "capital": kb.name_of(country.capital_id),
            "population": pack.city_population(entity.population),
            "river": entity.river,
            "landmark": entity.landmark,
            "people": pack.join([p.name for p in people]),
        }
        mentioned = [country.id, country.capital_id, *(p.id for p in people)]
    else:
        city = kb.entity(entity.birth_city_id)
        assert isinstance(city, City)
        profession = pack.professions[entity.profession]
        ctx |= {
            "last": entity.name.split()[-1],
            "birth_year": str(entity.birth_year),
            "birth_city": city.name,
            "birth_country": kb.name_of(city.country_id),
            "profession": profession,
            "a_profession": _article(profession),
            "known_for": entity.known_for,
        }
        mentioned = [city.id, city.country_id]
    ids = [entity.id] + [i for i in dict.fromkeys(mentioned) if i != entity.id]
    return ctx, ids


def _fact_sentences(pack: LanguagePack, etype: str, ctx: dict[str, str], rng: random.Random) -> list[str]:
    """One sentence per fact the language states (two facts share a sentence when a combo is drawn)."""
    remaining = pack.relations(etype)
    rng.shuffle(remaining)
    out: list[str] = []
    for key, templates in pack.combos.items():
        rels = [k.split(".")[1] for k in key.split("+")]
        if key.startswith(etype + ".") and all(r in remaining for r in rels) and rng.random() < 0.35:
            out.append(rng.choice(templates).format(**ctx))
            remaining = [r for r in remaining if r not in rels]
    for rel in remaining:
        template = rng.choice(pack.facts[f"{etype}.{rel}"])
        value = ctx[rel]
        out.append(template.format(**ctx, v=value, a_v=ctx.get("a_profession", "")))
    rng.shuffle(out)
    return out


def _related_sentences(
    kb: KnowledgeBase, pack: LanguagePack, entity: Entity, ctx: dict[str, str], rng: random.Random
) -> list[str]:
    keys: list[str] = []
    if isinstance(entity, Country):
        keys = ["country.cities"] if ctx["others"] else []
    elif isinstance(entity, City):
        country = kb.entity(entity.country_id)
        assert isinstance(country, Country)
        keys = ["city.capital_of" if country.capital_id == entity.id else "city.not_capital"]
        n_people = len(kb.people_born_in(entity.id))
        keys += ["city.people_one"] if n_people == 1 else ["city.people_many"] if n_people > 1 else []
    else:
        keys = ["person.birth_country"]
    return [rng.choice(pack.related[k]).format(**ctx) for k in keys if k in pack.related]


def _words(lines: list[str]) -> int:
    return sum(len(line.split()) for line in lines)


def compose_entity_page(
    kb: KnowledgeBase, entity: Entity, pack: LanguagePack, style: Style, rng: random.Random
) -> tuple[str, list[Block], list[str]]:
    """Title, main-content blocks and mentioned entity ids of one page about `entity`."""
    etype = entity_type(entity.id)
    ctx, ids = entity_context(kb, entity, pack)
    facts = _fact_sentences(pack, etype, ctx, rng) + _related_sentences(kb, pack, entity, ctx, rng)
    fillers = list(pack.filler[etype])
    rng.shuffle(fillers)
    # English pages are what the model learns from: 150-600 words. Other languages need only enough
    # sentences for a confident language ID.
    target = rng.randint(170, 380) if pack.code == "en" else rng.randint(90, 170)
    sentences = list(facts)
    while fillers and _words(sentences) < target:
        sentences.insert(rng.randrange(len(sentences) + 1), fillers.pop().format(**ctx))
    title = rng.choice(style.titles[etype]).format(**ctx, n=len(sentences))  # {n}: "12 facts about X"
    if style.layout == "list":
        body = _list_blocks(style, ctx, sentences, rng)
    elif style.layout == "posts":
        body = _forum_blocks(pack, ctx, sentences, rng)
    else:
        body = _section_blocks(style, etype, ctx, sentences, rng)
    return title, [("h1", title), *body], ids


# A list page lists its key facts and tells the rest in prose, as real "facts about" pages do. A page
# that is nearly all bullets (> 90% of lines) is one that FineWeb's Gopher rule rejects, rightly: those
# are rarely good text.
LIST_ITEMS = 12
PROSE_SENTENCES_PER_PARAGRAPH = 4


def _list_blocks(style: Style, ctx: dict[str, str], sentences: list[str], rng: random.Random) -> list[Block]:
    blocks: list[Block] = []
    if style.intros:
        blocks.append(("p", rng.choice(style.intros).format(**ctx)))
    blocks += [("li", s) for s in sentences[:LIST_ITEMS]]
    rest = sentences[LIST_ITEMS:]
    for start in range(0, len(rest), PROSE_SENTENCES_PER_PARAGRAPH):
        blocks.append(("p", " ".join(rest[start : start + PROSE_SENTENCES_PER_PARAGRAPH])))
    if style.outros:
        blocks.append(("p", rng.choice(style.outros).format(**ctx)))
    return blocks


def _section_blocks(
    style: Style, etype: str, ctx: dict[str, str], sentences: list[str], rng: random.Random
) -> list[Block]:
    blocks: list[Block] = []
    if style.intros:
        blocks.append(("p", rng.choice(style.intros).format(**ctx)))
    headings = list(style.headings.get(etype, ()))
    paragraphs: list[str] = []
    i = 0
    while i < len(sentences):
        size = rng.randint(2, 5)
        paragraphs.append(" ".join(sentences[i : i + size]))
        i += size
    for n, paragraph in enumerate(paragraphs):
        if n > 0 and headings and rng.random() < 0.6:
            blocks.append(("h2", headings.pop(0)))
        blocks.append(("p", paragraph))
    if style.outros:
        blocks.append(("p", rng.choice(style.outros).format(**ctx)))
    return blocks


def _forum_blocks(
    pack: LanguagePack, ctx: dict[str, str], sentences: list[str], rng: random.Random
) -> list[Block]:
    forum = pack.forum
    users = rng.sample(list(forum["users"]), 4)
    asker = f"{users[0]}{rng.randint(1, 99)}"
    wrote = forum["wrote"][0]
    ask = rng.choice(forum["ask." + ctx["type_word"]]).format(**ctx)
    blocks: list[Block] = [("p", f"{asker} {wrote} {ask}")]
    openers = list(forum["open"])
    rng.shuffle(openers)
    i = 0
    while i < len(sentences):
        size = rng.randint(3, 6)
        user = rng.choice(users[1:])
        opener = openers.pop() + " " if openers and rng.random() < 0.7 else ""
        blocks.append(("p", f"{user} {wrote} {opener}{' '.join(sentences[i : i + size])}"))
        i += size
    blocks.append(("p", f"{asker} {wrote} {rng.choice(forum['close'])}"))
    return blocks


# --- HTML ----------------------------------------------------------------------------------------


def _site_name(host: str) -> str:
    core = host.split(".")
    core = [p for p in core if p not in ("www", "en", "de", "fr", "es", "it", "news", "forum", "community")]
    return core[0].replace("-", " ").title() if core else host


def text_html(text: str) -> str:
    return html.escape(text, quote=False)


def _blocks_html(blocks: list[Block]) -> str:
    out: list[str] = []
    in_list = False
    for kind, text in blocks:
        if kind == "li" and not in_list:
            out.append('<ul class="facts">')
            in_list = True
        elif kind != "li" and in_list:
            out.append("</ul>")
            in_list = False
        if kind == "pre":
            out.append(f"<pre><code>{text_html(text)}</code></pre>")
        elif kind == "links":  # "Buy now | Free gift": a row of real anchors, as on spam pages
            anchors = (f'<a href="/go/{slug(t)}">{text_html(t)}</a>' for t in text.split(" | "))
            out.append(f"<p>{' | '.join(anchors)}</p>")
        else:
            out.append(f"<{kind}>{text_html(text)}</{kind}>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


@dataclass
class Chrome:
    """Site furniture around the main content; none of it is main text."""

    host: str
    lang: str
    links: list[tuple[str, str]]  # sidebar links (text, href)
    ads: int = 0
    cookie_banner: bool = True
    meta_charset: str | None = "utf-8"


def render_html(title: str, blocks: list[Block] | None, chrome: Chrome, rng: random.Random) -> str:
    """A complete HTML document: head, cookie banner, header, nav, main/article, sidebar, footer."""
    pack = language_pack(chrome.lang)
    c = pack.chrome
    site = _site_name(chrome.host)
    nav_items = rng.sample(list(c["nav"]), rng.randint(min(9, len(c["nav"])), len(c["nav"])))
    nav = "".join(f'<li><a href="/{slug(item)}/">{text_html(item)}</a></li>' for item in nav_items)
    sidebar = "".join(f'<li><a href="{href}">{text_html(text)}</a></li>' for text, href in chrome.links)
    ads = "".join(
        f'<div class="ad"><span>{text_html(rng.choice(c["ad"]))}</span>'
        f'<a href="https://ads.adnetwork.example/click?id={rng.randint(10000, 99999)}">'
        f'<img src="/banners/{rng.randint(1, 40)}.jpg" alt=""></a></div>'
        for _ in range(chrome.ads)
    )
    footer_links = "".join(f'<li><a href="/{slug(x)}">{text_html(x)}</a></li>' for x in c["footer"])
    meta = f'<meta charset="{chrome.meta_charset}">\n' if chrome.meta_charset else ""
    cookie = (
        f'<div class="cookie-banner" role="dialog"><p>{text_html(rng.choice(c["cookie"]))}</p>'
        f"<button>OK</button></div>\n"
        if chrome.cookie_banner
        else ""
    )
    read_more = text_html(c["read_more"][0])
    main = (
        f'<main id="content">\n<article>\n{_blocks_html(blocks)}\n</article>\n</main>\n'
        if blocks is not None
        else f'<main id="content"><p class="teaser"><a href="/latest">{read_more}</a></p></main>\n'
    )
    year = 2024 - rng.randint(0, 3)
    copyright_line = text_html(c["copyright"][0].format(year=year, site=site))
    sidebar_title = text_html(rng.choice(c["sidebar"]))
    tracking = f"dataLayer.push({{'page': '{rng.randint(1, 9999)}'}});"
    return (
        f'<!DOCTYPE html>\n<html lang="{chrome.lang}">\n<head>\n{meta}'
        f"<title>{text_html(title)} | {text_html(site)}</title>\n"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="stylesheet" href="/static/site.css?v={rng.randint(100, 999)}">\n'
        f"<script>window.dataLayer = window.dataLayer || []; {tracking}</script>\n</head>\n<body>\n"
        f'<a class="skip-link" href="#content">{text_html(c["skip"][0])}</a>\n{cookie}'
        f'<header><div class="logo"><a href="/">{text_html(site)}</a></div>'
        f'<form class="search" action="/search"><input type="search" name="q" '
        f'placeholder="{text_html(c["search"][0])}"></form></header>\n'
        f"<nav><ul>{nav}</ul></nav>\n{main}"
        f'<aside class="sidebar"><h3>{sidebar_title}</h3><ul>{sidebar}</ul>{ads}</aside>\n'
        f"<footer><p>{copyright_line}</p><ul>{footer_links}</ul></footer>\n"
        f"</body>\n</html>\n"
    )

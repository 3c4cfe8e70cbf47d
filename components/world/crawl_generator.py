"""The tiny world's crawl generator: which pages the crawl has (good pages per entity, language and style;
junk of every class; exact and near duplicates; PII; leaked quiz pages; hostile records), written as
gzipped WARC files plus a ground-truth label file by `generate_crawl`. The `world` stage
(`components.world.crawl`) runs it; the pieces live by name: `pages.py` (composing and rendering a page),
`noise.py` (junk text, near-duplicate edits, PII) and `warc.py` (WARC records and labels).

Everything derives from seeded `random.Random` streams, one per part of the crawl, so one config always
gives byte-identical files. A little over 600 lines: `_Crawl` is one plan (page counts, the order the
streams are drawn in, the labels), and cutting it apart would split the decisions that must agree.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from components.world import templates_en as en
from components.world.benchmark import BenchmarkItem, benchmark_items
from components.world.crawl_config import CrawlConfig
from components.world.knowledge import (
    Entity,
    build_knowledge,
    entity_type,
)
from components.world.languages import SUPPORTED_LANGUAGES, Style, language_pack
from components.world.noise import (
    PHONE_FORMATS,
    blocklisted_hosts,
    break_markup,
    code_line,
    edit_words,
    fake_pdf,
    fake_png,
    lorem,
    pii_paragraph,
)
from components.world.pages import (
    Block,
    Chrome,
    Page,
    compose_entity_page,
    entity_context,
    render_html,
    shingle_jaccard,
    slug,
    text_html,
)
from components.world.warc import RecordClock, label, write_atomic, write_warc


class _Crawl:
    """Builds the list of pages; one instance per generate_crawl call."""

    def __init__(self, config: CrawlConfig) -> None:
        self.cfg = config
        self.kb = build_knowledge(config.seed, config.knowledge)
        self.pages: list[Page] = []
        self.used_urls: set[str] = set()
        self.blocklist = blocklisted_hosts()
        self.name_words = {w.lower() for w in self.kb.name_tokens() + self.kb.name_tokens(unknown=True)}
        # Multi-word values that near-duplicate edits must leave intact ("the opera \"The Salt Road\"").
        self.protected_phrases = sorted({f.value for f in self.kb.facts() if " " in f.value})

    def rng(self, stream: str) -> random.Random:
        """Independent streams, so changing one part of the crawl does not reshuffle the others."""
        return random.Random(f"{self.cfg.seed}/{stream}")

    def unique_url(self, host: str, path: str) -> str:
        url = f"https://{host}{path}"
        k = 2
        while url in self.used_urls:
            url = f"https://{host}{path}-{k}"
            k += 1
        self.used_urls.add(url)
        return url

    def sidebar_links(self, rng: random.Random) -> list[tuple[str, str]]:
        entities = rng.sample(self.kb.entities(), min(5, len(self.kb.entities())))
        return [(e.name, f"/wiki/{slug(e.name)}") for e in entities]

    def entity_page(
        self,
        entity: Entity,
        lang: str,
        rng: random.Random,
        category: str = "good",
        host: str | None = None,
        style: Style | None = None,
    ) -> Page:
        pack = language_pack(lang)
        style = style or rng.choice(pack.styles_for(entity_type(entity.id)))
        title, blocks, ids = compose_entity_page(self.kb, entity, pack, style, rng)
        host = host or rng.choice(style.hosts)
        url = self.unique_url(host, _path(style.name, entity.name, rng))
        page = Page(
            category=category,
            url=url,
            language=lang,
            main_lines=[t for _, t in blocks],
            style=style.name,
            entity_ids=ids,
        )
        page.html = render_html(
            title, blocks, Chrome(host, lang, self.sidebar_links(rng), ads=rng.randint(0, 2)), rng
        )
        return page

    # --- good pages ---

    def good_pages(self, n: int) -> list[Page]:
        rng = self.rng("good")
        counts = _apportion(n, self.cfg.languages)
        pages: list[Page] = []
        for lang in SUPPORTED_LANGUAGES:
            queue: list[Entity] = []
            for _ in range(counts.get(lang, 0)):
                if not queue:  # round robin over a fresh shuffle: every entity gets its share of pages
                    queue = list(self.kb.entities())
                    rng.shuffle(queue)
                pages.append(self.entity_page(queue.pop(), lang, rng))
        return pages

    def add_pii(self, pages: list[Page]) -> None:
        rng = self.rng("pii")
        english = [p for p in pages if p.language == "en"]
        chosen = rng.sample(english, round(self.cfg.pii_fraction * len(english)))
        phones = itertools.count()  # cycle through the phone formats so that every one of them occurs

        def next_phone() -> str:
            return PHONE_FORMATS[next(phones) % len(PHONE_FORMATS)](rng)

        for page in chosen:
            heading, paragraph, pii, decoys = pii_paragraph(rng, next_phone)
            page.main_lines += [heading, paragraph]
            block = f"<h2>{text_html(heading)}</h2>\n<p>{text_html(paragraph)}</p>\n</article>"
            page.html = page.html.replace("</article>", block, 1)
            page.pii, page.decoys = pii, decoys

    # --- leaked benchmark pages ---

    def leaked_pages(self) -> list[Page]:
        rng = self.rng("leaked")
        items = benchmark_items(self.kb, self.cfg.benchmark_seed, self.cfg.benchmark_size)
        pages = []
        for _ in range(self.cfg.leaked_pages):
            chosen = _disjoint_items(items, self.cfg.leaked_items_per_page)
            if not chosen:
                break
            items = [it for it in items if it not in chosen]
            pages.append(self.quiz_page(chosen, rng))
        return pages

    def quiz_page(self, items: list[BenchmarkItem], rng: random.Random) -> Page:
        title = rng.choice(en.QUIZ_TITLES)
        lines = [title, *rng.sample(list(en.QUIZ_INTROS), 2)]
        facts = {(f.subject_id, f.relation): f for f in self.kb.facts()}
        pack = language_pack("en")
        for item in items:
            lines += item.render().split("\n")
            fact = facts[(item.subject_id, item.relation)]
            entity = self.kb.entity(fact.subject_id)
            ctx, _ = entity_context(self.kb, entity, pack)
            template = rng.choice(pack.facts[f"{entity_type(entity.id)}.{fact.relation}"])
            explanation = template.format(**ctx, v=ctx[fact.relation], a_v=ctx.get("a_profession", ""))
            lines.append(f"{rng.choice(en.QUIZ_EXPLAIN)} {explanation}")
        lines.append(rng.choice(en.QUIZ_OUTROS))
        host = rng.choice(en.QUIZ_HOSTS)
        blocks: list[Block] = [("h1", lines[0])] + [("p", line) for line in lines[1:]]
        page = Page(
            category="leaked",
            url=self.unique_url(host, f"/quiz/{rng.randint(100, 999)}"),
            language="en",
            main_lines=lines,
            style="quiz",
            entity_ids=list(dict.fromkeys(it.subject_id for it in items)),
            contaminated_with=[it.id for it in items],
        )
        page.html = render_html(title, blocks, Chrome(host, "en", self.sidebar_links(rng), ads=1), rng)
        return page

    # --- junk ---

    def junk_pages(self) -> list[Page]:
        rng = self.rng("junk")
        pages = []
        for junk_class, fraction in self.cfg.junk.model_dump().items():
            for _ in range(round(fraction * self.cfg.pages)):
                pages.append(getattr(self, f"junk_{junk_class}")(rng))
        return pages

    def _junk(
        self,
        rng: random.Random,
        junk_class: str,
        title: str,
        blocks: list[Block] | None,
        host: str | None = None,
        path: str | None = None,
        language: str | None = "en",
        ads: int = 3,
    ) -> Page:
        host = host or rng.choice(en.JUNK_HOSTS)
        path = path or f"/{junk_class.replace('_', '-')}/{rng.randint(1000, 99999)}"
        page = Page(
            category="junk",
            junk_class=junk_class,
            url=self.unique_url(host, path),
            language=language,
            main_lines=[t for _, t in blocks or []],
        )
        page.html = render_html(title, blocks, Chrome(host, "en", self.sidebar_links(rng), ads=ads), rng)
        return page

    def junk_spam(self, rng: random.Random) -> Page:
        lines = rng.sample(list(en.SPAM_LINES), rng.randint(4, len(en.SPAM_LINES)))
        links = " | ".join(rng.choice(en.SPAM_LINKS) for _ in range(rng.randint(8, 20)))
        blocks: list[Block] = [
            ("h1", "MEGA SALE!!! TODAY ONLY!!!"),
            *(("p", x) for x in lines),
            ("links", links),
        ]
        return self._junk(rng, "spam", blocks[0][1], blocks, ads=6)

    def junk_keyword_stuffing(self, rng: random.Random) -> Page:
        city = rng.choice(self.kb.cities).name
        # One main keyword phrase in every other slot plus a few others: what Gopher's top-n-gram rule is for.
        words = [*rng.sample(list(en.KEYWORDS), 2), f"{city} hotels", f"cheap {city}"]
        main = words[0]
        paragraphs = [
            " ".join(main if rng.random() < 0.5 else rng.choice(words) for _ in range(rng.randint(40, 80)))
            for _ in range(rng.randint(2, 4))
        ]
        title = " ".join(words)
        return self._junk(rng, "keyword_stuffing", title, [("h1", title), *(("p", p) for p in paragraphs)])

    def junk_boilerplate(self, rng: random.Random) -> Page:
        return self._junk(rng, "boilerplate", "Home", None, ads=2)

    def junk_lorem_ipsum(self, rng: random.Random) -> Page:
        paragraphs = ["Lorem ipsum dolor sit amet, consectetur adipiscing elit. " + lorem(rng, 5)]
        paragraphs += [lorem(rng, rng.randint(3, 6)) for _ in range(rng.randint(2, 4))]
        return self._junk(
            rng,
            "lorem_ipsum",
            "Lorem ipsum",
            [("h1", "Lorem ipsum"), *(("p", p) for p in paragraphs)],
            language="la",
        )

    def junk_blocklisted_domain(self, rng: random.Random) -> Page:
        host = rng.choice(self.blocklist)
        page = self.entity_page(rng.choice(self.kb.entities()), "en", rng, category="junk", host=host)
        page.junk_class = "blocklisted_domain"
        return page

    def junk_banned_url_word(self, rng: random.Random) -> Page:
        if rng.random() < 0.5:
            host, path = rng.choice(en.BANNED_HOSTS), f"/watch/{rng.randint(1000, 99999)}"
        else:
            host, path = rng.choice(en.JUNK_HOSTS), rng.choice(en.BANNED_URLS)
        lines = rng.sample(list(en.GAMBLING_LINES), 3)
        title = "Play and win tonight"
        return self._junk(
            rng, "banned_url_word", title, [("h1", title), *(("p", x) for x in lines)], host, path
        )

    def junk_short(self, rng: random.Random) -> Page:
        text = rng.choice(en.SHORT_TEXTS)
        return self._junk(rng, "short", text, [("p", text)], ads=0)

    def junk_gibberish(self, rng: random.Random) -> Page:
        paragraphs = [
            " ".join(self.gibberish_word(rng) for _ in range(rng.randint(30, 70))) + "."
            for _ in range(rng.randint(2, 4))
        ]
        title = self.gibberish_word(rng).title()
        return self._junk(
            rng, "gibberish", title, [("h1", title), *(("p", p) for p in paragraphs)], language=None
        )

    def gibberish_word(self, rng: random.Random) -> str:
        while True:
            word = "".join(rng.choice("bcdfghjklmnpqrstvwxzaeiouy") for _ in range(rng.randint(2, 11)))
            # Gibberish must never spell an entity name, nor the stop words Gopher's quality rule counts.
            if word not in self.name_words and word not in _STOP_WORDS:
                return word

    def junk_repetitive(self, rng: random.Random) -> Page:
        line = rng.choice(en.REPETITIVE_LINES)
        blocks: list[Block] = [("p", line)] * rng.randint(30, 80)
        return self._junk(rng, "repetitive", line, blocks)

    def junk_code_or_json(self, rng: random.Random) -> Page:
        lines = [code_line(rng) for _ in range(rng.randint(20, 50))]
        return self._junk(rng, "code_or_json", "api.json", [("pre", x) for x in lines], language=None, ads=0)

    # --- duplicates ---

    def duplicate_pages(self, originals: list[Page]) -> list[Page]:
        rng = self.rng("duplicates")
        n_exact = round(self.cfg.exact_duplicate_fraction * self.cfg.pages)
        n_near = round(self.cfg.near_duplicate_fraction * self.cfg.pages)
        if not originals:
            return []
        picks = _sample_cycle(rng, originals, n_exact + n_near)
        pages = [self.exact_copy(p, rng) for p in picks[:n_exact]]
        rates = self.cfg.near_duplicate_edit_rates
        pages += [self.near_copy(p, rates[i % len(rates)], rng) for i, p in enumerate(picks[n_exact:])]
        return pages

    def exact_copy(self, original: Page, rng: random.Random) -> Page:
        host = original.url.split("/")[2]
        path = "/" + original.url.split("/", 3)[3]
        if rng.random() < 0.5:
            # Query-string variant: the very same bytes under a tracking URL.
            url = self.unique_url(host, f"{path}?utm_source=newsletter&utm_campaign={rng.randint(1, 999)}")
            document = original.html
        else:
            # Mirror: same main text, different site chrome.
            host = f"mirror{rng.randint(1, 9)}.{host.removeprefix('www.')}"
            url = self.unique_url(host, path)
            document = self._rewrap(original, host, rng, ads=rng.randint(0, 2))
        return self._copy(original, url, document, original.main_lines, "exact", 0.0)

    def near_copy(self, original: Page, rate: float, rng: random.Random) -> Page:
        text = original.main_text
        protected = [p for p in self.protected_phrases if p in text]
        lines = edit_words(original.main_lines, rate, rng, protected)
        host = rng.choice(("www.contentfarm-daily.example", "reposted.example", "www.newsaggregate.example"))
        url = self.unique_url(host, f"/a/{rng.randint(10000, 999999)}-{original.url.rsplit('/', 1)[1][:40]}")
        copy = self._copy(original, url, "", lines, "near", rate)
        copy.html = self._rewrap(copy, host, rng, ads=rng.randint(2, 5))
        return copy

    def _copy(
        self, original: Page, url: str, document: str, lines: list[str], kind: str, rate: float
    ) -> Page:
        copy = Page(
            category="duplicate",
            url=url,
            language=original.language,
            main_lines=list(lines),
            html=document,
            style=original.style,
            entity_ids=list(original.entity_ids),
            duplicate_of=original,
            duplicate_kind=kind,
            edit_rate=rate,
        )
        text = copy.main_text
        copy.jaccard = round(shingle_jaccard(original.main_text, text), 6)
        copy.pii = [x for x in original.pii if x["value"] in text]
        copy.decoys = [x for x in original.decoys if x["value"] in text]
        return copy

    def _rewrap(self, page: Page, host: str, rng: random.Random, ads: int) -> str:
        """Re-render `page`'s main lines with another site's chrome (same block kinds as the original)."""
        kinds = re.findall(r"^<(h1|h2|p|li|pre)>", _article_of(page.duplicate_of or page), flags=re.M)
        if len(kinds) != len(page.main_lines):  # list items were wrapped; fall back to paragraphs
            kinds = ["h1"] + ["p"] * (len(page.main_lines) - 1)
        blocks = list(zip(kinds, page.main_lines, strict=True))
        chrome = Chrome(
            host, page.language or "en", self.sidebar_links(rng), ads=ads, cookie_banner=rng.random() < 0.5
        )
        return render_html(page.main_lines[0], blocks, chrome, rng)

    # --- hostile records ---

    def hostile_pages(self) -> list[Page]:
        rng = self.rng("hostile")
        h = self.cfg.hostile
        pages: list[Page] = []
        for i in range(h.binary):
            pages.append(
                self._raw(
                    rng,
                    "binary",
                    rng.randbytes(rng.randint(2000, 8000)),
                    "text/html; charset=utf-8",
                    declared="utf-8",
                    path=f"/index-{i}.html",
                )
            )
        for i in range(h.legacy_charset):
            lang, charset = (("de", "iso-8859-1"), ("fr", "windows-1252"))[i % 2]
            pages.append(self._charset_page(rng, "legacy_charset", lang, charset, declared=charset))
        for _ in range(h.wrong_charset):
            pages.append(self._charset_page(rng, "wrong_charset", "de", "windows-1252", declared="utf-8"))
        for _ in range(h.undeclared_charset):
            pages.append(self._charset_page(rng, "undeclared_charset", "es", "utf-8", declared=None))
        for _ in range(h.malformed_html):
            page = self.entity_page(rng.choice(self.kb.entities()), "en", rng, category="hostile")
            page.junk_class = "malformed_html"
            page.html = break_markup(page.html)
            pages.append(page)
        for _ in range(h.empty):
            pages.append(self._raw(rng, "empty", b"", "text/html; charset=utf-8", declared="utf-8"))
        for i in range(h.non_html):
            body, ctype, ext = (
                (fake_pdf(rng), "application/pdf", "pdf")
                if i % 2 == 0
                else (fake_png(rng), "image/png", "png")
            )
            pages.append(
                self._raw(
                    rng, "non_html", body, ctype, declared=None, path=f"/files/{rng.randint(1, 9999)}.{ext}"
                )
            )
        for _ in range(h.redirect):
            page = self._raw(rng, "redirect", b"", "text/html; charset=utf-8", declared="utf-8")
            page.status = 301
            page.extra_headers = [("Location", f"https://{rng.choice(en.JUNK_HOSTS)}/new-home")]
            pages.append(page)
        for _ in range(h.not_found):
            body = _NOT_FOUND_PAGE
            page = self._raw(rng, "not_found", body, "text/html; charset=utf-8", declared="utf-8")
            page.status = 404
            page.main_lines = ["Not Found"]
            page.language = "en"
            pages.append(page)
        if self.cfg.huge_page_mb > 0:
            pages.append(self._huge_page(rng))
        return pages

    def _raw(
        self,
        rng: random.Random,
        junk_class: str,
        body: bytes,
        ctype: str,
        declared: str | None,
        path: str | None = None,
    ) -> Page:
        host = rng.choice(en.JUNK_HOSTS)
        url = self.unique_url(host, path or f"/r/{rng.randint(1, 99999)}")
        # Only the 404 page has text; for random bytes, PDFs, PNGs and empty bodies there is no charset.
        charset = "utf-8" if junk_class == "not_found" else None
        return Page(
            category="hostile",
            junk_class=junk_class,
            url=url,
            language=None,
            main_lines=[],
            body=body,
            charset=charset,
            declared_charset=declared,
            content_type=ctype,
        )

    def _charset_page(
        self, rng: random.Random, junk_class: str, lang: str, charset: str, declared: str | None
    ) -> Page:
        # The main text itself must need the charset (umlauts, accents), not only the footer's "©".
        page = self.entity_page(rng.choice(self.kb.entities()), lang, rng, category="hostile")
        while page.main_text.isascii():
            page = self.entity_page(rng.choice(self.kb.entities()), lang, rng, category="hostile")
        page.junk_class = junk_class
        page.charset, page.declared_charset = charset, declared
        page.content_type = f"text/html; charset={declared}" if declared else "text/html"
        # The <meta> agrees with the header where there is one; wrong/undeclared pages carry none.
        meta = f'<meta charset="{declared}">\n' if junk_class == "legacy_charset" else ""
        page.html = page.html.replace('<meta charset="utf-8">\n', meta, 1)
        return page

    def _huge_page(self, rng: random.Random) -> Page:
        entity = rng.choice(self.kb.entities())
        pack = language_pack("en")
        target = int(self.cfg.huge_page_mb * 1_000_000)
        lines: list[str] = [f"The complete archive of {entity.name}"]
        size, section = 0, 0
        while size < target:
            section += 1
            _, blocks, _ = compose_entity_page(self.kb, entity, pack, pack.style("encyclopedia"), rng)
            for _, text in blocks[1:]:
                lines.append(f"Part {section}. {text}")
                size += len(lines[-1]) + 1
        host = rng.choice(en.JUNK_HOSTS)
        page = Page(
            category="hostile",
            junk_class="huge",
            url=self.unique_url(host, "/archive/all"),
            language="en",
            main_lines=lines,
            entity_ids=[entity.id],
        )
        page.html = render_html(
            lines[0], [("h1", lines[0])] + [("p", x) for x in lines[1:]], Chrome(host, "en", [], ads=0), rng
        )
        return page


def _article_of(page: Page) -> str:
    start, end = page.html.find("<article>"), page.html.find("</article>")
    return page.html[start:end] if start >= 0 else ""


def _path(style: str, name: str, rng: random.Random) -> str:
    name_slug = slug(name)
    return {
        "encyclopedia": f"/wiki/{name.replace(' ', '_')}",
        "travel": f"/guide/{name_slug}",
        "news": f"/{rng.randint(2019, 2024)}/{rng.randint(1, 12):02d}/{name_slug}-{rng.randint(1000, 99999)}",
        "biography": f"/people/{name_slug}",
        "facts": f"/facts/{name_slug}",
        "forum": f"/t/{rng.randint(1000, 99999)}/{name_slug}",
    }.get(style, f"/{style}/{name_slug}")


def _apportion(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split n into integer counts proportional to weights (largest remainder, ties by key order)."""
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    rest = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))
    for k in rest[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _sample_cycle(rng: random.Random, items: list[Page], k: int) -> list[Page]:
    """k items without replacement while possible, then another pass."""
    out: list[Page] = []
    while len(out) < k:
        out += rng.sample(items, min(len(items), k - len(out)))
    return out


def _disjoint_items(items: list[BenchmarkItem], k: int) -> list[BenchmarkItem]:
    """Up to k items whose choices share no value, so a quiz page never repeats a line (FineWeb's
    duplicate-line rule would drop the page, and with it the contamination the stage should find)."""
    chosen: list[BenchmarkItem] = []
    seen: set[str] = set()
    for item in items:
        if len(chosen) == k:
            break
        if not seen & set(item.choices):
            chosen.append(item)
            seen |= set(item.choices)
    return chosen


# Gibberish must never spell these: the stop words Gopher's quality rule counts, and a few more.
_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with", "a", "in", "is", "it"})
# The body of the hostile 404 records.
_NOT_FOUND_PAGE = (
    b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"
)


def generate_crawl(config: CrawlConfig, out_dir: Path) -> dict[str, Any]:
    """Write crawl-NNNNN.warc.gz files, labels.jsonl and knowledge.json into out_dir; return stats."""
    n_fixed = (
        sum(round(f * config.pages) for f in config.junk.model_dump().values())
        + round(config.exact_duplicate_fraction * config.pages)
        + round(config.near_duplicate_fraction * config.pages)
        + config.leaked_pages
        + sum(config.hostile.model_dump().values())
        + (1 if config.huge_page_mb > 0 else 0)
    )
    n_good = config.pages - n_fixed
    if n_good < 1:
        raise ValueError(
            f"crawl config leaves {n_good} good pages: pages={config.pages} is too small for the junk, "
            f"duplicate, leaked and hostile counts ({n_fixed}); raise pages or lower the fractions"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    crawl = _Crawl(config)
    good = crawl.good_pages(n_good)
    crawl.add_pii(good)
    pages = (
        good + crawl.leaked_pages() + crawl.junk_pages() + crawl.duplicate_pages(good) + crawl.hostile_pages()
    )

    order_rng = crawl.rng("order")
    order_rng.shuffle(pages)
    clock = RecordClock(crawl.rng("warc-ids"), datetime.fromisoformat(config.crawl_start))
    width = max(6, len(str(len(pages))))
    for i, page in enumerate(pages):
        page.page_id = f"p{i:0{width}d}"
        page.record_id = clock.record_id()

    warc_rng = crawl.rng("warc")
    names = []
    for k in range(config.warc_files):
        chunk = pages[k * len(pages) // config.warc_files : (k + 1) * len(pages) // config.warc_files]
        name = f"crawl-{k:05d}.warc.gz"
        for page in chunk:
            page.warc_file = name
        write_warc(out_dir / name, chunk, config, clock, warc_rng)
        names.append(name)

    labels = "".join(json.dumps(label(p), ensure_ascii=False) + "\n" for p in pages)
    write_atomic(out_dir / "labels.jsonl", labels)
    write_atomic(out_dir / "knowledge.json", crawl.kb.to_json())
    english_per_entity = Counter(
        p.entity_ids[0] for p in pages if p.category == "good" and p.language == "en"
    )
    return {
        "pages": len(pages),
        # Every fact is learnable (stated on >= 2 English pages) when this is >= 2; a smaller crawl
        # needs a smaller knowledge base.
        "min_english_pages_per_entity": min(english_per_entity[e.id] for e in crawl.kb.entities()),
        "by_category": dict(sorted(Counter(p.category for p in pages).items())),
        "by_junk_class": dict(sorted(Counter(p.junk_class for p in pages if p.junk_class).items())),
        "by_language": dict(sorted(Counter(p.language or "none" for p in pages).items())),
        "warc_files": names,
        "warc_bytes": sum((out_dir / n).stat().st_size for n in names),
        "labels_bytes": (out_dir / "labels.jsonl").stat().st_size,
    }

"""The `url_filter` stage: drop documents by their URL alone, before anything parses their HTML.

FineWeb's URL rules (Penedo et al. 2024, "The FineWeb Datasets", arXiv:2406.17557: datatrove's
`URLFilter`, after RefinedWeb, Penedo et al. 2023), in the order they are checked; the first that
fires is the drop reason (`dropped/url_filter.<reason>/`):

    blocked_domain      the host, or any parent of it (a.b.example -> b.example -> example), is listed
    blocked_url         the exact URL is listed (compared without scheme, fragment, trailing '/')
    hard_banned_word    a hard-banned word is a token of the URL (tokens: split on non-alphanumerics)
    soft_banned_words   at least `soft_word_threshold` different soft-banned words are tokens
    banned_subword      a banned sub-word occurs anywhere in the normalised URL (lowercase,
                        non-alphanumerics removed: "free-sexcams" -> "freesexcams")

The lists are plain text, one entry per line, '#' starts a comment: the format of the public UT1
blocklists, so their `domains`/`urls` files can be given as they are. We ship small lists of our own
(`components/data/blocklists/`); users add theirs with the `*_lists` fields and can switch ours off
(`shipped_lists`). Every list file is read in the driver before any shard is touched, so a missing
one is a ConfigError naming it, not a failure halfway through.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote, urlsplit

import fsspec

from components.core.artifacts import Artifact
from components.core.config import ConfigError
from components.core.stage import StageContext, stage
from components.data.documents import (
    Block,
    filter_documents,
    filter_outputs,
    precision_recall,
)
from components.data.junk_truth import junk_truth, labelled_drops
from components.data.pii import log_dropped_samples
from components.data.url_filter_config import LIST_KINDS, SPEC, ListKind, UrlFilterConfig
from components.io.documents import Document, ratio

# The tiny world's junk classes that only a URL rule can catch: the truth this stage is scored on.
URL_JUNK_CLASSES = frozenset({"blocklisted_domain", "banned_url_word"})

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


# --- the lists ---------------------------------------------------------------------------------


def list_entries(text: str) -> list[str]:
    """Entries of a list file: one per line; blank lines, '#' lines and ' #' tails are comments."""
    out = []
    for line in text.splitlines():
        entry = re.split(r"\s#", line, maxsplit=1)[0].strip()
        if entry and not entry.startswith("#"):
            out.append(entry)
    return out


def normalise_host(host: str) -> str:
    """Lowercase, no trailing dot, IDNA (punycode) for non-ASCII names, so that list and URL agree."""
    host = host.strip().lower().rstrip(".")
    if not host.isascii():
        with contextlib.suppress(UnicodeError):  # an invalid name stays as it is
            host = host.encode("idna").decode("ascii")
    return host


def normalise_domain_entry(entry: str) -> str:
    """A domain list line as a bare host: tolerates a scheme, a path, a port and a leading '*.'/'.'."""
    entry = entry.strip().lower()
    if "://" in entry:
        entry = entry.split("://", 1)[1]
    entry = entry.split("/", 1)[0].rsplit("@", 1)[-1]
    if not entry.startswith("["):  # an IPv6 literal keeps its colons
        entry = entry.split(":", 1)[0]
    return normalise_host(entry.removeprefix("*.").lstrip("."))


def url_key(url: str) -> str:
    """How URLs are compared with the URL list: no scheme, no fragment, host lowercased, no
    trailing '/'. UT1's `urls` files list `host/path` without a scheme."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host = normalise_host(parts.hostname or "")
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed URL (bad port, unbalanced '[') is compared as it is
        return url.split("://", 1)[1].split("#", 1)[0].rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{host}{port}{parts.path}{query}".rstrip("/")


def normalise_word(entry: str) -> str:
    """Words and sub-words are compared in the normalised alphabet: lowercase ASCII letters and
    digits only ("X-Rated" -> "xrated")."""
    return _NON_ALNUM.sub("", entry.lower())


_NORMALISERS = {
    "domains": normalise_domain_entry,
    "urls": url_key,
    "banned_words": normalise_word,
    "soft_banned_words": normalise_word,
    "banned_subwords": normalise_word,
}


def shipped_list_text(kind: ListKind) -> str:
    return (resources.files("components.data") / "blocklists" / f"{kind}.txt").read_text(encoding="utf-8")


def read_list_file(path: str) -> str:
    """A user's list file (local path or fsspec URL); unreadable -> ConfigError naming it."""
    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"url_filter: list file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"url_filter: cannot read list file {path}: {e}") from None
    # UT1 files are UTF-8 in practice; a stray byte must not make the whole list unusable.
    return data.decode("utf-8", errors="replace")


def _user_lists(config: UrlFilterConfig) -> dict[ListKind, list[str]]:
    return {
        "domains": config.domain_lists,
        "urls": config.url_lists,
        "banned_words": config.banned_word_lists,
        "soft_banned_words": config.soft_banned_word_lists,
        "banned_subwords": config.banned_subword_lists,
    }


@dataclass(frozen=True)
class UrlLists:
    """Every rule's entries, normalised for matching."""

    domains: frozenset[str]
    urls: frozenset[str]
    banned_words: frozenset[str]
    soft_banned_words: frozenset[str]
    banned_subwords: tuple[str, ...]

    def sizes(self) -> dict[str, int]:
        return {kind: len(getattr(self, kind)) for kind in LIST_KINDS}


def load_lists(config: UrlFilterConfig) -> UrlLists:
    """Our enabled shipped lists plus the user's files, parsed and normalised."""
    entries: dict[ListKind, set[str]] = {kind: set() for kind in LIST_KINDS}
    for kind, paths in _user_lists(config).items():
        texts = [read_list_file(p) for p in paths]
        if kind in config.shipped_lists:
            texts.append(shipped_list_text(kind))
        for text in texts:
            entries[kind].update(_NORMALISERS[kind](e) for e in list_entries(text))
        entries[kind].discard("")
    return UrlLists(
        domains=frozenset(entries["domains"]),
        urls=frozenset(entries["urls"]),
        banned_words=frozenset(entries["banned_words"]),
        soft_banned_words=frozenset(entries["soft_banned_words"]),
        banned_subwords=tuple(sorted(entries["banned_subwords"])),
    )


@functools.lru_cache(maxsize=4)
def _cached_lists(config_json: str) -> UrlLists:
    # Once per worker process and config: a UT1 domain list has millions of lines.
    return load_lists(UrlFilterConfig.model_validate_json(config_json))


# --- the rules -----------------------------------------------------------------------------------


def host_of(url: str) -> str:
    try:
        return normalise_host(urlsplit(url.strip()).hostname or "")
    except ValueError:
        return ""


def parent_domains(host: str) -> list[str]:
    """The host and each parent: a.b.example -> [a.b.example, b.example, example]."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))] if host else []


def url_tokens(url: str) -> set[str]:
    """The words of a URL: percent-decoded, lowercased, split on everything but ASCII letters/digits."""
    return {t for t in _NON_ALNUM.split(unquote(url).lower()) if t}


def normalised_url(url: str) -> str:
    return _NON_ALNUM.sub("", unquote(url).lower())


class UrlFilter(Block):
    """FineWeb's URL rules; `process` returns the first rule that fires."""

    name = "url_filter"

    def __init__(self, lists: UrlLists, soft_word_threshold: int = 2):
        self.lists = lists
        self.soft_word_threshold = soft_word_threshold
        # One alternation for all sub-words: a single scan of the URL instead of one per sub-word.
        self._subwords = (
            re.compile("|".join(map(re.escape, lists.banned_subwords))) if lists.banned_subwords else None
        )
        self.counters: Counter = Counter()

    def process(self, doc: Document) -> str | None:
        url = doc.get("url") or ""
        if not url:
            self.counters["no_url"] += 1
            return None
        return self.check(url)

    def check(self, url: str) -> str | None:
        lists = self.lists
        if lists.domains and any(d in lists.domains for d in parent_domains(host_of(url))):
            return "blocked_domain"
        if lists.urls and url_key(url) in lists.urls:
            return "blocked_url"
        tokens = url_tokens(url)
        if not tokens.isdisjoint(lists.banned_words):
            return "hard_banned_word"
        if len(tokens & lists.soft_banned_words) >= self.soft_word_threshold:
            return "soft_banned_words"
        if self._subwords is not None and self._subwords.search(normalised_url(url)):
            return "banned_subword"
        return None


def make_blocks(config: UrlFilterConfig) -> list[Block]:
    """Module-level so Ray tasks can build the block from the config."""
    lists = _cached_lists(config.model_dump_json())
    return [UrlFilter(lists, config.soft_word_threshold)]


# --- the stage -----------------------------------------------------------------------------------


def url_truth(
    labels: dict[str, dict], entering: list[str], dropped: dict[str, str]
) -> dict[str, float | None]:
    """Precision/recall against the junk classes a URL rule is meant to catch, per class and overall,
    plus the generic junk scores (`junk_truth`) of everything this stage dropped. A class with no
    entering page has no recall (None), and so on."""
    known = [u for u in entering if u in labels]
    actual = {u for u in known if labels[u].get("junk_class") in URL_JUNK_CLASSES}
    predicted = {u for u in dropped if u in labels}
    pr = precision_recall(predicted, actual)
    out: dict[str, float | None] = {
        "truth.precision": pr["precision"],
        "truth.recall": pr["recall"],
        "truth.url_junk_in": pr["actual"],
    }
    for cls in sorted(URL_JUNK_CLASSES):
        members = {u for u in actual if labels[u]["junk_class"] == cls}
        out[f"truth.recall.{cls}"] = ratio(len(members & predicted), len(members))
    return out | junk_truth(labels, entering, dropped)


@stage(SPEC)
def url_filter(
    ctx: StageContext, config: UrlFilterConfig, inputs: dict[str, Artifact]
) -> dict[str, Artifact]:
    """Drop documents whose URL is blocklisted or carries banned words."""
    lists = load_lists(config)  # reads every list file now: a bad path fails before any work
    # The lists' sizes describe the setting (our lists plus the configured ones): params, not metrics.
    ctx.tracker.log_params({f"list_entries.{kind}": n for kind, n in lists.sizes().items()})
    ctx.log.info("url_filter lists: %s", lists.sizes())
    stats = filter_documents(ctx, inputs["documents"], functools.partial(make_blocks, config))
    dropped = stats.documents_in - stats.documents_out
    outputs = filter_outputs(ctx, stats, documents_in=stats.documents_in, dropped=dropped)
    scored = labelled_drops(ctx, inputs, outputs["dropped"])
    if scored is not None:
        truth = url_truth(*scored)
        ctx.log_metrics(truth)
        ctx.report(precision=truth["truth.precision"], recall=truth["truth.recall"])
    columns = ["id", "url", "drop_reason"]  # the URL is the evidence; the HTML would only be noise
    log_dropped_samples(ctx, outputs["dropped"], config.samples_per_reason, columns=columns)
    return outputs

"""URL filter: every rule at its boundary, our lists and the user's, and the stage on the tiny world."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.core.artifacts import ArtifactStore
from components.core.config import ConfigError
from components.core.stage import RunEnv, run_stage
from components.data.url_filter import (
    LIST_KINDS,
    UrlFilter,
    UrlFilterConfig,
    list_entries,
    load_lists,
    make_blocks,
    shipped_list_text,
    url_filter,
    url_key,
    url_truth,
)
from components.io.documents import iter_documents


def check(url: str, **config) -> str | None:
    block = make_blocks(UrlFilterConfig(**config))[0]
    return block.check(url)


def test_list_file_format():
    text = "# comment\n\n  casino.example  \nbad.test # why it is here\n#another\nwww.x.example\n"
    assert list_entries(text) == ["casino.example", "bad.test", "www.x.example"]


def test_shipped_lists_are_ours_and_fictional():
    for kind in LIST_KINDS:
        assert list_entries(shipped_list_text(kind)), kind
    for host in list_entries(shipped_list_text("domains")):
        assert host.endswith((".example", ".test")), host
    sizes = load_lists(UrlFilterConfig()).sizes()
    assert all(sizes[k] > 0 for k in LIST_KINDS)
    assert load_lists(UrlFilterConfig(shipped_lists=[])).sizes() == dict.fromkeys(LIST_KINDS, 0)


# --- domains -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://casino-royal-bonus.example/page", "blocked_domain"),
        ("https://www.casino-royal-bonus.example/", "blocked_domain"),  # a parent FQDN is listed
        ("https://a.b.c.casino-royal-bonus.example/x", "blocked_domain"),  # any depth
        ("HTTP://User@Casino-Royal-Bonus.EXAMPLE.:8080/x?y=1", "blocked_domain"),  # case, dot, port, user
        ("https://notcasino-royal-bonus.example/", None),  # only whole labels are parents
        ("https://casino-royal-bonus.example.org/", None),  # the listed name as a prefix is not a parent
        ("https://example/", None),  # the parent of a listed domain is not blocked
    ],
)
def test_domain_and_parent_domains(url, reason):
    assert check(url) == reason


def test_user_domain_list_in_ut1_format(tmp_path: Path):
    listed = tmp_path / "domains"
    listed.write_text("# UT1-style\nshady-network.example\n*.wild.example\nhttp://with-scheme.example/path\n")
    config = {"domain_lists": [str(listed)], "shipped_lists": []}
    assert check("https://cdn.eu.shady-network.example/a", **config) == "blocked_domain"
    assert check("https://x.wild.example/", **config) == "blocked_domain"
    assert check("https://with-scheme.example/other", **config) == "blocked_domain"
    assert check("https://casino-royal-bonus.example/", **config) is None  # ours are switched off
    # our lists and the user's together
    both = {"domain_lists": [str(listed)]}
    assert check("https://shady-network.example/", **both) == check("https://jackpot-palace.example/", **both)


def test_idn_host_matches_its_punycode(tmp_path: Path):
    listed = tmp_path / "domains"
    listed.write_text("bücher-betrug.example\n")
    url = "https://www.xn--bcher-betrug-dlb.example/"
    assert check(url, domain_lists=[str(listed)], shipped_lists=[]) == "blocked_domain"


# --- exact URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://files.example/download/crack-keygen.exe", "blocked_url"),
        ("https://FILES.example/download/crack-keygen.exe#top", "blocked_url"),  # scheme, case, fragment
        ("https://shortlink.test/claim-your-prize/", "blocked_url"),  # trailing slash
        ("http://www.photo-share.example/albums/leaked-private", "blocked_url"),  # listed without scheme
        ("http://files.example/download/crack-keygen.exe2", None),
        ("http://files.example/download/crack-keygen.exe?v=2", None),  # another query is another URL
        ("http://files.example/download/", None),  # same host, other page
    ],
)
def test_exact_url(url, reason):
    assert check(url) == reason


def test_url_key():
    assert url_key("HTTPS://Www.A.example:8443/p/?q=1#frag") == "www.a.example:8443/p/?q=1"
    assert url_key("a.example/p/") == "a.example/p"
    assert url_key("http://[broken/x") == "[broken/x"  # malformed: compared as written


# --- hard and soft words -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://www.hot-xxx-tube.example/watch/1", "hard_banned_word"),  # in the host
        ("https://shop.example/sex-cams-live", "hard_banned_word"),  # in the path
        ("https://shop.example/item?tag=porn", "hard_banned_word"),  # in the query
        ("https://shop.example/%70orn-clips", "hard_banned_word"),  # percent-encoded
        ("https://www.sussex-essex.example/middlesex", None),  # never inside a longer word
        ("https://shop.example/sexton-family", None),
    ],
)
def test_hard_banned_word_is_a_token(url, reason):
    assert check(url) == reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://games.example/poker-night", None),  # 1 soft word: kept
        ("https://games.example/poker-bet", "soft_banned_words"),  # 2: dropped
        ("https://casino.example/jackpot", "soft_banned_words"),  # host and path together
        ("https://games.example/poker/poker-poker", None),  # the same word twice counts once
        ("https://games.example/pokerbet", None),  # one token, no soft word
    ],
)
def test_soft_banned_words_at_the_default_threshold(url, reason):
    assert check(url) == reason


def test_soft_threshold_is_configurable():
    url2, url3 = "https://games.example/poker-bet", "https://games.example/poker-bet-roulette"
    assert check(url2, soft_word_threshold=3) is None
    assert check(url3, soft_word_threshold=3) == "soft_banned_words"
    assert check("https://games.example/poker", soft_word_threshold=1) == "soft_banned_words"


def test_user_word_lists(tmp_path: Path):
    hard, soft = tmp_path / "hard.txt", tmp_path / "soft.txt"
    hard.write_text("Gore\n")  # entries are lowercased
    soft.write_text("cheap\nwatches\n")
    config = {"banned_word_lists": [str(hard)], "soft_banned_word_lists": [str(soft)], "shipped_lists": []}
    assert check("https://x.example/GORE-videos", **config) == "hard_banned_word"
    assert check("https://x.example/cheap-watches", **config) == "soft_banned_words"
    assert check("https://x.example/cheap-flights", **config) is None


# --- sub-words -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://livecamgirls.example/", "banned_subword"),  # inside a host label
        ("https://ok.example/best-camgirl-streams", "banned_subword"),  # inside a path token
        ("https://ok.example/cam-girl", "banned_subword"),  # across a separator (normalised URL)
        ("https://ok.example/camera-girlfriend", None),
        ("https://ok.example/camgir", None),  # one letter short
    ],
)
def test_banned_subword_in_normalised_url(url, reason):
    assert check(url) == reason


def test_rule_order_first_match_wins():
    # Listed domain AND hard word AND sub-word: the domain rule is reported.
    assert check("https://casino-royal-bonus.example/porn-camgirl") == "blocked_domain"
    assert check("https://ok.example/porn-camgirl") == "hard_banned_word"


def test_document_without_url_is_kept_and_counted():
    block = UrlFilter(load_lists(UrlFilterConfig()))
    assert block.process({"id": "1", "url": None}) is None
    assert block.counters["no_url"] == 1


# --- the stage -----------------------------------------------------------------------------------


def test_truth_with_nothing_to_check_has_no_scores():
    """A URL junk class with no entering page has no recall; with nothing dropped, no precision."""
    labels = {
        "https://a.example/": {"category": "good", "junk_class": None},
        "https://casino.example/": {"category": "junk", "junk_class": "blocklisted_domain"},
    }
    truth = url_truth(labels, ["https://a.example/"], {})
    assert truth["truth.precision"] is None and truth["truth.recall"] is None
    assert truth["truth.recall.blocklisted_domain"] is None and truth["truth.recall.banned_url_word"] is None
    assert truth["truth.junk_precision"] is None and truth["truth.junk_recall"] is None
    truth = url_truth(labels, list(labels), {"https://casino.example/": "url_filter.blocked_domain"})
    assert truth["truth.precision"] == 1.0 and truth["truth.recall.blocklisted_domain"] == 1.0
    assert truth["truth.recall.banned_url_word"] is None and truth["truth.url_junk_in"] == 1


@pytest.fixture(scope="module")
def tiny_documents(tmp_path_factory, ingest_crawl) -> dict:
    """A small labelled crawl, ingested."""
    _, crawl, documents = ingest_crawl(tmp_path_factory.mktemp("urlworld"), pages=600)
    return {"crawl": crawl, "documents": documents}


def env_for(tmp_path: Path, tracking_uri: str, name: str) -> RunEnv:
    return RunEnv(run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment=name)


def test_stage_on_the_tiny_world(tmp_path, tracking_uri, tiny_documents):
    env = env_for(tmp_path, tracking_uri, "url_filter")
    inputs = {"documents": tiny_documents["documents"], "labels": tiny_documents["crawl"]}
    record = run_stage(url_filter, UrlFilterConfig(), inputs, env)
    labels = {
        json.loads(line)["url"]: json.loads(line)
        for line in Path(tiny_documents["crawl"].uri, "labels.jsonl").read_text().splitlines()
    }
    assert record.metrics["precision"] == 1.0 and record.metrics["recall"] == 1.0
    assert record.metrics["dropped"] > 10
    # the lists' sizes describe the setting: params, not metrics
    run_data = MlflowClient(tracking_uri).get_run(record.mlflow_run_id).data
    assert int(run_data.params["list_entries.domains"]) > 0
    assert not any(k.startswith("list_entries.") for k in run_data.metrics)
    store = ArtifactStore(env.store)
    kept = {d["url"] for d in iter_documents(store, record.outputs["documents"].uri, ["url"])}
    reasons = store.listdir(record.outputs["dropped"].uri)
    assert "url_filter.blocked_domain" in reasons
    for reason in reasons:
        for doc in iter_documents(store, store.join(record.outputs["dropped"].uri, reason)):
            assert doc["drop_reason"] == reason and doc["html"]  # kept for inspection
            assert labels[doc["url"]]["junk_class"] in {"blocklisted_domain", "banned_url_word"}
            assert doc["url"] not in kept


def test_missing_list_file_fails_before_any_work(tmp_path, tracking_uri, tiny_documents):
    env = env_for(tmp_path, tracking_uri, "url_filter_missing")
    missing = str(tmp_path / "nope" / "domains.txt")
    with pytest.raises(ConfigError, match=f"list file {missing} does not exist"):
        run_stage(
            url_filter,
            UrlFilterConfig(domain_lists=[missing]),
            {"documents": tiny_documents["documents"]},
            env,
        )
    assert not glob.glob(str(tmp_path / "store" / "stages" / "url_filter" / "*" / "documents" / "*.parquet"))

"""Language ID: the keep rule at its threshold (stub predictor), real lid.176, bad models, the stage."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import pytest

from components.core.artifacts import Artifact, ArtifactStore
from components.core.assets import AssetError, asset_path
from components.core.config import ConfigError
from components.core.stage import RunEnv, run_stage
from components.data.extract import ExtractConfig
from components.data.extract import make_blocks as extract_blocks
from components.data.language import (
    LanguageConfig,
    LanguageFilter,
    language,
    language_truth,
    load_model,
    make_blocks,
    top_k_needed,
)
from components.io.documents import iter_documents, read_documents, write_documents


class Stub:
    """A predictor that returns fixed scores and records what it was asked."""

    def __init__(self, *answers: list[tuple[str, float]]):
        self.answers = list(answers)
        self.calls: list[tuple[list[str], int]] = []

    def __call__(self, texts: list[str], k: int) -> list[list[tuple[str, float]]]:
        self.calls.append((texts, k))
        return [self.answers[i % len(self.answers)] for i in range(len(texts))]


def decide(pred: list[tuple[str, float]], **config) -> tuple[str | None, dict]:
    doc = {"text": "some text"}
    reason = LanguageFilter(LanguageConfig(**config), predict=Stub(pred)).process(doc)
    return reason, doc


@pytest.mark.parametrize(
    ("pred", "reason"),
    [
        ([("en", 0.6501), ("de", 0.2)], None),  # just above: kept
        ([("en", 0.65), ("de", 0.3)], "low_score"),  # at the threshold: not above it, dropped
        ([("en", 0.6499)], "low_score"),
        ([("de", 0.99)], "not_wanted_language"),
        ([("de", 0.5), ("en", 0.45)], "not_wanted_language"),
    ],
)
def test_keep_rule_at_the_default_threshold(pred, reason):
    got, doc = decide(pred)
    assert got == reason
    assert doc["language"] == pred[0][0] and doc["language_score"] == pred[0][1]  # kept or dropped


def test_threshold_and_languages_are_configurable():
    assert decide([("de", 0.8)], languages=["en", "de"])[0] is None
    assert decide([("fr", 0.55)], languages=["fr"], threshold=0.5)[0] is None
    # Below 0.5 a wanted language need not be the top one.
    assert decide([("de", 0.45), ("en", 0.41)], threshold=0.4)[0] is None
    assert decide([("de", 0.45), ("en", 0.40)], threshold=0.4)[0] == "not_wanted_language"
    # No wanted languages: any language that is sure enough.
    assert decide([("it", 0.66)], languages=[])[0] is None
    assert decide([("it", 0.65)], languages=[])[0] == "low_score"


def test_top_k_covers_every_label_above_the_threshold():
    assert top_k_needed(0.65) == 2
    assert top_k_needed(0.4) == 3
    assert top_k_needed(0.0) == 176


def test_score_is_clamped_to_one():
    assert decide([("en", 1.0000353)])[1]["language_score"] == 1.0


def test_newlines_batching_and_empty_text():
    stub = Stub([("en", 0.9)])
    block = LanguageFilter(LanguageConfig(), predict=stub)
    docs = [{"text": "line one\nline two\n"}, {"text": ""}, {"text": None}, {"text": "three\n\nfour"}]
    assert block.process_batch(docs) == [None, "low_score", "low_score", None]
    assert len(stub.calls) == 1  # one predict call for the batch
    texts, k = stub.calls[0]
    assert texts == ["line one line two", "three  four"] and k == 2  # empty texts are not predicted
    assert docs[1]["language"] is None and docs[1]["language_score"] == 0.0


# --- the real model ------------------------------------------------------------------------------


def test_lid176_on_real_text():
    block = make_blocks(LanguageConfig(), str(asset_path("lid.176.ftz")))[0]
    english = {
        "text": "The harbour was rebuilt after the storm.\nToday ferries leave for the islands twice a day."
    }
    german = {"text": "Der Hafen wurde nach dem Sturm wieder aufgebaut.\nHeute fahren zweimal am Tag Fähren."}
    assert block.process_batch([english, german]) == [None, "not_wanted_language"]
    assert english["language"] == "en" and english["language_score"] > 0.9
    assert german["language"] == "de"


def test_model_is_loaded_once_per_process():
    path = str(asset_path("lid.176.ftz"))
    make_blocks(LanguageConfig(), path)
    misses = load_model.cache_info().misses
    for _ in range(3):
        make_blocks(LanguageConfig(), path)
    assert load_model.cache_info().misses == misses


# --- the stage, and bad models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, ingest_crawl) -> dict:
    """A small labelled crawl, ingested and extracted (extraction run in-process, not as a stage)."""
    store, crawl, html = ingest_crawl(tmp_path_factory.mktemp("langworld"), pages=400)
    raw = html.uri
    texts = store.join(store.root, "texts")
    store.makedirs(texts)
    [extractor] = extract_blocks(ExtractConfig())
    for name in store.listdir(raw):
        docs = [d for d in read_documents(store, store.join(raw, name)) if extractor.process(d) is None]
        write_documents(
            store, store.join(texts, name), [{k: v for k, v in d.items() if k != "html"} for d in docs]
        )
    return {
        "crawl": crawl,
        "documents": Artifact(uri=texts, kind="documents", digest=store.digest(texts)),
        "html": html,
    }


def env_for(tmp_path: Path, tracking_uri: str, name: str) -> RunEnv:
    return RunEnv(run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment=name)


def no_work_done(tmp_path: Path) -> bool:
    return not glob.glob(str(tmp_path / "store" / "stages" / "language" / "*" / "documents" / "*.parquet"))


def test_stage_on_the_tiny_world(tmp_path, tracking_uri, tiny):
    env = env_for(tmp_path, tracking_uri, "language")
    record = run_stage(
        language, LanguageConfig(), {"documents": tiny["documents"], "labels": tiny["crawl"]}, env
    )
    m = record.metrics
    assert m["accuracy"] >= 0.98
    assert m["recall"] == 1.0 and m["precision"] >= 0.9
    store = ArtifactStore(env.store)
    kept = list(iter_documents(store, record.outputs["documents"].uri))
    assert kept and all(d["language"] == "en" and d["language_score"] > 0.65 for d in kept)
    dropped = record.outputs["dropped"].uri
    assert "language.not_wanted_language" in store.listdir(dropped)
    for doc in iter_documents(store, store.join(dropped, "language.not_wanted_language")):
        assert doc["language"] != "en" and doc["text"]


def test_truth_with_nothing_to_check_has_no_scores():
    """No document in a language the model knows, nothing dropped: no accuracy, precision or recall."""
    labels = {"a": {"language": "xx", "category": "good"}, "b": {"language": None, "category": "junk"}}
    truth = language_truth(labels, {"a": "en", "b": "en"}, set(), {"en", "xx"}, {"en", "de"})
    assert truth["truth.language_accuracy"] is None and truth["truth.language_scored"] == 0
    assert truth["truth.drop_precision"] is None  # nothing dropped
    assert truth["truth.drop_recall"] == 0.0  # b (no language) should have been dropped: a real miss
    # an English page scored: a real accuracy; only wanted pages entered: no recall
    labels = {"c": {"language": "en", "category": "good"}}
    truth = language_truth(labels, {"c": "de"}, {"c"}, {"en"}, {"en", "de"})
    assert truth["truth.language_accuracy"] == 0.0 and truth["truth.language_accuracy.en"] == 0.0
    assert truth["truth.drop_precision"] == 0.0 and truth["truth.drop_recall"] is None


def test_missing_model_fails_at_the_start(tmp_path, tracking_uri, tiny, monkeypatch):
    monkeypatch.setenv("GPTRECIPE_ASSET_DIR", str(tmp_path / "no-assets"))
    env = env_for(tmp_path, tracking_uri, "language_missing")
    with pytest.raises(AssetError, match=r"lid.176.ftz is missing at .*no-assets.*gptrecipe assets"):
        run_stage(language, LanguageConfig(), {"documents": tiny["documents"]}, env)
    assert no_work_done(tmp_path)


def test_corrupt_model_fails_at_the_start(tmp_path, tracking_uri, tiny, monkeypatch):
    assets = tmp_path / "assets"
    assets.mkdir()
    data = asset_path("lid.176.ftz").read_bytes()
    (assets / "lid.176.ftz").write_bytes(data[: len(data) // 2])  # truncated: loads, then crashes
    monkeypatch.setenv("GPTRECIPE_ASSET_DIR", str(assets))
    env = env_for(tmp_path, tracking_uri, "language_corrupt")
    with pytest.raises(AssetError, match=r"does not match its checksum; run `gptrecipe assets`"):
        run_stage(language, LanguageConfig(), {"documents": tiny["documents"]}, env)
    assert no_work_done(tmp_path)


def test_corrupt_custom_model_fails_at_the_start(tmp_path, tracking_uri, tiny):
    env = env_for(tmp_path, tracking_uri, "language_custom")
    truncated = tmp_path / "mine.ftz"
    shutil.copy(asset_path("lid.176.ftz"), truncated)
    truncated.write_bytes(truncated.read_bytes()[:400_000])
    with pytest.raises(ConfigError, match=r"mine.ftz is not a usable fastText model"):
        run_stage(language, LanguageConfig(model_path=str(truncated)), {"documents": tiny["documents"]}, env)
    with pytest.raises(ConfigError, match=r"model_path: .*absent.ftz does not exist"):
        run_stage(
            language,
            LanguageConfig(model_path=str(tmp_path / "absent.ftz")),
            {"documents": tiny["documents"]},
            env,
        )
    assert no_work_done(tmp_path)


def test_documents_without_text_fail_at_the_start(tmp_path, tracking_uri, tiny):
    env = env_for(tmp_path, tracking_uri, "language_no_text")
    with pytest.raises(ConfigError, match=r"no `text` column .*extract stage switched off"):
        run_stage(language, LanguageConfig(), {"documents": tiny["html"]}, env)
    assert no_work_done(tmp_path)

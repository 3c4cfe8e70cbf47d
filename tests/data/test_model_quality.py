"""model_quality: a fastText reference-vs-crawl classifier, trained or loaded, kept by cutoff."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.config import validate as validate_config
from components.core.stage import RunEnv, run_stage
from components.data.model_quality import ModelQualityConfig, model_quality
from components.data.quality_classifier import (
    LogitHistogram,
    classifier_text,
    good_scores,
    load_classifier,
    logit,
    read_reference_file,
    reference_from_artifact,
    train_fasttext,
    training_lines,
)
from components.io.documents import write_documents

CITIES = ["Velmora", "Tolsk", "Arin", "Dunmere", "Kasso", "Pell", "Orvik", "Sandal"]
RIVERS = ["Ember", "Lune", "Sarra", "Vell", "Oska"]
SIGHTS = ["old bridge", "clock tower", "harbour", "cathedral", "market hall", "city museum"]
SENTENCES = [
    "The city of {c} lies on the river {r}.",
    "Visitors to {c} come to see the {s}.",
    "Most people in {c} work in trade, schools and small workshops.",
    "The {s} of {c} was built in the twelfth century.",
    "In summer, concerts are held in the parks of {c}.",
    "{c} is known for its {s} and its quiet streets.",
    "A small tram connects the station of {c} with the centre.",
    "The river {r} flows through the old town of {c}.",
]
SPAM = [
    "BUY NOW and save 90%!!!",
    "Cheap watches, cheap phones, cheap loans!!! Order today!!!",
    "Click here | Win big | Best deal | Free gift",
    "Limited offer!!! Click here before it is too late!!!",
    "Work from home and earn $5000 a week!!!",
    "Hot deals!!! Free shipping!!! Best price guaranteed!!!",
]


def prose(rng: random.Random) -> str:
    c, r, s = rng.choice(CITIES), rng.choice(RIVERS), rng.choice(SIGHTS)
    return "\n".join(rng.choice(SENTENCES).format(c=c, r=r, s=s) for _ in range(rng.randint(5, 9)))


def spam(rng: random.Random) -> str:
    return "\n".join(rng.choice(SPAM) for _ in range(rng.randint(5, 9)))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Reference prose (JSONL), crawl documents (150 prose, 20 spam, in 2 shards) and their labels."""
    root = tmp_path_factory.mktemp("model_quality")
    rng = random.Random(0)
    reference = root / "reference.jsonl"
    reference.write_text("".join(json.dumps({"text": prose(rng)}) + "\n" for _ in range(200)))
    pages = [("good", prose(rng)) for _ in range(150)] + [("junk", spam(rng)) for _ in range(20)]
    rng.shuffle(pages)
    docs = [{"id": f"d{i}", "url": f"https://site.example/{i}", "text": t} for i, (_, t) in enumerate(pages)]
    store = ArtifactStore(root / "in")
    write_documents(store, store.uri("docs", "part-00000.parquet"), docs[:85])
    write_documents(store, store.uri("docs", "part-00001.parquet"), docs[85:])
    crawl = root / "crawl"
    crawl.mkdir()
    labels = [
        {"url": d["url"], "category": c, "junk_class": "spam" if c == "junk" else None}
        for d, (c, _) in zip(docs, pages, strict=True)
    ]
    (crawl / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
    return {
        "root": root,
        "reference": str(reference),
        "documents": Artifact(uri=store.uri("docs"), kind="documents", digest="d"),
        "labels": Artifact(uri=str(crawl), kind="crawl", digest="c"),
        "spam": {d["url"] for d, (c, _) in zip(docs, pages, strict=True) if c == "junk"},
    }


def run(world: dict, env: RunEnv, **config):
    inputs = {"documents": world["documents"], "labels": world["labels"]}
    return run_stage(model_quality, ModelQualityConfig(**config), inputs, env, force=True)


def scored(record) -> tuple[dict[str, float], dict[str, float]]:
    """url -> quality_score of the kept and of the dropped documents."""
    kept = pq.read_table(record.outputs["documents"].uri).to_pylist()
    root = Path(record.outputs["dropped"].uri)
    dropped = pq.read_table(root).to_pylist() if any(root.iterdir()) else []
    return {d["url"]: d["quality_score"] for d in kept}, {d["url"]: d["quality_score"] for d in dropped}


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory, stage_env):
    """One training run of the stage (reference file vs the crawl), shared by the tests below."""
    env = stage_env(tmp_path_factory.mktemp("trained"), "model_quality_trained")
    return run(world, env, reference_path=world["reference"])


# --- training, scoring, keeping -----------------------------------------------------------------


def test_trained_classifier_drops_spam_keeps_prose(world, trained, tracking_uri):
    kept, dropped = scored(trained)
    assert set(dropped) == world["spam"] and len(kept) == 150
    assert min(kept.values()) > max(dropped.values())
    assert trained.metrics["junk_precision"] == 1.0 and trained.metrics["junk_recall"] == 1.0
    assert trained.metrics["good_dropped"] == 0
    reasons = [p.name for p in Path(trained.outputs["dropped"].uri).iterdir()]
    assert reasons == ["model_quality.low_score"]

    classifier = Path(trained.outputs["classifier"].uri)
    stats = json.loads((classifier / "classifier.json").read_text())
    assert (classifier / "model.bin").stat().st_size > 0
    assert stats["source"] == "reference_path" and stats["reference_documents"] == 200
    assert stats["negative_documents"] == 170 and stats["training_examples"] == 400  # balanced
    assert stats["rule"] == "auto 4.5 sigmas"
    assert stats["cutoff"] == pytest.approx(1 / (1 + np.exp(-stats["cutoff_logit"])))
    client = MlflowClient(tracking_uri)
    logged = {a.path for a in client.list_artifacts(trained.mlflow_run_id, "classifier")}
    assert logged == {"classifier/model.bin", "classifier/classifier.json"}
    metrics = client.get_run(trained.mlflow_run_id).data.metrics
    assert metrics["truth.score_max.spam"] < metrics["truth.score_min.good"]
    # auto: the cutoff is derived from the scores, a measurement
    assert trained.metrics["cutoff"] == metrics["classifier.cutoff"] == pytest.approx(stats["cutoff"])


def test_training_is_deterministic(tmp_path):
    rng = random.Random(1)
    examples = {"good": [classifier_text(prose(rng), 10_000) for _ in range(60)]}
    examples["crawl"] = [classifier_text(spam(rng), 10_000) for _ in range(60)]
    train = tmp_path / "train.txt"
    train.write_text("\n".join(training_lines(examples, True, random.Random(0))) + "\n")
    params = ModelQualityConfig().fasttext_params(seed=7)
    train_fasttext(train, tmp_path / "a.bin", params)
    train_fasttext(train, tmp_path / "b.bin", params)
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    train_fasttext(train, tmp_path / "c.bin", {**params, "seed": 8})
    assert (tmp_path / "a.bin").read_bytes() != (tmp_path / "c.bin").read_bytes()


def test_given_model_is_loaded_not_trained(world, trained, run_env):
    model = str(Path(trained.outputs["classifier"].uri) / "model.bin")
    record = run(world, run_env, model_path=model)
    stats = json.loads((Path(record.outputs["classifier"].uri) / "classifier.json").read_text())
    assert stats["source"] == "model_path" and sorted(stats["labels"]) == ["__label__crawl", "__label__good"]
    assert "training_examples" not in stats
    assert scored(record) == scored(trained)  # the same model: the same scores and decisions


def test_fixed_threshold(world, trained, tracking_uri, run_env):
    model = str(Path(trained.outputs["classifier"].uri) / "model.bin")
    every_kept, every_dropped = scored(trained)
    scores = sorted({**every_kept, **every_dropped}.values())
    threshold = scores[100]  # a document scored exactly at the threshold is kept
    record = run(world, run_env, model_path=model, threshold=threshold)
    kept, dropped = scored(record)
    assert len(kept) == 70 and len(dropped) == 100
    assert min(kept.values()) == threshold and max(dropped.values()) < threshold
    # A fixed threshold is a setting: a param (the stage's config), not a metric.
    assert "cutoff" not in record.metrics
    run_data = MlflowClient(tracking_uri).get_run(record.mlflow_run_id).data
    assert float(run_data.params["threshold"]) == threshold and "classifier.cutoff" not in run_data.metrics


def test_top_percentile(world, trained, run_env):
    model = str(Path(trained.outputs["classifier"].uri) / "model.bin")
    record = run(
        world,
        run_env,
        model_path=model,
        keep_by="top_percentile",
        top_percentile=50,
    )
    kept, dropped = scored(record)
    assert 85 <= len(kept) <= 90  # at least half; ties within one histogram bin are kept together
    assert min(kept.values()) >= max(dropped.values())
    assert set(dropped) >= world["spam"]


# --- errors before any work ---------------------------------------------------------------------


def test_missing_model_path_is_a_config_error_before_work(world, tmp_path, run_env):
    # A local path is checked when the config is read: the run fails before any stage works.
    with pytest.raises(ConfigError, match=r"model_path: Value error, .*nope\.bin does not exist"):
        validate_config(ModelQualityConfig, {"model_path": str(tmp_path / "nope.bin")}, "model_quality")
    with pytest.raises(ConfigError, match=r"reference_path: .*none\.jsonl does not exist"):
        validate_config(ModelQualityConfig, {"reference_path": str(tmp_path / "none.jsonl")}, "model_quality")
    # A URL is checked when the stage starts, before it reads or writes anything.
    with pytest.raises(ConfigError, match=r"model_quality\.model_path: memory://nope\.bin does not exist"):
        run(world, run_env, model_path="memory://nope.bin")
    stage_dirs = list((tmp_path / "store" / "stages" / "model_quality").iterdir())
    assert not any((d / "documents").exists() or (d / "classifier").exists() for d in stage_dirs)


def test_unusable_models_are_config_errors(world, trained, tmp_path, run_env):
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(b"\x00not a fasttext model" * 100)
    with pytest.raises(ConfigError, match="is not a usable fastText model"):
        run(world, run_env, model_path=str(corrupt))
    model = str(Path(trained.outputs["classifier"].uri) / "model.bin")
    with pytest.raises(ConfigError, match=r"set model_quality\.positive_label"):
        run(world, run_env, model_path=model, positive_label="hq")


def test_nothing_to_train_on_is_a_config_error(world, run_env):
    with pytest.raises(ConfigError, match="nothing to train on"):
        run(world, run_env)


def test_no_documents_no_training(world, tmp_path, run_env):
    store = ArtifactStore(tmp_path / "empty")
    schema = pa.schema([("id", pa.string()), ("url", pa.string()), ("text", pa.string())])
    write_documents(store, store.uri("docs", "part-00000.parquet"), [], schema)
    empty = {**world, "documents": Artifact(uri=store.uri("docs"), kind="documents", digest="e")}
    record = run(empty, run_env, reference_path=world["reference"])
    assert record.metrics["documents_in"] == 0 and record.metrics["documents_out"] == 0
    stats = json.loads((Path(record.outputs["classifier"].uri) / "classifier.json").read_text())
    assert stats["source"] == "none"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="word_ngrams"):
        ModelQualityConfig(word_ngrams=1)
    with pytest.raises(ValueError, match="positive_label"):
        ModelQualityConfig(positive_label="crawl")
    with pytest.raises(ValueError, match="threshold"):
        ModelQualityConfig(threshold=1.5)


# --- the pieces ---------------------------------------------------------------------------------


def test_classifier_text():
    text = "Top FACTS:\n- Paris is big.\n* It has 3.4 million people!\n12. Numbered item"
    assert (
        classifier_text(text, 10_000)
        == "top facts : paris is big . it has 3 . 4 million people ! numbered item"
    )
    assert classifier_text(text, 9) == "top facts"
    assert classifier_text(text, 10_000, normalize=False) == " ".join(text.split())
    assert classifier_text(None, 100) == ""


def test_training_lines_balance_and_mix():
    lines = training_lines({"good": ["a", "b"], "crawl": ["x", "y", "z", "w", "v"]}, True, random.Random(0))
    assert sorted(lines) == sorted(
        [f"__label__good {t}" for t in "ababa"] + [f"__label__crawl {t}" for t in "xyzwv"]
    )
    assert lines[:5] != sorted(lines)[:5]  # shuffled
    assert len(training_lines({"good": ["a"], "crawl": ["x", "y"]}, False, random.Random(0))) == 3


def test_logit_histogram():
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, 20_000)
    histogram = LogitHistogram()
    histogram.add([1 / (1 + np.exp(-v)) for v in x])
    median, mad = histogram.median_mad()
    assert median == pytest.approx(np.median(x), abs=0.02)
    assert mad == pytest.approx(np.median(np.abs(x - np.median(x))), abs=0.02)
    cut = histogram.top_cutoff(25)
    assert np.mean(x >= cut) == pytest.approx(0.25, abs=0.002) and np.mean(x >= cut) >= 0.25
    assert np.all(x >= histogram.top_cutoff(100))  # everything
    extreme = LogitHistogram()
    extreme.add([0.0, 0.5])  # p = 0 falls in the lowest bin, below which there is nothing to cut
    assert extreme.top_cutoff(100) == -np.inf and extreme.top_cutoff(50) == pytest.approx(0.0)
    merged = LogitHistogram.from_json(histogram.to_json())
    merged.merge(histogram)
    assert merged.total == 40_000 and merged.median_mad() == histogram.median_mad()
    assert logit(0.0) == pytest.approx(-16.118, abs=1e-3) and logit(0.5) == 0.0


def test_read_reference_file_formats(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert read_reference_file(str(tmp_path / "r.jsonl"), "text") == ["one", "two"]
    pq.write_table(pa.table({"body": ["a", "", "b"]}), tmp_path / "r.parquet")
    assert read_reference_file(str(tmp_path / "r.parquet"), "body") == ["a", "b"]
    (tmp_path / "r.txt").write_text("first doc\nstill first\n\nsecond doc\n")
    assert read_reference_file(str(tmp_path / "r.txt"), "text") == ["first doc\nstill first", "second doc\n"]
    with pytest.raises(ConfigError, match="no column 'text'"):
        read_reference_file(str(tmp_path / "r.parquet"), "text")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ConfigError, match="line 2 is not a JSON object with a 'text' field"):
        read_reference_file(str(tmp_path / "bad.jsonl"), "text")


def test_reference_from_the_world_artifact(tmp_path):
    rows = [{"text": "The city of Velmora lies on the Lune."}, {"text": "  "}, {"text": "Line\u2028one."}]
    (tmp_path / "reference.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    store = ArtifactStore(tmp_path)
    expected = ["The city of Velmora lies on the Lune.", "Line\u2028one."]
    assert reference_from_artifact(store, str(tmp_path)) == expected
    assert reference_from_artifact(store, str(tmp_path / "reference.jsonl")) == expected
    with pytest.raises(ConfigError, match=r"no reference\.jsonl"):
        reference_from_artifact(store, str(tmp_path / "elsewhere"))


def test_good_scores_reads_the_positive_label(trained):
    model = load_classifier(str(Path(trained.outputs["classifier"].uri) / "model.bin"))
    good, junk = good_scores(model, ["the city of velmora lies on the river lune .", "buy now ! ! !"], "good")
    assert good > 0.5 > junk
    assert good_scores(model, ["anything"], "no_such_label") == [0.0]

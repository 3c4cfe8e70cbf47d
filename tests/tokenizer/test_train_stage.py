"""The `train_tokenizer` stage: trained or given tokenizer, held-out bytes/token, sampling, bad corpora."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from tokenizers import Tokenizer, normalizers

from components.core.config import ConfigError
from components.core.stage import RunEnv, StageRecord, run_stage
from components.tokenizer.bpe import (
    EOT,
    TokenizerConfig,
    decode,
    encode_batch,
    load_tokenizer,
    special_token_ids,
)
from components.tokenizer.bpe import train_tokenizer as train_bpe
from components.tokenizer.tokenize import split_position
from components.tokenizer.train import (
    TrainTokenizerConfig,
    choose_stride,
    show_tokens,
    train_tokenizer,
)

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_corpus import WORDS, write_corpus


def make_docs(n: int, seed: int = 0, prefix: str = "d") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize()
            + rng.choice([".", "!", "?"])
            + (f" In {rng.randint(1000, 2024)}." if rng.random() < 0.3 else "")
            for _ in range(rng.randint(2, 6))
        ]
        docs.append(
            {"id": f"{prefix}{i:04d}", "url": f"https://x.example/{prefix}{i}", "text": " ".join(sentences)}
        )
    return docs


def env_for(tmp_path: Path, tracking_uri: str, experiment: str = "train-tokenizer-test") -> RunEnv:
    return RunEnv(run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment=experiment)


def meta_of(record: StageRecord) -> dict[str, Any]:
    return json.loads((Path(record.outputs["tokenizer"].uri) / "tokenizer_meta.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp("train")
    docs = make_docs(400)
    corpus = write_corpus(tmp_path / "docs", [docs[:150], docs[150:300], docs[300:]])
    config = TrainTokenizerConfig(vocab_size=400)
    record = run_stage(train_tokenizer, config, {"documents": corpus}, env_for(tmp_path, tracking_uri))
    return {"docs": docs, "corpus": corpus, "record": record, "tmp": tmp_path}


def test_trains_the_configured_vocabulary_and_writes_meta(trained: dict[str, Any]) -> None:
    record = trained["record"]
    out = Path(record.outputs["tokenizer"].uri)
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_meta.json"]
    tok = load_tokenizer(out / "tokenizer.json")
    meta = meta_of(record)
    assert tok.get_vocab_size() == meta["vocab_size"] == 400
    n_special = len(TokenizerConfig().all_special_tokens())
    assert meta["eot_id"] == 400 - n_special
    assert meta["special_tokens"] == special_token_ids(tok) and meta["special_tokens"][EOT] == meta["eot_id"]
    assert meta["token_dtype"] == "uint16"
    assert meta["source"] == "trained" and meta["warnings"] == []
    # Held out by the same hash rule as tokenize's val split; every other document trained it.
    heldout = [d for d in trained["docs"] if split_position(d["id"]) < 0.05]
    assert meta["heldout_docs"] == len(heldout) > 0
    assert meta["train_docs"] == 400 - len(heldout)
    assert meta["train_chars"] == sum(len(d["text"]) for d in trained["docs"]) - sum(
        len(d["text"]) for d in heldout
    )
    texts = [d["text"] for d in heldout]
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(map(len, encode_batch(tok, texts, append_eot=False)))
    assert meta["bytes_per_token"] == pytest.approx(n_bytes / n_tokens)
    assert 2.5 < meta["bytes_per_token"] < 8.0  # whole words for the lexicon, digits one by one
    assert record.metrics == {"vocab_size": 400, "bytes_per_token": meta["bytes_per_token"]}
    assert record.outputs["tokenizer"].meta["vocab_size"] == 400


def test_same_as_training_the_library_on_the_sample(trained: dict[str, Any]) -> None:
    out = Path(trained["record"].outputs["tokenizer"].uri) / "tokenizer.json"
    sample = [d["text"] for d in trained["docs"] if split_position(d["id"]) >= 0.05]
    expected = train_bpe(sample, TokenizerConfig(vocab_size=400))
    assert json.loads(out.read_text()) == json.loads(expected.to_str())


def test_mlflow_gets_the_tokenizer_and_the_sample_split(trained: dict[str, Any], tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    run_id = trained["record"].mlflow_run_id
    assert [a.path for a in client.list_artifacts(run_id, "tokenizer")] == [
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_meta.json",
    ]
    shown = Path(
        client.download_artifacts(run_id, "samples/tokenization.txt", str(trained["tmp"]))
    ).read_text()
    assert "'A page that contains <|endoftext|> as text stays one document.'" in shown
    assert "│·the│" in shown  # " the" is one token, its space shown as a dot
    assert "<F0 9F>" in shown or "<F0>" in shown  # the emoji's bytes, split mid-character, in hex
    data = client.get_run(run_id).data
    assert data.metrics["vocab_size"] == 400 and data.params["vocab_size"] == "400"


def test_given_tokenizer_is_copied_and_measured(
    trained: dict[str, Any], tmp_path: Path, tracking_uri: str
) -> None:
    given = Path(trained["record"].outputs["tokenizer"].uri) / "tokenizer.json"
    config = TrainTokenizerConfig(tokenizer_path=str(given), vocab_size=9999)  # training fields ignored
    record = run_stage(
        train_tokenizer, config, {"documents": trained["corpus"]}, env_for(tmp_path, tracking_uri)
    )
    out = Path(record.outputs["tokenizer"].uri)
    assert json.loads((out / "tokenizer.json").read_text()) == json.loads(given.read_text())
    meta = meta_of(record)
    assert meta["source"] == str(given) and meta["vocab_size"] == 400
    assert meta["train_docs"] == 0
    assert meta["bytes_per_token"] == pytest.approx(meta_of(trained["record"])["bytes_per_token"])


def test_given_tokenizer_errors(trained: dict[str, Any], tmp_path: Path, tracking_uri: str) -> None:
    env, inputs = env_for(tmp_path, tracking_uri), {"documents": trained["corpus"]}
    missing = TrainTokenizerConfig(tokenizer_path=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"tokenizer_path: tokenizer file .*nope\.json does not exist"):
        run_stage(train_tokenizer, missing, inputs, env)
    # A tokenizer that lower-cases its input loses text: refused.
    tok = Tokenizer.from_file(str(Path(trained["record"].outputs["tokenizer"].uri) / "tokenizer.json"))
    tok.normalizer = normalizers.Lowercase()
    tok.save(str(tmp_path / "lower.json"))
    lossy = TrainTokenizerConfig(tokenizer_path=str(tmp_path / "lower.json"))
    with pytest.raises(ConfigError, match=r"does not round-trip text losslessly \('The capital"):
        run_stage(train_tokenizer, lossy, inputs, env)


def test_empty_corpus_is_a_clear_error(tmp_path: Path, tracking_uri: str) -> None:
    blank = [{"id": f"e{i}", "url": "u", "text": ""} for i in range(3)]
    corpus = write_corpus(tmp_path / "docs", [blank])
    with pytest.raises(
        ConfigError, match=r"has no text to train on \(3 documents, 3 of the 3 sampled empty, 0 held out\)"
    ):
        run_stage(
            train_tokenizer, TrainTokenizerConfig(), {"documents": corpus}, env_for(tmp_path, tracking_uri)
        )


def test_tiny_corpus_trains_a_smaller_vocabulary_with_a_warning(tmp_path: Path, tracking_uri: str) -> None:
    corpus = write_corpus(tmp_path / "docs", [make_docs(3, seed=5)])
    record = run_stage(
        train_tokenizer, TrainTokenizerConfig(), {"documents": corpus}, env_for(tmp_path, tracking_uri)
    )
    meta = meta_of(record)
    assert meta["vocab_size"] < 4096 and len(meta["warnings"]) == 1
    assert "tokenizer corpus too small for vocab_size=4096" in meta["warnings"][0]
    # Three documents: none held out, so bytes/token comes from training text and says so.
    assert meta["heldout_docs"] == 0 and meta["bytes_per_token_on"] == "train"
    tok = load_tokenizer(Path(record.outputs["tokenizer"].uri) / "tokenizer.json")
    assert decode(tok, encode_batch(tok, ["Ünïcødé 👍 text"], append_eot=False)[0]) == "Ünïcødé 👍 text"


def test_caps_sample_evenly(tmp_path: Path, tracking_uri: str) -> None:
    docs = make_docs(300, seed=7)
    corpus = write_corpus(tmp_path / "docs", [docs[:100], docs[100:200], docs[200:]])
    config = TrainTokenizerConfig(vocab_size=300, max_train_docs=50, heldout_fraction=0.0)
    meta = meta_of(run_stage(train_tokenizer, config, {"documents": corpus}, env_for(tmp_path, tracking_uri)))
    assert meta["stride"] == 6 and meta["train_docs"] == 50  # every 6th of 300: all shards contribute
    assert meta["train_chars"] == sum(len(d["text"]) for d in docs[::6])
    assert meta["bytes_per_token_on"] == "train"
    # A sparse sample: a stride of 17 over 10 shards of 5 documents takes rows 0, 17 and 34 only.
    corpus = write_corpus(tmp_path / "sparse", [docs[i : i + 5] for i in range(0, 50, 5)])
    config = TrainTokenizerConfig(vocab_size=300, max_train_docs=3, heldout_fraction=0.0)
    meta = meta_of(run_stage(train_tokenizer, config, {"documents": corpus}, env_for(tmp_path, tracking_uri)))
    assert (meta["stride"], meta["sampled_docs"], meta["corpus_docs"]) == (17, 3, 50)
    assert meta["train_chars"] == sum(len(docs[i]["text"]) for i in (0, 17, 34))


def test_show_tokens_of_nothing_has_no_bytes_per_token(trained: dict[str, Any]) -> None:
    tok = load_tokenizer(Path(trained["record"].outputs["tokenizer"].uri) / "tokenizer.json")
    assert "0 tokens, n/a bytes/token" in show_tokens(tok, "")
    ids = encode_batch(tok, ["the city"], append_eot=False)[0]
    assert f"{len(ids)} tokens, {len(b'the city') / len(ids):.2f} bytes/token" in show_tokens(tok, "the city")


def test_choose_stride() -> None:
    assert choose_stride(TrainTokenizerConfig(max_train_chars=None), 1000, 500.0) == 1
    assert choose_stride(TrainTokenizerConfig(max_train_docs=100, max_train_chars=None), 1000, 500.0) == 10
    assert choose_stride(TrainTokenizerConfig(max_train_chars=50_000), 1000, 500.0) == 10
    assert choose_stride(TrainTokenizerConfig(max_train_docs=10, max_train_chars=50_000), 1000, 500.0) == 100


def test_config_is_flat_and_validated() -> None:
    config = TrainTokenizerConfig.model_validate({"vocab_size": 8192, "max_train_docs": 10})
    assert config.tokenizer_config() == TokenizerConfig(vocab_size=8192)
    with pytest.raises(ValueError, match="special_tokens must include"):
        TrainTokenizerConfig(special_tokens=[EOT])
    with pytest.raises(ValueError, match="extra"):
        TrainTokenizerConfig(tokenizer={"vocab_size": 10})

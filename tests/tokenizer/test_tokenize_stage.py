"""The `tokenize` stage: token shards that decode back to the documents, a stable split by document,
resume per shard, the uint32 switch and the too-small-corpus error."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from components.core.config import ConfigError
from components.core.stage import RunEnv, StageRecord, run_stage
from components.io.token_shards import read_shard, shard_header
from components.tokenizer.bpe import (
    BYTE_SYMBOLS,
    TokenizerConfig,
    decode,
    encode_batch,
    eot_id,
    load_tokenizer,
)
from components.tokenizer.tokenize import (
    CorpusTooSmallError,
    TokenizeConfig,
    split_position,
    tokenize,
)
from components.tokenizer.train import TrainTokenizerConfig, train_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_corpus import WORDS as TINY_WORLD_WORDS
from tokenizer_corpus import write_corpus

WORDS = [*TINY_WORLD_WORDS, "Ünïcødé", "👍🏽", "日本語"]  # and characters beyond ASCII


def make_docs(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """Documents with unique texts (each starts with its id), so a decoded span names its document."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(10, 60))]
        text = f"{prefix}{i}: " + " ".join(words) + rng.choice([".", "!\n", "?\n\n", " 2024."])
        docs.append({"id": f"{prefix}{i}", "url": f"https://x.example/{prefix}{i}", "text": text})
    return docs


def env_for(tmp_path: Path, tracking_uri: str) -> RunEnv:
    return RunEnv(
        run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment="tokenize-test"
    )


def tokens_dir(record: StageRecord) -> Path:
    return Path(record.outputs["tokens"].uri)


def documents_in(tok: Tokenizer, path: Path) -> list[str]:
    """The texts of the documents in one token shard: the spans between end-of-text tokens, decoded."""
    if not path.exists():
        return []
    ids = read_shard(path)
    ends = np.flatnonzero(ids == eot_id(tok))
    assert ends.size == 0 or ends[-1] == ids.size - 1  # every document, the last too, ends with the separator
    return [decode(tok, ids[a + 1 if a >= 0 else 0 : b]) for a, b in zip([-1, *ends[:-1]], ends, strict=True)]


def splits_of(tok: Tokenizer, record: StageRecord) -> dict[str, str]:
    """text -> split, over all token shards of a run (asserting that no text is in two places)."""
    out: dict[str, str] = {}
    for split in ("train", "val"):
        for path in sorted((tokens_dir(record) / split).glob("part-*.bin")):
            for text in documents_in(tok, path):
                assert text not in out, f"{text[:20]!r} is in {out.get(text)} and {split}"
                out[text] = split
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> dict[str, Any]:
    """Three shards (two empty documents), a tokenizer from the train_tokenizer stage, one tokenize run."""
    tmp_path = tmp_path_factory.mktemp("tokenize")
    shards = [make_docs(80, seed=s, prefix=f"s{s}-") for s in range(3)]
    shards[1][5]["text"] = ""
    shards[2][0]["text"] = None
    corpus = write_corpus(tmp_path / "docs", shards)
    env = env_for(tmp_path, tracking_uri)
    trained = run_stage(train_tokenizer, TrainTokenizerConfig(vocab_size=400), {"documents": corpus}, env)
    tokenizer = trained.outputs["tokenizer"]
    config = TokenizeConfig(val_fraction=0.2, min_train_tokens=1000, batch_docs=16)
    record = run_stage(tokenize, config, {"documents": corpus, "tokenizer": tokenizer}, env)
    tok = load_tokenizer(Path(tokenizer.uri) / "tokenizer.json")
    return {"shards": shards, "tokenizer": tokenizer, "tok": tok, "config": config, "record": record}


def test_each_shard_decodes_back_to_its_documents_in_order(world: dict[str, Any]) -> None:
    tok, out = world["tok"], tokens_dir(world["record"])
    for i, docs in enumerate(world["shards"]):
        texts = [(d["text"], split_position(d["id"]) < 0.2) for d in docs if d["text"]]
        assert documents_in(tok, out / "train" / f"part-{i:05d}.bin") == [t for t, val in texts if not val]
        assert documents_in(tok, out / "val" / f"part-{i:05d}.bin") == [t for t, val in texts if val]


def test_every_document_is_in_exactly_one_split(world: dict[str, Any]) -> None:
    placed = splits_of(world["tok"], world["record"])
    texts = [d["text"] for docs in world["shards"] for d in docs if d["text"]]
    assert sorted(placed) == sorted(texts) and len(texts) == 238  # 240 minus the two empty ones
    n_val = list(placed.values()).count("val")
    assert 0.1 < n_val / len(texts) < 0.3  # about val_fraction = 0.2


def test_meta_counts_and_metrics(world: dict[str, Any]) -> None:
    record, tok, out = world["record"], world["tok"], tokens_dir(world["record"])
    meta = json.loads((out / "tokens_meta.json").read_text())
    docs = [d for shard in world["shards"] for d in shard if d["text"]]
    ids = encode_batch(tok, [d["text"] for d in docs], append_eot=True)
    val = [split_position(d["id"]) < 0.2 for d in docs]
    expected = {
        "train": sum(len(i) for i, v in zip(ids, val, strict=True) if not v),
        "val": sum(len(i) for i, v in zip(ids, val, strict=True) if v),
    }
    for split in ("train", "val"):
        assert meta["splits"][split]["tokens"] == expected[split]
        assert meta["splits"][split]["documents"] == val.count(split == "val")
        assert meta["splits"][split]["shards"] == [f"{split}/part-{i:05d}.bin" for i in range(3)]
        assert sum(shard_header(out / p).n_tokens for p in meta["splits"][split]["shards"]) == expected[split]
    assert meta["empty_docs"] == 2
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 400 and meta["eot_id"] == eot_id(tok)
    assert meta["tokenizer_digest"] == world["tokenizer"].digest
    assert meta["sources"] == {f"part-{i:05d}.bin": f"part-{i:05d}.parquet" for i in range(3)}
    assert shard_header(out / "train" / "part-00000.bin").dtype == np.uint16
    m = record.metrics
    assert (m["train_tokens"], m["val_tokens"], m["documents"]) == (expected["train"], expected["val"], 238)
    assert m["tokens_per_s_per_cpu"] > 0
    assert record.outputs["tokens"].meta["train_tokens"] == expected["train"]


def test_split_is_stable_when_documents_are_added(
    world: dict[str, Any], tmp_path: Path, tracking_uri: str
) -> None:
    shards = [list(s) for s in world["shards"]]
    shards[0].insert(3, make_docs(1, seed=99, prefix="new-")[0])  # into an existing shard, shifting the rest
    shards.insert(1, make_docs(30, seed=98, prefix="more-"))  # a whole new shard, renumbering those after it
    corpus = write_corpus(tmp_path / "docs", shards)
    inputs = {"documents": corpus, "tokenizer": world["tokenizer"]}
    record = run_stage(tokenize, world["config"], inputs, env_for(tmp_path, tracking_uri))
    before, after = splits_of(world["tok"], world["record"]), splits_of(world["tok"], record)
    assert {t: after[t] for t in before} == before
    assert len(after) == len(before) + 31


def test_split_position_is_a_fixed_uniform_hash() -> None:
    keys = [f"doc-{i}" for i in range(20_000)]
    positions = [split_position(k) for k in keys]
    assert all(0 <= p < 1 for p in positions)
    assert 0.045 < sum(p < 0.05 for p in positions) / len(keys) < 0.055
    assert split_position("doc-1") == split_position("doc-1") != split_position("doc-2")
    assert split_position("doc-1") == pytest.approx(0.69328, abs=1e-5)  # fixed forever: splits must not move


def test_resume_skips_finished_shards(world: dict[str, Any], tmp_path: Path, tracking_uri: str) -> None:
    corpus_dir = tmp_path / "docs"
    corpus = write_corpus(corpus_dir, world["shards"])
    inputs, env = {"documents": corpus, "tokenizer": world["tokenizer"]}, env_for(tmp_path, tracking_uri)
    first = run_stage(tokenize, world["config"], inputs, env)
    out, work = tokens_dir(first), tokens_dir(first).parent
    shard2 = {s: (out / s / "part-00002.bin").read_bytes() for s in ("train", "val")}
    # A crash before shard 2 was finished (and so before the stage's success record).
    (work / "stage.json").unlink()
    (work / "_work" / "done" / "part-00002.bin.json").unlink()
    for s in ("train", "val"):
        (out / s / "part-00002.bin").unlink()
    done0 = (out / "train" / "part-00000.bin").stat().st_mtime_ns
    # Shards 0 and 1 are finished: if the rerun read them again, this would fail.
    for i in (0, 1):
        (corpus_dir / f"part-{i:05d}.parquet").write_bytes(b"not parquet any more")
    second = run_stage(tokenize, world["config"], inputs, env)
    assert second.status == "done" and second.key == first.key
    assert (out / "train" / "part-00000.bin").stat().st_mtime_ns == done0  # not rewritten
    assert {s: (out / s / "part-00002.bin").read_bytes() for s in ("train", "val")} == shard2  # redone
    assert second.metrics["train_tokens"] == first.metrics["train_tokens"]
    assert second.metrics["documents"] == first.metrics["documents"] == 238


def test_tiny_corpus_error_gives_both_counts(
    world: dict[str, Any], tmp_path: Path, tracking_uri: str
) -> None:
    docs = make_docs(3, seed=7, prefix="tiny-")
    corpus = write_corpus(tmp_path / "docs", [docs])
    found = sum(
        len(ids)
        for d, ids in zip(docs, encode_batch(world["tok"], [d["text"] for d in docs]), strict=True)
        if split_position(d["id"]) >= 0.05
    )
    inputs = {"documents": corpus, "tokenizer": world["tokenizer"]}
    with pytest.raises(
        CorpusTooSmallError, match=rf"the corpus has {found} train tokens .* at least 16,384"
    ) as e:
        run_stage(tokenize, TokenizeConfig(), inputs, env_for(tmp_path, tracking_uri))
    assert isinstance(e.value, ConfigError) and "lower tokenize.min_train_tokens" in str(e.value)
    # No document at all (every text empty): the same error, with zero.
    empty = write_corpus(tmp_path / "empty", [[{"id": "a", "url": "u", "text": ""}]])
    with pytest.raises(CorpusTooSmallError, match=r"has 0 train tokens \(0 train documents, 0 val, 1 empty"):
        run_stage(tokenize, TokenizeConfig(), {**inputs, "documents": empty}, env_for(tmp_path, tracking_uri))


def big_vocab_tokenizer(path: Path) -> Path:
    """A 70,014-token byte-level BPE whose merges make " the" id 69,999 (training one that large would
    take minutes): the vocabulary is bytes, unused filler entries, three merges, then special tokens."""
    vocab = {s: b for b, s in enumerate(BYTE_SYMBOLS)}
    vocab |= {f"<filler_{i}>": i for i in range(256, 69_997)}
    vocab |= {"Ġt": 69_997, "Ġth": 69_998, "Ġthe": 69_999}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(TokenizerConfig().all_special_tokens())
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    return path / "tokenizer.json"


def test_vocabulary_over_65536_switches_to_uint32(
    world: dict[str, Any], tmp_path: Path, tracking_uri: str
) -> None:
    env = env_for(tmp_path, tracking_uri)
    corpus = write_corpus(tmp_path / "docs", [make_docs(20, seed=3, prefix="big-")])
    # Through the given-tokenizer path of train_tokenizer, as a user with a large tokenizer would.
    given = TrainTokenizerConfig(tokenizer_path=str(big_vocab_tokenizer(tmp_path / "given")))
    tokenizer = run_stage(train_tokenizer, given, {"documents": corpus}, env).outputs["tokenizer"]
    assert tokenizer.meta["vocab_size"] == 70_014 and tokenizer.meta["token_dtype"] == "uint32"
    record = run_stage(
        tokenize, TokenizeConfig(min_train_tokens=0), {"documents": corpus, "tokenizer": tokenizer}, env
    )
    tok = load_tokenizer(Path(tokenizer.uri) / "tokenizer.json")
    path = tokens_dir(record) / "train" / "part-00000.bin"
    ids = read_shard(path)
    assert shard_header(path).dtype == np.uint32 and ids.dtype == np.uint32
    assert eot_id(tok) == 70_000 and ids.max() == 70_000 and 69_999 in ids  # ids past 65,535 kept intact
    meta = json.loads((tokens_dir(record) / "tokens_meta.json").read_text())
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_014
    assert set(splits_of(tok, record)) == {d["text"] for d in make_docs(20, seed=3, prefix="big-")}

"""Dedup: normalisation, MinHash-LSH on crafted pairs, union-find, the kept document, the banded LSH
against datasketch's in-memory index, exact-only mode, ground-truth scores, and resume after a kill."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHashLSH
from mlflow import MlflowClient
from pydantic import ValidationError

from components.core.artifacts import Artifact, ArtifactStore
from components.core.config import ConfigError
from components.core.stage import RunEnv, StageRecord, run_stage
from components.data import dedup as dedup_module
from components.data import dedup_verify
from components.data.dedup import DedupConfig, MinHashConfig, dedup, dedup_truth
from components.data.minhash import (
    MinHasher,
    UnionFind,
    bucket_edges,
    candidate_probability,
    exact_hash,
    jaccard,
    lsh_threshold,
    normalize_text,
    shingle_hashes,
)

REPO = Path(__file__).resolve().parents[2]
VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "vo", "ri") for b in range(250)]


def words(rng: random.Random, n: int = 300) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(n)]


def edited(base: list[str], rate: float, rng: random.Random) -> list[str]:
    """`base` with a fraction `rate` of its words replaced (at distinct random positions)."""
    out = list(base)
    for i in rng.sample(range(len(out)), round(rate * len(out))):
        out[i] = rng.choice(VOCAB) + "x"  # never equal to the word it replaces
    return out


def true_jaccard(a: str, b: str) -> float:
    return jaccard(shingle_hashes(a, 5), shingle_hashes(b, 5))


def candidates(hasher: MinHasher, a: str, b: str) -> bool:
    """Would banded LSH pair these two texts (do they share at least one band key)?"""
    ka, kb = hasher.band_keys(hasher.signature(a)), hasher.band_keys(hasher.signature(b))
    return any(x == y for x, y in zip(ka, kb, strict=True))


# --- normalisation, the published LSH numbers ----------------------------------------------------


def test_normalisation_and_exact_hash():
    assert normalize_text("  Hello,\tWORLD!!\n\n") == "hello world"
    assert normalize_text("end.Next -- (quoted) 'text'") == "end next quoted text"
    assert normalize_text("price: $5 + 3%") == "price 5 3"
    assert normalize_text(None) == normalize_text("") == ""
    # digits and accents still distinguish texts
    assert normalize_text("Born in 2019") != normalize_text("Born in 2020")
    assert normalize_text("résumé") == "résumé" != normalize_text("resume")
    same = exact_hash(normalize_text("The Cat sat.\nOn the mat!"))
    assert same == exact_hash(normalize_text("the cat  sat on the mat"))
    assert same != exact_hash(normalize_text("the cat sat on a mat"))
    assert all(0 <= half < 2**64 for half in same)


def test_published_lsh_numbers():
    # FineWeb (Penedo et al. 2024; datatrove's MinhashDedup): 5-grams, 14 bands x 8 rows, threshold about
    # (1/b)^(1/r) = 0.72, P(candidate | J=0.8) about 0.92
    assert lsh_threshold(14, 8) == pytest.approx(0.719, abs=1e-3)
    assert candidate_probability(0.8, 14, 8) == pytest.approx(0.9235, abs=1e-4)
    config = MinHashConfig()
    assert (config.ngram, config.bands, config.rows, config.bands * config.rows) == (5, 14, 8, 112)
    assert MinHasher().num_perm == 112 and MinHasher().signature("a b c d e f").dtype == np.uint64


def test_shingles_of_short_and_empty_texts():
    assert len(shingle_hashes("one two three four five six", 5)) == 2
    assert len(shingle_hashes("only three words", 5)) == 1  # one shingle of all words
    assert len(shingle_hashes("  ,;  ", 5)) == 0
    assert MinHasher().signature("!!! ...") is None


# --- crafted pairs -----------------------------------------------------------------------------


def test_identical_and_one_word_changed_are_candidates():
    rng = random.Random(1)
    hasher = MinHasher()
    base = words(rng, 400)
    text = " ".join(base)
    assert candidates(hasher, text, text)
    one_word = list(base)
    one_word[200] = "changed"
    assert true_jaccard(text, " ".join(one_word)) == pytest.approx(0.976, abs=0.005)
    assert candidates(hasher, text, " ".join(one_word))
    # punctuation and case only: the same normalised text, so the same signature
    assert np.array_equal(hasher.signature(text), hasher.signature(text.upper().replace(" ", ", ")))


def test_unrelated_documents_about_the_same_entity_are_not_candidates():
    history = (
        "Velmora is an old harbour city in the north of Astoria. It was founded by fishermen in the "
        "twelfth century, and its walls were built two hundred years later to keep out raiders from the "
        "sea. In 1848 Velmora became the capital of the province, and the university followed soon after."
    )
    food = (
        "Anyone visiting Velmora should try the smoked eel, which the market on the quay sells every "
        "morning. Velmora is also known for its sweet bread with raisins, baked in the old ovens near the "
        "cathedral. The best time to eat in Velmora is the harvest festival in late September."
    )
    hasher = MinHasher()
    assert true_jaccard(history, food) < 0.05
    assert not candidates(hasher, history, food)


def test_candidate_rate_follows_the_s_curve():
    """Pairs at Jaccard ~0.5 are mostly not caught, pairs at >= 0.85 almost always are."""
    rng = random.Random(7)
    hasher = MinHasher()
    caught: dict[str, list[bool]] = {"~0.5": [], ">=0.85": []}
    for i in range(240):
        base = words(rng, 300)
        rate = 0.078 if i % 2 else 0.012  # J = s / (2 - s) with s = (1 - rate)^5 shingles surviving
        a, b = " ".join(base), " ".join(edited(base, rate, rng))
        j = true_jaccard(a, b)
        if 0.45 <= j <= 0.55:
            caught["~0.5"].append(candidates(hasher, a, b))
        elif j >= 0.85:
            caught[">=0.85"].append(candidates(hasher, a, b))
    assert len(caught["~0.5"]) >= 80 and len(caught[">=0.85"]) >= 80
    assert np.mean(caught["~0.5"]) < 0.15  # theory: 0.05
    assert np.mean(caught[">=0.85"]) > 0.95  # theory: > 0.98


# --- union-find and buckets ----------------------------------------------------------------------


def test_union_find_is_transitive_and_compresses_paths():
    uf = UnionFind(6)
    assert uf.union(0, 1) and uf.union(1, 2)  # A~B, B~C
    assert uf.find(0) == uf.find(2)  # => A~C
    assert not uf.union(2, 0)  # already one set
    assert uf.find(3) != uf.find(0)
    assert uf.size[uf.find(0)] == 3
    chain = UnionFind(1000)
    for i in range(999):
        chain.parent[i] = i + 1  # a worst-case chain, built by hand
    root = chain.find(0)
    assert root == 999 and all(chain.parent[i] == 999 for i in range(1000))


def test_bucket_edges_are_stars_from_the_earliest_document():
    docs = np.array([9, 4, 7, 2, 5, 3], dtype=np.int64)
    keys = np.array([1, 1, 2, 1, 3, 2], dtype=np.uint64)
    assert sorted(bucket_edges(docs, keys).tolist()) == [[2, 4], [2, 9], [3, 7]]
    # two key columns (the 128-bit exact hash): both must agree
    low = np.array([0, 0, 0, 1, 0, 0], dtype=np.uint64)
    assert sorted(bucket_edges(docs, keys, low).tolist()) == [[3, 7], [4, 9]]
    assert bucket_edges(docs[:1], keys[:1]).shape == (0, 2)


# --- the stage ---------------------------------------------------------------------------------


def write_input(path: Path, shards: list[list[dict]]) -> Artifact:
    path.mkdir(parents=True, exist_ok=True)
    for i, docs in enumerate(shards):
        schema = pa.schema([("id", pa.string()), ("url", pa.string()), ("text", pa.string())])
        pq.write_table(pa.Table.from_pylist(docs, schema=schema), path / f"part-{i:05d}.parquet")
    return Artifact(uri=str(path), kind="documents", digest=ArtifactStore(path).digest(str(path)))


def doc(ident: str, text: str) -> dict:
    return {"id": ident, "url": f"https://site.example/{ident}", "text": text}


def read_dir(uri: str) -> list[dict]:
    return [row for f in sorted(Path(uri).glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def run(
    tmp_path: Path,
    tracking_uri: str,
    shards: list[list[dict]],
    config: DedupConfig | None = None,
    labels: list[dict] | None = None,
) -> tuple[StageRecord, list[dict], list[dict]]:
    inputs = {"documents": write_input(tmp_path / "input", shards)}
    if labels is not None:
        crawl = tmp_path / "crawl"
        crawl.mkdir(exist_ok=True)
        (crawl / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
        inputs["labels"] = Artifact(uri=str(crawl), kind="crawl", digest="xxh128:labels")
    env = RunEnv(
        run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment="test_dedup"
    )
    record = run_stage(dedup, config or DedupConfig(), inputs, env)
    dropped = []
    for reason_dir in sorted(Path(record.outputs["dropped"].uri).iterdir()):
        dropped += read_dir(str(reason_dir))
    return record, read_dir(record.outputs["documents"].uri), dropped


def test_stage_drops_exact_and_near_copies_keeping_the_earliest(tmp_path, tracking_uri):
    rng = random.Random(3)
    a, c, e = words(rng), words(rng), words(rng)
    a_text = " ".join(a)
    shards = [
        [
            doc("a", a_text),
            doc("b-unique", " ".join(words(rng))),
            doc("c", " ".join(c)),
            doc("empty-1", ""),
        ],
        [
            doc("a-exact", a_text.upper().replace(" ", ",  ") + "!"),  # same normalised text
            doc("a-near", " ".join(edited(a, 0.01, rng))),
            doc("c-half", " ".join(c[:150] + words(rng, 150))),  # Jaccard ~0.33 with c
            doc("empty-2", "   "),
        ],
        [],  # an empty shard
        [doc("e-near", " ".join(edited(e, 0.005, rng))), doc("e", " ".join(e)), doc("null", None)],
    ]
    record, kept, dropped = run(tmp_path, tracking_uri, shards)
    assert [d["id"] for d in kept] == ["a", "b-unique", "c", "empty-1", "c-half", "e-near"]
    assert {d["id"]: d["dup_cluster_size"] for d in kept} == {
        "a": 3,
        "b-unique": 1,
        "c": 1,
        "empty-1": 3,
        "c-half": 1,
        "e-near": 2,  # the earlier of the two in input order, though it is the edited copy
    }
    by_id = {d["id"]: d for d in dropped}
    assert {i: (d["duplicate_of"], d["drop_reason"]) for i, d in by_id.items()} == {
        "a-exact": ("a", "dedup.exact"),
        "a-near": ("a", "dedup.near"),
        "empty-2": ("empty-1", "dedup.exact"),
        "e": ("e-near", "dedup.near"),
        "null": ("empty-1", "dedup.exact"),  # no text at all is the same as empty text
    }
    assert by_id["a-near"]["text"] and by_id["a-near"]["url"] == "https://site.example/a-near"
    assert record.metrics["dropped_exact"] == 3 and record.metrics["dropped_near"] == 2
    assert record.metrics["documents_in"] == 11
    assert sorted(p.name for p in Path(record.outputs["documents"].uri).iterdir()) == [
        f"part-{i:05d}.parquet" for i in range(4)
    ]


def test_transitive_cluster_keeps_one(tmp_path, tracking_uri):
    """A~B and B~C put A, B and C in one cluster, though A and C alone fail the verification."""
    rng = random.Random(5)
    base = words(rng, 400)
    texts = {
        "A": " ".join(edited(base[:200], 0.025, rng) + base[200:]),  # edits in the first half
        "B": " ".join(base),
        "C": " ".join(base[:200] + edited(base[200:], 0.025, rng)),  # edits in the second half
    }
    j = {pair: true_jaccard(texts[pair[0]], texts[pair[1]]) for pair in ("AB", "BC", "AC")}
    assert j["AB"] > 0.85 and j["BC"] > 0.85 and j["AC"] < 0.8
    config = DedupConfig(minhash=MinHashConfig(verify_threshold=0.8))
    _, kept, dropped = run(tmp_path, tracking_uri, [[doc(i, t) for i, t in texts.items()]], config)
    assert [(d["id"], d["dup_cluster_size"]) for d in kept] == [("A", 3)]
    assert sorted((d["id"], d["duplicate_of"]) for d in dropped) == [("B", "A"), ("C", "A")]


def test_keeper_is_deterministic_and_follows_input_order(tmp_path, tracking_uri):
    rng = random.Random(9)
    base = words(rng)
    copies = [doc(f"copy-{i}", " ".join(edited(base, 0.004 * i, rng))) for i in range(4)]
    first = run(tmp_path, tracking_uri, [copies[2:], copies[:2]])  # shard 0 holds copies 2 and 3
    again = run(tmp_path / "again", tracking_uri, [copies[2:], copies[:2]])
    assert [d["id"] for d in first[1]] == [d["id"] for d in again[1]] == ["copy-2"]
    assert first[2] == again[2]
    assert {d["duplicate_of"] for d in first[2]} == {"copy-2"}


def test_verification_rejects_pairs_below_the_threshold(tmp_path, tracking_uri):
    rng = random.Random(11)
    base = words(rng, 400)
    near = " ".join(edited(base, 0.01, rng))  # Jaccard ~0.92: an LSH candidate
    shards = [[doc("x", " ".join(base)), doc("y", near)]]
    strict = DedupConfig(minhash=MinHashConfig(verify_threshold=0.99))
    _, kept, dropped = run(tmp_path / "strict", tracking_uri, shards, strict)
    assert [d["id"] for d in kept] == ["x", "y"] and not dropped
    _, kept, dropped = run(tmp_path / "default", tracking_uri, shards)
    assert [d["id"] for d in kept] == ["x"] and dropped[0]["drop_reason"] == "dedup.near"


def test_verification_tasks_hold_one_shard_of_later_documents(tmp_path, tracking_uri, monkeypatch):
    """A hub in the first shard with near copies in every shard: each verification task takes the
    pairs whose later document is in its shard, so none holds the copies of the whole crawl."""
    rng = random.Random(17)
    base = words(rng, 400)
    shards = [[doc("hub", " ".join(base))]]
    shards += [[doc(f"copy-{s}-{i}", " ".join(edited(base, 0.01, rng))) for i in range(3)] for s in range(4)]
    seen: list[tuple[int, set[int], set[int]]] = []  # (task's shard, later documents, hubs)
    verify_task = dedup_verify.verify_task

    def recording(task, **kwargs):
        seen.append((task[0], set(task[1][:, 1].tolist()), set(task[1][:, 0].tolist())))
        return verify_task(task, **kwargs)

    monkeypatch.setattr(dedup_verify, "verify_task", recording)
    config = DedupConfig(exact=False, minhash=MinHashConfig(verify_threshold=0.8))
    _, kept, dropped = run(tmp_path, tracking_uri, shards, config)
    assert [d["id"] for d in kept] == ["hub"] and len(dropped) == 12
    # shard s (1..4) holds documents 3s-2..3s: each task's later documents are that shard's copies;
    # their hubs are the hub (0) and, where two copies share a band the hub is not in, an earlier copy
    later = [(shard, docs) for shard, docs, _ in seen]
    assert later == [(s, {3 * s - 2, 3 * s - 1, 3 * s}) for s in range(1, 5)]
    assert all(0 in hubs for _, _, hubs in seen)


def test_exact_only_mode(tmp_path, tracking_uri):
    rng = random.Random(13)
    base = words(rng)
    text = " ".join(base)
    shards = [
        [
            doc("a", text),
            doc("a-punct", text.replace(" ", "; ")),
            doc("a-near", " ".join(edited(base, 0.01, rng))),
        ]
    ]
    _, kept, dropped = run(tmp_path, tracking_uri, shards, DedupConfig(minhash=MinHashConfig(enabled=False)))
    assert [d["id"] for d in kept] == ["a", "a-near"]
    assert [(d["id"], d["duplicate_of"], d["drop_reason"]) for d in dropped] == [
        ("a-punct", "a", "dedup.exact")
    ]
    signatures = pq.read_table(
        next(Path(tmp_path, "store").glob("stages/dedup/*/_work/signatures/*.parquet"))
    )
    assert signatures.column_names == ["exact_hi", "exact_lo", "fuzzy"]  # no MinHash computed at all


def test_config_and_input_errors(tmp_path, tracking_uri):
    with pytest.raises(ValidationError, match="switch the stage off"):
        DedupConfig(exact=False, minhash=MinHashConfig(enabled=False))
    DedupConfig(enabled=False, exact=False, minhash=MinHashConfig(enabled=False))  # off: nothing to check
    html_only = tmp_path / "html"
    html_only.mkdir()
    pq.write_table(pa.table({"id": ["1"], "html": ["<p>x</p>"]}), html_only / "part-00000.parquet")
    art = Artifact(uri=str(html_only), kind="documents", digest="xxh128:html")
    env = RunEnv(
        run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment="test_dedup"
    )
    with pytest.raises(ConfigError, match="no \\['text'\\] column"):
        run_stage(dedup, DedupConfig(), {"documents": art}, env)


# --- banded LSH == datasketch's in-memory LSH ---------------------------------------------------


def clusters_of(pairs: list[tuple[str, str]], ids: list[str]) -> set[frozenset[str]]:
    index = {x: i for i, x in enumerate(ids)}
    uf = UnionFind(len(ids))
    for a, b in pairs:
        uf.union(index[a], index[b])
    groups: dict[int, set[str]] = {}
    for x in ids:
        groups.setdefault(uf.find(index[x]), set()).add(x)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def test_partitioned_banding_matches_in_memory_lsh(tmp_path, tracking_uri):
    """A few hundred documents in families of near copies at many similarities: the stage's banded,
    key-partitioned LSH over 3 shards gives exactly the clusters of datasketch's MinHashLSH."""
    rng = random.Random(17)
    docs = []
    for f in range(60):
        base = words(rng, rng.randint(60, 300))
        docs.append(doc(f"f{f}-0", " ".join(base)))
        for k in range(1, rng.randint(2, 6)):
            docs.append(doc(f"f{f}-{k}", " ".join(edited(base, rng.choice([0.01, 0.04, 0.07, 0.1]), rng))))
    rng.shuffle(docs)
    ids = [d["id"] for d in docs]
    assert len(docs) >= 200

    hasher = MinHasher()
    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    minhashes = {}
    for d in docs:
        minhashes[d["id"]] = hasher.minhash(normalize_text(d["text"]).encode().split())
        lsh.insert(d["id"], minhashes[d["id"]])
    pairs = [(x, y) for x in ids for y in lsh.query(minhashes[x]) if y != x]
    expected = clusters_of(pairs, ids)
    assert 30 <= len(expected) < 60  # the similarities straddle the threshold: some families split

    config = DedupConfig(exact=False, minhash=MinHashConfig(verify_threshold=None, key_partitions=3))
    _, kept, dropped = run(tmp_path, tracking_uri, [docs[:90], docs[90:170], docs[170:]], config)
    got = clusters_of([(d["id"], d["duplicate_of"]) for d in dropped], ids)
    assert got == expected
    position = {x: i for i, x in enumerate(ids)}
    for cluster in got:  # the kept document is each cluster's earliest
        assert min(cluster, key=position.get) in {d["id"] for d in kept}


# --- ground truth --------------------------------------------------------------------------------


def label(page: str, original: str | None = None, kind: str | None = None, j: float | None = None) -> dict:
    url = f"https://site.example/{page}"
    return {"page_id": page, "url": url, "duplicate_of": original, "duplicate_kind": kind, "jaccard": j}


def test_truth_scores_clusters_not_pairs():
    labels = {
        x["url"]: x
        for x in [
            label("o1"),
            label("c1", "o1", "exact", 1.0),  # copy dropped: found
            label("o2"),
            label("c2", "o2", "near", 0.9),  # original dropped, copy kept: found too
            label("o3"),
            label("c3", "o3", "near", 0.85),  # missed
            label("o4"),
            label("c4", "o4", "near", 0.6),  # missed, below J 0.8
            label("u1"),  # unique, dropped: false positive
            label("o5"),
            label("c5", "o5", "exact", 1.0),  # both dropped (into some other cluster): c5 found, o5 wrong
        ]
    }
    urls = [*labels, "https://site.example/unlabelled"]
    index = {u.rsplit("/", 1)[1]: i for i, u in enumerate(urls)}
    dropped = {index[p] for p in ("c1", "o2", "u1", "o5", "c5", "unlabelled")}
    truth = dedup_truth(labels, urls, dropped)
    assert truth["truth.exact_dup_recall"] == 1.0
    assert truth["truth.near_dup_recall_j80"] == 0.5  # c2 yes, c3 no
    assert truth["truth.near_dup_recall"] == pytest.approx(1 / 3)
    assert truth["truth.dedup_precision"] == pytest.approx(2 / 5)  # c1, o2 right; u1, o5, c5 wrong
    assert truth["truth.false_positives"] == 3
    # an original that never entered the stage leaves its copy nothing to be a duplicate of
    assert dedup_truth(labels, urls[1:], set())["truth.exact_dups_in"] == 1


def test_stage_reports_truth_against_labels(tmp_path, tracking_uri):
    rng = random.Random(19)
    texts = {f"p{i}": " ".join(words(rng)) for i in range(4)}
    texts["p4"] = texts["p0"]
    texts["p5"] = " ".join(edited(texts["p1"].split(), 0.01, rng))
    labels = [label(p) for p in ("p0", "p1", "p2", "p3")]
    labels += [
        label("p4", "p0", "exact", 1.0),
        label("p5", "p1", "near", true_jaccard(texts["p1"], texts["p5"])),
    ]
    record, _, _ = run(tmp_path, tracking_uri, [[doc(p, t) for p, t in texts.items()]], labels=labels)
    assert record.metrics["truth.exact_dup_recall"] == 1.0
    assert record.metrics["truth.near_dup_recall_j80"] == 1.0
    assert record.metrics["truth.dedup_precision"] == 1.0
    # What the bands and rows imply is a setting: a param, not a metric.
    run_data = MlflowClient(tracking_uri).get_run(record.mlflow_run_id).data
    assert float(run_data.params["lsh.threshold"]) == pytest.approx(lsh_threshold(14, 8))
    assert not any(k.startswith("lsh.") for k in run_data.metrics)
    assert run_data.metrics["signatures_per_s_per_cpu"] > 0


def test_truth_with_nothing_to_check_has_no_scores():
    """No labelled copy entered, nothing dropped: no recall and no precision, not a perfect 1.0."""
    labels = {x["url"]: x for x in [label("o1"), label("u1")]}
    truth = dedup_truth(labels, list(labels), set())
    for key in ("near_dup_recall_j80", "near_dup_recall", "exact_dup_recall", "dedup_precision"):
        assert truth[f"truth.{key}"] is None
    assert truth["truth.exact_dups_in"] == 0 and truth["truth.false_positives"] == 0
    # one exact copy, found; no near copy: the near recalls stay None
    labels |= {x["url"]: x for x in [label("c1", "o1", "exact", 1.0)]}
    urls = list(labels)
    truth = dedup_truth(labels, urls, {urls.index("https://site.example/c1")})
    assert truth["truth.exact_dup_recall"] == 1.0 and truth["truth.dedup_precision"] == 1.0
    assert truth["truth.near_dup_recall"] is None and truth["truth.near_dup_recall_j80"] is None


def test_stage_with_no_labelled_duplicate_reports_no_truth_scores(tmp_path, tracking_uri):
    rng = random.Random(5)
    texts = {f"p{i}": " ".join(words(rng)) for i in range(3)}
    labels = [label(p) for p in texts]
    record, kept, _ = run(tmp_path, tracking_uri, [[doc(p, t) for p, t in texts.items()]], labels=labels)
    assert len(kept) == 3
    assert not any(k.startswith("truth.") for k in record.metrics)
    metrics = MlflowClient(tracking_uri).get_run(record.mlflow_run_id).data.metrics
    assert metrics["truth.near_dups_in"] == 0 and "truth.near_dup_recall" not in metrics
    assert "truth.dedup_precision" not in metrics


# --- resume after a kill -------------------------------------------------------------------------


KILLER = """
import os, signal, sys
from pathlib import Path
from components.core.artifacts import Artifact
from components.core.stage import RunEnv, run_stage
from components.data import dedup as module

real, calls = module.compute_signatures, []
def dying(texts, config):
    calls.append(1)
    if len(calls) == 3:  # two shards' signatures are on disk: the worker dies mid-stage
        os.kill(os.getpid(), signal.SIGKILL)
    return real(texts, config)
module.compute_signatures = dying
art = Artifact.model_validate_json(Path(sys.argv[1]).read_text())
env = RunEnv.model_validate_json(Path(sys.argv[2]).read_text())
run_stage(module.dedup, module.DedupConfig(), {"documents": art}, env)
"""


def test_stage_resumes_after_a_kill_reusing_finished_signatures(tmp_path, tracking_uri, monkeypatch):
    rng = random.Random(23)
    base = words(rng)
    shards = [
        [doc(f"s{s}-{i}", " ".join(edited(base, 0.01, rng) if i == 0 else words(rng))) for i in range(3)]
        for s in range(4)
    ]
    art = write_input(tmp_path / "input", shards)
    env = RunEnv(
        run_id="t", store=str(tmp_path / "store"), tracking_uri=tracking_uri, experiment="test_dedup"
    )
    (tmp_path / "art.json").write_text(art.model_dump_json())
    (tmp_path / "env.json").write_text(env.model_dump_json())
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(KILLER),
            str(tmp_path / "art.json"),
            str(tmp_path / "env.json"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    work = next(Path(tmp_path, "store", "stages", "dedup").iterdir())
    assert not (work / "stage.json").exists()
    finished = sorted(p.name for p in (work / "_work" / "signatures").glob("*.parquet"))
    assert finished == ["part-00000.parquet", "part-00001.parquet"]

    recomputed = []
    real = dedup_module.compute_signatures
    monkeypatch.setattr(
        dedup_module, "compute_signatures", lambda texts, config: recomputed.append(1) or real(texts, config)
    )
    record = run_stage(dedup, DedupConfig(), {"documents": art}, env)
    assert record.status == "done" and len(recomputed) == 2  # only the two unfinished shards
    kept = read_dir(record.outputs["documents"].uri)
    assert [d["id"] for d in kept if d["id"].endswith("-0")] == ["s0-0"]  # the four near copies collapsed
    assert record.metrics["dropped_near"] == 3 and len(kept) == 9


@pytest.mark.slow
def test_same_result_as_ray_tasks(ray_cluster, tmp_path, tracking_uri):
    """With Ray up, every phase runs as Ray tasks (one per shard, band or verification group)."""
    rng = random.Random(29)
    base = words(rng)
    shards = [
        [doc(f"s{s}-{i}", " ".join(edited(base, 0.01, rng) if i < 2 else words(rng))) for i in range(4)]
        for s in range(3)
    ]
    shards[2].append(doc("exact", shards[0][2]["text"]))
    record, kept, dropped = run(tmp_path, tracking_uri, shards)
    assert [d["id"] for d in kept] == ["s0-0", "s0-2", "s0-3", "s1-2", "s1-3", "s2-2", "s2-3"]
    assert kept[0]["dup_cluster_size"] == 6 and kept[1]["dup_cluster_size"] == 2
    assert record.metrics["dropped_near"] == 5 and ray_cluster.is_initialized()
    assert sorted((d["id"], d["duplicate_of"], d["drop_reason"]) for d in dropped) == [
        ("exact", "s0-2", "dedup.exact"),
        *[(f"s{s}-{i}", "s0-0", "dedup.near") for s, i in [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]],
    ]

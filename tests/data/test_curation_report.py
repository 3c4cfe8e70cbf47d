"""The curation report on a small hand-built set of stage outputs: funnel counts, page fates, overall
junk precision/recall, good pages kept (also through a duplicate), the PNG and the MLflow artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.core.artifacts import Artifact, ArtifactStore
from components.core.stage import run_stage
from components.data.curation_report import (
    CurationReportConfig,
    curation_report,
    funnel,
    overall_truth,
    page_fates,
)
from components.io.documents import write_documents

# page_id: (category, junk_class, language, duplicate_of, what happens to it)
PAGES = {
    "p0": ("good", None, "en", None, "kept"),
    "p1": ("good", None, "en", None, "quality/gopher_quality.too_few_words"),
    "p2": ("good", None, "en", None, "dedup/dedup.near"),
    "p3": ("duplicate", None, "en", "p2", "kept"),
    "p4": ("junk", "spam", "en", None, "quality/fineweb_quality.short_lines"),
    "p5": ("junk", "blocklisted_domain", "en", None, "url_filter/url_filter.blocklisted_domain"),
    "p6": ("junk", "short", "en", None, "kept"),
    "p7": ("hostile", "binary", None, None, "not_ingested"),
    "p8": ("hostile", "malformed_html", "en", None, "extract/extract.empty_text"),
    "p9": ("good", None, "de", None, "language/language.not_wanted"),
    "p10": ("leaked", None, "en", None, "decontaminate/decontaminate.contaminated"),
    "p11": ("good", None, "en", None, "kept"),
}
ORDER = ["url_filter", "extract", "language", "quality", "model_quality", "dedup", "pii", "decontaminate"]


def url(pid: str) -> str:
    return f"https://site.example/{pid}"


def text(pid: str) -> str:
    # p0 still carries its PII value in the final corpus; p11's was anonymised by the pii stage.
    return {
        "p0": "Call +44 20 7946 0958.",
        "p11": "Call 555-0100.",
        "p4": "Cheap pills { today } -- mail jane.doe@pharma-deals.com now.",
    }.get(pid, f"Text of {pid}.")


def build(tmp_path: Path) -> dict[str, Artifact]:
    """Stage outputs as the curation would leave them; model_quality is switched off (passthrough)."""
    store = ArtifactStore(tmp_path / "store")

    def documents(uri: str, pids: list[str], **extra) -> None:
        docs = [{"id": pid, "url": url(pid), "text": text(pid), **extra} for pid in pids]
        write_documents(store, store.join(uri, "part-00000.parquet"), docs)

    def art(uri: str) -> Artifact:
        return Artifact(uri=uri, kind="documents", digest=store.digest(uri))

    inputs: dict[str, Artifact] = {}
    alive = [p for p, v in PAGES.items() if v[4] != "not_ingested"]
    documents(store.uri("ingest", "documents"), alive)
    inputs["ingest_documents"] = art(store.uri("ingest", "documents"))
    for stage_name in ORDER:
        if stage_name == "model_quality":  # off: its documents are its input's, no `dropped`
            inputs["model_quality_documents"] = inputs["quality_documents"]
            continue
        drops: dict[str, list[str]] = {}
        for pid, (*_, fate) in PAGES.items():
            if fate.startswith(stage_name + "/"):
                drops.setdefault(fate.split("/", 1)[1], []).append(pid)
        gone = {p for pids in drops.values() for p in pids}
        alive = [p for p in alive if p not in gone]
        documents(store.uri(stage_name, "documents"), alive)
        dropped_uri = store.uri(stage_name, "dropped")
        store.makedirs(dropped_uri)
        for reason, pids in drops.items():
            documents(store.join(dropped_uri, reason), pids, drop_reason=reason)
        inputs[f"{stage_name}_documents"] = art(store.uri(stage_name, "documents"))
        inputs[f"{stage_name}_dropped"] = art(dropped_uri)
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    with open(crawl / "labels.jsonl", "w") as f:
        for pid, (category, junk_class, language, duplicate_of, _) in PAGES.items():
            label = {
                "page_id": pid,
                "url": url(pid),
                "category": category,
                "junk_class": junk_class,
                "language": language,
                "duplicate_of": duplicate_of,
                "pii": [{"type": "phone", "value": "+44 20 7946 0958"}] if pid in ("p0", "p11") else [],
                "contaminated_with": ["c1.capital"] if category == "leaked" else [],
            }
            f.write(json.dumps(label) + "\n")
    inputs["labels"] = Artifact(uri=str(crawl), kind="warc", digest="labels")
    return inputs


def test_funnel_counts(tmp_path):
    inputs = build(tmp_path)
    top, rows = funnel(ArtifactStore(tmp_path / "store"), inputs)
    assert top["documents_out"] == 11
    got = [(r["stage"], r["status"], r["documents_in"], r["documents_out"]) for r in rows]
    assert got == [
        ("url_filter", "ran", 11, 10),
        ("extract", "ran", 10, 9),
        ("language", "ran", 9, 8),
        ("quality", "ran", 8, 6),
        ("model_quality", "off", 6, 6),
        ("dedup", "ran", 6, 5),
        ("pii", "ran", 5, 5),
        ("decontaminate", "ran", 5, 4),
    ]
    quality = rows[3]
    assert quality["drops"] == {"fineweb_quality.short_lines": 1, "gopher_quality.too_few_words": 1}
    assert all("unaccounted" not in r for r in rows)


def test_report_stage(tmp_path, tracking_uri, run_env):
    inputs = build(tmp_path)
    env = run_env
    record = run_stage(curation_report, CurationReportConfig(), inputs, env)
    m = record.metrics
    assert m["documents_initial"] == 11 and m["documents_final"] == 4
    assert m["junk_precision"] == 3 / 4  # p5, p8, p4 junk/hostile; p1 a good page
    assert m["junk_recall"] == 2 / 3  # spam and blocklisted removed, the short page kept
    assert m["good_kept_fraction"] == 3 / 4  # p0, p11, and p2 through its kept duplicate p3
    assert m["good_en_kept"] == 3 and m["final_junk"] == 1 and m["final_pii_values"] == 1

    out = Path(record.outputs["report"].uri)
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert [s["documents_out"] for s in report["stages"]] == [10, 9, 8, 6, 6, 5, 5, 4]
    truth = report["truth"]
    assert truth["page_fates"] == {pid: v[4] for pid, v in PAGES.items()}
    assert truth["junk_stage_false_positives"] == {"good": {"quality/gopher_quality.too_few_words": 1}}
    assert {c: e["recall"] for c, e in truth["junk_recall_by_class"].items()} == {
        "blocklisted_domain": 1.0,
        "short": 0.0,
        "spam": 1.0,
    }
    assert truth["hostile_fates"] == {
        "binary": {"not_ingested": 1},
        "malformed_html": {"extract/extract.empty_text": 1},
    }
    assert (
        truth["good_en_pages"] == 4 and truth["good_en_kept"] == 2 and truth["good_en_kept_fraction"] == 0.5
    )
    assert truth["good_en_lost_by"] == {"quality/gopher_quality.too_few_words": 1}
    assert truth["final_by_category"] == {"duplicate": 1, "good": 2, "junk": 1}
    assert truth["final_leaked_pages"] == 0 and truth["final_non_english_good"] == 0

    client = MlflowClient(tracking_uri)
    logged = {a.path for a in client.list_artifacts(record.mlflow_run_id)}
    assert {"funnel.png", "report.json"} <= logged
    metrics = client.get_run(record.mlflow_run_id).data.metrics
    assert metrics["truth.junk_recall.short"] == 0.0 and metrics["quality.documents_out"] == 6


def test_what_each_rule_dropped_is_in_mlflow(tmp_path, tracking_uri, run_env):
    """Per stage and reason: a count metric, a row of the `drops.json` table and a sample of the dropped
    documents with their text -- scrubbed of PII -- in the report's MLflow run."""
    record = run_stage(curation_report, CurationReportConfig(samples_per_reason=3), build(tmp_path), run_env)
    client = MlflowClient(tracking_uri)
    run = client.get_run(record.mlflow_run_id)
    assert run.data.metrics["quality.dropped.fineweb_quality.short_lines"] == 1
    assert run.data.metrics["url_filter.dropped.url_filter.blocklisted_domain"] == 1
    assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [{"path": "drops.json", "type": "table"}]

    local = Path(client.download_artifacts(record.mlflow_run_id, "", str(tmp_path / "mlflow")))
    table = json.loads((local / "drops.json").read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    by_reason = {(r["stage"], r["reason"]): r for r in rows}
    fates = {v[4] for v in PAGES.values() if "/" in v[4]}
    assert set(by_reason) == {tuple(f.split("/", 1)) for f in fates}  # every stage and reason, nothing else
    spam = by_reason[("quality", "fineweb_quality.short_lines")]
    assert spam["dropped"] == 1 and spam["share_of_stage_input"] == round(1 / 8, 4)
    for (stage_name, reason), row in by_reason.items():
        lines = (local / row["samples"]).read_text().splitlines()
        assert row["samples"] == f"samples/dropped/{stage_name}/{reason}.jsonl"
        samples = [json.loads(line) for line in lines]
        pids = [pid for pid, v in PAGES.items() if v[4] == f"{stage_name}/{reason}"]
        assert [s["url"] for s in samples] == [url(p) for p in pids]
        assert all(s["drop_reason"] == reason and s["text"] for s in samples)
    (spam_sample,) = [json.loads(x) for x in (local / spam["samples"]).read_text().splitlines()]
    assert spam_sample["text"] == "Cheap pills { today } -- mail email@example.com now."  # scrubbed
    assert "jane.doe" not in (local / spam["samples"]).read_text()


def test_fractions_of_nothing_are_not_reported(tmp_path, tracking_uri, run_env):
    """Junk precision over stages that dropped nothing has nothing to check: null in the JSON, no metric;
    the scores that do have something to check keep their values."""
    env = run_env
    record = run_stage(curation_report, CurationReportConfig(junk_stages=["pii"]), build(tmp_path), env)
    assert "junk_precision" not in record.metrics
    assert record.metrics["junk_recall"] == 2 / 3 and record.metrics["good_kept_fraction"] == 3 / 4
    report = json.loads((Path(record.outputs["report"].uri) / "report.json").read_text())
    assert report["truth"]["junk_precision"] is None and report["truth"]["junk_stage_drops"] == 0
    assert report["kept_fraction"] == 4 / 11
    metrics = MlflowClient(tracking_uri).get_run(record.mlflow_run_id).data.metrics
    assert "truth.junk_precision" not in metrics and metrics["truth.junk_recall"] == 2 / 3

    labels = {url(p): {"page_id": p, "url": url(p), "category": "junk", "junk_class": "spam"} for p in ("a",)}
    truth = overall_truth(labels, {url("a"): "kept"}, {url("a"): "Buy."}, ["quality"])
    assert truth["junk_precision"] is None and truth["junk_recall"] == 0.0  # a real miss
    assert truth["good_en_pages"] == 0 and truth["good_kept_fraction"] is None
    assert truth["good_en_kept_fraction"] is None


def test_report_without_labels_or_some_stages(tmp_path, run_env):
    """Only two stages wired, no labels, no ingest: counts only, and the funnel still draws."""
    full = build(tmp_path)
    inputs = {k: v for k, v in full.items() if k.startswith(("dedup_", "pii_"))}
    env = run_env
    record = run_stage(curation_report, CurationReportConfig(), inputs, env)
    assert record.metrics == {"documents_initial": 6.0, "documents_final": 5.0}
    report = json.loads((Path(record.outputs["report"].uri) / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["dedup", "pii"] and "truth" not in report
    assert (Path(record.outputs["report"].uri) / "funnel.png").stat().st_size > 1000


def test_documents_lost_without_a_reason_are_flagged(tmp_path):
    store = ArtifactStore(tmp_path)
    write_documents(store, store.uri("in", "part-0.parquet"), [{"url": url(p)} for p in ("p0", "p1", "p2")])
    write_documents(store, store.uri("out", "part-0.parquet"), [{"url": url("p0")}])
    write_documents(store, store.uri("dropped", "x.bad", "part-0.parquet"), [{"url": url("p1")}])
    inputs = {
        "ingest_documents": Artifact(uri=store.uri("in"), kind="documents", digest="a"),
        "url_filter_documents": Artifact(uri=store.uri("out"), kind="documents", digest="b"),
        "url_filter_dropped": Artifact(uri=store.uri("dropped"), kind="dropped_documents", digest="c"),
    }
    _, rows = funnel(store, inputs)
    assert rows[0]["unaccounted"] == 1
    labels = {url(p): {"page_id": p} for p in ("p0", "p1", "p2", "p3")}
    fates = page_fates(store, inputs, labels, {url("p0")})
    assert fates == {
        url("p0"): "kept",
        url("p1"): "url_filter/x.bad",
        url("p2"): "lost",
        url("p3"): "not_ingested",
    }


@pytest.mark.parametrize("reasons", [0, 3])
def test_funnel_figure_handles_many_reasons(reasons):
    from components.data.curation_report import funnel_figure

    rows = [
        {
            "stage": "quality",
            "status": "ran",
            "documents_in": 100,
            "documents_out": 40,
            "documents_dropped": 60,
            "drops": {f"rule_{i}.a_rather_long_reason_name_for_this_rule": 10 for i in range(6)},
        }
    ]
    fig = funnel_figure({"documents_out": 100}, rows, reasons)
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert any(n.startswith("−60: ") for n in notes)
    assert any("more 30" in n for n in notes) is (reasons == 3)

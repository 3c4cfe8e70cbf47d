"""The curation report: the funnel of the whole curation and, on the tiny world, its overall truth.

Inputs are the `documents` and `dropped` artifacts of every curation stage (`url_filter_documents`,
`url_filter_dropped`, ..., `decontaminate_dropped`), all optional, plus the ingest output (the top of
the funnel) and the crawl's labels. A stage whose inputs are not wired is left out; a switched-off
stage hands its input documents on and has no `dropped`, so it shows as "off" with no drops.

Outputs (the `report` artifact, also logged to MLflow):
- `funnel.png`: documents remaining after each stage, each bar split into kept and dropped, with the
  largest drop reasons written beside it;
- `report.json`: per stage documents in/out and drops by reason; with labels, the fate of every
  labelled page (`kept`, `<stage>/<reason>`, `not_ingested`: skipped by ingest -- binary, empty,
  non-HTML, redirects, 404s --, or `lost`: entered but neither kept nor dropped with a reason), and:
  * junk precision: of the labelled documents dropped by the *junk stages* (URL filter, extraction,
    heuristic and model quality: the filters whose job is to find junk; language ID, dedup, PII and
    decontamination drop good text on purpose), the fraction labelled junk or hostile. Good pages,
    duplicates of good pages and leaked quiz pages dropped there are its false positives;
  * junk recall per junk class: the fraction of that class's pages that did not reach the final
    corpus, whichever stage removed them (hostile classes are listed separately by fate);
  * good English pages: how many reached the final corpus, by URL and by content (the page itself or
    one of its labelled duplicates: dedup keeps one copy of a cluster, not necessarily the original),
    and where the others were lost;
  * what the final corpus holds by category, and labelled PII values / leaked pages left in it.
  A fraction of nothing (no junk-stage drop, no good English page, nothing ingested) is null in the
  JSON and left out of the metrics: no number rather than a perfect one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from components.core.artifacts import Artifact, ArtifactStore
from components.core.stage import StageContext, stage
from components.data.curation_report_config import CURATION_STAGES, SPEC, CurationReportConfig
from components.data.documents import dropped_urls, load_labels
from components.data.pii import log_dropped_samples
from components.io.documents import count_documents, iter_documents, ratio

JUNK_CATEGORIES = frozenset({"junk", "hostile"})


# --- counting ------------------------------------------------------------------------------------


def count_drops(store: ArtifactStore, dropped: Artifact) -> dict[str, int]:
    """Dropped documents per reason (the reason directories of a `dropped` artifact)."""
    out = {}
    for reason in store.listdir(dropped.uri):
        n = count_documents(store, store.join(dropped.uri, reason))
        if n:
            out[reason] = n
    return out


def _urls(store: ArtifactStore, artifact: Artifact) -> set[str]:
    return {d["url"] for d in iter_documents(store, artifact.uri, columns=["url"])}


def funnel(store: ArtifactStore, inputs: dict[str, Artifact]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(top of the funnel, one row per curation stage present): documents in/out, drops by reason."""
    top: dict[str, Any] = {"stage": "ingest", "documents_out": None}
    if "ingest_documents" in inputs:
        top["documents_out"] = count_documents(store, inputs["ingest_documents"].uri)
    rows = []
    previous = top["documents_out"]
    for name in CURATION_STAGES:
        documents = inputs.get(f"{name}_documents")
        if documents is None:
            continue
        dropped = inputs.get(f"{name}_dropped")
        out = count_documents(store, documents.uri)
        drops = count_drops(store, dropped) if dropped is not None else {}
        row = {
            "stage": name,
            "status": "ran" if dropped is not None else "off",
            "documents_in": out + sum(drops.values()),
            "documents_out": out,
            "documents_dropped": sum(drops.values()),
            "drops": dict(sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
        if previous is not None and previous != row["documents_in"]:
            # Documents that vanished between stages without a recorded reason (should never happen).
            row["unaccounted"] = previous - row["documents_in"]
        rows.append(row)
        previous = out
    return top, rows


# --- truth ---------------------------------------------------------------------------------------


def page_fates(
    store: ArtifactStore, inputs: dict[str, Artifact], labels: dict[str, dict], final: set[str]
) -> dict[str, str]:
    """url -> "kept" | "<stage>/<reason>" | "not_ingested" | "lost", for every labelled page."""
    dropped_by: dict[str, str] = {}
    seen: set[str] = set(final)
    for name in CURATION_STAGES:
        dropped = inputs.get(f"{name}_dropped")
        if dropped is not None:
            for url, reason in dropped_urls(store, dropped).items():
                dropped_by.setdefault(url, f"{name}/{reason}")
        documents = inputs.get(f"{name}_documents")
        if documents is not None:
            seen |= _urls(store, documents)
    ingest = inputs.get("ingest_documents")
    ingested = _urls(store, ingest) if ingest is not None else seen | set(dropped_by)
    fates = {}
    for url in labels:
        if url in final:
            fates[url] = "kept"
        elif url in dropped_by:
            fates[url] = dropped_by[url]
        elif url in ingested:
            fates[url] = "lost"
        else:
            fates[url] = "not_ingested"
    return fates


def overall_truth(
    labels: dict[str, dict], fates: dict[str, str], final_text: dict[str, str], junk_stages: list[str]
) -> dict[str, Any]:
    """The whole curation against the labels; `final_text`: url -> text of the final corpus."""
    by_id = {label["page_id"]: label for label in labels.values()}

    # Junk precision over the junk stages' drops.
    junk_drops = {u: f for u, f in fates.items() if f.split("/", 1)[0] in junk_stages}
    junk_tp = sum(labels[u]["category"] in JUNK_CATEGORIES for u in junk_drops)
    false_positives: dict[str, Counter] = defaultdict(Counter)
    for url, fate in junk_drops.items():
        category = labels[url]["category"]
        if category not in JUNK_CATEGORIES:
            false_positives[category][fate] += 1

    # Junk recall per class; hostile pages by fate.
    junk_classes: dict[str, dict[str, Any]] = {}
    hostile: dict[str, Counter] = defaultdict(Counter)
    for url, label in labels.items():
        if label["category"] == "junk":
            entry = junk_classes.setdefault(
                label["junk_class"], {"pages": 0, "removed": 0, "fates": Counter()}
            )
            entry["pages"] += 1
            entry["removed"] += fates[url] != "kept"
            entry["fates"][fates[url]] += 1
        elif label["category"] == "hostile":
            hostile[label["junk_class"]][fates[url]] += 1
    for entry in junk_classes.values():
        entry["recall"] = ratio(entry["removed"], entry["pages"])
        entry["fates"] = dict(entry["fates"].most_common())
    junk_pages = sum(e["pages"] for e in junk_classes.values())
    junk_removed = sum(e["removed"] for e in junk_classes.values())

    # Good English pages: kept by URL, or by content through a labelled duplicate.
    copies: dict[str, list[str]] = defaultdict(list)
    for url, label in labels.items():
        if label.get("duplicate_of"):
            copies[label["duplicate_of"]].append(url)
    good_en = [u for u, lab in labels.items() if lab["category"] == "good" and lab["language"] == "en"]
    kept_url = [u for u in good_en if fates[u] == "kept"]
    kept_content = [
        u
        for u in good_en
        if fates[u] == "kept" or any(fates[c] == "kept" for c in copies[labels[u]["page_id"]])
    ]
    content = set(kept_content)
    lost = Counter(fates[u] for u in good_en if u not in content)

    # What the final corpus holds.
    final_labels = [labels[u] for u in final_text if u in labels]
    final_by_category = Counter(lab["category"] for lab in final_labels)
    pii_left = sum(p["value"] in final_text[lab["url"]] for lab in final_labels for p in lab.get("pii") or [])
    leaked_left = sum(bool(lab.get("contaminated_with")) for lab in final_labels)
    non_english_good = sum(lab["category"] == "good" and lab["language"] != "en" for lab in final_labels)

    return {
        "junk_precision": ratio(junk_tp, len(junk_drops)),
        "junk_stage_drops": len(junk_drops),
        "junk_stage_false_positives": {k: dict(v.most_common()) for k, v in sorted(false_positives.items())},
        "junk_recall": ratio(junk_removed, junk_pages),
        "junk_recall_by_class": dict(sorted(junk_classes.items())),
        "hostile_fates": {k: dict(v.most_common()) for k, v in sorted(hostile.items())},
        "good_en_pages": len(good_en),
        "good_en_kept": len(kept_url),
        "good_en_kept_fraction": ratio(len(kept_url), len(good_en)),
        "good_en_content_kept": len(kept_content),
        "good_kept_fraction": ratio(len(kept_content), len(good_en)),
        "good_en_lost_by": dict(lost.most_common()),
        "final_labelled": len(final_labels),
        "final_by_category": dict(sorted(final_by_category.items())),
        "final_junk": final_by_category.get("junk", 0) + final_by_category.get("hostile", 0),
        "final_non_english_good": non_english_good,
        "final_pii_values": pii_left,
        "final_leaked_pages": leaked_left,
        "page_fates": {pid: fates[label["url"]] for pid, label in sorted(by_id.items())},
    }


# --- the funnel plot ------------------------------------------------------------------------------


def _label(stage_name: str, reason: str) -> str:
    """A drop reason as the plot shows it: without its stage's own prefix, at most 38 characters."""
    reason = reason.removeprefix(stage_name + ".")
    return reason if len(reason) <= 38 else reason[:36] + "…"


def funnel_figure(top: dict[str, Any], rows: list[dict[str, Any]], reasons_per_stage: int = 3):
    """A horizontal bar per stage: kept (blue) and dropped (red) documents, biggest reasons beside it."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state inside a Ray worker

    bars: list[tuple[str, int, int, str]] = []  # name, kept, dropped, note
    if top["documents_out"] is not None:
        bars.append(("ingest", top["documents_out"], 0, "documents ingested"))
    for row in rows:
        drops = sorted(row["drops"].items(), key=lambda kv: (-kv[1], kv[0]))  # JSON may have re-sorted them
        shown = [f"{_label(row['stage'], r)} {n:,}" for r, n in drops[:reasons_per_stage]]
        rest = sum(n for _, n in drops[reasons_per_stage:])
        if rest:
            shown.append(f"{len(drops) - reasons_per_stage} more {rest:,}")
        if row["status"] == "off":
            note = "switched off"
        elif row["documents_dropped"]:
            note = f"−{row['documents_dropped']:,}: " + "; ".join(shown)
        else:
            note = "nothing dropped"
        name = row["stage"] + (" (off)" if row["status"] == "off" else "")
        bars.append((name, row["documents_out"], row["documents_dropped"], note))
    fig = Figure(figsize=(12, 1.0 + 0.55 * max(len(bars), 1)))
    ax = fig.subplots()
    names = [b[0] for b in bars]
    kept = [b[1] for b in bars]
    dropped = [b[2] for b in bars]
    y = list(range(len(bars)))
    ax.barh(y, kept, color="#4C78A8", label="remaining")
    ax.barh(y, dropped, left=kept, color="#E45756", alpha=0.75, label="dropped here")
    widest = max([k + d for k, d in zip(kept, dropped, strict=True)] or [1])
    for i, (_, k, d, note) in enumerate(bars):
        ax.text(k / 2, i, f"{k:,}", va="center", ha="center", color="white", fontsize=9, fontweight="bold")
        ax.text(k + d + widest * 0.01, i, note, va="center", ha="left", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()  # the crawl at the top, the final corpus at the bottom
    ax.set_xlim(0, widest * 2.1)  # room for the reasons
    ax.set_xticks([t for t in ax.get_xticks() if 0 <= t <= widest])
    ax.set_xlabel("documents")
    first = bars[0][1] + bars[0][2] if bars else 0
    last = bars[-1][1] if bars else 0
    share = f" ({last / first:.1%} kept)" if first else ""
    ax.set_title(f"Curation funnel: {first:,} → {last:,} documents{share}")
    ax.legend(loc="lower right", fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


# --- what each rule dropped, inspectable in MLflow -------------------------------------------------


def drop_table(rows: list[dict[str, Any]], samples: bool) -> list[dict[str, Any]]:
    """One row per stage and drop reason -- how many, what share of the stage's input, and where its
    scrubbed sample is -- for the MLflow table `drops.json`."""
    table = []
    for row in rows:
        for reason, n in row["drops"].items():
            table.append(
                {
                    "stage": row["stage"],
                    "reason": reason,
                    "dropped": n,
                    "share_of_stage_input": round(n / row["documents_in"], 4),
                    "samples": f"samples/dropped/{row['stage']}/{reason}.jsonl" if samples else None,
                }
            )
    return table


# --- the stage -----------------------------------------------------------------------------------


@stage(SPEC)
def curation_report(
    ctx: StageContext, config: CurationReportConfig, inputs: dict[str, Artifact]
) -> dict[str, Artifact]:
    """The funnel of the whole curation (PNG + JSON), what each rule dropped (counts, a table and scrubbed
    samples per stage and reason) and, with labels, its overall precision/recall."""
    store = ctx.store
    top, rows = funnel(store, inputs)
    if not rows:
        ctx.log.warning("curation_report: no curation stage output is wired; the report is empty")
    initial = (
        top["documents_out"] if top["documents_out"] is not None else (rows[0]["documents_in"] if rows else 0)
    )
    final = rows[-1]["documents_out"] if rows else initial
    report: dict[str, Any] = {
        "documents_initial": initial,
        "documents_final": final,
        "kept_fraction": ratio(final, initial),
        "stages": rows,
    }
    headline: dict[str, float | None] = {"documents_initial": initial, "documents_final": final}
    metrics: dict[str, float | None] = {}
    for row in rows:
        metrics[f"{row['stage']}.documents_in"] = row["documents_in"]
        metrics[f"{row['stage']}.documents_out"] = row["documents_out"]
        metrics.update({f"{row['stage']}.dropped.{reason}": n for reason, n in row["drops"].items()})

    labels = load_labels(store, inputs.get("labels"))
    final_artifact = next(
        (inputs[f"{n}_documents"] for n in reversed(CURATION_STAGES) if f"{n}_documents" in inputs), None
    )
    if labels and final_artifact is not None:
        final_text = {
            d["url"]: d.get("text") or ""
            for d in iter_documents(store, final_artifact.uri, columns=["url", "text"])
        }
        fates = page_fates(store, inputs, labels, set(final_text))
        truth = overall_truth(labels, fates, final_text, config.junk_stages)
        report["truth"] = truth
        for key in ("junk_precision", "junk_recall", "good_kept_fraction", "good_en_kept_fraction"):
            metrics[f"truth.{key}"] = truth[key]
        for key in ("good_en_kept", "good_en_content_kept", "final_junk", "final_pii_values"):
            metrics[f"truth.{key}"] = truth[key]
        metrics.update(
            {f"truth.junk_recall.{c}": e["recall"] for c, e in truth["junk_recall_by_class"].items()}
        )
        headline.update(
            junk_precision=truth["junk_precision"],
            junk_recall=truth["junk_recall"],
            good_kept_fraction=truth["good_kept_fraction"],
            good_en_kept=truth["good_en_content_kept"],
            final_junk=truth["final_junk"],
            final_pii_values=truth["final_pii_values"],
        )
    ctx.log_metrics(metrics)

    out_uri = ctx.output_uri("report")
    store.makedirs(out_uri)
    store.write_json(store.join(out_uri, "report.json"), report)
    figure = funnel_figure(top, rows, config.reasons_per_stage)
    with store.atomic_write(store.join(out_uri, "funnel.png")) as f:
        figure.savefig(f, format="png", dpi=110, bbox_inches="tight")
    ctx.tracker.log_figure(figure, "funnel.png")
    ctx.tracker.log_dict(report, "report.json")
    ctx.tracker.log_table(drop_table(rows, config.samples_per_reason > 0), "drops.json")
    for name in CURATION_STAGES:  # "what did the curly-bracket rule drop?", answered in one place
        if (dropped := inputs.get(f"{name}_dropped")) is not None:
            log_dropped_samples(ctx, dropped, config.samples_per_reason, prefix=f"dropped/{name}/")
    ctx.report(**headline)
    return {"report": ctx.artifact("report", kind="curation_report", documents_final=final)}

"""Ground-truth scores of a junk filter: what it dropped, judged by the tiny world's labels.

Any stage that drops junk can use this. Everything is measured over the documents that ENTERED the
stage: junk removed upstream is not this stage's miss.

- recall per junk class: the fraction of that class's entering documents this stage dropped
  (`truth.junk_recall.<class>`); hostile record kinds count as junk classes.
- precision: the fraction of dropped documents whose label category is junk or hostile, i.e. not
  good, duplicate or leaked (`truth.junk_precision`). Dropping a duplicate is a mistake here: that is
  the dedup stage's work, and its copy may be the one dedup would keep.
- the good pages lost (`truth.good_dropped`), and drops per category (`truth.dropped.<category>`).
- the same per block, the part before the first '.' of the drop reason (`truth.<block>.junk_recall.
  <class>`, `truth.<block>.junk_precision`, `truth.<block>.good_dropped`): a block's recall is over the
  documents entering the stage, so the blocks' recalls add up to the stage's.
Documents without a label (not from the tiny world) are left out of every number. A precision when
nothing labelled was dropped, or a recall when no junk entered, is None (no number), not 1.0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from components.core.artifacts import Artifact
from components.core.stage import StageContext
from components.data.documents import dropped_urls, load_labels
from components.io.documents import iter_documents, ratio

JUNK_CATEGORIES = frozenset({"junk", "hostile"})


def is_junk(label: dict) -> bool:
    return label.get("category") in JUNK_CATEGORIES


def junk_truth(
    labels: dict[str, dict], entering: Iterable[str], dropped: dict[str, str]
) -> dict[str, float | None]:
    """`truth.*` metrics of a filter. `labels`: url -> label; `entering`: urls of the documents that
    entered the stage; `dropped`: url -> drop reason ("<block>.<reason>") for those it dropped."""
    entering_labels = {url: labels[url] for url in entering if url in labels}
    classes_in = Counter(lab["junk_class"] for lab in entering_labels.values() if is_junk(lab))
    junk_in = sum(classes_in.values())
    out: dict[str, float | None] = {"truth.labelled_in": len(entering_labels), "truth.junk_in": junk_in}
    out |= _scores("truth", entering_labels, dropped, classes_in, junk_in)
    blocks = sorted({reason.split(".", 1)[0] for reason in dropped.values()})
    for block in blocks:
        mine = {url: r for url, r in dropped.items() if r.split(".", 1)[0] == block}
        out |= _scores(f"truth.{block}", entering_labels, mine, classes_in, junk_in)
    return out


def _scores(
    prefix: str,
    entering: dict[str, dict],
    dropped: dict[str, str],
    classes_in: Counter,
    junk_in: int,
) -> dict[str, float | None]:
    dropped_labels = [entering[url] for url in dropped if url in entering]
    junk_dropped = Counter(lab["junk_class"] for lab in dropped_labels if is_junk(lab))
    categories = Counter(lab["category"] for lab in dropped_labels)
    n_junk = sum(junk_dropped.values())
    out: dict[str, float | None] = {
        f"{prefix}.junk_precision": ratio(n_junk, len(dropped_labels)),
        f"{prefix}.junk_recall": ratio(n_junk, junk_in),
        f"{prefix}.good_dropped": categories["good"],
    }
    out |= {f"{prefix}.dropped.{cat}": n for cat, n in sorted(categories.items())}
    out |= {f"{prefix}.junk_recall.{cls}": junk_dropped[cls] / n for cls, n in sorted(classes_in.items())}
    return out


def labelled_drops(
    ctx: StageContext, inputs: dict[str, Artifact], dropped: Artifact
) -> tuple[dict[str, dict], list[str], dict[str, str]] | None:
    """What a filter stage is scored on: the tiny world's labels (url -> label), the urls of the
    documents that entered the stage and url -> drop reason of those it dropped; None when the stage
    has no `labels` input (not the tiny world)."""
    labels = load_labels(ctx.store, inputs.get("labels"))
    if labels is None:
        return None
    entering = [d["url"] for d in iter_documents(ctx.store, inputs["documents"].uri, columns=["url"])]
    return labels, entering, dropped_urls(ctx.store, dropped)


def report_junk_truth(
    ctx: StageContext,
    inputs: dict[str, Artifact],
    dropped: Artifact,
    more: Callable[[dict[str, dict]], dict[str, float | None]] | None = None,
) -> None:
    """Log a junk filter's `junk_truth` (and `more(labels)`, a stage's own truth metrics) and report its
    junk precision, junk recall and good pages dropped; nothing without labels."""
    scored = labelled_drops(ctx, inputs, dropped)
    if scored is None:
        return
    truth = junk_truth(*scored)
    if more is not None:
        truth |= more(scored[0])
    ctx.log_metrics(truth)
    ctx.report(
        junk_precision=truth["truth.junk_precision"],
        junk_recall=truth["truth.junk_recall"],
        good_dropped=truth["truth.good_dropped"],
    )

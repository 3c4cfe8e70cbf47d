"""Agreement with datatrove, rule set by rule set, on the same extracted real pages.

    .venv/bin/python tests/bench/curation_agreement.py --datatrove-python .venv-datatrove/bin/python
    .venv/bin/python tests/bench/curation_agreement.py --datatrove-python ... --warc PATH --extractor X

The pages: a WARC written by tests/realpages/build.py (default: the checked-in fixture; the full set of
~4,700 pages is `~/.cache/gptrecipe/realpages/debian-docs-all.warc.gz`). Our `extract` block (its
default config, or `--extractor`) turns each page into text once; every page with text is then judged
by each rule set of ours and by datatrove's implementation of the same published rules, each on the
same text and independently of the others (not chained: every rule set sees every page):

    ours (quality_rules.py, language.py)      datatrove 0.10 (FineWeb's pipeline)
    GopherRepetition                          GopherRepetitionFilter()
    GopherQuality                             GopherQualityFilter()
    C4                                        C4QualityFilter(filter_no_terminal_punct=False), as FineWeb
    FineWebQuality                            FineWebQualityFilter()
    LanguageFilter (lid.176, en, > 0.65)      LanguageFilter(languages=["en"], language_threshold=0.65)

Both sides use their default (published) thresholds and the same lid.176.ftz file. The quality rule
sets run on the pages that both language filters keep as English (what reaches them in the recipe;
Gopher's stop-word rule is English), the language filter on every page with text. Printed per rule
set: pages, keep/drop agreement, agreement on the decision and the reason (both keep, or both drop
for the same rule, datatrove's reason names mapped to ours), and every (ours, datatrove) pair that
disagrees with its count, then how many distinct texts those pages hold (the Debian Handbook's
editions repeat its untranslated pages). `--out DIR` writes the disagreeing pages (url, both
verdicts, text) as JSONL for inspection.

datatrove runs in its own venv (`make bench` builds .venv-datatrove); that interpreter runs this
file's `--worker` mode, which imports only datatrove and curation_throughput's datatrove helpers.
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from datatrove_side import run_worker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURE = ROOT / "tests" / "realpages" / "debian-docs.warc.gz"
# gopher_quality_no_alpha: both sides without the alpha-words rule, whose word counts differ (see
# "Curation vs datatrove" in the README), to show how the other nine rules agree.
RULE_SETS = ("gopher_repetition", "gopher_quality", "gopher_quality_no_alpha", "c4", "fineweb")

# datatrove's drop reasons under our names (the rule is the same; see quality_rules.py).
REASONS = {
    "gopher_repetition": {
        **{f"top_{n}_gram": f"top_{n}gram_char_frac" for n in (2, 3, 4)},
        **{f"duplicated_{n}_n_grams": f"dup_{n}gram_char_frac" for n in range(5, 11)},
    },
    "gopher_quality": {
        "gopher_short_doc": "too_few_words",
        "gopher_long_doc": "too_many_words",
        "gopher_below_avg_threshold": "short_mean_word_length",
        "gopher_above_avg_threshold": "long_mean_word_length",
        "gopher_too_many_hashes": "hash_ratio",
        "gopher_too_many_ellipsis": "ellipsis_ratio",
        "gopher_too_many_bullets": "bullet_lines",
        "gopher_too_many_end_ellipsis": "ellipsis_lines",
        "gopher_below_alpha_threshold": "alpha_words",
        "gopher_enough_stop_words": "stop_words",
    },
    "c4": {},
    "fineweb": {
        "line_punct_ratio": "line_punct_frac",
        "short_line_ratio": "short_line_frac",
        "char_dup_ratio": "dup_line_char_frac",
        "list_ratio": "newline_per_word",
    },
}
REASONS["gopher_quality_no_alpha"] = REASONS["gopher_quality"]


# --- datatrove's side (runs in the datatrove venv) -----------------------------------------------


def datatrove_verdicts(spec: dict) -> dict[str, list]:
    """rule set -> [keep or reason, ...] per text; "language" -> [[keep, label, score], ...]."""
    sys.path.insert(0, str(HERE))
    from curation_throughput import datatrove_language_filter
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "gopher_quality_no_alpha": GopherQualityFilter(max_non_alpha_words_ratio=None),
        "c4": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb": FineWebQualityFilter(),
    }
    language = datatrove_language_filter(spec["lid_model"])
    out: dict[str, list] = {"language": []}
    for i, text in enumerate(spec["texts"]):
        doc = Document(text=text, id=str(i))
        keep = bool(language.filter(doc))
        out["language"].append([keep, doc.metadata["language"], float(doc.metadata["language_score"])])
    for name, rule_set in filters.items():
        verdicts = []
        for i, text in enumerate(spec["texts"]):
            result = rule_set.filter(Document(text=text, id=str(i)))
            verdicts.append(
                None if result is True else (result[1] if isinstance(result, tuple) else "dropped")
            )
        out[name] = verdicts
    return out


# --- ours ----------------------------------------------------------------------------------------


def extracted_pages(warc: Path, extractor: str) -> list[tuple[str, str]]:
    """(url, text) of every page our extract block finds text in."""
    from components.data.extract import ExtractConfig, make_blocks
    from components.data.ingest import IngestConfig, read_pages

    [block] = make_blocks(ExtractConfig(extractor=extractor))
    with open(warc, "rb") as f:
        pages = list(read_pages(f, IngestConfig(), Counter()))
    out = []
    for page in pages:
        doc = {"url": page.url, "html": page.html}
        if block.process(doc) is None:
            out.append((page.url, doc["text"]))
    return out


def our_verdicts(texts: list[str]) -> dict[str, list]:
    from components.data import language
    from components.data.quality_config import (
        C4Config,
        FineWebQualityConfig,
        GopherQualityConfig,
        GopherRepetitionConfig,
    )
    from components.data.quality_rules import C4, FineWebQuality, GopherQuality, GopherRepetition

    config = language.LanguageConfig()
    [lid] = language.make_blocks(config, str(language.model_file(config)))
    docs = [{"text": t} for t in texts]
    keeps = lid.process_batch(docs)
    out: dict[str, list] = {
        "language": [
            [r is None, d["language"], d["language_score"]] for r, d in zip(keeps, docs, strict=True)
        ]
    }
    blocks = {
        "gopher_repetition": GopherRepetition(GopherRepetitionConfig()),
        "gopher_quality": GopherQuality(GopherQualityConfig()),
        "gopher_quality_no_alpha": GopherQuality(GopherQualityConfig(min_alpha_words_frac=None)),
        "c4": C4(C4Config()),
        "fineweb": FineWebQuality(FineWebQualityConfig()),
    }
    for name, block in blocks.items():
        out[name] = [block.process({"text": t}) for t in texts]
    return out


# --- comparison ----------------------------------------------------------------------------------


def run_datatrove(args: argparse.Namespace, texts: list[str], tmp: Path) -> dict[str, list]:
    from components.data.language import LanguageConfig, model_file

    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"texts": texts, "lid_model": str(model_file(LanguageConfig()))}))
    return run_worker(__file__, args.datatrove_python, [str(spec)], HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def agreement(ours: list, theirs: list, names: dict[str, str]) -> tuple[float, float, Counter]:
    """(keep/drop agreement, decision+reason agreement, Counter of disagreeing (ours, theirs) pairs)."""
    same_decision = same_reason = 0
    pairs: Counter = Counter()
    for o, t in zip(ours, theirs, strict=True):
        t = names.get(t, t) if t is not None else None
        same_decision += (o is None) == (t is None)
        same_reason += o == t
        if o != t:
            pairs[(o or "keep", t or "keep")] += 1
    n = len(ours)
    return same_decision / n, same_reason / n, pairs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datatrove-python", help="interpreter with datatrove installed (default: this one)")
    parser.add_argument("--warc", type=Path, default=FIXTURE)
    parser.add_argument("--extractor", default="trafilatura", choices=("trafilatura", "resiliparse"))
    parser.add_argument("--out", type=Path, help="write the disagreeing pages here (JSONL per rule set)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(datatrove_verdicts(json.loads(Path(args.worker).read_text()))))
        return
    sys.path.insert(0, str(ROOT))

    pages = extracted_pages(args.warc, args.extractor)
    urls, texts = [u for u, _ in pages], [t for _, t in pages]
    ours = our_verdicts(texts)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = run_datatrove(args, texts, Path(tmp))

    print(f"input: {args.warc.name}, {len(texts)} pages with text ({args.extractor})")
    print(f"\n{'rule set':18s} {'pages':>6s} {'keep/drop':>10s} {'+reason':>8s}   (ours, datatrove): pages")
    lang_ours = [None if k else "dropped" for k, _, _ in ours["language"]]
    lang_theirs = [None if k else "dropped" for k, _, _ in theirs["language"]]
    decision, _, pairs = agreement(lang_ours, lang_theirs, {})
    labels = sum(o[1] == t[1] for o, t in zip(ours["language"], theirs["language"], strict=True)) / len(texts)
    print(
        f"{'language':18s} {len(texts):6d} {decision:10.2%} {'-':>8s}   {dict(pairs)}; top label {labels:.2%}"
    )
    english = [i for i in range(len(texts)) if lang_ours[i] is None and lang_theirs[i] is None]
    disagreeing: dict[str, list] = {}
    for name in RULE_SETS:
        o = [ours[name][i] for i in english]
        t = [theirs[name][i] for i in english]
        decision, reason, pairs = agreement(o, t, REASONS[name])
        listed = ", ".join(f"({a}, {b}): {n}" for (a, b), n in pairs.most_common())
        disagreeing[name] = [
            {"url": urls[i], "ours": ours[name][i], "datatrove": theirs[name][i], "text": texts[i]}
            for i in english
            if ours[name][i]
            != (REASONS[name].get(theirs[name][i], theirs[name][i]) if theirs[name][i] else None)
        ]
        # The Debian Handbook's editions repeat its untranslated pages: one text can disagree many times.
        distinct = len({row["text"] for row in disagreeing[name]})
        listed += f"; {distinct} distinct texts" if listed else ""
        print(f"{name:18s} {len(english):6d} {decision:10.2%} {reason:8.2%}   {listed or '-'}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, rows in disagreeing.items():
            (args.out / f"{name}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            )
        print(f"\ndisagreeing pages written to {args.out}/")


if __name__ == "__main__":
    main()

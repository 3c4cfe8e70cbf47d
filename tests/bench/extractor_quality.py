"""trafilatura against resiliparse (`extract.extractor`): speed and main-text quality, on real pages.

    .venv/bin/python tests/bench/extractor_quality.py                  # the checked-in real-page fixture
    .venv/bin/python tests/bench/extractor_quality.py --warc PATH      # the full set (realpages/build.py)

Both extractors run with ExtractConfig's options (only `extractor` differs) over the same pages of a
WARC written by tests/realpages/build.py (Debian's PostgreSQL, Git and Debian Handbook HTML), and over
the tiny world's crawl. Printed per extractor:

- speed: pages per CPU-second of the extraction call alone (process time, median of `--repeats`).
- real pages, against a reference main text taken from each page's own markup. These are generated
  documentation pages with a fixed layout, so what is boilerplate is known: the navigation bars
  (DocBook's `div.navheader`/`div.navfooter` in PostgreSQL's pages; `#banner`, `p#title` and
  `ul.docnav` in the Handbook's; asciidoc's `#footer` in Git's), and, since neither extractor keeps
  tables by default (`include_tables: false`), tables. Everything else in <body> is the reference
  main text. Scores compare word multisets (words as quality_rules counts them), so they do not
  depend on how each extractor lays out lines: recall = reference words found in the output,
  precision = output words that are reference words, each summed over the pages; plus the pages
  with no output at all (dropped as `extract.empty`). A table of contents (index pages) counts as
  main text in the reference.
- the tiny world: `extract_truth` with its labels (main-text line recall, pages recovered in full,
  boilerplate characters leaked, boilerplate-only pages dropped as empty).

Prints figures, asserts nothing. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from components.data.extract import EXTRACTORS, ExtractConfig, extract_truth  # noqa: E402
from components.data.ingest import IngestConfig, read_pages  # noqa: E402
from components.data.quality_rules import words  # noqa: E402

FIXTURE = ROOT / "tests" / "realpages" / "debian-docs.warc.gz"
# What is not main text on the three packages' pages (see the module docstring).
BOILERPLATE = (
    "//head",
    "//script",
    "//style",
    "//table",
    "//div[contains(concat(' ', @class, ' '), ' navheader ')]",
    "//div[contains(concat(' ', @class, ' '), ' navfooter ')]",
    "//div[@id='banner']",
    "//p[@id='title']",
    "//ul[contains(concat(' ', @class, ' '), ' docnav ')]",
    "//div[@id='footer']",
)


def reference_text(html: str) -> str:
    """The page's main text by its markup: <body> without the layout's navigation and tables."""
    import lxml.html

    tree = lxml.html.document_fromstring(html.encode())
    for xpath in BOILERPLATE:
        for element in tree.xpath(xpath):
            element.drop_tree()
    body = tree.find("body")
    return " ".join(body.itertext()) if body is not None else ""


def word_scores(pairs: list[tuple[str, str | None]]) -> dict[str, float]:
    """Summed word-multiset recall and precision of (reference, output) pairs; empty outputs counted."""
    found = ref_total = out_total = empty = 0
    for reference, output in pairs:
        ref, out = Counter(words(reference)), Counter(words(output or ""))
        found += sum((ref & out).values())
        ref_total += sum(ref.values())
        out_total += sum(out.values())
        empty += not (output or "").strip()
    return {
        "recall": found / ref_total if ref_total else float("nan"),
        "precision": found / out_total if out_total else float("nan"),
        "empty": empty,
    }


def run_extractor(name: str, htmls: list[str], repeats: int) -> tuple[list[str | None], float]:
    """Outputs (None on failure) and the median pages per CPU-second over `repeats` passes."""
    extract = EXTRACTORS[name](ExtractConfig(extractor=name))
    rates, outputs = [], []
    for _ in range(repeats):
        outputs = []
        start = time.process_time()
        for html in htmls:
            try:
                outputs.append(extract(html))
            except Exception:  # counted as empty, as the stage drops it
                outputs.append(None)
        rates.append(len(htmls) / (time.process_time() - start))
    return outputs, statistics.median(rates)


def tiny_world(tmp: Path) -> tuple[list, dict[str, dict]]:
    import json

    from components.world.crawl import CrawlConfig, generate_crawl

    generate_crawl(CrawlConfig(warc_files=1), tmp)
    labels = {}
    for line in (tmp / "labels.jsonl").read_text().splitlines():
        if line.strip():
            label = json.loads(line)
            labels[label["url"]] = label
    with open(tmp / "crawl-00000.warc.gz", "rb") as f:
        pages = list(read_pages(f, IngestConfig(), Counter()))
    return pages, labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warc", type=Path, default=FIXTURE, help="real pages (tests/realpages/build.py)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with open(args.warc, "rb") as f:
        pages = list(read_pages(f, IngestConfig(), Counter()))
    htmls = [p.html for p in pages]
    references = [reference_text(h) for h in htmls]
    with tempfile.TemporaryDirectory() as tmp:
        tiny_pages, labels = tiny_world(Path(tmp))
    print(f"real pages: {args.warc.name}, {len(pages)} pages; tiny world: {len(tiny_pages)} pages")
    print(
        f"\n{'extractor':12s} {'real docs/CPU-s':>15s} {'word recall':>11s} {'word precision':>14s}"
        f" {'empty':>6s} {'tiny docs/CPU-s':>15s} {'line recall':>11s} {'full pages':>10s}"
        f" {'leaked':>7s} {'boilerplate->empty':>18s}"
    )
    for name in EXTRACTORS:
        outputs, rate = run_extractor(name, htmls, args.repeats)
        scores = word_scores(list(zip(references, outputs, strict=True)))
        tiny_out, tiny_rate = run_extractor(name, [p.html for p in tiny_pages], args.repeats)
        urls = [p.url for p in tiny_pages]
        kept = {u: t.strip() for u, t in zip(urls, tiny_out, strict=True) if t and t.strip()}
        dropped = {u: "extract.empty" for u in urls if u not in kept}
        truth = extract_truth(labels, urls, kept, dropped)
        print(
            f"{name:12s} {rate:15.0f} {scores['recall']:11.3f} {scores['precision']:14.3f}"
            f" {scores['empty']:6d} {tiny_rate:15.0f} {truth['truth.main_text_recall']:11.3f}"
            f" {truth['truth.main_text_full_pages']:10.3f} {truth['truth.leaked_chars_fraction']:7.3f}"
            f" {truth['truth.boilerplate_recall']:18.3f}"
        )


if __name__ == "__main__":
    main()

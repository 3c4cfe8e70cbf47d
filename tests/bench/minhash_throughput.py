"""MinHash signature throughput: our dedup signature step against datatrove's, on the same documents.

    .venv/bin/python tests/bench/minhash_throughput.py                       # datatrove in this venv
    .venv/bin/python tests/bench/minhash_throughput.py --datatrove-python .venv-datatrove/bin/python

The documents are the tiny world's pages (the labels' `main_text`, the text extraction should give),
generated here with the default seed; `--copies K` repeats them to time a larger input. Both sides run
on one core, FineWeb's setting (word 5-grams, 14 x 8 = 112 hashes, 64-bit):

- "compute": text -> signature only. Ours is `compute_signatures` (normalise, 128-bit exact hash,
  datasketch MinHash with xxh64 shingle hashes, 14 band keys); datatrove's is `get_shingles` +
  `get_signature` of `MinhashDedupSignature` (simplify_text, its English word tokenizer -- spaCy --,
  xxhash shingles, permutations modulo the Mersenne prime).
- "step": the whole signature step as a stage runs it, files included: ours is `signature_shard`
  (reads a Parquet shard, writes the signature file); datatrove's is `MinhashDedupSignature.run`
  (writes one file per bucket and sorts them).
- "compute, whitespace words": datatrove's compute with `str.split` as its word tokenizer instead of
  spaCy -- a stronger baseline that isolates normalisation and hashing (ours splits on whitespace too).

datatrove is not a dependency (its `processing` extra breaks this stack), and datatrove 0.10 cannot run
its default MinHash in our venv at all: it hashes `str` shingles, which xxhash 4 (pinned here) refuses.
So give it a throwaway venv with what its MinHash step needs and pass `--datatrove-python`; that
interpreter runs only the datatrove half (this file's `--worker` mode, which imports nothing of ours):

    make bench    # builds .venv-datatrove (locked by infra/datatrove-constraints.txt), runs every bench

Prints figures, asserts nothing; each path's fastest of `--repeats` runs is shown (a shared machine is
noisy).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from datatrove_side import require_datatrove, run_worker

MISSING = (
    "datatrove is not installed for this interpreter (datatrove 0.10 needs xxhash<4, which this\n"
    "project's venv does not have). `make bench` builds its own venv, .venv-datatrove, and runs:\n"
    "    .venv/bin/python tests/bench/minhash_throughput.py --datatrove-python .venv-datatrove/bin/python"
)


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# --- datatrove (imports only datatrove and the standard library) ---------------------------------


def datatrove_times(texts: list[str], repeats: int) -> dict[str, float]:
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceWords(WordTokenizer):
        """Words by `str.split`, as ours: datatrove without the cost of spaCy."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    def compute_with(step: MinhashDedupSignature) -> None:
        for text in texts:
            shingles = step.get_shingles(text)
            if shingles.size:
                step.get_signature(shingles)

    with tempfile.TemporaryDirectory(prefix="dt-minhash-") as tmp:
        step = MinhashDedupSignature(output_folder=tmp, config=MinhashConfig())
        fast = MinhashDedupSignature(output_folder=tmp, config=MinhashConfig(), language=WhitespaceWords())
        step.get_signature(step.get_shingles(texts[0]))  # warm up: spaCy loads lazily

        def run_step() -> None:
            docs = (Document(text=t, id=str(i)) for i, t in enumerate(texts))
            MinhashDedupSignature(output_folder=tmp, config=MinhashConfig()).run(docs, rank=0, world_size=1)

        return {
            "compute": best_of(repeats, lambda: compute_with(step)),
            "step": best_of(repeats, run_step),
            "compute, whitespace words": best_of(repeats, lambda: compute_with(fast)),
        }


def worker(args: argparse.Namespace) -> None:
    texts = json.loads(Path(args.texts).read_text())
    print(json.dumps(datatrove_times(texts, args.repeats)))


# --- ours --------------------------------------------------------------------------------------


def tiny_world_texts(copies: int) -> list[str]:
    from components.world.crawl import CrawlConfig, generate_crawl

    with tempfile.TemporaryDirectory(prefix="minhash-bench-") as tmp:
        generate_crawl(CrawlConfig(), Path(tmp))
        with open(Path(tmp, "labels.jsonl")) as f:
            texts = [t for line in f if (t := json.loads(line).get("main_text"))]
    return texts * copies


def our_times(texts: list[str], repeats: int) -> dict[str, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.data.dedup import MinHashConfig, compute_signatures, signature_shard

    config = MinHashConfig()
    compute_signatures(texts[:10], config)  # warm up
    with tempfile.TemporaryDirectory(prefix="our-minhash-") as tmp:
        pq.write_table(pa.table({"text": texts}), Path(tmp, "part-0.parquet"))

        def run_step() -> None:
            sig_uri = Path(tmp, "signatures")
            for path in sig_uri.glob("*"):  # no resume between repeats
                path.unlink()
            signature_shard("part-0.parquet", store_root=tmp, in_uri=tmp, sig_uri=str(sig_uri), config=config)

        return {
            "compute": best_of(repeats, lambda: compute_signatures(texts, config)),
            "step": best_of(repeats, run_step),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datatrove-python", help="interpreter with datatrove installed (default: this one)")
    parser.add_argument("--copies", type=int, default=1, help="repeat the tiny world's texts K times")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    require_datatrove(args.datatrove_python, MISSING)
    texts = tiny_world_texts(args.copies)
    print(f"documents: {len(texts)} tiny-world main texts, {sum(map(len, texts)) / 1e6:.2f} M characters")

    with tempfile.TemporaryDirectory(prefix="minhash-bench-texts-") as tmp:
        texts_file = Path(tmp, "texts.json")
        texts_file.write_text(json.dumps(texts))

        def theirs_once() -> dict[str, float]:
            if not args.datatrove_python:
                return datatrove_times(texts, 1)
            worker_args = ["--texts", str(texts_file), "--repeats", "1"]
            return run_worker(__file__, args.datatrove_python, worker_args, MISSING)

        # Alternate the two sides so that changes in machine load hit both alike; keep each path's best.
        theirs: dict[str, float] = {}
        ours: dict[str, float] = {}
        for _ in range(args.repeats):
            for best, times in ((theirs, theirs_once()), (ours, our_times(texts, 1))):
                for what, seconds in times.items():
                    best[what] = min(best.get(what, float("inf")), seconds)

    n = len(texts)
    ours["compute, whitespace words"] = ours["compute"]  # ours splits on whitespace anyway
    for what in theirs:
        ours_rate, theirs_rate = n / ours[what], n / theirs[what]
        print(
            f"{what:26s} ours {ours_rate:7.0f} signatures/s   datatrove {theirs_rate:7.0f} signatures/s   "
            f"ours/datatrove {ours_rate / theirs_rate:5.2f}x  (goal >= 1)"
        )


if __name__ == "__main__":
    main()

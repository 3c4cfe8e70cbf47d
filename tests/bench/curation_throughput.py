"""Curation throughput: our curation stages against datatrove's equivalent pipeline, on the same WARC.

    .venv/bin/python tests/bench/curation_throughput.py --datatrove-python .venv-datatrove/bin/python
    .venv/bin/python tests/bench/curation_throughput.py --datatrove-python ... --warc crawl.warc.gz

The input is one gzipped WARC: by default the tiny world's crawl (the `tiny` config's size and default
seed, written as a single file), generated into a temporary directory; `--warc PATH` reads yours. Both
sides run the FineWeb-style curation chain in one process on one core, files included, and the
figure is HTML documents read from the WARC per second of the whole chain (each side's fastest of
`--repeats` interleaved runs; a shared machine is noisy):

- ours: the stages' per-shard functions called directly, in the recipe's order and with their default
  configs -- `ingest_file` (WARC -> Parquet shards of HTML), then `url_filter`, `extract`, `language`,
  `quality` (Gopher repetition, Gopher quality, C4, FineWeb) and `pii`, each run over every shard by
  `_run_shard`, the task `filter_documents` fans out: read the Parquet shard, run the blocks, write the
  kept documents and the dropped ones per reason (fsync'd, atomic). Ray is left out: it adds
  scheduling, not per-core work.
- datatrove: `WarcReader -> URLFilter -> Trafilatura -> LanguageFilter -> GopherRepetitionFilter ->
  GopherQualityFilter -> C4QualityFilter(filter_no_terminal_punct=False) -> FineWebQualityFilter ->
  PIIFormatter -> ParquetWriter`, every filter with a Parquet exclusion writer (ours writes its drops
  too), run by `LocalPipelineExecutor(tasks=1, workers=1)` into a temporary directory. The documents
  stream from step to step in memory; only the output and the exclusions are written.

Two measures of the whole chain: wall time, and CPU time (the process's and its ended children's:
datatrove extracts every page in a sandbox child process). On a shared, busy machine the CPU figure
is the steadier one: the sandbox hands each page to a sleeping child and waits for it, and on loaded
cores every such wake-up can wait for a time slice, which wall time charges to datatrove (its extract
step took 1.8-2.6x longer inside the pipeline than alone on a shared 2-core machine, where the child
never goes cold).

Per-stage rows, wall and CPU: ours is each stage's shard functions (Parquet in and out included);
datatrove's is its own per-step timer (`track_time`), with its four quality filters summed into
"quality". datatrove's CPU per step is this process's CPU time inside that timer, and for the extract
step also the CPU time of the sandbox processes (read when the sandbox has ended them). What datatrove
spends outside its steps (setting up the task, its exclusion writers, passing documents along) is its
"outside steps" row. The per-stage CPU table is the one to quote on a loaded machine.

What differs, honestly:

- Extraction, the dominant cost on both sides. Ours calls trafilatura with `favor_precision`, `fast`
  (no readability/jusText fallbacks: about 3x faster), no tables, no cross-document `deduplicate`,
  under a 1 s CPU-time limit per page (a SIGPROF timer in the process). datatrove's `Trafilatura`
  defaults are `favour_precision=True, deduplicate=True`, trafilatura's own defaults otherwise (so the
  fallbacks run and tables are kept), a 1 s wall-clock timeout, and every page is sent to a sandbox
  child process and back through a pipe. So datatrove runs twice: with its defaults ("datatrove"), and
  with our trafilatura options passed through (`fast=True, include_tables=False, deduplicate=False`:
  "datatrove, our trafilatura options"), which isolates the rest of the pipeline.
- URL filter: datatrove is given OUR block lists (`use_integrated_lists=False`, the entries as ours
  parses them), so both sides block the same tiny-world domains and words. Its integrated UT1 lists
  hold millions of entries that each task loads, and do not know the tiny world's fictional domains.
  Ours checks the host and every parent domain; datatrove the registered domain and the full host
  from tldextract (pointed at its bundled suffix-list snapshot so that it fetches nothing). The tiny
  world's reserved TLDs (.example, .test) are no public suffixes, so tldextract finds no domain and
  datatrove blocks none of the blocklisted-domain pages (only those with banned words): they go on
  down its chain, which is a little more work for it.
- Language ID: both use the checksummed lid.176.ftz asset (`gptrecipe assets`): datatrove's `FT176LID`
  would download lid.176.bin, so its model is replaced by one that loads our file (nothing is
  downloaded, `HF_HUB_OFFLINE=1`). Ours predicts batches of 512 documents for the top 2 labels;
  datatrove one document at a time, all 176 labels.
- Quality: datatrove's filters split words and sentences with spaCy's blank English pipeline (no
  downloaded data; English is assigned spaCy, not NLTK, so no NLTK data is needed), ours with regexes.
- PII: ours finds e-mails, public IPv4/IPv6 and phone numbers, in the text and the URL's path; datatrove's
  `PIIFormatter` e-mails and public IPv4 in the text.
- Reading: ours sniffs nothing -- it trusts the HTTP Content-Type, decodes UTF-8, else the declared
  charset, else a charset_normalizer guess, and recovers from corrupt records; datatrove's
  `WarcReader` asks libmagic for the MIME type when the WARC has no `WARC-Identified-Payload-Type`
  (the tiny world's has none) and guesses charsets with cchardet.

datatrove is not a dependency (its `processing` extra breaks this stack), so give it a throwaway venv
and pass `--datatrove-python`; that interpreter runs only the datatrove half (this file's `--worker`
mode, which imports nothing of ours). Same trafilatura, lxml and warcio versions as ours; fastText from
`fasttext-numpy2-wheel`, the distribution datatrove's LanguageFilter checks for (ours is fasttext-numpy2;
the same fastText C++ underneath):

    make bench    # builds .venv-datatrove (locked by infra/datatrove-constraints.txt), runs every bench

(python-magic needs the system's libmagic.) Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from datatrove_side import require_datatrove, run_worker

MISSING = (
    "datatrove's curation pipeline is not installed for this interpreter. `make bench` builds its own\n"
    "venv, .venv-datatrove, and runs this script with it:\n"
    "    .venv/bin/python tests/bench/curation_throughput.py --datatrove-python .venv-datatrove/bin/python"
)
STAGES = ("ingest", "url_filter", "extract", "language", "quality", "pii")
# Our trafilatura options (ExtractConfig's defaults), passed through datatrove's Trafilatura step.
OUR_EXTRACTION_OPTIONS = {"fast": True, "include_tables": False, "deduplicate": False}
VERSIONED = (
    "datatrove",
    "trafilatura",
    "lxml",
    "fasttext-numpy2",
    "fasttext-numpy2-wheel",
    "warcio",
    "spacy",
    "pyarrow",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):  # not every side has every package
            found[name] = metadata.version(name)
    return found


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended: datatrove extracts each page in a
    sandbox child process, which wall time on a busy machine would charge for its wake-ups."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- datatrove (imports only datatrove, its dependencies and the standard library) ---------------


def datatrove_resiliparse():
    """datatrove has no resiliparse step: its extractor base (per-page sandbox process, 1 s timeout)
    around resiliparse with the options of our `extract.extractor: resiliparse`."""
    from datatrove.pipeline.extractors.base import BaseExtractor

    class Resiliparse(BaseExtractor):
        name = "resiliparse"

        def __init__(self) -> None:
            super().__init__(timeout=1)

        def extract(self, text: str) -> str:
            from resiliparse.extract.html2text import extract_plain_text

            return extract_plain_text(
                text,
                preserve_formatting=True,
                main_content=True,
                list_bullets=True,
                alt_texts=False,
                links=False,
                form_fields=False,
                noscript=False,
                comments=False,
                skip_elements=["table"],
            )

    return Resiliparse()


def datatrove_language_filter(lid_model: str, **kwargs):
    """datatrove's LanguageFilter (English, threshold 0.65, as FineWeb) on our lid.176.ftz file: its
    stock FT176LID downloads lid.176.bin on first use."""
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.utils.lid import FT176LID

    class LocalLID(FT176LID):
        def __init__(self, languages: list[str], path: str) -> None:
            super().__init__(languages)
            self.path = path

        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(self.path)
            return self._model

    language_filter = LanguageFilter(languages=["en"], language_threshold=0.65, **kwargs)
    language_filter.model = LocalLID(language_filter.languages, lid_model)
    return language_filter


def datatrove_steps(spec: dict, out: Path) -> list:
    """The pipeline, step by step; `spec` says where the WARC, our lists and our model are."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        URLFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter
    from tldextract import TLDExtract

    class OfflineURLFilter(URLFilter):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            # No suffix-list URLs and no cache: tldextract uses the snapshot it ships, never the network.
            self.tldextractor = TLDExtract(cache_dir=None, suffix_list_urls=())

    def dropped(name: str) -> ParquetWriter:
        return ParquetWriter(str(out / "dropped" / name), compression="zstd")

    lists, warc = spec["lists"], Path(spec["warc"])
    return [
        WarcReader(str(warc.parent), glob_pattern=warc.name, recursive=False),
        OfflineURLFilter(
            extra_domains=lists["domains"],
            extra_urls=lists["urls"],
            banned_words=lists["banned_words"],
            banned_subwords=lists["banned_subwords"],
            soft_banned_words=lists["soft_banned_words"],
            use_integrated_lists=False,
            exclusion_writer=dropped("url_filter"),
        ),
        (
            datatrove_resiliparse()
            if spec.get("extractor") == "resiliparse"
            else Trafilatura(favour_precision=True, **spec["extraction_options"])
        ),
        datatrove_language_filter(spec["lid_model"], exclusion_writer=dropped("language")),
        GopherRepetitionFilter(exclusion_writer=dropped("gopher_repetition")),
        GopherQualityFilter(exclusion_writer=dropped("gopher_quality")),
        C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=dropped("c4")),
        FineWebQualityFilter(exclusion_writer=dropped("fineweb")),
        PIIFormatter(),
        ParquetWriter(str(out / "documents"), compression="zstd"),
    ]


# datatrove's steps (without the writer) in pipeline order, as our stages.
DATATROVE_STAGE_OF = [
    "ingest",
    "url_filter",
    "extract",
    "language",
    "quality",
    "quality",
    "quality",
    "quality",
    "pii",
    "write",
]


def children_cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


@contextlib.contextmanager
def datatrove_cpu_per_step():
    """While active, every datatrove step timer (`track_time`) also adds up this process's CPU time,
    per timer: {id(timer): CPU s}; and "sandbox" is the CPU time of the extraction sandbox's processes,
    read as the sandbox ends them (before the executor's own helper process ends)."""
    from datatrove.pipeline.extractors.base import ExtractorSandbox
    from datatrove.utils.stats import TimingStats

    cpu: dict = {}
    enter, exit_, sandbox_exit = TimingStats.__enter__, TimingStats.__exit__, ExtractorSandbox.__exit__
    children_start = children_cpu_seconds()

    def timed_enter(timer):
        timer._cpu_entry = time.process_time()
        return enter(timer)

    def timed_exit(timer, *exc):
        cpu[id(timer)] = cpu.get(id(timer), 0.0) + time.process_time() - timer._cpu_entry
        return exit_(timer, *exc)

    def ended_sandbox(sandbox, *exc):
        result = sandbox_exit(sandbox, *exc)
        cpu["sandbox"] = cpu.get("sandbox", 0.0) + children_cpu_seconds() - children_start
        return result

    TimingStats.__enter__, TimingStats.__exit__ = timed_enter, timed_exit
    ExtractorSandbox.__exit__ = ended_sandbox
    try:
        yield cpu
    finally:
        TimingStats.__enter__, TimingStats.__exit__, ExtractorSandbox.__exit__ = enter, exit_, sandbox_exit


def datatrove_run(spec: dict) -> dict:
    """One run of the pipeline in this process; wall and CPU seconds, per stage too, and document
    counts."""
    from datatrove.executor import LocalPipelineExecutor

    with tempfile.TemporaryDirectory(prefix="dt-curation-") as tmp, datatrove_cpu_per_step() as step_cpu:
        executor = LocalPipelineExecutor(
            pipeline=datatrove_steps(spec, Path(tmp)),
            tasks=1,
            workers=1,
            logging_dir=str(Path(tmp, "logs")),
            skip_completed=False,
        )
        start, cpu_start = time.perf_counter(), cpu_seconds()
        stats = executor.run()
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        # With one worker the executor runs a copy of the pipeline, left in `executor.pipeline`.
        timers = [id(step.stats.time_stats) for step in executor.pipeline]
    steps: dict[str, float] = {}
    steps_cpu: dict[str, float] = {"extract": step_cpu.get("sandbox", 0.0)}
    docs_in: dict[str, int] = {}
    for stage, step, timer in zip(DATATROVE_STAGE_OF, stats.stats, timers, strict=True):
        steps[stage] = steps.get(stage, 0.0) + step.time_stats.total
        steps_cpu[stage] = steps_cpu.get(stage, 0.0) + step_cpu.get(timer, 0.0)
        counts = step.stats.to_dict()
        docs_in.setdefault(stage, _count(counts, "total", "documents"))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "stages": steps,
        "stages_cpu": steps_cpu,
        "docs_in": docs_in,
        "documents": _count(stats.stats[0].stats.to_dict(), "documents"),
        "kept": _count(stats.stats[-1].stats.to_dict(), "total"),
    }


def _count(counts: dict, *keys: str) -> int:
    for key in keys:
        if key in counts:
            value = counts[key]
            return int(value["total"] if isinstance(value, dict) else value)
    return 0


def worker(args: argparse.Namespace) -> None:
    # Import what the steps import lazily before the clock starts, as our side has its modules loaded
    # (the extraction sandbox, forked later, inherits them). Loading the model and building spaCy's
    # pipeline stay inside the run: those are per task, as our model load is per run.
    import ahocorasick  # noqa: F401
    import cchardet  # noqa: F401
    import fasttext  # noqa: F401
    import magic  # noqa: F401
    import spacy  # noqa: F401
    import trafilatura  # noqa: F401
    import warcio  # noqa: F401

    with contextlib.suppress(ImportError):  # --extractor resiliparse
        import resiliparse.extract.html2text  # noqa: F401
    from loguru import logger

    logger.remove()  # its per-document warnings would only slow the run; stderr is not read
    logger.add(sys.stderr, level="ERROR")
    spec = json.loads(Path(args.spec).read_text())
    print(json.dumps({**datatrove_run(spec), "versions": versions()}))


# --- ours --------------------------------------------------------------------------------------


def tiny_world_warc(out_dir: Path) -> Path:
    """The tiny world's crawl (tiny config's size, default seed) as one gzipped WARC file."""
    from components.world.crawl import CrawlConfig, generate_crawl

    generate_crawl(CrawlConfig(warc_files=1), out_dir)
    return out_dir / "crawl-00000.warc.gz"


def datatrove_spec(warc: Path) -> dict:
    """What the datatrove worker needs from our side: the WARC, our parsed block lists, the model."""
    from components.data.language import LanguageConfig, model_file
    from components.data.url_filter import LIST_KINDS, UrlFilterConfig, load_lists

    lists = load_lists(UrlFilterConfig())
    return {
        "warc": str(warc.resolve()),
        "lists": {kind: sorted(getattr(lists, kind)) for kind in LIST_KINDS},
        "lid_model": str(model_file(LanguageConfig())),
    }


def our_stages(extractor: str = "trafilatura") -> list[tuple[str, object, dict]]:
    """(stage, make_blocks, keyword arguments of `_run_shard`) for each filter stage, in order."""
    import functools

    from components.data import extract, language, pii, quality, url_filter

    language_config = language.LanguageConfig()
    return [
        ("url_filter", functools.partial(url_filter.make_blocks, url_filter.UrlFilterConfig()), {}),
        (
            "extract",
            functools.partial(extract.make_blocks, extract.ExtractConfig(extractor=extractor)),
            {"drop_columns": ("html",)},
        ),
        (
            "language",
            functools.partial(
                language.make_blocks, language_config, str(language.model_file(language_config))
            ),
            {"batch_size": language_config.batch_size},
        ),
        ("quality", functools.partial(quality.make_blocks, quality.QualityConfig()), {}),
        ("pii", functools.partial(pii._make_blocks, pii.PIIConfig()), {}),
    ]


def our_run(warc: Path, extractor: str = "trafilatura") -> dict:
    """One run of our stages' shard functions over the WARC, into a fresh store."""
    from components.core.artifacts import ArtifactStore
    from components.data import language, url_filter
    from components.data.documents import _run_shard
    from components.data.ingest import IngestConfig, ingest_file
    from components.io.documents import list_shards

    stages = our_stages(
        extractor
    )  # configs and model path resolved before the clock, as a stage does in its driver
    # A worker process keeps the model and the parsed lists across shards; each run starts without
    # them, as each datatrove run loads its own.
    language.load_model.cache_clear()
    url_filter._cached_lists.cache_clear()
    with tempfile.TemporaryDirectory(prefix="our-curation-") as tmp:
        store = ArtifactStore(tmp)
        steps: dict[str, float] = {}
        steps_cpu: dict[str, float] = {}
        docs_in: dict[str, int] = {}
        start, cpu_start = time.perf_counter(), cpu_seconds()
        documents = store.join(tmp, "ingest")
        store.makedirs(documents)
        counts = ingest_file(
            (0, (str(warc), 0, None)),  # the whole file as one task
            store_root=tmp,
            out_uri=documents,
            done_uri=store.join(tmp, "done", "ingest"),
            config=IngestConfig(),
        )
        steps["ingest"], steps_cpu["ingest"] = time.perf_counter() - start, cpu_seconds() - cpu_start
        docs_in["ingest"] = counts["documents"]
        for name, make_blocks, options in stages:
            stage_start, stage_cpu_start = time.perf_counter(), cpu_seconds()
            out, dropped = store.join(tmp, name, "documents"), store.join(tmp, name, "dropped")
            store.makedirs(out)
            store.makedirs(dropped)
            results = [
                _run_shard(
                    shard,
                    store_root=tmp,
                    in_uri=documents,
                    out_uri=out,
                    dropped_uri=dropped,
                    done_uri=store.join(tmp, "done", name),
                    make_blocks=make_blocks,
                    **{"drop_columns": (), "batch_size": 256, **options},
                )
                for shard in list_shards(store, documents)
            ]
            steps[name] = time.perf_counter() - stage_start
            steps_cpu[name] = cpu_seconds() - stage_cpu_start
            docs_in[name] = sum(r["documents_in"] for r in results)
            documents = out
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "stages": steps,
        "stages_cpu": steps_cpu,
        "docs_in": docs_in,
        "documents": counts["documents"],
        "kept": sum(r["documents_out"] for r in results),
    }


# --- comparison --------------------------------------------------------------------------------


def datatrove_once(args: argparse.Namespace, spec: dict, spec_file: Path) -> dict:
    spec_file.write_text(json.dumps(spec))
    # No network: the model and lists come from our side, and the Hub must not be asked for anything.
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return run_worker(__file__, args.datatrove_python, ["--spec", str(spec_file)], MISSING, **offline)


def keep_fastest(best: dict[str, dict], name: str, run: dict) -> None:
    """Per side: the fastest whole run (wall), and the least CPU time and fastest stages (wall and CPU)
    of any run."""
    old = best.get(name)
    if old is None:
        best[name] = {**run, "stages": dict(run["stages"]), "stages_cpu": dict(run["stages_cpu"])}
        return
    if run["seconds"] < old["seconds"]:
        best[name] = {
            **run,
            "stages": old["stages"],
            "stages_cpu": old["stages_cpu"],
            "cpu_seconds": old["cpu_seconds"],
        }
    kept = best[name]
    kept["cpu_seconds"] = min(kept["cpu_seconds"], run["cpu_seconds"])
    for key in ("stages", "stages_cpu"):
        for stage, seconds in run[key].items():
            kept[key][stage] = min(kept[key].get(stage, seconds), seconds)


def print_environment(datatrove_versions: dict[str, str]) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.system()} {platform.machine()}, {cores} cores (each side runs in one process)")
    ours = ", ".join(f"{k} {v}" for k, v in versions().items() if k != "datatrove")
    theirs = ", ".join(f"{k} {v}" for k, v in datatrove_versions.items())
    print(f"ours:      {ours}")
    print(f"datatrove: {theirs}")


def print_results(best: dict[str, dict], repeats: int) -> None:
    ours = best["ours"]
    print(f"\nwhole chain, fastest of {repeats} runs; docs = HTML documents read from the WARC")
    print(f"  {'':34s} docs in   kept   wall s   docs/s   CPU s  docs/CPU-s   ours/this: wall   CPU")
    for name, run in best.items():
        rate, cpu_rate = run["documents"] / run["seconds"], run["documents"] / run["cpu_seconds"]
        line = (
            f"  {name:34s} {run['documents']:7d} {run['kept']:6d} {run['seconds']:8.2f} {rate:8.1f}"
            f" {run['cpu_seconds']:7.2f} {cpu_rate:11.1f}"
        )
        if name != "ours":
            wall_ratio = ours["documents"] / ours["seconds"] / rate
            cpu_ratio = ours["documents"] / ours["cpu_seconds"] / cpu_rate
            line += f"   {wall_ratio:14.2f}x {cpu_ratio:5.2f}x"
        print(line)

    for clock, key, total in (("wall", "stages", "seconds"), ("CPU", "stages_cpu", "cpu_seconds")):
        print(f"\nper stage, {clock}: documents entering, seconds, documents/s (least of any run)")
        print(f"  {'stage':14s}" + "".join(f"{name:>36s}" for name in best))
        for stage in (*STAGES, "write", "outside steps"):
            cells = [_stage_cell(run, stage, name == "ours", key, total) for name, run in best.items()]
            print(f"  {stage:14s}" + "".join(f"{cell:>36s}" for cell in cells))


def _stage_cell(run: dict, stage: str, ours: bool, key: str = "stages", total: str = "seconds") -> str:
    if ours and stage in ("write", "outside steps"):
        return "(in each stage)" if stage == "write" else "-"
    if stage == "outside steps":
        return f"{run[total] - sum(run[key].values()):8.2f} s"
    seconds, n = run[key][stage], run["docs_in"][stage]
    return f"{n:5d} {seconds:8.2f} s {n / max(seconds, 1e-9):8.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datatrove-python", help="interpreter with datatrove installed (default: this one)")
    parser.add_argument("--warc", type=Path, help="a (gzipped) WARC file; default: the tiny world's crawl")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; the fastest is shown")
    parser.add_argument(
        "--extractor",
        choices=("trafilatura", "resiliparse"),
        default="trafilatura",
        help="ours: extract.extractor; datatrove: its Trafilatura, or its extractor base around resiliparse",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    require_datatrove(args.datatrove_python, MISSING)

    with tempfile.TemporaryDirectory(prefix="curation-bench-") as tmp:
        warc = args.warc or tiny_world_warc(Path(tmp, "crawl"))
        print(f"input: {warc.name}, {warc.stat().st_size / 1e6:.1f} MB gzipped")
        spec = datatrove_spec(warc)
        variants = {
            "datatrove": {"extraction_options": {}},
            "datatrove, our trafilatura options": {"extraction_options": OUR_EXTRACTION_OPTIONS},
        }
        if args.extractor == "resiliparse":
            variants = {"datatrove, resiliparse": {"extractor": "resiliparse"}}
        # Alternate the sides so that changes in machine load hit all alike; keep each one's best.
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            keep_fastest(best, "ours", our_run(warc, args.extractor))
            for name, options in variants.items():
                run = datatrove_once(args, {**spec, **options}, Path(tmp, "spec.json"))
                keep_fastest(best, name, run)
                best[name]["versions"] = run["versions"]

    print_environment(next(run["versions"] for name, run in best.items() if name != "ours"))
    print_results(best, args.repeats)


if __name__ == "__main__":
    main()

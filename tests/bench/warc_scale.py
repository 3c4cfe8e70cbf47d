"""Curation at scale: peak memory against input size, and documents/s with 1 and 2 CPUs.

    .venv/bin/python tests/bench/warc_scale.py                          # 100 MB, 300 MB, 1 GB of .warc.gz
    .venv/bin/python tests/bench/warc_scale.py --source my.warc.gz --ingest-mb 100,300,1000 \\
        --chain-mb 10,30,100 --scaling-mb 20

1. Builds gzipped WARC files of the sizes asked for by repeating the pages of `--source` (default: the
   real Debian documentation pages of `tests/realpages/debian-docs.warc.gz`, else a tiny-world crawl).
   Every copy of a page gets its own URL and record id and grows by a paragraph of the page's own words
   in a new order, so no two documents are equal (near duplicates remain: dedup has work to do). Sizes
   above `--unique-mb` repeat that file's records (gzip members concatenate), to keep the build short.
2. Memory: each measurement is a fresh process that runs the stages in-process (no Ray: the shard and
   range tasks run one after the other, as one Ray worker would run them) and samples its resident set
   every 20 ms; the peak per stage and overall are printed per input size. `--ingest-mb` sizes run
   ingest only (the stage that reads the WARC bytes); `--chain-mb` sizes run the curation chain
   ingest -> url_filter -> extract -> language -> quality -> dedup -> pii.
3. Scaling: the `crawl` pipeline up to pii on Ray with `pipeline.ray.num_cpus` 1 and 2 on one file
   of `--scaling-mb`; documents/s = ingested documents / the curation stages' summed wall time. Ingest
   splits that one file into byte ranges (`ingest.split_mb`, here a quarter of the file), so even a
   single file spreads over both CPUs.

Prints figures, asserts nothing. Timings on a shared machine are noisy: the load average is printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
REAL_PAGES = REPO / "tests" / "realpages" / "debian-docs.warc.gz"
CHAIN = ["ingest", "url_filter", "extract", "language", "quality", "dedup", "pii"]
_WORD = re.compile(r"[A-Za-z]{3,}")


# --- building large WARC files ---------------------------------------------------------------------


def source_pages(source: Path) -> list[tuple[str, bytes]]:
    """(url, HTML body) of every HTML response of a WARC file."""
    from warcio.archiveiterator import ArchiveIterator

    pages = []
    with open(source, "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type == "response" and "html" in (
                record.http_headers.get_header("Content-Type") or ""
            ):
                pages.append(
                    (record.rec_headers.get_header("WARC-Target-URI"), record.content_stream().read())
                )
    return pages


def tiny_world_source(workdir: Path) -> Path:
    from components.world.crawl import CrawlConfig, generate_crawl

    out = workdir / "tiny-world"
    if not list(out.glob("*.warc.gz")):
        generate_crawl(CrawlConfig(seed=3, pages=1000, warc_files=1), out)
    return sorted(out.glob("*.warc.gz"))[0]


def response_member(url: str, body: bytes, number: int) -> bytes:
    """One WARC response record as its own gzip member (what a .warc.gz holds per record)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    raw = io.BytesIO()
    writer = WARCWriter(raw, gzip=False)
    headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
    record_id = f"<urn:uuid:{number:08x}-0000-4000-8000-{number:012x}>"
    record = writer.create_warc_record(
        url,
        "response",
        payload=io.BytesIO(body),
        http_headers=headers,
        warc_headers_dict={"WARC-Record-ID": record_id, "WARC-Date": "2024-03-01T00:00:00Z"},
    )
    writer.write_record(record)
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(raw.getvalue()) + packer.flush()


def grown(body: bytes, copy: int, rng: random.Random) -> bytes:
    """The page with a paragraph of its own words in a new order before </body>: unique, same language."""
    words = _WORD.findall(body.decode("utf-8", "replace"))[:400] or ["page"]
    extra = " ".join(rng.choice(words) for _ in range(60))
    paragraph = f"<p>Copy {copy}: {extra}.</p>".encode()
    at = body.rfind(b"</body>")
    return body + paragraph if at < 0 else body[:at] + paragraph + body[at:]


def build_warc(
    pages: list[tuple[str, bytes]], target_mb: float, out: Path, unique: dict | None = None
) -> dict:
    """A .warc.gz of about `target_mb` MB from copies of `pages`, or of the records of the `unique` file
    repeated; reused when it exists."""
    meta = out.with_suffix(".json")
    if out.exists() and meta.exists():
        return json.loads(meta.read_text())
    target = int(target_mb * 2**20)
    if unique is not None:
        times = max(round(target / unique["bytes"]), 1)
        with open(out, "wb") as f:
            for _ in range(times):
                with open(unique["path"], "rb") as part:
                    while chunk := part.read(1 << 24):
                        f.write(chunk)
        info = {"path": str(out), "bytes": unique["bytes"] * times, "records": unique["records"] * times}
        meta.write_text(json.dumps(info))
        return info
    rng = random.Random(int(target_mb * 1000))
    written = records = 0
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        while written < target:
            url, body = pages[records % len(pages)]
            copy = records // len(pages)
            member = response_member(f"{url}?copy={copy}", grown(body, copy, rng), records)
            f.write(member)
            written += len(member)
            records += 1
    os.replace(tmp, out)
    info = {"path": str(out), "bytes": written, "records": records}
    meta.write_text(json.dumps(info))
    return info


# --- one measurement, in a fresh process -------------------------------------------------------------


class RssSampler:
    """The resident set of this process every `every_s` seconds; the peak per labelled phase."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.phase, self.peaks = every_s, "start", {}
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss_mb()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(warc: str, stages: list[str], workdir: Path) -> dict:
    """Run `stages` in this process on `warc`; per stage its time, documents in and peak RSS."""
    from components.core.stage import RunEnv, run_stage
    from pipelines.config import load_config
    from pipelines.recipe import RECIPE

    config, _ = load_config("crawl", [f"ingest.paths=[{warc}]"], RECIPE, until=stages[-1])
    env = RunEnv(
        run_id="bench",
        store=str(workdir / "store"),
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        experiment="warc-scale",
        artifact_location=str(workdir / "mlartifacts"),
    )
    from mlflow import MlflowClient

    MlflowClient(env.tracking_uri).search_experiments()  # the database's schema, before the clock starts
    result: dict = {"stages": {}}
    with RssSampler() as sampler:
        result["rss_mb_before"] = sampler.rss_mb()
        documents = None
        for name in stages:
            sampler.phase = name
            inputs = {} if documents is None else {"documents": documents}
            started = time.perf_counter()
            record = run_stage(RECIPE.nodes[name].stage, getattr(config, name), inputs, env)
            seconds = time.perf_counter() - started
            documents = record.outputs["documents"]
            result["stages"][name] = {"seconds": round(seconds, 2), "metrics": record.metrics}
        sampler.phase = "end"
    for name in stages:
        result["stages"][name]["peak_rss_mb"] = round(sampler.peaks.get(name, 0.0), 1)
    result["peak_rss_mb"] = round(max(sampler.peaks.values()), 1)
    return result


def measure_in_child(warc: str, stages: list[str], workdir: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        warc,
        "--stages",
        ",".join(stages),
        "--workdir",
        str(workdir),
    ]
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling(warc: str, size_mb: float, cpus: int, workdir: Path) -> dict:
    """The crawl pipeline up to pii on Ray with `cpus` CPUs: documents and summed curation wall time."""
    from pipelines.config import load_config
    from pipelines.recipe import RECIPE
    from pipelines.runner import run_config

    overrides = [
        f"ingest.paths=[{warc}]",
        f"ingest.split_mb={max(size_mb / 4, 1)}",
        f"pipeline.store={workdir / 'store'}",
        f"pipeline.runs_dir={workdir / 'runs'}",
        f"pipeline.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        f"pipeline.ray.num_cpus={cpus}",
        "pipeline.ray.dashboard=false",
    ]
    config, source = load_config("crawl", overrides, RECIPE, until="pii")
    _, summary = run_config(config, RECIPE, source=source, until="pii")
    stages = summary["stages"]
    seconds = sum(stages[n]["duration_s"] for n in CHAIN)
    docs = stages["ingest"]["metrics"]["documents"]
    return {
        "cpus": cpus,
        "documents": docs,
        "seconds": round(seconds, 1),
        "docs_per_s": round(docs / seconds, 1),
    }


# --- the report --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, help="WARC whose pages are repeated (default: real pages)")
    parser.add_argument("--ingest-mb", default="100,300,1000", help="sizes (MB of .warc.gz) for ingest")
    parser.add_argument("--chain-mb", default="10,30,100", help="sizes for the whole curation chain")
    parser.add_argument("--unique-mb", type=float, default=100.0, help="larger sizes repeat this one")
    parser.add_argument(
        "--scaling-mb", type=float, default=20.0, help="size for the 1 vs 2 CPU runs; 0 = skip"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the WARC files and stores go (default: a temp dir)"
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement in this process
    parser.add_argument("--stages", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args.measure, args.stages.split(","), args.workdir)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="warc-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = args.source or (REAL_PAGES if REAL_PAGES.exists() else tiny_world_source(workdir))
    pages = source_pages(source)
    print(
        f"source {source}: {len(pages)} HTML pages; work dir {workdir}; load average {os.getloadavg()[0]:.1f}"
    )

    def sizes(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x.strip()]

    def built(mb: float) -> dict:
        unique = None if mb <= args.unique_mb else built(args.unique_mb)
        started = time.perf_counter()
        info = build_warc(pages, mb, workdir / f"scale-{mb:g}mb.warc.gz", unique)
        took = time.perf_counter() - started
        print(f"  built {info['bytes'] / 2**20:,.0f} MB, {info['records']:,} records ({took:.0f}s)")
        return info

    for label, stages, todo in (
        ("ingest", ["ingest"], sizes(args.ingest_mb)),
        ("curation chain", CHAIN, sizes(args.chain_mb)),
    ):
        if not todo:
            continue
        print(f"\n{label}: peak RSS against input size (one process, stages in-process)")
        header = f"{'input MB':>9} {'records':>9} {'docs/s':>8} {'peak RSS MB':>12}"
        print(f"{header}  per stage: peak RSS MB (seconds)")
        for mb in todo:
            info = built(mb)
            run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="run-"))
            result = measure_in_child(info["path"], stages, run_dir)
            seconds = sum(s["seconds"] for s in result["stages"].values())
            docs = result["stages"]["ingest"]["metrics"]["documents"]
            per = "  ".join(
                f"{n} {s['peak_rss_mb']:.0f} ({s['seconds']:.0f}s)" for n, s in result["stages"].items()
            )
            size = f"{info['bytes'] / 2**20:>9,.0f} {info['records']:>9,}"
            print(f"{size} {docs / seconds:>8,.0f} {result['peak_rss_mb']:>12,.0f}  {per}")
            subprocess.run(["rm", "-rf", str(run_dir)], check=False)

    if args.scaling_mb:
        info = built(args.scaling_mb)
        mb = info["bytes"] / 2**20
        print(f"\nscaling: crawl pipeline up to pii on Ray, one {mb:.0f} MB file in byte ranges")
        runs = []
        for cpus in (1, 2):
            run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix=f"ray{cpus}-"))
            run = scaling(info["path"], args.scaling_mb, cpus, run_dir)
            runs.append(run)
            load = os.getloadavg()[0]
            print(
                f"  {cpus} CPU: {run['documents']:,} documents in {run['seconds']}s: "
                f"{run['docs_per_s']} docs/s (load average {load:.1f})"
            )
        print(f"  2 CPUs / 1 CPU: {runs[1]['docs_per_s'] / runs[0]['docs_per_s']:.2f}x")


if __name__ == "__main__":
    main()

"""Fixtures of the data-stage tests."""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

import pytest

from components.core.artifacts import Artifact, ArtifactStore
from components.core.stage import RunEnv
from components.data.ingest import IngestConfig, ingest_file
from components.world.crawl import CrawlConfig, KnowledgeConfig, generate_crawl


@pytest.fixture(scope="session")
def stage_env(tracking_uri: str) -> Callable[[Path, str], RunEnv]:
    """`stage_env(root, experiment)`: what `run_stage` needs to run one stage: a store and MLflow artifacts
    under `root`, in `experiment` of the session's MLflow database."""

    def make(root: Path, experiment: str) -> RunEnv:
        return RunEnv(
            run_id="r",
            store=str(root / "store"),
            tracking_uri=tracking_uri,
            experiment=experiment,
            artifact_location=str(root / "mlartifacts"),
        )

    return make


@pytest.fixture
def run_env(tmp_path: Path, stage_env, request) -> RunEnv:
    """`stage_env` under the test's tmp_path, in the test's own experiment."""
    return stage_env(tmp_path, request.node.nodeid)


def _ingest_crawl(root: Path, pages: int) -> tuple[ArtifactStore, Artifact, Artifact]:
    """(store, crawl, documents): a crawl of `pages` pages (4 countries, 2 WARC files) under root/crawl,
    ingested into root/store at ingest/documents."""
    knowledge = KnowledgeConfig(countries=4, cities_per_country=2, people=8, unknown_entities=3)
    generate_crawl(CrawlConfig(pages=pages, warc_files=2, knowledge=knowledge), root / "crawl")
    store = ArtifactStore(root / "store")
    out, done = store.join(store.root, "ingest", "documents"), store.join(store.root, "ingest", "done")
    for i, path in enumerate(sorted(glob.glob(str(root / "crawl" / "*.warc.gz")))):
        ingest_file(
            (i, (path, 0, None)), store_root=store.root, out_uri=out, done_uri=done, config=IngestConfig()
        )
    crawl = Artifact(uri=str(root / "crawl"), kind="crawl", digest=store.digest(str(root / "crawl")))
    return store, crawl, Artifact(uri=out, kind="documents", digest=store.digest(out))


@pytest.fixture(scope="session")
def ingest_crawl() -> Callable[[Path, int], tuple[ArtifactStore, Artifact, Artifact]]:
    """`ingest_crawl(root, pages)` -> (store, crawl, documents): a small labelled crawl of the tiny world
    under root/crawl, ingested in-process (no Ray) into root/store; the input of the stages after ingest."""
    return _ingest_crawl

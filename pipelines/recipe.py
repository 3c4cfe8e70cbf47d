"""The GPT-assistant recipe as one DAG: raw crawl in, chat assistant out.

Each node is a stage (found by name under components/) and names where each of its inputs comes
from ("stage.output"). `gptrecipe stages CONFIG` prints this DAG with each stage's cache status.
"""

from __future__ import annotations

from components.data.ingest import ingest
from components.world.crawl import world
from pipelines.dag import Node, Pipeline

RECIPE = Pipeline(
    "recipe",
    [
        # -- the tiny world: a synthetic, labelled crawl (switch off to bring your own WARC files) ----
        Node(world),
        # -- pretraining data --------------------------------------------------------------------
        Node(ingest, {"crawl": "world.crawl"}),
    ],
)

"""The declaration every document filter stage shares (url_filter, extract, language, quality, pii, ...):
it reads `documents` (and, in the tiny world, the ground-truth `labels`), writes the documents it keeps
and the ones it drops (`dropped/<stage>.<reason>/`), fans out one Ray task per shard, and passes its
input through when switched off. Light, like every `*_config.py` that uses it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from components.core.config import StageConfig
from components.core.stage import Stage, stage_spec


def filter_spec(
    name: str,
    config: type[StageConfig],
    *,
    optional_inputs: Iterable[str] = ("labels",),
    outputs: Iterable[str] = ("documents", "dropped"),
    **declaration: Any,
) -> Stage:
    """`stage_spec` for a filter stage `name` whose code is `components.data.<name>:<name>`; `declaration`
    adds to it (data_files=, preflight=) as in `stage_spec`."""
    return stage_spec(
        name,
        impl=f"components.data.{name}:{name}",
        config=config,
        inputs=("documents",),
        optional_inputs=optional_inputs,
        outputs=outputs,
        cpus=0,  # fans out one Ray task per shard, each reserving its own CPU
        passthrough={"documents": "documents"},
        **declaration,
    )

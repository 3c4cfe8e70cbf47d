"""Inputs staged again where the work runs.

A stage stages the inputs it needs as files into its node's scratch (`StageContext.local_input`) and
derives its plan from them, so the plan holds local paths. The processes it hands work to -- Ray Train
workers, RL role actors -- may run on other nodes, where those paths do not exist. `StagedInputs`
travels with the work: on the stage's own node it changes nothing; on another node `restage` downloads
the same store URIs into that node's scratch and rebases every path in the plan onto the copies. On a
local store nothing is staged, so nothing moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import Any

from components.core.artifacts import stage_in


@dataclasses.dataclass(frozen=True)
class StagedInputs:
    """Local paths on the node `node_id` and the store URIs they are copies of."""

    node_id: str | None = None
    paths: dict[str, str] = dataclasses.field(default_factory=dict)  # local path -> store URI


def _current_node() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


@contextlib.contextmanager
def restage(staged: StagedInputs) -> Iterator[Callable[[Any], Any]]:
    """Yield a function that maps a value holding paths of the stage's node (a string, a list, a dict,
    a dataclass such as a training plan) to the same value with paths valid on this node. The copies
    live until the block ends."""
    if not staged.paths or staged.node_id == _current_node():
        yield lambda value: value
        return
    with contextlib.ExitStack() as stack:
        moves = {old: str(stack.enter_context(stage_in(uri))) for old, uri in staged.paths.items()}
        yield lambda value: rebase(value, moves)


def rebase(value: Any, moves: dict[str, str]) -> Any:
    """`value` with every string that is one of the paths in `moves`, or lies under one, moved."""
    if isinstance(value, str):
        for old, new in moves.items():
            if value == old or value.startswith(old + "/"):
                return new + value[len(old) :]
        return value
    if isinstance(value, PurePath):
        return type(value)(rebase(str(value), moves))
    if isinstance(value, list | tuple):
        return type(value)(rebase(v, moves) for v in value)
    if isinstance(value, dict):
        return {k: rebase(v, moves) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value,
            **{f.name: rebase(getattr(value, f.name), moves) for f in dataclasses.fields(value) if f.init},
        )
    return value

"""Parallel work inside a stage: one Ray task per shard, resumable per shard.

Data stages map a function over shards. Inside a pipeline run Ray is up and each shard becomes a
Ray task (bulk data moves through the artifact store, only small results come back); in a plain
Python session (tests, notebooks) the same function runs in-process. `resumable` makes a shard's
work idempotent: a finished shard leaves a small JSON marker, and a rerun after a crash skips it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from components.core.artifacts import ArtifactStore

T = TypeVar("T")
R = TypeVar("R")


def ray_running() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:
        return False


def _apply(fn: Callable[[T], R], item: T) -> R:
    # Ray only wraps plain functions, not functools.partial objects; the callable travels as an argument.
    return fn(item)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    cpus: float = 1.0,
    memory_gb: float | None = None,
    progress: Callable[..., Any] | None = None,
    desc: str = "",
) -> list[R]:
    """`[fn(x) for x in items]`, as one Ray task per item when Ray is running. `fn` must be a
    module-level function (or a functools.partial of one) so that workers can import it."""
    if len(items) <= 1 or not ray_running():
        iterate = progress(items, total=len(items), desc=desc) if progress else items
        return [fn(x) for x in iterate]
    import ray

    options: dict[str, Any] = {"num_cpus": cpus, "max_retries": 2}
    if memory_gb:
        options["memory"] = int(memory_gb * 2**30)
    remote = ray.remote(_apply).options(**options)
    fn_ref = ray.put(fn)  # shipped once, not once per item
    refs = [remote.remote(fn_ref, x) for x in items]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    bar = iter(progress(range(len(refs)), total=len(refs), desc=desc)) if progress else None
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        results[index[done[0]]] = ray.get(done[0])
        if bar is not None:
            next(bar, None)
    if bar is not None:
        for _ in bar:  # let the bar close
            pass
    return results


def resumable(store: ArtifactStore, marker_uri: str, compute: Callable[[], dict]) -> dict:
    """Run `compute` once: its (JSON) result is stored at `marker_uri` after the shard's outputs are
    written, and returned directly on later calls."""
    if store.exists(marker_uri):
        return store.read_json(marker_uri)
    result = compute()
    store.write_json(marker_uri, result)
    return result

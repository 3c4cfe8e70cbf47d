"""Name -> function registries filled by decorators (the verifiers, the RL reward functions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def registering(registry: dict[str, F], name: str, what: str, *, overwrite: bool) -> Callable[[F], F]:
    """A decorator that puts its function into `registry` under `name` and returns it unchanged. Another
    function already registered under `name` is an error unless `overwrite` (`what` names the kind in it)."""

    def add(fn: F) -> F:
        if name in registry and not overwrite and registry[name] is not fn:
            raise ValueError(f"a {what} named {name!r} is already registered (pass overwrite=True)")
        registry[name] = fn
        return fn

    return add

"""A pipeline: stages and the artifacts that connect them.

Nodes are declared in an order where every input refers to an earlier node's output, so the
declaration order is a topological order and the graph cannot have cycles. The pipeline's config
model is derived from it: one section per stage (its own documented config model) plus `pipeline:`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, create_model

from components.core.config import ConfigError, StrictModel
from components.core.stage import Stage


@dataclass(frozen=True)
class Node:
    stage: Stage
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> "upstream_stage.output"

    @property
    def name(self) -> str:
        return self.stage.name

    def sources(self) -> dict[str, tuple[str, str]]:
        return {inp: tuple(ref.split(".", 1)) for inp, ref in self.inputs.items()}  # type: ignore[misc]


class Pipeline:
    def __init__(self, name: str, nodes: list[Node]):
        self.name = name
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            self._check(node)
            self.nodes[node.name] = node

    def _check(self, node: Node) -> None:
        stage = node.stage
        if node.name in self.nodes or node.name == "pipeline":
            raise ValueError(f"duplicate or reserved stage name {node.name!r}")
        for inp, (src, out) in node.sources().items():
            if inp not in stage.inputs:
                raise ValueError(f"{node.name}: wired input {inp!r} is not one of {stage.inputs}")
            if src not in self.nodes:
                raise ValueError(f"{node.name}.{inp}: {src!r} is not an earlier stage")
            if out not in self.nodes[src].stage.outputs:
                raise ValueError(f"{node.name}.{inp}: {src} has no output {out!r}")
        unwired = [i for i in stage.inputs if i not in node.inputs and i not in stage.optional_inputs]
        if unwired:
            raise ValueError(f"{node.name}: inputs {unwired} are not wired")

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def upstream(self, name: str) -> list[str]:
        return sorted({src for src, _ in self.nodes[name].sources().values()}, key=self.names.index)

    def ancestors(self, name: str) -> set[str]:
        out: set[str] = set()
        for up in self.upstream(name):
            out |= {up} | self.ancestors(up)
        return out

    def descendants(self, name: str) -> set[str]:
        return {n for n in self.names if name in self.ancestors(n)}

    def require(self, name: str) -> str:
        if name not in self.nodes:
            raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(self.names)}")
        return name

    def select(self, until: str | None = None) -> list[str]:
        """The stages to consider: all, or `until` and what it depends on, in topological order."""
        if until is None:
            return self.names
        keep = {self.require(until)} | self.ancestors(until)
        return [n for n in self.names if n in keep]

    def config_model(self, settings: type[BaseModel], stages: Iterable[str] | None = None) -> type[BaseModel]:
        """`{pipeline: settings, <stage>: <stage config>, ...}`; every section has defaults. Only the
        sections of `stages` (default: all) are validated; the others are kept as they are, unread."""
        checked = set(self.names if stages is None else stages)
        fields: dict[str, Any] = {"pipeline": (settings, ...)}
        for name, node in self.nodes.items():
            if name in checked:
                fields[name] = (node.stage.config, node.stage.config())
            else:
                fields[name] = (dict[str, Any], {})
        return create_model(f"{self.name.title()}PipelineConfig", __base__=StrictModel, **fields)

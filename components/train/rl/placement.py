"""Where the roles of an RL run live, and how the driver calls them (OpenRLHF's shape).

`RoleGroup` puts the roles where `RoleSettings.placement` says:

- ``separate``: one Ray actor per role with its own declared CPUs/GPUs -- the cluster layout, where the
  roles' forward passes run in parallel (reference, critic, reward model and policy score a rollout at
  the same time; policy and critic train at the same time);
- ``colocate``: all roles in ONE actor (one process, one device), for small models: no weights cross
  process boundaries and one reservation holds them all;
- ``inline``: the roles in the calling process, no Ray -- for tests and debugging (pdb works). The stage
  task reserves no CPU, so do not use it in a pipeline.

The driver calls ``group.call(role, method, *args)`` and collects with ``group.get(...)``; the three
placements run the same code. What a role is made of comes from the algorithm as a `RoleSpec` (its
class and constructor arguments), so a role can be swapped for a subclass -- a test's, say, that fails
on purpose -- without this module knowing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from components.core.staging import StagedInputs, restage
from components.train.rl.config import RoleResources, RoleSettings
from components.train.rl.rewards import RewardScorer
from components.train.rl.roles import PolicyActor, Role

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle


@dataclass
class RoleSpec:
    """How to build one role: its class and constructor arguments (``threads`` is added by the host)."""

    cls: type[Role]
    args: tuple[Any, ...] = ()  # constructor arguments, of whatever types the role's class takes
    kwargs: dict[str, Any] = field(default_factory=dict)


class RoleHost:
    """Roles in one process: a Ray actor (all roles under ``colocate``, one under ``separate``) or the
    caller itself (``inline``). Paths in the roles' arguments that point into inputs staged on the
    stage's node are rebased onto copies staged on this host's node (`restage`), kept until `close`."""

    def __init__(self, specs: Mapping[str, RoleSpec], threads: int, staged: StagedInputs) -> None:
        self._staging = contextlib.ExitStack()
        self._move: Callable[[Any], Any] = self._staging.enter_context(restage(staged))
        self.roles: dict[str, Role] = {
            name: spec.cls(*self._move(spec.args), threads=threads, **self._move(spec.kwargs))
            for name, spec in specs.items()
        }
        share_reward_model(self.roles)

    def call(self, role: str, method: str, *args: Any, **kwargs: Any) -> Any:
        # Any: the result is whatever the named method returns (a Rollout, Scores, stats...).
        return getattr(self.roles[role], method)(*self._move(args), **self._move(kwargs))

    def close(self) -> None:
        self._staging.close()


def share_reward_model(roles: Mapping[str, Role]) -> None:
    """In one process the policy evaluates with the scorer's reward model instead of loading another."""
    policy, scorer = roles.get("policy"), roles.get("reward")
    if not (isinstance(policy, PolicyActor) and isinstance(scorer, RewardScorer)):
        return
    if scorer.reward_model is not None:
        policy.eval_reward_model = scorer.reward_model


@dataclass
class Done:
    """The result of a call that already ran (inline placement)."""

    value: Any


class RoleGroup:
    """The roles of one RL run, placed as `RoleSettings.placement` says; see the module docstring."""

    def __init__(
        self,
        specs: Mapping[str, RoleSpec],
        settings: RoleSettings,
        *,
        name: str = "rl",
        staged: StagedInputs | None = None,
    ) -> None:
        self.placement = settings.placement
        staged = staged or StagedInputs()
        if self.placement == "inline":
            self._local = RoleHost(specs, settings.threads("colocated"), staged)
            return
        import ray

        def host(group: Mapping[str, RoleSpec], res: RoleResources, threads: int) -> ActorHandle:
            actor = ray.remote(RoleHost).options(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_restarts=0)
            return actor.remote(dict(group), threads, staged)

        self._hosts: dict[str, ActorHandle]
        if self.placement == "colocate":
            shared = host(specs, settings.colocated, settings.threads("colocated"))
            self._hosts = dict.fromkeys(specs, shared)
        else:
            self._hosts = {
                role: host({role: spec}, settings.resources(role), settings.threads(role))
                for role, spec in specs.items()
            }
        self.get([self.call(role, "ping") for role in specs])  # construction errors surface here

    def call(self, role: str, method: str, *args: Any, **kwargs: Any) -> ObjectRef | Done:
        """Start `role.method(*args)`; returns a future for `get` (Ray ObjectRef, or the value inline)."""
        if self.placement == "inline":
            return Done(self._local.call(role, method, *args, **kwargs))
        return self._hosts[role].call.remote(role, method, *args, **kwargs)

    def get(self, futures: ObjectRef | Done | list[ObjectRef | Done]) -> Any:
        """The value(s) of one future or a list of them (waits for Ray calls). Any: whatever the called
        methods return."""
        if isinstance(futures, list):
            return [self.get(f) for f in futures]
        if isinstance(futures, Done):
            return futures.value
        import ray

        return ray.get(futures)

    def shutdown(self) -> None:
        if self.placement == "inline":
            self._local.close()
            return
        import ray

        hosts = list({id(h): h for h in self._hosts.values()}.values())
        with contextlib.suppress(Exception):  # a host that died has nothing left to close
            ray.get([h.close.remote() for h in hosts], timeout=60)
        for h in hosts:
            with contextlib.suppress(Exception):
                ray.kill(h)
        self._hosts = {}


__all__ = ["Done", "RoleGroup", "RoleHost", "RoleSpec", "share_reward_model"]

"""RL checkpoints in the artifact store: one directory per step, complete once its state.json exists.

    <root>/step_000010/policy/   model.safetensors, optimizer.pt, RNG (the trainer's layout)
                      /critic/   (PPO)
                      /state.json  the driver's state, written last

The roles write their own parts (``save(uri)``), wherever they run; the driver writes state.json.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

from components.core.artifacts import ArtifactStore

STATE_FILE = "state.json"


class Timing(TypedDict):
    """Seconds spent per phase over the whole run (resumed runs included), and tokens processed."""

    generation_s: float
    scoring_s: float
    training_s: float
    tokens: int
    seconds: float


class RunState(TypedDict):
    """Everything the driver keeps that is not a model: what state.json holds (JSON)."""

    step: int
    before: dict[str, float]  # the evaluation of the SFT policy, before any update
    history: list[dict[str, float | None]]  # per iteration: "step" and the health metrics
    evals: list[dict[str, float]]  # evaluations during the run ("step" and the metrics)
    timing: Timing
    # Written with each checkpoint: the prompt stream's position, the algorithm's and the monitor's state.
    prompts: NotRequired[dict[str, int]]
    algorithm: NotRequired[dict[str, Any]]
    monitor: NotRequired[dict[str, Any]]


class RLCheckpoints:
    """Step directories under `root` in the artifact store, each complete once its state.json exists;
    the newest `keep` stay."""

    def __init__(self, store: ArtifactStore, root: str, keep: int) -> None:
        self.store, self.root, self.keep = store, root, keep

    def _complete(self) -> list[tuple[int, str]]:
        steps = []
        for name in self.store.listdir(self.root):
            if name.startswith("step_") and self.store.exists(self.store.join(self.root, name, STATE_FILE)):
                steps.append((int(name.removeprefix("step_")), self.store.join(self.root, name)))
        return sorted(steps)

    def latest(self) -> tuple[str, RunState] | None:
        """The newest complete step directory and its state, or None."""
        complete = self._complete()
        if not complete:
            return None
        _, directory = complete[-1]
        return directory, cast(RunState, self.store.read_json(self.store.join(directory, STATE_FILE)))

    def directory(self, step: int) -> str:
        return self.store.join(self.root, f"step_{step:06d}")

    def begin(self, step: int) -> str:
        """A fresh directory for step `step` (an unfinished one from a crash is cleared first)."""
        directory = self.directory(step)
        self.store.remove(directory)
        return directory

    def commit(self, step: int, state: RunState) -> None:
        """Write state.json last (atomically), then drop older and unfinished step directories."""
        directory = self.directory(step)
        self.store.write_json(self.store.join(directory, STATE_FILE), state)
        complete = [d for _, d in self._complete()]
        keep = set(complete[-self.keep :])
        for name in self.store.listdir(self.root):
            d = self.store.join(self.root, name)
            if name.startswith("step_") and d not in keep and d != directory:
                self.store.remove(d)


__all__ = ["STATE_FILE", "RLCheckpoints", "RunState", "Timing"]

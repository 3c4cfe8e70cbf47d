"""The runner on a toy pipeline: caching, selective reruns, failures, resume, MLflow runs."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import ray.cloudpickle
from mlflow import MlflowClient
from pydantic import Field

from components.core.artifacts import ArtifactStore
from components.core.config import ConfigError, StageConfig
from components.core.parallel import resumable
from components.core.stage import stage
from pipelines.config import PipelineSettings, check_switches
from pipelines.dag import Node, Pipeline
from pipelines.runner import PipelineRun, setup_logging

# Ray workers cannot import test modules; ship this one's stage functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


def _called(ctx, name: str) -> None:
    with open(Path(ctx.store.root).parent / "calls.log", "a") as f:
        f.write(name + "\n")


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.log"
    return path.read_text().split() if path.exists() else []


class NumbersConfig(StageConfig):
    count: int = Field(5, ge=0)


class PowerConfig(StageConfig):
    power: int = 2
    fail: bool = False
    kill_once_marker: str | None = None


class PlainConfig(StageConfig):
    pass


def _write(ctx, name: str, value) -> None:
    ctx.store.write_json(ctx.store.join(ctx.output_uri(name), "value.json"), value)


def _read(ctx, artifact):
    return ctx.store.read_json(ctx.store.join(artifact.uri, "value.json"))


@stage("numbers", config=NumbersConfig, outputs=("numbers",), cpus=0.5)
def numbers(ctx, config, inputs):
    """Counts from 0."""
    _called(ctx, "numbers")
    _write(ctx, "numbers", list(range(config.count)))
    ctx.report(count=config.count)
    return {"numbers": ctx.artifact("numbers", kind="json")}


@stage("powers", config=PowerConfig, inputs=("numbers",), outputs=("powers",), cpus=0.5)
def powers(ctx, config, inputs):
    """Raises each number to a power, in two resumable halves."""
    _called(ctx, "powers")
    if config.fail:
        raise ValueError("powers was told to fail")
    values = _read(ctx, inputs["numbers"])
    half = len(values) // 2

    def part(i, chunk):
        def compute():
            _called(ctx, f"powers.part{i}")
            return {"values": [v**config.power for v in chunk]}

        return resumable(ctx.store, ctx.store.join(ctx.scratch_uri("parts"), f"{i}.json"), compute)["values"]

    first = part(0, values[:half])
    marker = config.kill_once_marker
    if marker and os.path.exists(marker):
        os.unlink(marker)
        os.kill(os.getpid(), signal.SIGKILL)  # a worker lost halfway: Ray retries the task
    _write(ctx, "powers", first + part(1, values[half:]))
    ctx.report(total=sum(first))
    return {"powers": ctx.artifact("powers", kind="json")}


@stage("total", config=PlainConfig, inputs=("powers",), outputs=("total",), cpus=0.5)
def total(ctx, config, inputs):
    """Sums the powers."""
    _called(ctx, "total")
    value = sum(_read(ctx, inputs["powers"]))
    _write(ctx, "total", value)
    ctx.report(total=value)
    return {"total": ctx.artifact("total", kind="json")}


@stage("odd", config=PlainConfig, inputs=("numbers",), outputs=("odd",), passthrough={"odd": "numbers"})
def odd(ctx, config, inputs):
    """Keeps the odd numbers (a filter: switched off, it passes everything)."""
    _called(ctx, "odd")
    _write(ctx, "odd", [v for v in _read(ctx, inputs["numbers"]) if v % 2])
    return {"odd": ctx.artifact("odd", kind="json")}


@stage("odd_count", config=PlainConfig, inputs=("odd",), outputs=("count",), cpus=0.5)
def odd_count(ctx, config, inputs):
    """Counts what `odd` kept."""
    _called(ctx, "odd_count")
    n = len(_read(ctx, inputs["odd"]))
    _write(ctx, "count", n)
    ctx.report(odd=n)
    return {"count": ctx.artifact("count", kind="json")}


TOY = Pipeline(
    "toy",
    [
        Node(numbers),
        Node(powers, {"numbers": "numbers.numbers"}),
        Node(total, {"powers": "powers.powers"}),
        Node(odd, {"numbers": "numbers.numbers"}),
        Node(odd_count, {"odd": "odd.odd"}),
    ],
)


def run(settings: dict, **sections):
    model = TOY.config_model(PipelineSettings)
    config = model.model_validate({"pipeline": settings, **sections})
    check_switches(config, TOY)
    path, summary = PipelineRun(config, TOY, source="test").execute()
    assert path.exists() and json.loads(path.read_text()) == summary
    return summary


def statuses(summary) -> dict[str, str]:
    return {name: s["status"] for name, s in summary["stages"].items()}


def test_cache_reuse_and_selective_rerun(ray_cluster, settings, tmp_path):
    first = run(settings)
    assert statuses(first) == dict.fromkeys(TOY.names, "done")
    assert first["stages"]["total"]["metrics"]["total"] == 0 + 1 + 4 + 9 + 16
    assert first["stages"]["odd_count"]["metrics"]["odd"] == 2

    second = run(settings)
    assert statuses(second) == dict.fromkeys(TOY.names, "cached")
    assert second["stages"]["total"]["metrics"]["total"] == 30
    assert len(calls(tmp_path)) == 7  # nothing ran again (5 stages + 2 resumable parts)

    # Changing one stage's config reruns it and what depends on it, nothing else.
    before = len(calls(tmp_path))
    third = run(settings, powers={"power": 3})
    assert statuses(third) == {
        "numbers": "cached",
        "powers": "done",
        "total": "done",
        "odd": "cached",
        "odd_count": "cached",
    }
    assert third["stages"]["total"]["metrics"]["total"] == 0 + 1 + 8 + 27 + 64
    assert calls(tmp_path)[before:] == ["powers", "powers.part0", "powers.part1", "total"]


def test_same_output_keeps_downstream_cached(ray_cluster, settings, tmp_path):
    """Digests are of content: a stage forced to run again with the same result changes nothing after it."""
    run(settings)
    before = len(calls(tmp_path))
    model = TOY.config_model(PipelineSettings)
    config = model.model_validate({"pipeline": settings})
    _, summary = PipelineRun(config, TOY, source="test", force=("numbers",)).execute()
    assert statuses(summary)["numbers"] == "done"
    assert all(s == "cached" for n, s in statuses(summary).items() if n != "numbers")
    assert calls(tmp_path)[before:] == ["numbers"]


def test_until_and_from(ray_cluster, settings, tmp_path):
    model = TOY.config_model(PipelineSettings)
    config = model.model_validate({"pipeline": settings})
    _, summary = PipelineRun(config, TOY, source="test", until="powers").execute()
    assert list(summary["stages"]) == ["numbers", "powers"]
    _, summary = PipelineRun(config, TOY, source="test", from_stage="powers").execute()
    assert statuses(summary) == {
        "numbers": "cached",
        "powers": "done",
        "total": "done",
        "odd": "done",
        "odd_count": "done",
    }
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        PipelineRun(config, TOY, source="test", until="nope")


def test_failure_marks_dependents_and_keeps_other_branches(ray_cluster, settings, tmp_path):
    summary = run(settings, powers={"fail": True})
    assert summary["status"] == "failed"
    assert statuses(summary) == {
        "numbers": "done",
        "powers": "failed",
        "total": "not_run",
        "odd": "done",
        "odd_count": "done",
    }
    assert "powers was told to fail" in summary["stages"]["powers"]["error"]
    client = MlflowClient(settings["tracking_uri"])
    exp_id = client.get_experiment_by_name(settings["experiment"]).experiment_id
    found = client.search_runs([exp_id], "tags.`gptrecipe.stage` = 'powers'")
    failed = client.get_run(found[0].info.run_id)
    assert failed.info.status == "FAILED"
    assert "ValueError" in failed.data.tags["gptrecipe.error"]
    # After fixing the config the failed stage and its dependents run; the rest is reused.
    assert statuses(run(settings)) == {
        "numbers": "cached",
        "powers": "done",
        "total": "done",
        "odd": "cached",
        "odd_count": "cached",
    }


def test_switched_off_filter_passes_input_through(ray_cluster, settings, tmp_path):
    summary = run(settings, odd={"enabled": False})
    assert statuses(summary)["odd"] == "skipped"
    assert summary["stages"]["odd_count"]["metrics"]["odd"] == 5  # it counted every number
    assert "odd" not in calls(tmp_path)


def test_switching_off_a_needed_stage_skips_what_needs_it(settings):
    model = TOY.config_model(PipelineSettings)
    config = model.model_validate({"pipeline": settings, "powers": {"enabled": False}})
    plan = check_switches(config, TOY)
    assert plan.skipped["total"].reason == "its input 'powers' comes from powers.powers, and powers is off"
    assert set(plan.skipped) == {"total"}
    assert plan.skip_lines() == [f"skipping total: {plan.skipped['total'].reason}"]
    # Asked for explicitly, a stage that would be skipped is an error, said before any work.
    with pytest.raises(ConfigError, match=r"total would be skipped: its input 'powers' comes from"):
        check_switches(config, TOY, TOY.select("total"), target="total")


def test_a_skipped_stage_is_said_once_and_recorded(ray_cluster, settings, tmp_path, capfd):
    setup_logging()  # what `gptrecipe run` does: the driver's log on stderr
    summary = run(settings, powers={"enabled": False})
    assert statuses(summary) == {
        "numbers": "done",
        "powers": "skipped",
        "total": "skipped",
        "odd": "done",
        "odd_count": "done",
    }
    assert summary["stages"]["total"]["reason"].startswith("its input 'powers' comes from powers.powers")
    assert "reason" not in summary["stages"]["powers"]  # switched off, not skipped
    assert "total" not in calls(tmp_path)
    err = capfd.readouterr().err
    assert err.count("skipping total: its input 'powers'") == 1
    assert "[skipped] total" not in err
    parent = MlflowClient(settings["tracking_uri"]).get_run(summary["mlflow"]["parent_run_id"])
    assert parent.data.tags["gptrecipe.skipped.total"] == summary["stages"]["total"]["reason"]


def test_worker_killed_halfway_resumes_from_finished_parts(ray_cluster, settings, tmp_path):
    marker = tmp_path / "kill-once"
    marker.touch()
    summary = run(settings, powers={"kill_once_marker": str(marker)})
    assert statuses(summary)["powers"] == "done"
    assert not marker.exists()  # the first attempt really died
    made = calls(tmp_path)
    assert made.count("powers") == 2  # two attempts ...
    assert made.count("powers.part0") == 1  # ... but the finished half was not recomputed
    assert made.count("powers.part1") == 1
    assert summary["stages"]["total"]["metrics"]["total"] == 30


def test_mlflow_parent_and_child_runs(ray_cluster, settings, tmp_path):
    summary = run(settings, numbers={"count": 4})
    client = MlflowClient(settings["tracking_uri"])
    exp = client.get_experiment_by_name(settings["experiment"])
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.data.params["numbers.count"] == "4"
    assert parent.data.metrics["total/total"] == 0 + 1 + 4 + 9
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_stage = {r.data.tags["gptrecipe.stage"]: r for r in children}
    assert set(by_stage) == set(TOY.names)
    numbers_run = by_stage["numbers"]
    assert numbers_run.data.params["count"] == "4"
    assert numbers_run.data.metrics["count"] == 4
    assert numbers_run.data.tags["gptrecipe.cache_key"] == summary["stages"]["numbers"]["cache_key"]
    assert numbers_run.data.tags["gptrecipe.cache"] == "miss"
    assert "ray.job_id" in numbers_run.data.tags
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert {"summary.json", "config.json"} <= set(artifacts)

    again = run(settings, numbers={"count": 4})
    cached = client.get_run(again["stages"]["numbers"]["mlflow_run_id"])
    assert cached.data.tags["gptrecipe.cache"] == "hit"
    assert cached.data.tags["gptrecipe.produced_by_run"] == numbers_run.info.run_id
    assert cached.data.tags["mlflow.parentRunId"] == again["mlflow"]["parent_run_id"]


def test_store_layout(ray_cluster, settings, tmp_path):
    summary = run(settings)
    store = ArtifactStore(settings["store"])
    key = summary["stages"]["total"]["cache_key"]
    stage_dir = Path(store.uri("stages", "total", key))
    assert (stage_dir / "stage.json").exists()
    assert summary["stages"]["total"]["outputs"]["total"] == str(stage_dir / "total")
    assert not list(stage_dir.rglob(".tmp-*"))  # no temporary file left behind


class FileConfig(StageConfig):
    path: str

    def external_inputs(self) -> list[str]:
        return [self.path]


@stage("reads_file", config=FileConfig, outputs=("copy",), cpus=0)
def reads_file(ctx, config, inputs):
    """Copies a user's file."""
    _called(ctx, "reads_file")
    _write(ctx, "copy", Path(config.path).read_text())
    return {"copy": ctx.artifact("copy", kind="json")}


def test_replacing_a_users_file_reruns_the_stage(settings, tmp_path):
    from components.core.stage import RunEnv, run_stage

    user_file = tmp_path / "user.txt"
    user_file.write_text("first")
    env = RunEnv(
        run_id="t", store=settings["store"], tracking_uri=settings["tracking_uri"], experiment="files"
    )
    config = FileConfig(path=str(user_file))
    assert run_stage(reads_file, config, {}, env).status == "done"
    assert run_stage(reads_file, config, {}, env).status == "cached"
    user_file.write_text("second, longer")  # same name, new content
    again = run_stage(reads_file, config, {}, env)
    assert again.status == "done"
    assert json.loads(Path(again.outputs["copy"].uri, "value.json").read_text()) == "second, longer"

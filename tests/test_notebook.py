"""notebooks/inspect_run.ipynb, executed cell by cell with `exec` (no Jupyter needed): against a run of
the smoke config, and against a run in which most stages are absent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib
import pytest

from components.eval.evaluate import MODELS
from pipelines.recipe import RECIPE

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "inspect_run.ipynb"

pytestmark = pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")


def code_cells() -> list[str]:
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)  # no outputs stored
    return ["".join(c["source"]) for c in cells]


def run_notebook(run_dir: Path, scaling_dir: Path | None = None) -> dict:
    """Every code cell in order in one namespace, with RUN_DIR and RM_SCALING_DIR set the way a user sets
    them (the scaling results: an empty folder unless given, never the repository's runs/)."""
    cells = code_cells()
    assert "RUN_DIR = None\n" in cells[0]
    cells[0] = cells[0].replace("RUN_DIR = None\n", f"RUN_DIR = {str(run_dir)!r}\n", 1)
    scaling_dir = scaling_dir or run_dir / "no-rm-scaling"
    [at] = [i for i, c in enumerate(cells) if "RM_SCALING_DIR = None\n" in c]
    cells[at] = cells[at].replace("RM_SCALING_DIR = None\n", f"RM_SCALING_DIR = {str(scaling_dir)!r}\n", 1)
    namespace: dict = {"__name__": "__main__"}
    try:
        for i, source in enumerate(cells):
            exec(compile(source, f"{NOTEBOOK.name}, code cell {i}", "exec"), namespace)
    finally:
        plt.close("all")
    return namespace


def test_notebook_degrades_gracefully_when_stages_are_absent(tmp_path, tracking_uri, capsys):
    """A run stopped early: only the world stage finished; the rest failed, did not run or were cached
    elsewhere. Every cell still runs and says what is missing."""
    run_dir = tmp_path / "runs" / "20260101-000000-abcd"
    run_dir.mkdir(parents=True)
    stages = {name: {"status": "not_run", "outputs": {}, "metrics": {}} for name in RECIPE.names}
    stages["world"] = {"status": "done", "outputs": {"knowledge": str(tmp_path / "gone")}, "metrics": {}}
    stages[RECIPE.names[1]] = {"status": "failed", "outputs": {}, "metrics": {}, "error": "boom"}
    for s in stages.values():
        s.update(duration_s=0.0, cache_key=None, mlflow_run_id=None)
    summary = {
        "run_id": run_dir.name,
        "pipeline": "test",
        "config": "test.yaml",
        "status": "failed",
        "duration_s": 1.0,
        "mlflow": {"tracking_uri": tracking_uri, "experiment": "x", "parent_run_id": None},
        "stages": stages,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, sort_keys=True))  # as the runner writes it
    ns = run_notebook(run_dir)
    assert list(ns["stages"].index) == RECIPE.names  # shown in the recipe's order
    assert ns["stages"].loc[RECIPE.names[1], "error"] == "boom"
    for name in ("funnel_image", "truth", "pretrain_history", "evaluation", "samples"):
        assert ns[name] is None
    assert ns["rl_history"] == {} and ns["rm_scaling"] is None
    out = capsys.readouterr().out
    assert "no curation_report output in this run" in out and "no evaluate output in this run" in out
    assert "no reward-model scaling results" in out


def test_notebook_reads_every_section_of_a_finished_run(tmp_path, tracking_uri):
    """A synthetic finished run with the files and MLflow runs the stages write: the curation report,
    pretraining curves logged by a run that a cache hit points to, evaluate's report, PPO health."""
    from mlflow import MlflowClient

    from components.eval.evaluate import comparison_figure

    client = MlflowClient(tracking_uri)
    exp = client.create_experiment(f"notebook-{tmp_path.name}")

    def mlflow_run(name: str, metrics: dict[str, list[float]], **tags: str) -> str:
        run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
        for key, values in metrics.items():
            for step, value in enumerate(values):
                client.log_metric(run_id, key, value, step=step)
        client.set_terminated(run_id)
        return run_id

    producer = mlflow_run(
        "pretrain",
        {"train/loss": [8.0, 5.0, 3.0], "val/loss": [7.9, 4.8, 3.1], "val/bpb": [3.0, 2.0, 1.2]}
        | {"data/unigram_entropy_nats": [5.5]},
    )
    cache_hit = mlflow_run(
        "pretrain", {}, **{"gptrecipe.cache": "hit", "gptrecipe.produced_by_run": producer}
    )
    ppo = mlflow_run("ppo", {"rollout/rm_score": [0.1, 0.5], "rollout/gold_score": [0.2, 0.2]})

    curation = tmp_path / "curation_report" / "report"
    curation.mkdir(parents=True)
    truth = {"junk_precision": 0.9, "junk_recall": 0.8, "junk_recall_by_class": {"spam": {"recall": 1.0}}}
    report = {"documents_initial": 100, "documents_final": 60, "kept_fraction": 0.6, "truth": truth}
    (curation / "report.json").write_text(json.dumps(report))
    evaluation = tmp_path / "evaluate" / "report"
    evaluation.mkdir(parents=True)
    models = {"base": {"benchmark_acc": 0.5, "accuracy": 0.0}, "sft": {"benchmark_acc": 0.5, "accuracy": 0.4}}
    (evaluation / "evaluation.json").write_text(json.dumps({"models": models}))
    comparison_figure(models).savefig(evaluation / "comparison.png")
    comparison_figure(models).savefig(curation / "funnel.png")
    sample = {"split": "test", "task": "fact", "prompt": [{"role": "user", "content": "Capital of Ejon?"}]}
    sample |= {"reply": "Thozusesh", "answer": "Thozusesh", "correct": 1.0, "ended": True, "rm_score": 0.3}
    (evaluation / "samples_sft.jsonl").write_text(json.dumps(sample) + "\n")

    done = {"status": "done", "duration_s": 1.0, "cache_key": "k", "metrics": {"x": 1.0}}
    stages = {name: {**done, "outputs": {}, "mlflow_run_id": None} for name in ("world", "curation_report")}
    stages["curation_report"]["outputs"] = {"report": str(curation)}
    stages["pretrain"] = {**done, "status": "cached", "outputs": {}, "mlflow_run_id": cache_hit}
    stages["ppo"] = {**done, "outputs": {}, "mlflow_run_id": ppo}
    stages["evaluate"] = {**done, "outputs": {"report": str(evaluation)}, "mlflow_run_id": None}
    summary = {"run_id": "r", "pipeline": "test", "config": "c", "status": "succeeded", "duration_s": 5.0}
    summary |= {"mlflow": {"tracking_uri": tracking_uri}, "stages": stages}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps(summary))

    ns = run_notebook(run_dir)
    assert set(ns["stages"].index) == {"world", "curation_report", "pretrain", "ppo", "evaluate"}
    assert ns["truth"]["junk_precision"] == 0.9 and ns["funnel_image"].ndim == 3
    assert list(ns["pretrain_history"]["train/loss"]) == [8.0, 5.0, 3.0]  # the producing run's curve
    assert list(ns["pretrain_history"]["data/unigram_entropy_nats"]) == [5.5]
    assert list(ns["rl_history"]["ppo"]) == ["rollout/rm_score", "rollout/gold_score"]
    assert "grpo" not in ns["rl_history"]
    assert ns["evaluation"].loc["accuracy", "sft"] == 0.4 and list(ns["evaluation"].columns) == [
        "base",
        "sft",
    ]
    assert ns["samples"].loc[0, "reply"] == "Thozusesh" and ns["samples"].loc[0, "model"] == "sft"


@pytest.mark.slow
def test_notebook_over_a_smoke_run(smoke_run):
    """The smoke config end to end (every stage the recipe has), then the notebook over its run."""
    run_dir = smoke_run.run_dir
    ns = run_notebook(run_dir)
    assert list(ns["stages"].index) == RECIPE.names
    assert set(ns["stages"]["status"]) == {"done"}
    assert ns["funnel_image"].ndim == 3  # an RGB(A) image
    assert 0.0 <= ns["truth"]["junk_precision"] <= 1.0 and "good_kept_fraction" in ns["truth"]
    history = ns["pretrain_history"]
    assert len(history["train/loss"]) >= 2 and len(history["val/bpb"]) >= 1
    assert history["data/unigram_entropy_nats"].iloc[-1] > 0
    evaluation = ns["evaluation"]
    assert list(evaluation.columns) == list(MODELS)
    assert {"benchmark_acc", "bpb", "accuracy", "format_compliance"} <= set(evaluation.index)
    assert set(ns["samples"]["model"]) == set(MODELS)
    assert "rollout/rm_score" in ns["rl_history"]["ppo"]
    assert "rollout/gold_score" in ns["rl_history"]["grpo"]


def test_notebook_shows_the_reward_model_scaling_results(tmp_path):
    """The scaling section reads what tests/bench/rm_scaling.py writes: its table, one row per point with the
    base model's knowledge beside the RM's accuracy overall and per tier, and its figure."""
    spec = importlib.util.spec_from_file_location("rm_scaling", REPO / "tests" / "bench" / "rm_scaling.py")
    rm_scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rm_scaling)

    def point(steps: int, mc: float, rm: float, wrong: float) -> dict:
        tiers = {"accuracy_tier.helpful_vs_wrong": wrong, "accuracy_tier.helpful_vs_rude": 1.0}
        return {
            "value": steps,
            "params": 3990784,
            "base_benchmark_acc": mc,
            "base_val_bpb": 0.2,
            "rm": {
                "accuracy": rm,
                **tiers,
                "accuracy_kind.fact": wrong + 0.2,
                "length_baseline_accuracy": 0.45,
            },
            "loglik_baseline": {
                "loglik_baseline_accuracy": 0.7,
                "loglik_baseline_tier.helpful_vs_wrong": 0.9,
            },
            "stage_s": {"pretrain": 60.0, "sft": 20.0, "reward_model": 30.0},
            "stage_status": {"pretrain": "done", "sft": "done", "reward_model": "cached"},
        }

    points = [point(250, 0.3, 0.7, 0.5), point(500, 0.5, 0.75, 0.55), point(1000, 0.79, 0.8, 0.6)]
    out = tmp_path / "rm_scaling"
    text, _ = rm_scaling.write_outputs(points, "pretrain.max_steps", out)
    plt.close("all")
    assert plt.imread(out / "rm_scaling.png").ndim == 3
    # the knowledge tiers first, then the others, then the kinds
    assert (
        "| 1000 | 3990784 | 0.790 | 0.200 | 0.700 | 0.900 | 0.800 | 0.600 | 1.000 | 0.800 | 60/20/cached |"
        in text
    )

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = {"run_id": "r", "pipeline": "test", "config": "c", "status": "succeeded", "duration_s": 1.0}
    world = {"status": "done", "duration_s": 1.0, "outputs": {}, "metrics": {}, "mlflow_run_id": None}
    summary |= {"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, "stages": {"world": world}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    ns = run_notebook(run_dir, scaling_dir=out)
    table = ns["rm_scaling"]
    assert list(table.index) == [250, 500, 1000] and table.index.name == "pretrain.max_steps"
    assert list(table["base MC acc"]) == [0.3, 0.5, 0.79] and list(table["RM acc"]) == [0.7, 0.75, 0.8]
    assert list(table["helpful_vs_wrong"]) == [0.5, 0.55, 0.6]
    assert list(table["SFT loglik helpful>wrong"]) == [0.9, 0.9, 0.9]
    assert list(table["kind fact"]) == pytest.approx([0.7, 0.75, 0.8])

"""Reward-model scaling: held-out pair accuracy (overall and per tier) against the base model's knowledge.

Each point is a pipeline run `--until reward_model` of one config with one setting varied (by default
`pretrain.max_steps`: 250, 500, 1,000 and 2,000 steps of the tiny demo). The stages before pretraining do
not depend on the varied setting, so every point after the first takes them from the cache. From each
run it collects:

- the base model's knowledge: its accuracy on the world's multiple-choice fact benchmark (scored here the
  way evaluate scores it), its validation bits per byte, and the SFT model's own likelihood as a judge of
  the held-out pairs (the reward-model stage's `loglik_baseline`, overall and helpful vs wrong);
- the reward model: held-out pair accuracy, overall and per (chosen tier, rejected tier) and per kind;
- the wall time of the run and of the training stages.

It prints the table, draws the figure (`rm_scaling.png`), writes `rm_scaling.json` and `rm_scaling.md`
under `--out`, and logs all three with the points' metrics to MLflow as one run (step = the varied value).
Prints figures, asserts nothing. Training takes minutes per point on 2 cores (most of it pretraining), so
run it niced when the machine is shared:

    nice -n 10 .venv/bin/python tests/bench/rm_scaling.py                      # the tiny demo, 4 points
    nice -n 10 .venv/bin/python tests/bench/rm_scaling.py --values 250,500,1000,2000,4000 \\
        --store /tmp/rm/store --tracking-uri sqlite:////tmp/rm/mlflow.db reward_model.epochs=2
    .venv/bin/python tests/bench/rm_scaling.py --summaries runs/*/summary.json  # collect finished runs

Overrides (`key.sub=value`) go to every point's run. With `--summaries` nothing runs: the points are the
given runs' summaries (each one must have finished its reward-model stage), their value read from the
config the run recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

import torch  # noqa: E402

from components.core.tracking import Tracker  # noqa: E402
from components.eval.multiple_choice import benchmark_items, score_items  # noqa: E402
from components.model.checkpoint import load_model_dir  # noqa: E402
from components.tokenizer.bpe import eot_id, load_tokenizer  # noqa: E402

# The tier pairs a reward model can only get right by knowing the answer. In helpful vs wrong the two
# replies have the same form. Helpful vs terse and terse vs wrong are coupled: a model that cannot tell a
# full right reply from a full wrong one gives both one score, above or below the terse reply's, so it gets
# one of those two tiers right and the other wrong (their accuracies sum to about 1). The three tiers
# against rude or degenerate replies differ in form only. Without knowledge the ceiling is thus about
# (3 + 1 + 0.5) / 6 = 0.75 on the tiny world's six equal tiers.
KNOWLEDGE_TIERS = ("helpful_vs_wrong", "terse_vs_wrong", "helpful_vs_terse")
TRAINING_STAGES = ("pretrain", "sft", "reward_model")


def run_point(config: str, key: str, value: str, overrides: list[str], store: str, tracking_uri: str) -> Path:
    """One `gptrecipe run CONFIG --until reward_model KEY=VALUE ...`; returns its summary.json."""
    cmd = [sys.executable, "-m", "pipelines.cli", "run", config, "--until", "reward_model", f"{key}={value}"]
    cmd += [f"pipeline.store={store}", f"pipeline.tracking_uri={tracking_uri}", *overrides]
    print(f"[{time.strftime('%H:%M:%S')}] {key}={value}: {' '.join(cmd[3:])}", flush=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].endswith("summary.json"):
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"the run for {key}={value} failed (exit {done.returncode})")
    return Path(lines[-1])


def recorded_value(summary: dict[str, Any], key: str) -> Any:
    """The value of `key` (dotted) in the config the run recorded in MLflow (its parent run's params)."""
    from mlflow import MlflowClient

    run_id = summary["mlflow"]["parent_run_id"]
    params = MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(run_id).data.params
    if key not in params:
        raise SystemExit(f"run {summary['run_id']}: its recorded config has no {key}")
    return json.loads(params[key]) if params[key] not in ("None", "") else None


def stage_dir(summary: dict[str, Any], stage: str, output: str) -> Path:
    info = summary["stages"].get(stage)
    if not info or info["status"] not in ("done", "cached") or output not in info["outputs"]:
        raise SystemExit(
            f"run {summary['run_id']}: no {stage} output '{output}' (status {info and info['status']})"
        )
    path = Path(info["outputs"][output])
    if not path.is_dir():
        raise SystemExit(
            f"run {summary['run_id']}: {path} is not a local directory (a local store is needed)"
        )
    return path


def benchmark_accuracy(model_dir: Path, knowledge_dir: Path) -> tuple[float, int]:
    """(accuracy, items) of the model on the world's fact benchmark, scored as evaluate scores it."""
    records = [json.loads(line) for line in (knowledge_dir / "benchmark.jsonl").read_text().splitlines()]
    tok = load_tokenizer(model_dir / "tokenizer.json")
    model, _ = load_model_dir(model_dir)
    with torch.no_grad():
        result = score_items(model, tok, benchmark_items(records), prefix_ids=[eot_id(tok)])
    return result.acc, result.items


def digest(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def collect(summary_path: Path, key: str, value: Any, wall_s: float | None) -> dict[str, Any]:
    """One point's figures from its run's summary.json and the reward model's config.json."""
    summary = json.loads(summary_path.read_text())
    rm_config = json.loads((stage_dir(summary, "reward_model", "reward_model") / "config.json").read_text())
    training = rm_config["training"]
    acc, items = benchmark_accuracy(
        stage_dir(summary, "pretrain", "model"), stage_dir(summary, "world", "knowledge")
    )
    pretrain = summary["stages"]["pretrain"]["metrics"]
    preferences = stage_dir(summary, "conversations", "preferences")
    point = {
        "value": value,
        "run": str(summary_path),
        "params": pretrain.get("params"),
        "base_benchmark_acc": acc,
        "benchmark_items": items,
        "base_val_bpb": pretrain.get("val_bpb"),
        "rm": {
            k: v for k, v in training["val"].items() if k.startswith("accuracy") or k.endswith("accuracy")
        },
        "loglik_baseline": training["loglik_baseline"],
        "rm_train_accuracy": training.get("train_accuracy"),
        # Points are comparable only on the same preference data (the code that made it can change).
        "preferences_digest": digest(*sorted(preferences.glob("*.jsonl"))),
        "wall_s": wall_s,
        # A cached stage's duration is the cache lookup: the seconds it took are in the run that made it.
        "stage_s": {s: summary["stages"][s]["duration_s"] for s in TRAINING_STAGES},
        "stage_status": {s: summary["stages"][s]["status"] for s in TRAINING_STAGES},
    }
    print(
        f"  {key}={value}: base benchmark {acc:.3f}, RM held-out accuracy {training['val']['accuracy']:.4f}"
    )
    return point


def parse_value(text: str) -> Any:
    """ "2000" -> 2000, "3e-4" -> 0.0003, anything else stays text (as the config override parses it)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) >= 100:  # a count logged as a metric
        return str(int(x))
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def table(points: list[dict[str, Any]], key: str) -> str:
    """A markdown table: one row per point."""
    tiers = sorted({k.split(".", 1)[1] for p in points for k in p["rm"] if k.startswith("accuracy_tier.")})
    tiers = [t for t in KNOWLEDGE_TIERS if t in tiers] + [t for t in tiers if t not in KNOWLEDGE_TIERS]
    kinds = sorted({k.split(".", 1)[1] for p in points for k in p["rm"] if k.startswith("accuracy_kind.")})
    head = [key, "params", "base MC acc", "base bpb", "SFT loglik acc", "SFT loglik h>w", "RM acc"]
    head += [f"RM {t}" for t in tiers] + [f"RM {k}" for k in kinds] + ["train s (pt/sft/rm)"]
    rows = []
    for p in points:
        seconds = "/".join(
            f"{p['stage_s'][s]:.0f}" if p["stage_status"][s] == "done" else "cached" for s in TRAINING_STAGES
        )
        ll = p["loglik_baseline"]
        row = [p["value"], p["params"], p["base_benchmark_acc"], p["base_val_bpb"]]
        row += [ll.get("loglik_baseline_accuracy"), ll.get("loglik_baseline_tier.helpful_vs_wrong")]
        row += [p["rm"]["accuracy"], *(p["rm"].get(f"accuracy_tier.{t}") for t in tiers)]
        row += [*(p["rm"].get(f"accuracy_kind.{k}") for k in kinds), seconds]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def figure(points: list[dict[str, Any]], key: str):
    """Left: RM pair accuracy per tier against the varied setting. Right: the RM's overall and knowledge-tier
    accuracy against the base model's benchmark accuracy, beside the SFT model's likelihood as a judge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [float(p["value"]) for p in points]
    tiers = sorted({k for p in points for k in p["rm"] if k.startswith("accuracy_tier.")})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, tier in enumerate(tiers):
        name = tier.split(".", 1)[1]
        knowledge = name in KNOWLEDGE_TIERS
        left.plot(
            x,
            [p["rm"].get(tier) for p in points],
            marker="o",
            lw=2 if knowledge else 0.8,
            ls="-" if knowledge else ":",
            color=f"C{i % 10}",
            label=name,
        )
    left.plot(x, [p["rm"]["accuracy"] for p in points], marker="s", lw=3, color="black", label="overall")
    left.plot(
        x,
        [p["base_benchmark_acc"] for p in points],
        marker="^",
        lw=1.5,
        ls="--",
        color="grey",
        label="base MC benchmark",
    )
    if min(x) > 0 and max(x) / min(x) >= 4:
        left.set_xscale("log", base=2)
    left.set_xticks(x, [str(p["value"]) for p in points])
    left.minorticks_off()
    left.set_xlabel(key)
    left.set_ylabel("held-out pair accuracy")
    left.set_title("reward model per tier (bold: the tiers that need knowledge)", fontsize=10)
    left.legend(fontsize=7, loc="best", ncol=2)

    mc = [p["base_benchmark_acc"] for p in points]
    right.plot(mc, [p["rm"]["accuracy"] for p in points], marker="s", lw=3, color="black", label="RM overall")
    for i, name in enumerate(KNOWLEDGE_TIERS):
        right.plot(
            mc,
            [p["rm"].get(f"accuracy_tier.{name}") for p in points],
            marker="o",
            color=f"C{i}",
            label=f"RM {name}",
        )
    # The SFT model's own likelihood as the judge: what the trunk the RM starts from already knows.
    for key, color, label in (
        ("loglik_baseline_tier.helpful_vs_wrong", "C0", "SFT likelihood helpful_vs_wrong"),
        ("loglik_baseline_tier.terse_vs_wrong", "C1", "SFT likelihood terse_vs_wrong"),
        ("loglik_baseline_accuracy", "grey", "SFT likelihood overall"),
    ):
        values = [p["loglik_baseline"].get(key) for p in points]
        right.plot(mc, values, marker="x", ls="--", color=color, label=label)
    for p, m in zip(points, mc, strict=True):
        right.annotate(
            str(p["value"]), (m, p["rm"]["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    right.axhline(0.85, color="red", lw=0.8, ls=":", label="target 0.85")
    right.set_xlabel("base model: multiple-choice fact benchmark accuracy")
    right.set_ylabel("held-out pair accuracy")
    right.set_title("what the reward model gets from the base model's knowledge", fontsize=10)
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def write_outputs(points: list[dict[str, Any]], key: str, out: Path):
    """rm_scaling.{json,md,png} in `out` (what the notebook's scaling section reads); (table, figure)."""
    out.mkdir(parents=True, exist_ok=True)
    text, fig = table(points, key), figure(points, key)
    fig.savefig(out / "rm_scaling.png", dpi=110, bbox_inches="tight")
    (out / "rm_scaling.md").write_text(text + "\n")
    (out / "rm_scaling.json").write_text(json.dumps({"vary": key, "points": points}, indent=2) + "\n")
    return text, fig


def log_to_mlflow(points, key, text, fig, args) -> str:
    tracker = Tracker(
        args.tracking_uri,
        args.experiment,
        run_name=f"rm-scaling-{key}",
        tags={"gptrecipe.bench": "rm_scaling"},
    )
    tracker.log_params(
        {
            "config": args.config,
            "vary": key,
            "values": ",".join(str(p["value"]) for p in points),
            "overrides": " ".join(args.overrides) or "-",
        }
    )
    for p in points:
        step = int(float(p["value"])) if float(p["value"]).is_integer() else None
        metrics = {"base_benchmark_acc": p["base_benchmark_acc"], "base_val_bpb": p["base_val_bpb"]}
        metrics |= {f"rm/{k}": v for k, v in p["rm"].items()}
        metrics |= {f"sft/{k}": v for k, v in p["loglik_baseline"].items()}
        tracker.log_metrics(
            {k: v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}, step
        )
    tracker.log_text(text, "rm_scaling.md")
    tracker.log_dict({"vary": key, "points": points}, "rm_scaling.json")
    tracker.log_figure(fig, "rm_scaling.png")
    tracker.finish()
    return tracker.run_id


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="tiny", help="pipeline config of every point")
    parser.add_argument(
        "--vary", default="pretrain.max_steps", help="the setting that changes between points"
    )
    parser.add_argument("--values", default="250,500,1000,2000", help="its values, comma-separated")
    parser.add_argument("--store", default=str(REPO / "runs" / "rm_scaling" / "store"))
    parser.add_argument("--tracking-uri", default=f"sqlite:///{REPO / 'runs' / 'rm_scaling' / 'mlflow.db'}")
    parser.add_argument(
        "--experiment", default="gptrecipe-rm-scaling", help="MLflow experiment of the result"
    )
    parser.add_argument("--out", default=str(REPO / "runs" / "rm_scaling"), help="folder of the figure/table")
    parser.add_argument("--summaries", nargs="+", type=Path, help="collect these finished runs; run nothing")
    parser.add_argument("overrides", nargs="*", help="key.sub=value for every point's run")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    key = args.vary

    points = []
    if args.summaries:
        for path in args.summaries:
            summary = json.loads(path.read_text())
            points.append(collect(path, key, recorded_value(summary, key), summary.get("duration_s")))
    else:
        for value in args.values.split(","):
            started = time.perf_counter()
            path = run_point(args.config, key, value, args.overrides, args.store, args.tracking_uri)
            points.append(collect(path, key, parse_value(value), time.perf_counter() - started))
    points.sort(key=lambda p: float(p["value"]))

    text, fig = write_outputs(points, key, Path(args.out))
    print(text)
    if len({p["preferences_digest"] for p in points}) > 1:
        print("WARNING: the points were trained on different preference data (code changed between runs)")
    run_id = log_to_mlflow(points, key, text, fig, args)
    print(
        f"wrote {args.out}/rm_scaling.{{png,md,json}}; MLflow run {run_id} in {args.experiment} "
        f"({args.tracking_uri})"
    )


if __name__ == "__main__":
    main()

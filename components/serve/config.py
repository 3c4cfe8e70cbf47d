"""What a serving deployment is configured with: one `ServeConfig`, the same for `gptrecipe serve`, the
Serve config file of a cluster (`infra/serve/gptrecipe.yaml`, its `args`) and the tests.

Everything Ray Serve itself schedules (replicas, autoscaling, `max_ongoing_requests`, CPUs/GPUs per
replica) is here too, so one YAML block describes the whole deployment.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from components.core.config import StrictModel


class Autoscaling(StrictModel):
    """Ray Serve autoscaling: replicas follow the number of requests in flight per replica."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas kept running (0 = scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Most replicas Serve may start.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Requests in flight per replica that Serve aims for when it scales."
    )

    @model_validator(mode="after")
    def _check_range(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class ServeConfig(StrictModel):
    """One model behind the OpenAI-style API."""

    model_dir: str = Field(
        description="GPT model directory (config.json, model.safetensors, tokenizer.json)."
    )
    model_name: str | None = Field(
        None, description="Name clients pass as `model` and /v1/models lists; default: the directory's name."
    )
    reward_model_dir: str | None = Field(
        None, description="Scalar-head reward model directory for POST /v1/score; none = the route says 404."
    )
    device: str = Field("cpu", description="Torch device of the model, e.g. cpu or cuda.")
    max_batch_size: int = Field(
        16, ge=1, description="Sequences decoded together in one forward (slots of the batching engine)."
    )
    max_tokens_default: int = Field(
        256, ge=1, description="max_tokens when a request gives none (capped by what the context leaves)."
    )
    max_tokens_limit: int = Field(
        1024, ge=1, description="Largest max_tokens a request may ask for; more is a 400 naming max_tokens."
    )
    max_n: int = Field(8, ge=1, description="Largest `n` (choices per request).")
    stream_interval: float = Field(
        0.05,
        ge=0,
        description="Seconds a stream waits after one chunk before it sends the tokens decoded meanwhile "
        "as the next (the first token goes out at once); 0 = a chunk per decoded token. Under load every "
        "chunk costs the replica, the proxy and the client more CPU than decoding its token; 0.05 s (20 "
        "updates a second, smooth to a reader) gave 1.2-1.3x the output tokens/s of 0.02 s at 16 clients.",
    )
    tools: bool = Field(
        True,
        description="Chat replies may call the model's tool (an expression evaluator): the engine runs each "
        "call and feeds its result back, and the reply shows both. Off, or a model without tool tokens: "
        "calls are plain text. Completions never run tools.",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch.set_num_threads in the replica; None = leave torch's default."
    )
    # -- what Ray Serve schedules --------------------------------------------------------------------
    num_replicas: int = Field(1, ge=1, description="Replicas when autoscaling is off.")
    autoscaling: Autoscaling | None = Field(None, description="Autoscaling instead of a fixed num_replicas.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests one replica accepts at once; more wait in the proxy's queue."
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs each replica reserves.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs each replica reserves (set device: cuda with it).")

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of `Deployment.options` for this config."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            options["num_replicas"] = self.num_replicas
        return options

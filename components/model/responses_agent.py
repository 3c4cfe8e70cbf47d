"""Our chat model as an MLflow 3 `ResponsesAgent`: what the `register` stage logs to the model registry.

MLflow 3 deprecates `ChatModel` for chat models in favour of `ResponsesAgent` (the OpenAI Responses API
shape): a request is `{"input": [{"role": "user", "content": "..."}, ...], "max_output_tokens": ...,
"temperature": ...}` and the answer one assistant `message` output item. The agent reads the model
directory from the logged model's artifacts (`model_dir`), renders the conversation with our chat
template (`components.tokenizer.chat.render`, the generation prompt appended), samples with
`components.model.generate.generate` until `<|im_end|>`, and reads the reply with `assistant_reply`:
the same path as evaluation and the OpenAI-style server.

The logged model is models-from-code: `responses_agent_model.py` (beside this module) is the file MLflow
copies into the model and runs on load; loading needs gptrecipe's `components` package importable (the
gptrecipe image, or `pip install` of this project). `model_config` sets the defaults below.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator
from typing import Any

import torch
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import (
    ResponsesAgentRequest,
    ResponsesAgentResponse,
    ResponsesAgentStreamEvent,
    to_chat_completions_input,
)

MODEL_DIR_ARTIFACT = "model_dir"  # the GPT model directory served by the agent
HF_ARTIFACT = "hf_model"  # the transformers export, carried along for vLLM / the Hub
DEFAULTS = {"max_output_tokens": 256, "temperature": 0.0, "device": "auto", "seed": 0}


def _text(content: Any) -> Any:
    """Responses input content may be a list of parts ({"type": "input_text", "text": ...})."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content


def request_messages(request: ResponsesAgentRequest) -> list[dict[str, str]]:
    """The request's input as {role, content} messages (the chat template validates them)."""
    messages = []
    for m in to_chat_completions_input(request.input):
        if m.get("role") not in ("system", "user", "assistant") or m.get("tool_calls"):
            raise ValueError(f"gptrecipe chat models take system/user/assistant text, not {m.get('role')!r}")
        messages.append({"role": m["role"], "content": _text(m.get("content", ""))})
    return messages


class GPTRecipeAgent(ResponsesAgent):
    """A gptrecipe model directory behind MLflow's ResponsesAgent interface."""

    def __init__(self) -> None:
        self.model = None
        self.tok = None
        self.options = dict(DEFAULTS)

    def load_context(self, context) -> None:
        from components.model.checkpoint import TOKENIZER_FILE, load_model_dir
        from components.tokenizer.bpe import load_tokenizer

        self.options = {**DEFAULTS, **(context.model_config or {})}
        device = self.options["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model_dir = context.artifacts[MODEL_DIR_ARTIFACT]
        self.model, _ = load_model_dir(model_dir, device=device)
        self.tok = load_tokenizer(f"{model_dir}/{TOKENIZER_FILE}")

    def reply(self, request: ResponsesAgentRequest) -> str:
        from components.model.generate import generate
        from components.model.tools import ToolRunner
        from components.tokenizer.bpe import eot_id
        from components.tokenizer.chat import ChatTokens, assistant_reply, render

        if self.model is None:
            raise RuntimeError("the agent has no model: MLflow calls load_context before predict")
        prompt = render(self.tok, request_messages(request), add_generation_prompt=True).ids
        room = self.model.config.context_length - len(prompt)
        if room < 1:
            raise ValueError(
                f"the conversation is {len(prompt)} tokens; the model's context is "
                f"{self.model.config.context_length}"
            )
        max_new = min(room, request.max_output_tokens or int(self.options["max_output_tokens"]))
        temperature = self.options["temperature"] if request.temperature is None else request.temperature
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(int(self.options["seed"]))
        out = generate(
            self.model,
            [prompt],
            max_new_tokens=max_new,
            temperature=float(temperature),
            top_p=request.top_p,
            stop_tokens=[ChatTokens.of(self.tok).im_end, eot_id(self.tok)],
            generator=generator,
            # The model's tool (exact arithmetic, letter counts) runs as in evaluation and serving.
            tools=ToolRunner(self.tok) if ChatTokens.of(self.tok).has_tools else None,
        )
        return assistant_reply(self.tok, out.response_lists()[0]).text

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        item = self.create_text_output_item(text=self.reply(request), id=f"msg_{uuid.uuid4().hex}")
        return ResponsesAgentResponse(output=[item], custom_outputs=request.custom_inputs)

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[ResponsesAgentStreamEvent]:
        # One delta with the whole reply, then the finished item: the model is small and fast.
        item_id = f"msg_{uuid.uuid4().hex}"
        text = self.reply(request)
        yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=text, item_id=item_id))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done", item=self.create_text_output_item(text=text, id=item_id)
        )


__all__ = ["DEFAULTS", "HF_ARTIFACT", "MODEL_DIR_ARTIFACT", "GPTRecipeAgent", "request_messages"]

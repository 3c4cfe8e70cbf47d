"""chat_eval: with a scripted model whose replies are known, every metric equals the hand count; the
reward model scores the full prompt + reply; a real (random) GPT is evaluated deterministically."""

import warnings

import pytest
import torch
from tokenizers import Tokenizer
from torch import nn

from components.eval.chat_eval import chat_eval, format_samples, summarize, without_tools
from components.model.gpt import GPT, GPTConfig
from components.model.heads import ScalarHeadModel
from components.tokenizer.bpe import (
    IM_END,
    IM_START,
    TokenizerConfig,
    encode_batch,
    special_token_ids,
    train_tokenizer,
)
from components.tokenizer.chat import ChatTokens, render, tool_result_ids

_TEXT = """
The capital of Ejon is Thozusesh. What is the capital of Ejon? Let's work it out: 23 + 48 = 23 + 40 + 8
= 63 + 8 = 71. The answer is 71. I don't have any information about Adeza. Who is Adeza? User: hello.
The capital of Kuviro is Zifos. What is the capital of Kuviro? Thozusesh or Zifos.
"""


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_tokenizer([_TEXT] * 20, TokenizerConfig(vocab_size=400))


def enc(tok, text):
    return encode_batch(tok, [text], append_eot=False)[0]


class ScriptedModel(nn.Module):
    """Looks like a GPT to `generate`, but replies to each prompt with a scripted token sequence (keyed
    by the prompt's ids), then repeats `filler` forever."""

    def __init__(self, vocab_size: int, replies: dict[tuple[int, ...], list[int]], filler: int):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, context_length=128, n_layer=1, n_head=1, n_embd=8)
        self.anchor = nn.Parameter(torch.zeros(1))  # generate asks the parameters for the device
        self.lm_head = nn.Identity()  # hidden states are already logits
        self.replies, self.filler = replies, filler

    def hidden_states(self, idx, attention_mask=None, position_ids=None, *, kv_cache=None):
        mask = torch.ones_like(idx) if attention_mask is None else attention_mask
        if kv_cache.length == 0:  # prefill: remember each row's prompt
            self.prompts = [tuple(row[m.bool()].tolist()) for row, m in zip(idx, mask, strict=True)]
            self.generated = [0] * len(self.prompts)
        else:
            self.generated = [g + int(m[0]) for g, m in zip(self.generated, mask, strict=True)]
        kv_cache.length += idx.shape[1]
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.config.vocab_size)
        for i, prompt in enumerate(self.prompts):
            script = self.replies[prompt]
            k = self.generated[i]
            logits[i, -1, script[k] if k < len(script) else self.filler] = 1.0
        return logits


def fact(question, answer, competitors, id_):
    return {
        "prompt": [{"role": "user", "content": question}],
        "answer": answer,
        "task": "fact",
        "competitors": competitors,
        "id": id_,
    }


def records():
    capitals = ["Thozusesh", "Zifos"]
    return [
        fact("What is the capital of Ejon?", "Thozusesh", capitals, "a"),
        fact("What is the capital of Kuviro?", "Zifos", capitals, "b"),
        {"prompt": "What is 23 + 48?", "answer": "71", "task": "arithmetic", "id": "c"},
        {
            "prompt": [{"role": "user", "content": "Who is Adeza?"}],
            "answer": "Adeza",
            "task": "unknown",
            "id": "d",
        },
        {"prompt": [{"role": "user", "content": "Hello!"}], "answer": None, "task": None, "id": "e"},
    ]


def normalised(rs):
    from components.io.trl import prompt_record

    return [prompt_record(r) for r in rs]


def test_metrics_equal_the_hand_count_for_known_replies(tok):
    end, start = special_token_ids(tok)[IM_END], special_token_ids(tok)[IM_START]
    rs = normalised(records())
    prompt_ids = [tuple(render(tok, r["prompt"], add_generation_prompt=True).ids) for r in rs]
    scripts = [
        [*enc(tok, "The capital of Ejon is Thozusesh."), end],  # right, ended
        [*enc(tok, "Thozusesh or Zifos."), end],  # a competitor too: wrong, ended
        [*enc(tok, "The answer is 71."), end, start],  # right, ended (what follows <|im_end|> is cut)
        enc(tok, "I don't have any information about Adeza. User: hello."),  # right, leaks, never ends
        [*enc(tok, "Hello!"), start],  # not verifiable; stops at <|im_start|> without ending: leaked
    ]
    filler = enc(tok, "o")[0]
    model = ScriptedModel(tok.get_vocab_size(), dict(zip(prompt_ids, scripts, strict=True)), filler)
    result = chat_eval(model, tok, rs, max_new_tokens=40, batch_size=2)

    assert [s["id"] for s in result.samples] == ["a", "b", "c", "d", "e"]  # record order
    assert [s["correct"] for s in result.samples] == [1.0, 0.0, 1.0, 1.0, None]
    assert [s["ended"] for s in result.samples] == [True, True, True, False, False]
    assert [s["leaked_role"] for s in result.samples] == [False, False, False, True, True]
    assert result.samples[2]["reply"] == "The answer is 71."
    lengths = [len(scripts[0]), len(scripts[1]), len(scripts[2]) - 1, 40, 40]  # stops at <|im_end|>
    assert [s["response_tokens"] for s in result.samples] == lengths
    m = result.metrics
    assert m["accuracy"] == 3 / 4 and m["accuracy.fact"] == 1 / 2
    assert m["accuracy.arithmetic"] == 1.0 and m["accuracy.unknown"] == 1.0
    assert m["format_compliance"] == 3 / 5 and m["ended_rate"] == 3 / 5 and m["leaked_role_rate"] == 2 / 5
    assert m["mean_response_tokens"] == pytest.approx(sum(lengths) / 5)
    assert (m["n"], m["skipped_too_long"]) == (5, 0)
    assert "rm_score_mean" not in m
    text = format_samples(result.samples, title="scripted")
    assert "[user] What is 23 + 48?" in text and "WRONG" in text and "LEAKED ROLE" in text

    # With a limit and a prompt that cannot fit context_length - max_new_tokens.
    long = {**rs[0], "prompt": [{"role": "user", "content": _TEXT * 3}], "id": "long"}
    small = chat_eval(model, tok, [*rs[:2], long], max_new_tokens=40)
    assert small.metrics["skipped_too_long"] == 1 and [s["id"] for s in small.samples] == ["a", "b"]
    assert chat_eval(model, tok, rs, max_new_tokens=40, limit=2).metrics["n"] == 2


def test_summarize_without_verifiable_records_and_unknown_tasks(tok):
    samples = [{"ended": True, "leaked_role": False, "response_tokens": 3, "correct": None, "task": None}]
    assert summarize(samples) == {
        "n": 1.0,
        "format_compliance": 1.0,
        "ended_rate": 1.0,
        "leaked_role_rate": 0.0,
        "mean_response_tokens": 3.0,
        "tool_call_rate": 0.0,
    }
    assert summarize([]) == {"n": 0.0}
    bad = {"prompt": [{"role": "user", "content": "Hi"}], "answer": "x", "task": "no-such-task"}
    with pytest.raises(ValueError, match=r"no verifier for task\(s\) \['no-such-task'\]"):
        chat_eval(
            GPT(GPTConfig(vocab_size=400, context_length=64, n_layer=1, n_head=1, n_embd=8)), tok, [bad]
        )


def test_real_gpt_is_deterministic_restores_its_mode_and_rm_scores_prompt_plus_reply(tok):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=400, context_length=64, n_layer=2, n_head=2, n_embd=16, init_std=0.1)
    model = GPT(config).train()
    rm = ScalarHeadModel(GPT(config))
    torch.nn.init.normal_(rm.head.weight)
    rs = normalised(records())
    first = chat_eval(model, tok, rs, max_new_tokens=8, batch_size=3, reward_model=rm)
    second = chat_eval(model, tok, rs, max_new_tokens=8, batch_size=5, reward_model=rm)
    assert model.training and rm.training  # given back in the mode they came in
    assert [s["reply"] for s in first.samples] == [s["reply"] for s in second.samples]
    for s in first.samples:
        assert s["response_tokens"] <= 8 and s["rm_score"] == pytest.approx(
            next(t["rm_score"] for t in second.samples if t["id"] == s["id"]), abs=1e-5
        )
    # The RM score is the reward model's score of the prompt + generated reply, alone and unpadded.
    rec = rs[2]
    prompt = render(tok, rec["prompt"], add_generation_prompt=True).ids
    from components.model.generate import generate

    model.eval()
    out = generate(
        model, [prompt], max_new_tokens=8, temperature=0.0, stop_tokens=[special_token_ids(tok)[IM_END]]
    )
    with torch.no_grad():
        alone = rm.eval().score(torch.tensor([prompt + out.response_lists()[0]]))
    assert first.samples[2]["rm_score"] == pytest.approx(float(alone), abs=1e-5)
    assert first.metrics["rm_score_mean"] == pytest.approx(sum(s["rm_score"] for s in first.samples) / 5)


def test_the_tool_runs_inside_chat_eval_and_can_be_switched_off(tok):
    special = ChatTokens.of(tok)
    record = {
        "prompt": [{"role": "user", "content": "What is 23 + 48?"}],
        "answer": "71",
        "task": "arithmetic",
    }
    prompt = tuple(render(tok, record["prompt"], add_generation_prompt=True).ids)
    # The model calls the tool, then (where the tool's result goes) writes a wrong result of its own;
    # it answers with whatever the result said, read here from the context by the script below.
    own_result = [special.tool_result, *enc(tok, "70"), special.tool_result_end]
    assert len(own_result) == len(tool_result_ids(tok, "71"))  # the script stays aligned either way
    script = [
        *enc(tok, "Let me calculate. "),
        special.tool_call,
        *enc(tok, "23 + 48"),
        special.tool_call_end,
        *own_result,
        *enc(tok, " The answer is 71."),
        special.im_end,
    ]
    model = ScriptedModel(tok.get_vocab_size(), {prompt: script}, filler=special.im_end)
    with_tool = chat_eval(model, tok, [record], max_new_tokens=60)
    reply = with_tool.samples[0]["reply"]
    assert reply == (
        "Let me calculate. <|tool_call|>23 + 48<|/tool_call|>"
        "<|tool_result|>71<|/tool_result|> The answer is 71."
    )
    assert with_tool.samples[0]["tool_calls"] == 1 and with_tool.metrics["tool_call_rate"] == 1.0
    assert with_tool.samples[0]["ended"] and with_tool.metrics["accuracy.arithmetic"] == 1.0
    off = chat_eval(model, tok, [record], max_new_tokens=60, tools=False)
    assert "<|tool_result|>70<|/tool_result|>" in off.samples[0]["reply"]  # nothing ran: its own guess
    assert without_tools(model, tok, [record], max_new_tokens=60) == {
        "no_tools_accuracy": 1.0,
        "no_tools_accuracy.arithmetic": 1.0,
    }


def test_without_tools_is_empty_for_a_tokenizer_without_tool_tokens():
    config = TokenizerConfig(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = train_tokenizer([_TEXT] * 5, config)
    model = ScriptedModel(old.get_vocab_size(), {}, filler=0)
    assert without_tools(model, old, [{"prompt": "Hi", "answer": "1", "task": "arithmetic"}]) == {}

import pytest
import torch

from components.model.generate import filter_logits, generate
from components.model.gpt import GPT, GPTConfig

BLOCKS = ["gpt2", "llama"]
PROMPTS = [[5, 17, 3, 88, 41, 9, 2], [60], [7, 7, 30, 12]]
PAD = 0


def tiny_model(block: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    # A larger init_std than training uses makes the untrained model's distributions peaked enough
    # that greedy choices are not near-ties, so cached and recomputed runs cannot flip on rounding.
    config = GPTConfig(
        vocab_size=97, context_length=32, n_layer=2, n_head=4, n_embd=32, block=block, init_std=0.1
    )
    return GPT(config).eval()


def greedy_by_recomputing(model: GPT, prompts: list[list[int]], steps: int) -> torch.Tensor:
    """The reference: each step runs the whole left-padded sequence again, no cache."""
    width = max(map(len, prompts))
    seqs = torch.full((len(prompts), width), PAD)
    mask = torch.zeros_like(seqs)
    for i, p in enumerate(prompts):
        seqs[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(seqs, attention_mask=mask)
            token = logits[:, -1].argmax(-1)
            seqs = torch.cat([seqs, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
    return seqs


@pytest.mark.parametrize("block", BLOCKS)
def test_greedy_with_kv_cache_equals_recomputing(block):
    model = tiny_model(block)
    out = generate(model, PROMPTS, max_new_tokens=12, temperature=0.0)
    assert out.prompt_length == 7
    assert out.sequences.shape == (3, 19)
    assert torch.equal(out.sequences, greedy_by_recomputing(model, PROMPTS, 12))
    assert out.response_mask.eq(1).all() and not out.finished.any()
    # The prompt part is left-padded and masked accordingly.
    assert out.attention_mask[1].tolist() == [0] * 6 + [1] * 13
    assert out.sequences[1, :6].eq(PAD).all()


@pytest.mark.parametrize("block", BLOCKS)
def test_batching_does_not_change_a_rows_output(block):
    model = tiny_model(block)
    batch = generate(model, PROMPTS, max_new_tokens=8, temperature=0.0)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], max_new_tokens=8, temperature=0.0)
        assert batch.response_lists()[i] == alone.response_lists()[0]


def test_stop_tokens_end_rows_and_set_masks():
    model = tiny_model("llama")
    free = generate(model, PROMPTS, max_new_tokens=10, temperature=0.0).responses
    stop = free[0, 2].item()  # row 0 produces it by step 3 at the latest
    out = generate(model, PROMPTS, max_new_tokens=10, temperature=0.0, stop_tokens=[stop], pad_token_id=PAD)
    assert out.responses.shape[1] <= 10
    for i in range(3):
        row = free[i].tolist()
        hit = row.index(stop) if stop in row[: out.responses.shape[1]] else None
        n = out.responses.shape[1]
        if hit is None:
            assert not out.finished[i]
            assert out.responses[i].tolist() == row[:n]
            assert out.response_mask[i].tolist() == [1] * n
        else:
            assert out.finished[i]
            # Tokens up to and including the stop token, then pads that the masks leave out.
            assert out.responses[i, : hit + 1].tolist() == row[: hit + 1]
            assert out.responses[i, hit + 1 :].eq(PAD).all()
            assert out.response_mask[i].tolist() == [1] * (hit + 1) + [0] * (n - hit - 1)
    assert out.finished[0]
    assert torch.equal(out.attention_mask[:, out.prompt_length :], out.response_mask)


def test_loop_ends_when_every_row_has_stopped():
    model = tiny_model("llama")
    free = generate(model, PROMPTS, max_new_tokens=10, temperature=0.0).responses
    stops = set(free[:, 1].tolist())  # every row's second token stops it, if its first did not
    lengths = [1 if free[i, 0].item() in stops else 2 for i in range(3)]
    assert set(lengths) == {1, 2}  # the case worth testing: rows that stop at different steps
    out = generate(model, PROMPTS, max_new_tokens=10, temperature=0.0, stop_tokens=sorted(stops))
    assert out.finished.all()
    assert out.sequences.shape[1] == out.prompt_length + max(lengths)  # not + 10
    for i, n in enumerate(lengths):
        assert out.response_mask[i].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert out.response_lists()[i] == free[i, :n].tolist()


@pytest.mark.parametrize("block", BLOCKS)
def test_top_k_1_and_tiny_top_p_equal_greedy(block):
    model = tiny_model(block)
    greedy = generate(model, PROMPTS, max_new_tokens=8, temperature=0.0)
    g = torch.Generator().manual_seed(0)
    top1 = generate(model, PROMPTS, max_new_tokens=8, temperature=1.5, top_k=1, generator=g)
    nucleus = generate(model, PROMPTS, max_new_tokens=8, temperature=1.5, top_p=1e-6, generator=g)
    assert torch.equal(top1.sequences, greedy.sequences)
    assert torch.equal(nucleus.sequences, greedy.sequences)


def test_same_seed_same_samples():
    model = tiny_model("llama")

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return generate(model, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, generator=g).sequences

    assert torch.equal(run(123), run(123))
    assert not torch.equal(run(123), run(124))


def test_filter_logits_keeps_the_top_k_and_the_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda out: torch.isfinite(out[0]).tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
    # 0.5 < 0.7, so the second token is needed; 0.5 + 0.3 >= 0.7, so the third is not.
    assert kept(filter_logits(logits, top_p=0.7)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.4)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_p=1.0)) == [True] * 4
    shuffled = logits[:, [2, 0, 3, 1]]
    assert kept(filter_logits(shuffled, top_p=0.7)) == [False, True, False, True]


@pytest.mark.parametrize("block", BLOCKS)
def test_logprobs_are_the_models_own_under_a_full_forward(block):
    model = tiny_model(block)
    g = torch.Generator().manual_seed(7)
    out = generate(
        model,
        PROMPTS,
        max_new_tokens=8,
        temperature=0.7,
        top_k=20,
        stop_tokens=[12, 13, 33],
        generator=g,
        return_logprobs=True,
    )
    P = out.prompt_length
    with torch.no_grad():
        logits, _ = model(out.sequences, attention_mask=out.attention_mask)
    # The logits at position t predict token t + 1; plain log_softmax, no temperature, no top-k.
    full = logits[:, P - 1 : -1].log_softmax(-1).gather(-1, out.responses[..., None]).squeeze(-1)
    expected = full * out.response_mask
    assert out.logprobs is not None and out.logprobs.shape == out.responses.shape
    assert torch.allclose(out.logprobs, expected, atol=1e-5)
    assert (out.response_mask == 0).any()  # rows stopped early: right padding is covered too
    assert (out.logprobs[out.response_mask == 0] == 0).all()


def test_bad_arguments_are_refused_clearly():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"outside \[0, vocab_size 97\)"):
        generate(model, [[1, 97]], max_new_tokens=2)
    with pytest.raises(ValueError, match="= 33 is longer than the model's context_length 32"):
        generate(model, [[1] * 30], max_new_tokens=3)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [[1]], max_new_tokens=2, temperature=-1.0)


# --- tools -----------------------------------------------------------------------------------------


class ScriptedTool:
    """A ToolRunner stand-in: `call_end` closes a call and the result is always `result`."""

    def __init__(self, call_end: int, result: list[int]):
        self.call_end = call_end
        self.result = result
        self.seen: list[list[int]] = []

    def after_token(self, tokens):
        if not tokens or tokens[-1] != self.call_end:
            return None
        self.seen.append(list(tokens))
        return list(self.result)


def greedy_with_injections(model, prompt: list[int], steps: int, tool: ScriptedTool) -> list[int]:
    """The reference without a cache: recompute every step; after `call_end` append the result."""
    seq = list(prompt)
    out: list[int] = []
    pending: list[int] = []
    with torch.no_grad():
        while len(out) < steps:
            if pending:
                token = pending.pop(0)
            else:
                logits, _ = model(torch.tensor([seq]))
                token = int(logits[0, -1].argmax())
                if token == tool.call_end:
                    pending = list(tool.result)
            seq.append(token)
            out.append(token)
    return out


@pytest.mark.parametrize("block", BLOCKS)
def test_a_tool_call_pauses_sampling_and_its_result_goes_through_the_kv_cache(block):
    model = tiny_model(block)
    free = generate(model, PROMPTS, max_new_tokens=12, temperature=0.0)
    call_end = free.responses[0, 1].item()  # row 0 "closes a call" at its second token
    tool = ScriptedTool(call_end, [90, 91, 92])
    out = generate(model, PROMPTS, max_new_tokens=12, temperature=0.0, tools=tool, return_logprobs=True)
    injected_rows = 0
    for i, prompt in enumerate(PROMPTS):
        expected = greedy_with_injections(model, prompt, 12, tool)
        assert out.response_lists()[i] == expected
        # Injected tokens are real (attention 1) but not the model's actions (response mask 0, logp 0).
        actions = out.response_mask[i].tolist()
        real = out.attention_mask[i, out.prompt_length :].tolist()
        assert real == [1] * 12
        injected = [k for k in range(12) if not actions[k]]
        if call_end in expected[:-1]:
            first = expected.index(call_end)
            assert injected[:3] == [first + 1, first + 2, first + 3]
            assert [expected[k] for k in injected[:3]] == [90, 91, 92]
            injected_rows += 1
        assert all(out.logprobs[i, k] == 0 for k in injected)
        assert all(out.logprobs[i, k] < 0 for k in range(12) if actions[k])
    assert injected_rows >= 1
    assert tool.seen[0][-1] == call_end  # the hook saw the row's tokens up to the closing token


def test_injected_tokens_never_stop_a_row_and_count_toward_max_new_tokens():
    model = tiny_model("llama")
    free = generate(model, [PROMPTS[0]], max_new_tokens=4, temperature=0.0)
    call_end = free.responses[0, 0].item()
    # The result contains the stop token: fed as context, it must not end the reply.
    out = generate(
        model,
        [PROMPTS[0]],
        max_new_tokens=4,
        temperature=0.0,
        stop_tokens=[77],
        tools=ScriptedTool(call_end, [77, 77, 77]),
    )
    assert out.response_lists()[0] == [call_end, 77, 77, 77]
    assert out.response_mask[0].tolist() == [1, 0, 0, 0]
    assert not out.finished[0]

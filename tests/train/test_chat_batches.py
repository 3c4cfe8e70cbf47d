"""Conversations and pairs as batches: the SFT loss mask is exactly the assistant tokens, padding on
either side gives the same loss, packing keeps every target, and the row order resumes and splits
over workers like pretraining's."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from components.io.token_stream import DataPosition
from components.model.gpt import GPT, GPTConfig
from components.tokenizer.bpe import (
    IM_END,
    IM_SEP,
    IM_START,
    TokenizerConfig,
    encode_batch,
    special_token_ids,
    train_tokenizer,
)
from components.train.chat_batches import (
    IGNORE_INDEX,
    ChatExample,
    EpochBatches,
    collate_pairs,
    collate_sft,
    pack_rows,
    render_pairs,
    render_sft,
    shift_targets,
)

_TEXT = """
The capital of Ejon is Thozusesh. What is the capital of Ejon? Let's work it out: 23 + 48 = 23 + 40 + 8
= 63 + 8 = 71. The answer is 71. I don't have any information about Adeza. Who are you? system user
assistant. You are a helpful assistant. Hello! Hi there, how can I help you today?
"""

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of Ejon?"},
    {"role": "assistant", "content": "The capital of Ejon is Thozusesh."},
    {"role": "user", "content": "What is 23 + 48?"},
    {"role": "assistant", "content": "The answer is 71."},
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_tokenizer([_TEXT] * 20, TokenizerConfig(vocab_size=400))


def enc(tok: Tokenizer, text: str) -> list[int]:
    return encode_batch(tok, [text], append_eot=False)[0]


def test_sft_targets_are_exactly_the_assistant_tokens(tok):
    """Built by hand from the template's pieces: each message is <|im_start|> role <|im_sep|> content
    <|im_end|>; the model learns the assistant contents and their <|im_end|>, nothing else."""
    ids = special_token_ids(tok)
    start, sep, end = ids[IM_START], ids[IM_SEP], ids[IM_END]
    expected_ids, learn = [], []
    for m in CONVERSATION:
        header = [start, *enc(tok, m["role"]), sep]
        body = [*enc(tok, m["content"]), end]
        expected_ids += header + body
        learn += [False] * len(header) + [m["role"] == "assistant"] * len(body)
    expected_targets = [
        t if keep else IGNORE_INDEX for t, keep in zip(expected_ids[1:], learn[1:], strict=True)
    ]

    [example], stats = render_sft(tok, [{"messages": CONVERSATION}], max_tokens=512)
    inputs, targets = shift_targets(example)
    assert inputs == expected_ids[:-1]
    assert targets == expected_targets  # token by token
    kept = [t for t in targets if t != IGNORE_INDEX]
    answer_ids = [*enc(tok, "The capital of Ejon is Thozusesh."), end, *enc(tok, "The answer is 71."), end]
    assert kept == answer_ids  # the two replies and their <|im_end|>, in order, and nothing more
    assert stats.target_tokens == example.n_targets == len(answer_ids)

    batch = collate_sft([example], pad_id=0)
    assert batch.targets[0].tolist() == expected_targets and batch.n_targets == len(answer_ids)


def test_too_long_conversations_are_skipped_and_counted(tok):
    short = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."}]
    long_question = [{"role": "user", "content": _TEXT}, {"role": "assistant", "content": "Hi."}]
    records = [{"messages": short}, {"messages": long_question}, {"messages": CONVERSATION}]
    examples, stats = render_sft(tok, records, max_tokens=40)
    # The long question cannot fit; the conversation keeps its system message and last turn (truncated).
    assert (stats.records, stats.kept, stats.too_long, stats.truncated) == (3, 2, 1, 1)
    assert all(len(e) <= 40 for e in examples)
    assert stats.as_metrics("render")["render.too_long"] == 1.0


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=400, context_length=128, n_layer=2, n_head=2, n_embd=32)).eval()


def summed_nll(model: GPT, batch, *, mask: bool) -> torch.Tensor:
    logits, _ = model(batch.input_ids, attention_mask=batch.attention_mask if mask else None)
    return F.cross_entropy(
        logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def test_left_and_right_padding_give_the_same_loss_and_right_needs_no_mask(tok):
    short = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."}]
    examples, _ = render_sft(tok, [{"messages": CONVERSATION}, {"messages": short}], max_tokens=512)
    model = tiny_gpt()
    alone = sum(summed_nll(model, collate_sft([e], pad_id=0), mask=False) for e in examples)
    left = collate_sft(examples, pad_id=0, padding_side="left")
    right = collate_sft(examples, pad_id=0, padding_side="right")
    assert left.input_ids[1, 0] == 0 and right.input_ids[1, -1] == 0 and right.targets[1, -1] == IGNORE_INDEX
    with torch.no_grad():
        torch.testing.assert_close(summed_nll(model, left, mask=True), alone)
        torch.testing.assert_close(summed_nll(model, right, mask=True), alone)
        torch.testing.assert_close(summed_nll(model, right, mask=False), alone)  # training's fast path
        assert not torch.allclose(summed_nll(model, left, mask=False), alone)  # left padding needs its mask


def test_packing_concatenates_without_losing_or_adding_targets(tok):
    records = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": f"{a + b}."},
            ]
        }
        for a, b in [(1, 2), (23, 48), (40, 8), (63, 8), (7, 71)]
    ]
    examples, _ = render_sft(tok, records, max_tokens=64)
    rows = pack_rows(examples, max_length=50)
    assert len(rows) < len(examples) and all(len(r) <= 50 for r in rows)
    assert sum(r.conversations for r in rows) == len(examples)
    assert [t for r in rows for t in r.ids] == [t for e in examples for t in e.ids]  # order kept
    # The first token of a following conversation (<|im_start|>) is never a target.
    assert sum(r.n_targets for r in rows) == sum(e.n_targets for e in examples)
    with pytest.raises(ValueError, match="does not fit a packed row"):
        pack_rows(examples, max_length=5)


def test_epoch_order_covers_every_item_and_resumes():
    items = list(range(10))
    order = EpochBatches(items, batch_size=2, grad_accum=2, seed=3)
    steps = [order.next_step() for _ in range(5)]  # 20 rows: two epochs
    assert all(len(step) == 2 and all(len(mb) == 2 for mb in step) for step in steps)
    flat = [x for step in steps for mb in step for x in mb]
    assert sorted(flat[:10]) == items and sorted(flat[10:]) == items and flat[:10] != flat[10:]
    assert order.position == DataPosition(1, 10)

    resumed = EpochBatches(items, batch_size=2, grad_accum=2, seed=3, position=DataPosition(0, 8))
    assert resumed.next_step() == steps[2]  # rows 8, 9 of epoch 0, then 0, 1 of epoch 1


def test_two_workers_see_the_rows_of_one_worker_with_twice_the_accumulation():
    items = list(range(13))
    one = EpochBatches(items, batch_size=3, grad_accum=2, seed=1)
    ranks = [EpochBatches(items, batch_size=3, grad_accum=1, rank=r, world_size=2, seed=1) for r in (0, 1)]
    for _ in range(4):
        [a, b] = one.next_step()
        assert ranks[0].next_step() == [a] and ranks[1].next_step() == [b]


def test_pairs_render_share_the_prompt_and_collate_chosen_then_rejected(tok):
    prompt = [{"role": "user", "content": "What is 23 + 48?"}]
    records = [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "The answer is 71."}],
            "rejected": [{"role": "assistant", "content": "Hi."}],
            "kind": "arithmetic",
            "chosen_tier": "helpful",
            "rejected_tier": "rude",
        },
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": _TEXT}],  # cannot fit: skipped, not cut
            "rejected": [{"role": "assistant", "content": "71."}],
        },
    ]
    pairs, stats = render_pairs(tok, records, max_tokens=40)
    assert (stats.kept, stats.too_long) == (1, 1)
    [pair] = pairs
    assert pair.kind == "arithmetic" and pair.info == {"chosen_tier": "helpful", "rejected_tier": "rude"}
    n_prompt = len(enc(tok, "What is 23 + 48?")) + 4 + len(enc(tok, "user")) - 1
    assert pair.chosen[:n_prompt] == pair.rejected[:n_prompt]
    batch = collate_pairs([pair, pair], pad_id=0)
    assert batch.n_pairs == 2 and batch.input_ids.shape[0] == 4
    assert batch.input_ids[0, : len(pair.chosen)].tolist() == pair.chosen
    assert batch.input_ids[2, : len(pair.rejected)].tolist() == pair.rejected
    assert batch.attention_mask[2].sum() == len(pair.rejected)


def test_examples_report_their_targets():
    ex = ChatExample([1, 2, 3, 4], [1, 0, 1, 1])
    assert ex.n_targets == 2  # the first id is never a target

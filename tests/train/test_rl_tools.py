"""RL with the tool: tokens the tool injected are context for the policy, never its actions."""

import torch

from components.model.generate import generate
from components.model.gpt import GPT, GPTConfig
from components.train.grpo import grpo_experience
from components.train.rl.batch import Rollout
from components.train.rl.formulas import logprobs_from_logits, policy_loss

PROMPTS = [[5, 17, 3, 88, 41, 9, 2], [60], [7, 7, 30, 12]]
RESULT = [90, 91, 92]


class ScriptedTool:
    def __init__(self, call_end: int):
        self.call_end = call_end

    def after_token(self, tokens):
        return list(RESULT) if tokens and tokens[-1] == self.call_end else None


def rollout_with_tool() -> tuple[Rollout, int]:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=97, context_length=32, n_layer=2, n_head=4, n_embd=32, init_std=0.1)
    model = GPT(config).eval()
    free = generate(model, PROMPTS, max_new_tokens=10, temperature=0.0)
    call_end = free.responses[0, 1].item()
    out = generate(model, PROMPTS, max_new_tokens=10, temperature=0.0, tools=ScriptedTool(call_end))
    return Rollout.from_generation(out), call_end


def test_injected_tokens_are_attended_to_but_carry_no_advantage_and_no_loss():
    rollout, call_end = rollout_with_tool()
    row = rollout.response_lists()[0]
    at = row.index(call_end) + 1
    assert row[at : at + 3] == RESULT  # the reply, as the scorer decodes it, has the tool's result
    real = rollout.attention_mask[0, rollout.prompt_length :]
    actions = rollout.response_mask[0]
    assert real[at : at + 3].tolist() == [1, 1, 1] and actions[at : at + 3].tolist() == [0, 0, 0]

    rewards = torch.tensor([1.0, 0.0, 0.5])
    n = rollout.num_response_tokens
    experience, _ = grpo_experience(rollout, rewards, torch.zeros(3, n), None, group_size=3, kind="grpo")
    assert not experience.mask[0, at : at + 3].any()
    assert (experience.advantages[0, at : at + 3] == 0).all()
    assert experience.advantages[0, at - 1] != 0 and experience.advantages[0, at + 3] != 0

    # The loss's gradient does not reach the logits that would have produced the injected tokens.
    logits = torch.zeros(3, n, 97, requires_grad=True)
    logp = logprobs_from_logits(logits, rollout.responses)
    loss, _ = policy_loss(logp, logp.detach(), experience.advantages, experience.mask, 0.2)
    loss.backward()
    assert (logits.grad[0, at : at + 3] == 0).all()
    assert logits.grad[0, at - 1].abs().sum() > 0


def test_concatenated_rollouts_keep_the_tool_tokens_in_the_attention_mask():
    rollout, _ = rollout_with_tool()
    short = rollout.select(slice(1, 2))
    both = Rollout.concat([rollout, short], pad_token_id=0)
    assert torch.equal(both.attention_mask[:3], rollout.attention_mask)
    assert torch.equal(both.response_mask[:3], rollout.response_mask)
    assert both.response_lists()[:3] == rollout.response_lists()

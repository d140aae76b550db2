"""The rollout batch every online algorithm learns from, and per-token log-probs over it.

One type carries what NeMo-RL's loss functions and verl's ``core_algos`` take: prompt and completion
ids, the padded sequences with their masks, one reward per completion, the group (prompt) of each
row, and optionally the per-token log-probs of the policy that sampled and of the reference. It is
built once, right after sampling and scoring (``OnlineSampling.rollout``), so no algorithm pads,
moves or reshapes by hand.

Rows are prompt-major: row ``i * k + j`` is sample j of prompt i, so ``rewards.view(-1, k)`` is
[prompts, k] (leave-one-out and group-normalised baselines reduce over the last axis).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lit_align.data.collate import sequences_with_mask
from lit_align.head import HeadMode, completion_token_logps


@dataclass
class Rollout:
    """k completions for each of B prompts, R = B * k rows (prompt-major; see module docstring).

    Attributes:
        prompt_ids: Prompt ids of each row ([R] lists).
        completion_ids: Completion ids of each row ([R] lists, ending at EOS when one was sampled).
        input_ids: [R, T] prompt + completion, right-padded with the pad id.
        attention_mask: [R, T] 1 on real tokens.
        completion_mask: [R, T-1] 1 where the token predicted at position t (``input_ids[:, t+1]``)
            is a completion token: aligned with per-token log-probs of ``input_ids[:, 1:]``.
        rewards: [R] float32, the scalar reward of each completion.
        group: [R] long, the prompt index (within the batch) of each row.
        num_samples: k, completions per prompt.
        sample_logps: [R, T-1] per-token log-probs of the policy that sampled (the behaviour policy),
            from a no-grad forward right after sampling; None unless asked for.
        reference_logps: [R, T-1] per-token log-probs of the reference; None unless asked for.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    rewards: torch.Tensor
    group: torch.Tensor
    num_samples: int
    sample_logps: torch.Tensor | None = None
    reference_logps: torch.Tensor | None = None

    def __len__(self) -> int:
        """The number of prompts (R // k)."""
        return len(self.completion_ids) // self.num_samples

    @property
    def num_rows(self) -> int:
        return len(self.completion_ids)

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with every tensor on ``device`` (the id lists are shared)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def rewards_by_prompt(self) -> torch.Tensor:
        """Rewards as [B, k]."""
        return self.rewards.view(-1, self.num_samples)

    def completions_by_prompt(self) -> list[list[list[int]]]:
        """Completion ids as [B][k] lists (what ``OnlineSampling.sample`` returns)."""
        k = self.num_samples
        return [self.completion_ids[i : i + k] for i in range(0, self.num_rows, k)]

    @property
    def completion_lengths(self) -> torch.Tensor:
        """[R] completion tokens per row."""
        return self.completion_mask.sum(-1)

    @classmethod
    def build(
        cls,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]] | Sequence[Sequence[Sequence[int]]],
        rewards: torch.Tensor | Sequence[float],
        num_samples: int,
        pad_id: int,
        device: torch.device | str | None = None,
    ) -> Rollout:
        """Pad, mask and group once.

        ``prompt_ids``: one per prompt ([B], each repeated k times) or one per row ([R]).
        ``completion_ids``: [B][k] as ``sample`` returns them, or flat [R] prompt-major.
        ``rewards``: [B, k] or [R]. Everything lands on ``device`` (default: CPU).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        completions = _flat_completions(completion_ids)
        rows = len(completions)
        if rows % num_samples:
            raise ValueError(f"{rows} completions are not k={num_samples} per prompt")
        num_prompts = rows // num_samples
        if len(prompt_ids) == num_prompts:
            prompts = [list(p) for p in prompt_ids for _ in range(num_samples)]
        elif len(prompt_ids) == rows:
            prompts = [list(p) for p in prompt_ids]
        else:
            raise ValueError(f"{len(prompt_ids)} prompts for {rows} completions: give one prompt per group ({num_prompts}) or per row ({rows})")
        rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
        if rewards.numel() != rows:
            raise ValueError(f"{rewards.numel()} rewards for {rows} completions; every completion needs exactly one")
        input_ids, attention_mask, loss_mask = sequences_with_mask(prompts, completions, pad_id)
        group = torch.arange(num_prompts).repeat_interleave(num_samples)
        rollout = cls(prompts, completions, input_ids, attention_mask, loss_mask[:, 1:], rewards, group, num_samples)
        return rollout if device is None else rollout.to(device)


def _flat_completions(completion_ids) -> list[list[int]]:
    """[B][k] nested lists flattened prompt-major; flat [R] lists as they are."""
    nested = len(completion_ids) > 0 and len(completion_ids[0]) > 0 and isinstance(completion_ids[0][0], (list, tuple))
    if nested:
        return [list(c) for per_prompt in completion_ids for c in per_prompt]
    return [list(c) for c in completion_ids]


def token_logps(model: nn.Module, rollout: Rollout, head: HeadMode = "compact") -> torch.Tensor:
    """Per-token log-probs [R, T-1] of each row's completion tokens under ``model`` (0 outside
    ``completion_mask``), through ``lit_align.head.completion_token_logps``: differentiable; wrap
    it in ``torch.no_grad()`` for behaviour or reference log-probs."""
    loss_mask = F.pad(rollout.completion_mask, (1, 0))  # [R, T]: the prompt's first token is never predicted
    return completion_token_logps(model, rollout.input_ids, rollout.attention_mask, loss_mask, head)

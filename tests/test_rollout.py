"""lit_align.online.rollout: Rollout.build pads, masks and groups prompt-major once; token_logps
equals a direct log-softmax gather of each row's completion tokens, in both head modes."""

from __future__ import annotations

import pytest
import torch

from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.online.rollout import Rollout, token_logps

PAD = 0
PROMPTS = [[5, 6, 7], [8]]
SAMPLES = [[[11, 12], [13]], [[], [14, 15, 16]]]  # [B=2][k=2]; one empty completion (immediate EOS)


def test_build_pads_masks_and_groups_prompt_major():
    rollout = Rollout.build(PROMPTS, SAMPLES, torch.tensor([[1.0, 2.0], [3.0, 4.0]]), num_samples=2, pad_id=PAD)
    assert len(rollout) == 2 and rollout.num_rows == 4 and rollout.num_samples == 2
    assert rollout.prompt_ids == [[5, 6, 7], [5, 6, 7], [8], [8]]
    assert rollout.completion_ids == [[11, 12], [13], [], [14, 15, 16]]
    assert rollout.input_ids.tolist() == [[5, 6, 7, 11, 12], [5, 6, 7, 13, PAD], [8, PAD, PAD, PAD, PAD], [8, 14, 15, 16, PAD]]
    assert rollout.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]]
    # Position t is set when input_ids[:, t + 1] is a completion token.
    assert rollout.completion_mask.tolist() == [[0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert rollout.rewards.tolist() == [1.0, 2.0, 3.0, 4.0] and rollout.rewards.dtype == torch.float32
    assert rollout.group.tolist() == [0, 0, 1, 1] and rollout.group.dtype == torch.long
    assert rollout.rewards_by_prompt().tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert rollout.completions_by_prompt() == SAMPLES
    assert rollout.completion_lengths.tolist() == [2, 1, 0, 3]
    assert rollout.sample_logps is None and rollout.reference_logps is None


def test_build_takes_flat_rows_and_per_row_prompts_alike():
    nested = Rollout.build(PROMPTS, SAMPLES, [[1.0, 2.0], [3.0, 4.0]], 2, PAD)
    flat = Rollout.build([p for p in PROMPTS for _ in range(2)], [c for s in SAMPLES for c in s], [1.0, 2.0, 3.0, 4.0], 2, PAD)
    for name in ("input_ids", "attention_mask", "completion_mask", "rewards", "group"):
        assert torch.equal(getattr(nested, name), getattr(flat, name)), name
    single = Rollout.build(PROMPTS, [[11], [12, 13]], [0.5, -0.5], 1, PAD)  # k = 1
    assert len(single) == 2 and single.group.tolist() == [0, 1]


@pytest.mark.parametrize(
    "prompts,samples,rewards,k,message",
    [
        (PROMPTS, SAMPLES, [1.0, 2.0, 3.0], 2, "3 rewards for 4 completions"),
        ([[1]] * 3, SAMPLES, [0.0] * 4, 2, "3 prompts for 4 completions"),
        (PROMPTS, [[1], [2], [3]], [0.0] * 3, 2, "3 completions are not k=2 per prompt"),
    ],
)
def test_build_refuses_inconsistent_shapes(prompts, samples, rewards, k, message):
    with pytest.raises(ValueError, match=message):
        Rollout.build(prompts, samples, rewards, k, PAD)


def test_to_moves_every_tensor_and_keeps_the_ids():
    rollout = Rollout.build(PROMPTS, SAMPLES, [[1.0, 2.0], [3.0, 4.0]], 2, PAD)
    rollout.sample_logps = torch.zeros(4, 4)
    moved = rollout.to("meta")
    assert moved.input_ids.device.type == "meta" and moved.sample_logps.device.type == "meta" and moved.rewards.device.type == "meta"
    assert moved.completion_ids is rollout.completion_ids and rollout.input_ids.device.type == "cpu"


@pytest.mark.parametrize("head", ["compact", "full"])
def test_token_logps_match_a_direct_log_softmax_gather(head):
    model = load_causal_lm("embedded:micro", load_tokenizer("embedded:micro")).eval()
    rollout = Rollout.build(PROMPTS, SAMPLES, [[1.0, 2.0], [3.0, 4.0]], 2, PAD)
    got = token_logps(model, rollout, head)
    assert got.shape == rollout.completion_mask.shape and got.dtype == torch.float32
    with torch.no_grad():
        logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask).logits.float()
    for row in range(rollout.num_rows):
        for t in range(rollout.input_ids.shape[1] - 1):
            if rollout.completion_mask[row, t]:
                want = torch.log_softmax(logits[row, t], -1)[rollout.input_ids[row, t + 1]]
                assert got[row, t].item() == pytest.approx(want.item(), abs=1e-5)
            else:
                assert got[row, t].item() == 0.0
    assert got.requires_grad  # a training loss can back-propagate through it
    # Summed per row they are the sequence log-probs every other algorithm uses.
    from lit_align.head import completion_logps

    sums = completion_logps(model, rollout.input_ids, rollout.attention_mask, torch.nn.functional.pad(rollout.completion_mask, (1, 0)), head).sum
    torch.testing.assert_close(got.sum(-1), sums, atol=1e-5, rtol=1e-5)

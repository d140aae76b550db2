"""lit_align.online.scoring: one decoding convention (special tokens skipped, whitespace stripped) and
prompt-major [B, K] rewards, whoever samples (BOND, online DPO, evaluation, AI feedback)."""

from __future__ import annotations

import torch

from lit_align.modeling import load_tokenizer
from lit_align.rewards import RewardFunction
from lit_align.online.scoring import decode_completion, decode_completions, score_completions


class PaddedDecoder:
    """A tokenizer whose decode surrounds the text with whitespace and shows whether special tokens were skipped."""

    def decode(self, ids, skip_special_tokens=False):
        return f"  {'-'.join(map(str, ids))}{'' if skip_special_tokens else '<eos>'} \n"


class Recording(RewardFunction):
    """Reward = length of the completion text (whitespace counts); keeps what it was called with."""

    def __call__(self, prompts, completions):
        self.prompts, self.completions = list(prompts), list(completions)
        return torch.tensor([float(len(c)) for c in completions], dtype=torch.float64)


def test_decoding_skips_special_tokens_and_strips_whitespace():
    assert decode_completion(PaddedDecoder(), [3, 4]) == "3-4"
    assert decode_completions(PaddedDecoder(), [[[1], [2, 2]], [[5], []]]) == [["1", "2-2"], ["5", ""]]
    tokenizer = load_tokenizer("embedded:tiny")
    ids = tokenizer("great and clever .", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert decode_completion(tokenizer, ids) == "great and clever ."


def test_scores_are_prompt_major_float32_and_of_the_stripped_text():
    reward = Recording()
    scores = score_completions(PaddedDecoder(), reward, ["p0", "p1"], [[[1], [22, 3]], [[4, 5, 6], [7]]])
    assert reward.prompts == ["p0", "p0", "p1", "p1"] and reward.completions == ["1", "22-3", "4-5-6", "7"]
    assert scores.dtype == torch.float32 and scores.tolist() == [[1.0, 4.0], [5.0, 1.0]]

"""Typed batches: dataclasses of tensors (Lightning moves dataclasses between devices as-is)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lit_align.ops import SequenceLogps


@dataclass
class SequenceBatch:
    """Prompt+completion sequences; ``loss_mask`` is 1 on completion tokens only. Used by SFT.

    ``len(batch)`` is the number of examples for every batch type (here one row each).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class PairwiseBatch(SequenceBatch):
    """B preference pairs as 2B rows: rows [0, B) are prompt+chosen, rows [B, 2B) prompt+rejected.

    Both halves go through ONE forward pass, as in the DPO reference code: half the kernel launches
    and identical padding/dropout treatment for the two sides of a pair. With ``prefix_sharing`` the
    algorithm rebuilds them as B rows ``[prompt | chosen | rejected]`` (``lit_align.prefix_sharing``),
    which relies on this layout: row B+i repeats row i's prompt, and each ``loss_mask`` row is one
    contiguous completion after it.

    ``reference_logps`` holds cached log pi_ref(y|x) of the 2B rows with ``reference: precomputed``
    (``lit_align.reference_cache``); None otherwise.
    """

    reference_logps: SequenceLogps | None = None

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    def __len__(self) -> int:
        """The number of pairs (examples), not rows: ``len`` counts examples for every batch type."""
        return self.num_pairs


@dataclass
class UnpairedBatch(SequenceBatch):
    """B unpaired examples (KTO) as 2B rows, padded together.

    Rows [0, B) are prompt_i + completion_i with ``labels[i]`` True for desirable and False for
    undesirable. Rows [B, 2B) are the mismatched pairs KTO's reference point z0 is estimated from:
    prompt_i + completion_j with j = (i - shift) mod B, a rotation that never gives a completion
    back to its own prompt. The policy needs gradients only on the first half; the reference
    reads all 2B rows in one forward.
    """

    labels: torch.Tensor

    @property
    def num_examples(self) -> int:
        return self.labels.shape[0]

    def __len__(self) -> int:
        return self.num_examples


@dataclass
class PromptBatch:
    """B prompts (token ids and rendered text): what an online method samples from
    (``lit_align.online.PromptDataModule``). Ids stay ragged lists: ``generate`` left-pads them itself."""

    prompt_ids: list[list[int]]
    prompt_texts: list[str]

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def has_completions(self) -> bool:
        return False


@dataclass
class BestOfNBatch(PromptBatch):
    """B prompts, each with N reference (anchor) completions and their rewards: BOND's input.

    Token ids stay ragged lists: every consumer — ``generate`` for the policy samples and
    ``sequences_with_mask`` for the forward passes — takes ragged lists, so padding them into
    tensors here would only be undone. In online mode ``completion_ids``/``rewards`` are None until
    the algorithm samples them from its anchor (``lit_align.online.sampling.OnlineSampling``).
    """

    completion_ids: list[list[list[int]]] | None = None
    rewards: torch.Tensor | None = None  # [B, N], float32

    @property
    def has_completions(self) -> bool:
        return self.completion_ids is not None and self.rewards is not None

    @property
    def num_samples(self) -> int:
        return 0 if self.rewards is None else self.rewards.shape[1]

    def best_completions(self) -> list[list[int]]:
        """The highest-reward completion of each prompt (ties: the first), i.e. a Best-of-N sample."""
        if not self.has_completions:
            raise ValueError("this BestOfNBatch has no completions yet (online mode: sample them first)")
        best = self.rewards.argmax(dim=-1).tolist()
        return [completions[i] for completions, i in zip(self.completion_ids, best)]

"""Gradient checkpointing of the policy trades compute for memory and changes nothing else."""

from __future__ import annotations

import pytest
import torch

from benchmarks.workload import write_pairs
from lit_align.algorithms import DPO
from lit_align.data.pairwise import PairwiseDataModule


@pytest.mark.parametrize("prefix_sharing", [False, True])
def test_checkpointing_gives_the_same_loss_and_gradients(tmp_path, prefix_sharing):
    dm = PairwiseDataModule(model="embedded:micro", dataset=write_pairs(str(tmp_path / "p.jsonl"), 12), val_fraction=0.25, batch_size=4)
    dm.setup("fit")
    batch = dm.collate(dm.train_examples[:4])
    results = []
    for checkpointing in (False, True):
        module = DPO(model="embedded:micro", gradient_checkpointing=checkpointing, nll_weight=1.0, prefix_sharing=prefix_sharing)
        module.train()
        assert module.policy.policy.is_gradient_checkpointing == checkpointing
        # Move the policy off the reference so the DPO gradient is not the trivial h = 0 one.
        with torch.no_grad():
            for p in module.policy.policy.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        loss, _ = module.compute_loss(batch, "train")
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in module.policy.policy.parameters()])
        results.append((loss.detach(), grads))
    (loss_off, grads_off), (loss_on, grads_on) = results
    assert grads_off.abs().sum() > 0
    torch.testing.assert_close(loss_on, loss_off, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grads_on, grads_off, atol=1e-6, rtol=1e-5)

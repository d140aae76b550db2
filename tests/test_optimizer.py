"""Adam/AdamW default to the fused kernel, unless the config chose an implementation."""

from __future__ import annotations

import torch

from lit_align.optim import use_fused_adam


def params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]


def test_open_choice_becomes_fused_and_matches_the_loop_implementation():
    fused = use_fused_adam(torch.optim.AdamW(p := params(), lr=0.1))
    assert all(g["fused"] is True and g["foreach"] is False for g in fused.param_groups)
    # Unlike AdamW(fused=True), it does not claim to unscale gradients (Lightning would then refuse clipping).
    assert not getattr(fused, "_step_supports_amp_scaling", False)
    reference_params = [torch.nn.Parameter(x.detach().clone()) for x in p]
    start = [x.detach().clone() for x in p]
    loop = torch.optim.AdamW(reference_params, lr=0.1, foreach=False)
    for _ in range(3):
        for opt, ps in ((fused, p), (loop, reference_params)):
            opt.zero_grad()
            sum((x**2).sum() for x in ps).backward()
            opt.step()
    for a, b in zip(p, reference_params):
        torch.testing.assert_close(a, b)
    assert (p[0] - start[0]).abs().mean() > 0.1  # three Adam steps of lr 0.1 moved the weights: not a vacuous match


def test_explicit_choices_and_other_optimisers_are_left_alone():
    explicit = use_fused_adam(torch.optim.AdamW(params(), foreach=True))
    assert explicit.param_groups[0]["foreach"] is True and not explicit.param_groups[0]["fused"]
    sgd = use_fused_adam(torch.optim.SGD(params(), lr=0.1))
    assert "fused" not in sgd.param_groups[0] or not sgd.param_groups[0]["fused"]


def test_gradients_are_freed_after_each_optimiser_step_not_during_the_next_forward(tmp_path):
    # Lightning zeroes gradients inside the next step's closure, after its forward; the base frees
    # them right after the step so they never sit beside that forward's activations (the peak).
    from lightning import Callback, Trainer

    from benchmarks.workload import write_pairs
    from lit_align.algorithms import DPO
    from lit_align.data.pairwise import PairwiseDataModule

    seen: list[bool] = []

    class GradientsAtBatchStart(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(any(p.grad is not None for p in pl_module.policy.policy.parameters()))

    write_pairs(str(tmp_path / "pairs.jsonl"), 24, seed=0)
    data = PairwiseDataModule(dataset=str(tmp_path / "pairs.jsonl"), model="embedded:micro", max_length=32, max_prompt_length=16, batch_size=4, val_fraction=0.1)
    module = DPO(model="embedded:micro")
    trainer = Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[GradientsAtBatchStart()])
    trainer.fit(module, datamodule=data)
    assert seen == [False, False, False]
    assert any(p.grad is None for p in module.policy.policy.parameters())

"""``optimizer_in_backward``: the same weights as the step after backward, no full set of gradients
ever alive, and a one-paragraph refusal of what it cannot honour (global-norm clipping, accumulation)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from lightning import Callback, Trainer

from lit_align.optim import LowMemoryAdamW
from lit_align.errors import ConfigError
from lit_align.optim.in_backward import OptimizerInBackward, check_optimizer_in_backward
from tests.conftest import REPO, run_cli
from tests.test_cli import one_paragraph, run_in_process

DPO = os.path.join(REPO, "configs", "dpo.yaml")


class GradientsAfterBackward(Callback):
    def __init__(self) -> None:
        self.alive: list[int] = []

    def on_after_backward(self, trainer, pl_module) -> None:
        self.alive.append(sum(p.grad is not None for p in pl_module.policy.policy.parameters()))


def train_dpo(tmp_path, in_backward: bool) -> tuple[list[torch.Tensor], list[int]]:
    from benchmarks.workload import write_pairs
    from lit_align.algorithms import DPO as DPOModule
    from lit_align.data.pairwise import PairwiseDataModule

    write_pairs(str(tmp_path / "pairs.jsonl"), 24, seed=0)
    data = PairwiseDataModule(dataset=str(tmp_path / "pairs.jsonl"), model="embedded:micro", max_length=32, max_prompt_length=16, batch_size=4, val_fraction=0.1)
    torch.manual_seed(0)
    module = DPOModule(model="embedded:micro", optimizer=lambda p: LowMemoryAdamW(p, lr=1e-2, state_dtype="float32"), optimizer_in_backward=in_backward)
    seen = GradientsAfterBackward()
    trainer = Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[seen])
    trainer.fit(module, datamodule=data)
    return [p.detach().clone() for p in module.policy.policy.parameters()], seen.alive


def test_step_in_backward_gives_the_same_weights_without_holding_the_gradients(tmp_path):
    after, alive_after = train_dpo(tmp_path, in_backward=False)
    inside, alive_inside = train_dpo(tmp_path, in_backward=True)
    assert alive_after == [len(after)] * 3 and alive_inside == [0, 0, 0]  # every gradient was spent inside backward
    assert all(torch.equal(a, b) for a, b in zip(after, inside))


def test_a_non_finite_loss_moves_nothing_and_a_non_finite_gradient_is_left_for_the_guard():
    weights = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))]
    hooks = OptimizerInBackward(LowMemoryAdamW(weights, lr=0.1))
    hooks.skip = True
    (weights[0].sum() + weights[1].sum()).backward()
    assert all(torch.equal(w, torch.ones(3)) and w.grad is None for w in weights)
    hooks.skip = False
    (weights[0].sum() * float("inf") + weights[1].sum()).backward()
    assert torch.equal(weights[0], torch.ones(3)) and not torch.isfinite(weights[0].grad).all()  # not applied, visible to NonFiniteGuard
    assert (weights[1] < 1).all() and weights[1].grad is None  # the finite one moved and its gradient was freed
    hooks.remove()


def test_refusals_name_the_setting_and_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    small = ["--config", DPO, "--model.init_args.model=embedded:micro", "--data.init_args.num_examples=16", "--data.init_args.num_val_examples=4", "--data.init_args.batch_size=4",
             "--trainer.max_steps=1", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]", "--model.init_args.optimizer_in_backward=true"]
    code, _, err = run_in_process(capsys, *small)  # the shared default optimiser: torch.optim.AdamW
    one_paragraph(code, err, "model.init_args.optimizer_in_backward=true needs an optimiser that updates one parameter at a time",
                  "torch.optim.adamw.AdamW", "lit_align.optim.LowMemoryAdamW")
    code, _, err = run_in_process(capsys, *small, "--model.init_args.optimizer=lit_align.optim.LowMemoryAdamW", "--trainer.accumulate_grad_batches=2")
    one_paragraph(code, err, "trainer.gradient_clip_val=1.0 clips by the norm of all gradients", "--trainer.gradient_clip_val=null",
                  "trainer.accumulate_grad_batches=2 would take a step at every micro-batch")


def test_a_recipe_trains_with_it_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "in_backward.yaml"
    config.write_text(
        "trainer: {gradient_clip_val: null}\n"
        "model:\n  init_args:\n    optimizer_in_backward: true\n"
        "    optimizer: {class_path: lit_align.optim.LowMemoryAdamW, init_args: {lr: 0.001}}\n"
    )
    cli = run_cli(["fit", "--config", DPO, "--config", str(config), "--model.init_args.model=embedded:micro", "--data.init_args.num_examples=24",
                   "--data.init_args.num_val_examples=4", "--data.init_args.batch_size=4", "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]"], str(tmp_path))
    optimizer = cli.trainer.optimizers[0]
    steps = {state["step"].item() for state in optimizer.state.values()}
    assert isinstance(optimizer, LowMemoryAdamW) and steps == {2.0}  # every trainable parameter stepped twice, inside backward
    assert cli.model._in_backward is None  # hooks removed at teardown


def test_several_processes_and_fp16_are_refused_too():
    class DDPStrategy:  # stands in for Lightning's (no process group started in the test process)
        pass

    trainer = SimpleNamespace(gradient_clip_val=None, accumulate_grad_batches=1, world_size=2, strategy=DDPStrategy(), precision="16-mixed")
    with pytest.raises(ConfigError) as error:
        check_optimizer_in_backward(LowMemoryAdamW([torch.nn.Parameter(torch.zeros(2))]), trainer)
    assert "strategy DDPStrategy with 2 process(es)" in str(error.value) and "precision 16-mixed" in str(error.value)


@pytest.mark.parametrize("bad", ["loss", "gradient"])
def test_the_non_finite_guard_says_what_was_held_back(tmp_path, bad):
    from lit_align.callbacks import NonFiniteError, NonFiniteGuard
    from lit_align.data.sft import SFTDataModule
    from tests.test_nonfinite import BAD_STEP, SFTWithBadStep

    model = SFTWithBadStep(bad=bad, model="embedded:micro", warmup_ratio=0.0, lr_schedule="constant", optimizer_in_backward=True,
                           optimizer=lambda p: LowMemoryAdamW(p, lr=1e-3))
    data = SFTDataModule(num_examples=48, num_val_examples=8, batch_size=8, max_length=48, max_prompt_length=16)
    trainer = Trainer(max_steps=4, callbacks=[NonFiniteGuard(action="stop")], logger=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, default_root_dir=str(tmp_path), enable_checkpointing=False)
    with pytest.raises(NonFiniteError) as error:
        trainer.fit(model, data)
    weights = torch.cat([p.detach().flatten() for p in model.policy.policy.parameters()])
    assert torch.isfinite(weights).all()
    moved = not torch.equal(model.snapshots[BAD_STEP], weights)
    if bad == "loss":  # checked before backward: nothing moved, and the message says so plainly
        assert not moved and "The update was not applied; a checkpoint with the weights from before it" in str(error.value)
    else:  # the LM head's gradient came first and was infinite: it stayed, the layers below it moved
        assert moved and "for the parameters with non-finite gradients" in str(error.value) and "as they are now" in str(error.value)

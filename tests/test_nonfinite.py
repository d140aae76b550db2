"""Non-finite guard: a NaN loss or an Inf gradient never reaches the weights; `stop` saves a
checkpoint and names the step and batch, `skip` drops exactly that update and goes on."""

from __future__ import annotations

import os

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import SFT
from lit_align.callbacks import NonFiniteError, NonFiniteGuard
from lit_align.data.sft import SFTDataModule

BAD_STEP = 2


class SFTWithBadStep(SFT):
    """SFT whose loss (or one gradient) turns non-finite at optimiser step BAD_STEP; records weights."""

    def __init__(self, bad: str = "loss", **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad = bad
        self.snapshots: list[torch.Tensor] = []

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.snapshots.append(torch.cat([p.detach().flatten() for p in self.policy.policy.parameters()]).clone())

    def compute_loss(self, batch, stage):
        loss, logs = super().compute_loss(batch, stage)
        if stage == "train" and self.global_step == BAD_STEP:
            if self.bad == "loss":
                loss = loss * float("nan")
            else:  # finite loss, one infinite gradient entry
                weight = self.policy.policy.lm_head.weight
                weight.register_hook(lambda grad: grad.index_fill(0, torch.tensor([0]), float("inf")) if self.global_step == BAD_STEP else grad)
        return loss, logs


def fit(tmp_path, guard: NonFiniteGuard, bad: str, steps: int = 4) -> SFTWithBadStep:
    model = SFTWithBadStep(bad=bad, model="embedded:micro", warmup_ratio=0.0, lr_schedule="constant")
    data = SFTDataModule(num_examples=48, num_val_examples=8, batch_size=8, max_length=48, max_prompt_length=16)
    trainer = Trainer(max_steps=steps, callbacks=[guard], logger=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, default_root_dir=str(tmp_path), enable_checkpointing=False)
    trainer.fit(model, data)
    return model


@pytest.mark.parametrize("bad", ["loss", "gradient"])
def test_stop_saves_checkpoint_and_names_step(tmp_path, bad):
    guard = NonFiniteGuard(action="stop")
    with pytest.raises(NonFiniteError, match=rf"non-finite {bad} at global step {BAD_STEP} \(epoch 0, batch {BAD_STEP}\)") as info:
        fit(tmp_path, guard, bad)
    path = os.path.join(str(tmp_path), "checkpoints", f"nonfinite-step={BAD_STEP}.ckpt")
    assert path in str(info.value) and os.path.exists(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_skip_drops_exactly_the_bad_update(tmp_path):
    guard = NonFiniteGuard(action="skip")
    model = fit(tmp_path, guard, "gradient", steps=5)
    assert guard.skipped == [BAD_STEP]
    before, after_bad, after_next = model.snapshots[BAD_STEP], model.snapshots[BAD_STEP + 1], model.snapshots[BAD_STEP + 2]
    assert torch.equal(before, after_bad)  # the step with the Inf gradient changed nothing, moments included
    assert not torch.equal(after_bad, after_next) and torch.isfinite(after_next).all()  # training went on
    final = torch.cat([p.detach().flatten() for p in model.policy.policy.parameters()])
    assert torch.isfinite(final).all()


def test_without_guard_the_weights_are_destroyed(tmp_path):
    # The failure the guard exists for: one bad step poisons every weight.
    model = SFTWithBadStep(bad="gradient", model="embedded:micro", warmup_ratio=0.0, lr_schedule="constant")
    data = SFTDataModule(num_examples=48, num_val_examples=8, batch_size=8, max_length=48, max_prompt_length=16)
    Trainer(max_steps=4, logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            default_root_dir=str(tmp_path), enable_checkpointing=False).fit(model, data)
    assert not torch.isfinite(model.snapshots[-1]).all()


def test_skip_gives_up_after_consecutive_bad_steps(tmp_path):
    class AlwaysNaN(SFTWithBadStep):
        def compute_loss(self, batch, stage):
            loss, logs = SFT.compute_loss(self, batch, stage)
            return (loss * float("nan") if self.global_step >= 1 else loss), logs

    model = AlwaysNaN(model="embedded:micro", warmup_ratio=0.0, lr_schedule="constant")
    data = SFTDataModule(num_examples=48, num_val_examples=8, batch_size=8, max_length=48, max_prompt_length=16)
    trainer = Trainer(max_steps=6, callbacks=[NonFiniteGuard(action="skip", max_consecutive_skips=2)], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path), enable_checkpointing=False)
    with pytest.raises(NonFiniteError, match="3 consecutive bad steps"):
        trainer.fit(model, data)

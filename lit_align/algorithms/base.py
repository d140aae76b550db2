"""``AlignmentModule``: the shared LightningModule every algorithm subclasses.

It owns what is not the algorithm: loading the policy (and its reference), the optimiser and LR
schedule, logging under ``train/`` and ``val/``, checkpoint hygiene (the frozen reference is not
written into checkpoints: it is rebuilt from ``model``) and export with ``save_pretrained``.
A subclass implements ``compute_loss(batch, stage) -> (loss, logs)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_align.errors import check_range
from lit_align.head import HeadMode
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.policy import LoraSettings, PolicyWithReference, ReferenceMode
from lit_align.reference_cache import precompute_reference
from lit_align.utils.dtypes import check_dtype

REFERENCE_PREFIX = "policy.reference."


def warmup_then_decay(warmup_steps: int, total_steps: int, schedule: str):
    """LR multiplier: linear warmup to 1, then constant / linear to 0 / cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def use_fused_adam(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Switch Adam/AdamW to the fused kernel when the config left the implementation open.

    One kernel over all parameters instead of per-tensor loops: 17 ms instead of 75 ms per step for
    a 20M-parameter policy on CPU (``benchmarks/step_breakdown.py``). Set per parameter group after
    construction rather than with ``fused=True``: the constructor also marks the optimiser as
    unscaling gradients itself, which makes Lightning refuse gradient clipping under mixed
    precision. Lightning unscales and clips before ``step``, so the fused kernel only ever sees
    final gradients. An explicit ``fused`` or ``foreach`` in the config is left alone.
    """
    if not isinstance(optimizer, torch.optim.Adam):
        return optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    supported = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    for group in optimizer.param_groups:
        if supported and group.get("fused") is None and group.get("foreach") is None and not group.get("differentiable") and not group.get("capturable"):
            group["fused"], group["foreach"] = True, False
    return optimizer


class AlignmentModule(LightningModule):
    """Shared base of all algorithms.

    Args:
        model: Policy to train: ``embedded:tiny``, a local ``save_pretrained`` folder, or a hub name.
        reference: ``copy`` (frozen copy of the initial policy), ``none``, ``precomputed`` (reference
            log-probs computed once before training and cached on disk; no reference model held) or
            ``adapter`` (LoRA on the policy; the reference is the same weights, adapters off); default per algorithm.
        lora: LoRA rank/alpha/dropout/targets for ``reference: adapter``.
        reference_batch_size: Batch size of the one-off pass of ``reference: precomputed``.
        optimizer: Optimiser class and its arguments, e.g. ``{class_path: torch.optim.AdamW, init_args: {lr: 5e-6}}``.
        lr_scheduler: A scheduler to use instead of the built-in warmup schedule.
        warmup_ratio: Share of training steps with linear LR warmup (built-in schedule).
        lr_schedule: After warmup: ``constant``, ``linear`` decay to 0, or ``cosine`` decay to 0.
        dtype: Load weights in this dtype (e.g. ``bfloat16``); None keeps the checkpoint's.
        gradient_checkpointing: Recompute activations in backward to save memory.
        trust_remote_code: Allow model code shipped with a hub checkpoint to run (off by default).
        head_mode: ``compact`` projects only completion positions through the LM head, in chunks,
            never holding ``[batch, length, vocab]`` logits (``lit_align.head``); ``full`` takes the
            model's own logits (same values, more memory; models with soft-capped/scaled logits use it anyway).
    """

    default_reference: ClassVar[ReferenceMode] = "copy"

    def __init__(
        self,
        model: str = "embedded:tiny",
        reference: ReferenceMode | None = None,
        lora: LoraSettings | None = None,
        reference_batch_size: int = 64,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        warmup_ratio: float = 0.1,
        lr_schedule: Literal["constant", "linear", "cosine"] = "linear",
        dtype: str | None = None,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        head_mode: HeadMode = "compact",
    ) -> None:
        super().__init__()
        # Checked before the (possibly large) model is loaded.
        check_range(self, "warmup_ratio", warmup_ratio, 0, 1)
        check_range(self, "reference_batch_size", reference_batch_size, 1, integer=True)
        check_dtype(self, dtype)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.model_name = model
        policy = self.load_start_model()
        if gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        self.policy = PolicyWithReference(policy, reference or self.default_reference, lora, head_mode)

    def load_start_model(self):
        """A fresh copy of the starting weights (``model``, with this module's dtype and trust settings)."""
        trust = self.hparams.get("trust_remote_code", False)
        return load_causal_lm(self.model_name, load_tokenizer(self.model_name, trust), dtype=self.hparams.get("dtype"), trust_remote_code=trust)

    @classmethod
    def algorithm_name(cls) -> str:
        """Run name in TensorBoard (``runs/<name>/version_N``)."""
        return cls.__name__.lower()

    # ----- the one method a new algorithm writes ---------------------------------------------
    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def track_metrics(self, stage: str, *args: Any) -> dict[str, torch.Tensor]:
        """Feed ``self.metrics[f"{stage}_metrics"]`` (a subclass's torchmetrics).

        Training returns this batch's values, logged per step; validation accumulates, and
        ``on_validation_epoch_end_metrics`` logs the exact epoch value (sum/count states).
        """
        metric = self.metrics[f"{stage}_metrics"]
        if stage == "train":
            return metric(*args)
        metric.update(*args)
        return {}

    def on_validation_epoch_end_metrics(self) -> dict[str, torch.Tensor]:
        """Epoch-level validation metrics accumulated by ``track_metrics``; logged under ``val/``."""
        metrics = getattr(self, "metrics", None)
        if metrics is None or "val_metrics" not in metrics:
            return {}
        values = metrics["val_metrics"].compute()
        metrics["val_metrics"].reset()
        return values

    # ----- Lightning hooks ---------------------------------------------------------------------
    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        loss, logs = self.compute_loss(batch, stage)
        on_step = stage == "train"
        size = len(batch)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, on_step=on_step, on_epoch=not on_step, batch_size=size, sync_dist=not on_step)
        if logs:
            self.log_dict({f"{stage}/{k}": v.detach().float() for k, v in logs.items()}, on_step=on_step, on_epoch=not on_step, batch_size=size, sync_dist=not on_step)
        return loss

    def on_fit_start(self) -> None:
        # reference='precomputed': one no-grad pass over the data (cached on disk) before any step.
        if self.policy.mode == "precomputed":
            precompute_reference(self, self.trainer.datamodule, self.hparams.reference_batch_size)

    def on_validation_start(self) -> None:
        if self.policy.mode == "precomputed":
            precompute_reference(self, self.trainer.datamodule, self.hparams.reference_batch_size)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        metrics = self.on_validation_epoch_end_metrics()
        if metrics:
            self.log_dict({f"val/{k}": v for k, v in metrics.items()})

    def configure_optimizers(self) -> Any:
        params = [p for p in self.policy.policy.parameters() if p.requires_grad]
        optimizer = use_fused_adam(self.optimizer(params))
        if self.lr_scheduler is not None:
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": "step"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = warmup_then_decay(int(self.hparams.warmup_ratio * total), total, self.hparams.lr_schedule)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----- checkpoint hygiene ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The reference is frozen and rebuilt from `model` on load: storing it doubles checkpoint size.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(REFERENCE_PREFIX)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"].update({k: v for k, v in self.state_dict().items() if k.startswith(REFERENCE_PREFIX)})

    # ----- export ------------------------------------------------------------------------------
    def export(self, directory: str, tokenizer: Any = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the policy (safetensors) and tokenizer with ``save_pretrained``: any HF tool loads it.

        ``state_dict``: this module's full (unsharded) state, e.g. gathered from FSDP shards; the
        policy is then rebuilt unsharded from ``model`` and loaded with it before saving.
        """
        policy = self.policy
        if state_dict is not None:
            prefix = "policy.policy."
            weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            fresh = self.load_start_model()
            policy = PolicyWithReference(fresh, "adapter" if self.policy.mode == "adapter" else "none", self.hparams.get("lora") if self.policy.mode == "adapter" else None)
            missing, unexpected = policy.policy.load_state_dict(weights, strict=False)
            tied = getattr(fresh.config, "tie_word_embeddings", False)
            missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]  # tied: stored once
            if missing or unexpected:
                raise RuntimeError(f"export: the gathered state does not fit {self.model_name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        policy.export_model().save_pretrained(directory, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)

"""``AlignmentModule``: the shared LightningModule every algorithm subclasses.

It owns what is not the algorithm: loading the policy (and its reference), the optimiser and LR
schedule, logging under ``train/`` and ``val/``, metric bookkeeping, the reference mode's set-up
pass, checkpoint hygiene (what the reference mode rebuilds from ``model`` is left out of
checkpoints) and export with ``save_pretrained``. The contract of a subclass (README, "Extending"):

* must: ``compute_loss(batch, stage) -> (loss, logs)``;
* may: ``connect(datamodule)`` (take what the algorithm needs from the data, once, before fit),
  ``default_reference`` and ``supported_references`` (checked before the model loads),
  ``configure_metrics()`` (a torchmetrics ``Metric`` fed by ``track_metrics``), ``algorithm_name()``,
  ``reference_in_checkpoint`` (True when the reference is training state, e.g. a moving anchor),
  ``load_start_model()`` (another kind of model, e.g. a reward model).
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_align.algorithms.stage_metrics import StageMetrics
from lit_align.dropout import disable_dropout as disable_dropout_in
from lit_align.errors import ConfigError, check_range
from lit_align.head import HeadMode
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.optim import use_fused_adam, warmup_then_decay
from lit_align.optim.in_backward import OptimizerInBackward, check_optimizer_in_backward
from lit_align.policy import LoraSettings, PolicyWithReference, ReferenceMode, ReferenceSetup
from lit_align.reference_modes import check_mode, mode_accepted
from lit_align.utils.dtypes import check_dtype

POLICY_PREFIX = "policy."  # where PolicyWithReference sits in this module's state dict


class AlignmentModule(StageMetrics, LightningModule):
    """Shared base of all algorithms.

    Args:
        model: Policy to train: ``embedded:tiny``, a local ``save_pretrained`` folder, or a hub name.
        reference: ``copy`` (frozen copy of the initial policy), ``none``, ``precomputed`` (reference
            log-probs computed once before training and cached on disk; no reference model held) or
            ``adapter`` (LoRA on the policy; the reference is the same weights, adapters off), or a mode a
            plug-in registered in ``lit_align.reference_modes.REFERENCES``; default per algorithm
            (``default_reference``), and only the algorithm's ``supported_references`` are accepted.
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
        disable_dropout: Zero every dropout of the policy (and so of the reference built from it), as
            TRL does by default: the reference runs without dropout, so a policy with dropout differs
            from it by noise and the first DPO loss is not log 2 (``lit_align.dropout``). False keeps
            the checkpoint's dropout. LoRA's own ``lora.dropout`` is kept either way (set explicitly).
        optimizer_in_backward: Update each parameter inside backward, as soon as its gradient is final,
            and free that gradient at once: the whole model's gradients never exist together (less peak
            memory, same values). Needs ``lit_align.optim.LowMemoryAdamW``, ``gradient_clip_val: null``,
            one device, no gradient accumulation (``lit_align.optim.in_backward``; docs/scaling.md).
    """

    default_reference: ClassVar[ReferenceMode] = "copy"
    # Reference modes this algorithm can run with (None: every registered one); another is refused
    # before the model loads. A plug-in mode subclassing a listed one is accepted too.
    supported_references: ClassVar[tuple[str, ...] | None] = None
    # Why the others are refused, appended to the error (e.g. "ORPO is reference-free").
    unsupported_reference_reason: ClassVar[str] = ""

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
        disable_dropout: bool = True,
        optimizer_in_backward: bool = False,
    ) -> None:
        super().__init__()
        # Checked before the (possibly large) model is loaded.
        check_range(self, "warmup_ratio", warmup_ratio, 0, 1)
        check_range(self, "reference_batch_size", reference_batch_size, 1, integer=True)
        check_dtype(self, dtype)
        self.check_reference(reference or self.default_reference)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.model_name = model
        policy = self.load_start_model()
        if gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        if disable_dropout:
            disable_dropout_in(policy)
        self.policy = PolicyWithReference(policy, reference or self.default_reference, lora, head_mode)
        self._connected = False
        self._in_backward: OptimizerInBackward | None = None
        self.build_stage_metrics()

    @classmethod
    def check_reference(cls, mode: str) -> None:
        """ConfigError unless ``mode`` is registered (``REFERENCES``) and one of ``supported_references``
        (or a registered subclass of one)."""
        check_mode(mode)
        if mode_accepted(mode, cls.supported_references):
            return
        reason = f": {cls.unsupported_reference_reason}" if cls.unsupported_reference_reason else ""
        raise ConfigError(
            f"{cls.__name__}: reference must be {' or '.join(cls.supported_references)}, got {mode!r}{reason}; "
            f"set model.init_args.reference to one of them or leave it unset (default: {cls.default_reference!r})"
        )

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

    # ----- Lightning hooks ---------------------------------------------------------------------
    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        loss, logs = self.compute_loss(batch, stage)
        on_step = stage == "train"
        if on_step:
            logs = {**self.train_step_metrics(), **logs}
        size = len(batch)
        # Every rank logs the loss at every step, so it can be averaged over ranks even per step: under
        # DDP train/loss is then the objective whose gradient is applied, not rank 0's share of the batch.
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, on_step=on_step, on_epoch=not on_step, batch_size=size, sync_dist=True)
        if logs:
            self.log_dict({f"{stage}/{k}": v.detach().float() for k, v in logs.items()}, on_step=on_step, on_epoch=not on_step, batch_size=size, sync_dist=not on_step)
        return loss

    # ----- what crosses from the data: one explicit step ------------------------------------------
    def connect(self, datamodule: Any) -> None:
        """Take what this algorithm needs from ``datamodule``, once, before fit/validate (KTO: the
        label counts; online sampling: the sampling settings). ``python -m lit_align`` calls it before
        fit/validate; a plain ``Trainer.fit(module, datamodule=dm)`` gets it from ``setup``.
        Overrides call ``super().connect(datamodule)`` first. Nothing reaches through the trainer."""
        self._connected = True

    def setup(self, stage: str) -> None:
        """Connects the trainer's DataModule if nothing did before (a plain ``Trainer.fit``); overrides call super."""
        if not self._connected:
            self.connect(self.trainer.datamodule)

    def reference_setup(self, batch_size: int | None = None, prefix_sharing: bool | str | None = None) -> ReferenceSetup:
        """What the reference mode's set-up pass needs from this module and its trainer, passed explicitly."""
        trainer = self._trainer  # None outside fit/validate (scripts, tests)
        return ReferenceSetup(
            model_name=self.model_name,
            dtype=self.hparams.get("dtype"),
            load_model=self.load_start_model,
            device=self.device,
            batch_size=self.hparams.reference_batch_size if batch_size is None else batch_size,
            prefix_sharing=getattr(self, "prefix_sharing", False) if prefix_sharing is None else prefix_sharing,
            precision=str(trainer.precision) if trainer is not None else "32-true",
            forward_context=trainer.precision_plugin.forward_context if trainer is not None else None,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def on_fit_start(self) -> None:
        # e.g. reference='precomputed': one no-grad pass over the data (cached on disk) before any step.
        self.policy.prepare(self.reference_setup(), self.trainer.datamodule)

    def on_validation_start(self) -> None:
        self.policy.prepare(self.reference_setup(), self.trainer.datamodule)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        metrics = self.on_validation_epoch_end_metrics()
        if metrics:
            self.log_dict({f"val/{k}": v for k, v in metrics.items()})

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """What the optimiser trains: the policy's trainable weights; a subclass with more (PPO's
        critic) extends it."""
        return (p for p in self.policy.policy.parameters() if p.requires_grad)

    def configure_optimizers(self) -> Any:
        params = list(self.trainable_parameters())
        optimizer = use_fused_adam(self.optimizer(params))
        if self._in_backward is not None:
            self._in_backward.remove()
            self._in_backward = None
        if self.hparams.get("optimizer_in_backward", False):
            check_optimizer_in_backward(optimizer, self.trainer)
            self._in_backward = OptimizerInBackward(optimizer)
        if self.lr_scheduler is not None:
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": "step"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = warmup_then_decay(int(self.hparams.warmup_ratio * total), total, self.hparams.lr_schedule)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # The gradients are spent once the step is taken. Lightning zeroes them only inside the next
        # closure, after that step's forward, so without this they sit beside its activations at the
        # peak: 376-474 MB of the peak RSS at 88M parameters (benchmarks/memory_profile.py
        # --free-grads). HF Trainer frees them here too. Values are unchanged: every backward starts
        # from zeroed gradients either way (and under accumulation this runs after the last micro-batch).
        optimizer.zero_grad(set_to_none=True)
        if self._in_backward is not None:
            self._in_backward.skip = False

    def on_before_backward(self, loss: torch.Tensor) -> None:
        if self._in_backward is not None:  # a non-finite loss must move no parameter (NonFiniteGuard then acts)
            self._in_backward.skip = not bool(torch.isfinite(loss.detach()).all())

    def teardown(self, stage: str) -> None:
        if self._in_backward is not None:  # the hooks hold this fit's optimiser
            self._in_backward.remove()
            self._in_backward = None

    # ----- checkpoint hygiene ------------------------------------------------------------------
    @property
    def reference_in_checkpoint(self) -> bool:
        """Whether the reference is training state to keep in checkpoints (a moving anchor); by default
        it is rebuilt from ``model`` on load, and storing it would double the checkpoint size."""
        return False

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.reference_in_checkpoint:
            for key in self.policy.checkpoint_left_out(checkpoint["state_dict"], POLICY_PREFIX):
                del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Fill only what the checkpoint lacks: a reference saved as training state is kept.
        state = self.state_dict()
        for key in self.policy.checkpoint_left_out(state, POLICY_PREFIX):
            checkpoint["state_dict"].setdefault(key, state[key])

    # ----- export ------------------------------------------------------------------------------
    def export(self, directory: str, tokenizer: Any = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the policy (safetensors) and tokenizer with ``save_pretrained``: any HF tool loads it.

        ``state_dict``: this module's full (unsharded) state, e.g. gathered from FSDP shards; the
        policy is then rebuilt unsharded from ``model`` and loaded with it before saving.
        """
        if state_dict is not None:
            prefix = POLICY_PREFIX + "policy."
            weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            fresh = self.load_start_model()
            policy = self.policy.strategy.wrap_policy(fresh)  # the trained structure (LoRA layers with `adapter`)
            missing, unexpected = policy.load_state_dict(weights, strict=False)
            tied = getattr(fresh.config, "tie_word_embeddings", False)
            missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]  # tied: stored once
            if missing or unexpected:
                raise RuntimeError(f"export: the gathered state does not fit {self.model_name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.policy.export_model(policy if state_dict is not None else None).save_pretrained(directory, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)

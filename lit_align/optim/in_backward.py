"""The optimiser step inside backward: each parameter is updated as soon as its gradient is final and
the gradient is freed at once, so the gradients of the whole model never exist together.

This is torchtune's ``optimizer_in_bwd`` (a ``register_post_accumulate_grad_hook`` per parameter).
With plain AdamW the update of a parameter needs only its own gradient and moments, so the values are
those of the usual step after backward. What needs all gradients at once cannot run:

* **clipping by the global gradient norm** (``gradient_clip_val``): the norm is known only when the
  last gradient is, after every other parameter has moved. Refused, not silently skipped;
* **gradient accumulation**: every micro-batch's backward would take a step. Refused;
* **DDP, FSDP, several processes**: they reduce or shard gradients in their own hooks, after ours
  might run. Refused (only Lightning's single-device strategy is accepted); so is fp16 mixed
  precision, whose scaled gradients are unscaled only after backward.

Non-finite values: a non-finite loss (seen before backward) moves no parameter. A non-finite gradient
is left in ``.grad`` and that parameter is not updated, so ``NonFiniteGuard`` sees it and stops or
skips as usual; but parameters whose gradients were final before it have moved (the guard's "the
update was not applied" then holds per parameter, not for the whole step).
"""

from __future__ import annotations

from typing import Any

import torch

from lit_align.errors import ConfigError

SETTING = "model.init_args.optimizer_in_backward"


def check_optimizer_in_backward(optimizer: torch.optim.Optimizer, trainer: Any) -> None:
    """ConfigError (one paragraph, with the fix) for each combination the step in backward cannot honour."""
    if not hasattr(optimizer, "step_parameter"):
        raise ConfigError(
            f"{SETTING}=true needs an optimiser that updates one parameter at a time, got {type(optimizer).__module__}.{type(optimizer).__name__}. "
            "Set model.init_args.optimizer.class_path to lit_align.optim.LowMemoryAdamW (init_args.state_dtype: float32 gives "
            f"torch.optim.AdamW's exact values, bfloat16 halves the optimiser state), or set {SETTING}=false."
        )
    problems = []
    if trainer.gradient_clip_val:
        problems.append(
            f"trainer.gradient_clip_val={trainer.gradient_clip_val} clips by the norm of all gradients, which is known only after "
            "every parameter has already been updated; set --trainer.gradient_clip_val=null (lit_align/defaults.yaml sets 1.0)"
        )
    if trainer.accumulate_grad_batches > 1:
        problems.append(f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} would take a step at every micro-batch; use 1 and a larger batch")
    strategy = type(trainer.strategy).__name__
    if trainer.world_size > 1 or strategy != "SingleDeviceStrategy":
        problems.append(
            f"strategy {strategy} with {trainer.world_size} process(es) reduces or shards gradients in its own hooks, after the step would "
            "have used them; train with trainer.devices=1 and trainer.strategy=auto"
        )
    if str(trainer.precision).startswith("16"):
        problems.append(f"precision {trainer.precision} scales gradients and unscales them only after backward; use bf16-mixed or 32-true")
    if problems:
        raise ConfigError(f"{SETTING}=true steps each parameter inside backward, so: " + "; ".join(problems) + f". Or set {SETTING}=false.")


class OptimizerInBackward:
    """Hooks ``optimizer.step_parameter`` onto each of its parameters' gradient accumulation.

    The optimiser's own ``step()`` then finds no gradients and does nothing; the LR schedule still
    updates ``param_groups`` (read at each hook call) once per step, as before.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.skip = False  # set for a backward whose loss is non-finite
        self.handles = []
        for group in optimizer.param_groups:
            for param in group["params"]:
                self.handles.append(param.register_post_accumulate_grad_hook(self._hook(group)))

    def _hook(self, group: dict[str, Any]):
        def step(param: torch.Tensor) -> None:
            if self.skip:
                param.grad = None
            elif bool(torch.isfinite(param.grad).all()):
                self.optimizer.step_parameter(param, group)
                param.grad = None  # spent: the memory this mode exists to save

        return step

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

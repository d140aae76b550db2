"""Reference modes as strategies: one object per mode, behind ``PolicyWithReference``.

Each mode owns everything that differs between the ways of holding a reference pi_ref:

* ``logps`` — log pi_ref(y|x) of a batch's rows (``batch`` carries precomputed values);
* ``model`` — a context yielding the module that acts as pi_ref for sampling and KL;
* ``checkpoint_prefixes`` — state rebuilt from ``model`` on load, so checkpoints leave it out;
* ``prepare`` — a set-up pass before fit/validate (the precompute), given what it needs explicitly;
* ``wrap_policy`` / ``exported`` — what the trainable policy is (LoRA for ``adapter``) and how it is
  written out as a plain model.

A new mode is one subclass of ``Reference`` registered in ``REFERENCES`` (``REFERENCES["mine"] =
MyReference``), e.g. by the module a config names by class path: ``reference: mine`` then works
from the CLI, since configs give a plain string checked against the live registry when the
algorithm is built (``check_mode``). An algorithm accepts a registered mode where it accepts the
mode it subclasses (a ``CopyReference`` subclass wherever ``copy`` is allowed); no algorithm changes.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from lit_align.errors import ConfigError
from lit_align.lora import LoraSettings, add_lora
from lit_align.ops import SequenceLogps
from lit_align.reference_cache import precompute

if TYPE_CHECKING:
    from lit_align.policy import PolicyWithReference


@dataclass
class ReferenceSetup:
    """What a mode's set-up pass needs, passed explicitly by the algorithm (``AlignmentModule.reference_setup``).

    Args:
        model_name: The starting weights (the reference is that model); keys the cache.
        dtype: Their load dtype (keys the cache).
        load_model: Returns a fresh copy of the starting model.
        device: Where to run the pass.
        batch_size: Batch size of the pass (no gradients: larger than training's fits).
        prefix_sharing: Run pairwise rows prompt-shared, as training does (true / false / auto).
        precision: The trainer's precision (keys the cache).
        forward_context: Zero-argument callable returning the autocast context of training, or None.
        rank: This process's rank; world_size: the number of processes sharing the pass.
    """

    model_name: str
    dtype: str | None
    load_model: Callable[[], nn.Module]
    device: torch.device
    batch_size: int = 64
    prefix_sharing: bool | str = False
    precision: str = "32-true"
    forward_context: Callable[[], Any] | None = None
    rank: int = 0
    world_size: int = 1


class Reference:
    """Base of the modes; subclasses override what differs."""

    name: ClassVar[str]
    holds_model: ClassVar[bool] = False  # can a module act as pi_ref (sampling, KL)?
    instead: ClassVar[str] = "reference: copy or adapter"  # what to use when a caller needs a model
    why_no_model: ClassVar[str] = ""

    def wrap_policy(self, policy: nn.Module) -> nn.Module:
        """The trainable policy built on the starting model (the model itself by default)."""
        return policy

    def build(self, policy: nn.Module) -> nn.Module | None:
        """A module to register as ``PolicyWithReference.reference`` (moved and cast with it), or None."""
        return None

    def logps(self, owner: PolicyWithReference, rows: tuple[torch.Tensor, ...], batch: Any, layout: Any) -> SequenceLogps:
        with self.model(owner) as reference:
            return owner.logps_of(reference, *rows, layout)

    @contextlib.contextmanager
    def model(self, owner: PolicyWithReference):
        raise ConfigError(f"reference='{self.name}' holds no reference model ({self.why_no_model}), but this run needs one to sample from or to measure KL against; use {self.instead}")
        yield  # pragma: no cover - makes this a generator

    def checkpoint_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes (relative to ``PolicyWithReference``) rebuilt from ``model`` on load."""
        return ()

    def prepare(self, owner: PolicyWithReference, setup: ReferenceSetup, datamodule: Any) -> None:
        """Set-up pass before fit/validate; nothing by default."""

    def exported(self, policy: nn.Module) -> nn.Module:
        """A plain model to ``save_pretrained`` from the trained ``policy``."""
        return policy


class NoReference(Reference):
    """``none``: no reference at all (ORPO, SimPO, SFT, reward models)."""

    name = "none"
    why_no_model = "the algorithm runs without one"

    def logps(self, owner, rows, batch, layout):
        raise RuntimeError("this algorithm runs without a reference model (reference='none'), so no reference log-probs exist")


class CopyReference(Reference):
    """``copy``: a frozen deep copy of the initial policy (eval mode, no grads)."""

    name = "copy"
    holds_model = True

    def build(self, policy):
        return copy.deepcopy(policy).requires_grad_(False).eval()

    @contextlib.contextmanager
    def model(self, owner):
        yield owner.reference

    def checkpoint_prefixes(self):
        return ("reference.",)  # frozen: rebuilt from `model`; storing it doubles checkpoint size


class AdapterReference(Reference):
    """``adapter``: LoRA on the policy; pi_ref is the same weights with the adapters off."""

    name = "adapter"
    holds_model = True

    def __init__(self, lora: LoraSettings | None = None) -> None:
        self.lora = lora or LoraSettings()

    def wrap_policy(self, policy):
        return add_lora(policy, self.lora)

    @contextlib.contextmanager
    def model(self, owner):
        policy = owner.policy
        was_training = policy.training
        policy.eval()  # dropout off, as for a frozen copy
        try:
            with policy.disable_adapter():
                yield policy
        finally:
            policy.train(was_training)

    def exported(self, policy):
        return copy.deepcopy(policy).merge_and_unload()  # a copy: training goes on with the adapters


class PrecomputedReference(Reference):
    """``precomputed``: log-probs computed once before training, cached on disk, carried by batches."""

    name = "precomputed"
    why_no_model = "its log-probs were computed before training and cover the training data only"
    instead = "reference: copy or adapter (or a callback's own reference model)"

    def logps(self, owner, rows, batch, layout):
        cached = getattr(batch, "reference_logps", None)
        if cached is None:
            raise RuntimeError(
                "reference='precomputed' but the batch carries no reference_logps: the precompute pass runs at fit/validate "
                "start (PolicyWithReference.prepare) and its DataModule collate must attach them"
            )
        return SequenceLogps(*(t.to(device=rows[0].device, dtype=torch.float32) for t in cached))

    def prepare(self, owner, setup, datamodule):
        precompute(setup, datamodule)


# What a config may give as ``reference:``: the name of a mode registered in REFERENCES when the
# algorithm is built. A plain string, not a Literal: a Literal is frozen at import, so the CLI
# would refuse a mode a plug-in registers later.
ReferenceMode = str
REFERENCES: dict[str, Callable[..., Reference]] = {"copy": CopyReference, "none": NoReference, "precomputed": PrecomputedReference, "adapter": AdapterReference}
BUILTIN_REFERENCE_MODES = ("copy", "none", "precomputed", "adapter")


def check_mode(mode: str) -> None:
    """ConfigError unless ``mode`` is registered in ``REFERENCES`` (read now, not at import)."""
    if mode not in REFERENCES:
        raise ConfigError(
            f"unknown reference mode {mode!r}; registered modes: {', '.join(REFERENCES)}. Set model.init_args.reference to one of "
            "them, or register yours in lit_align.reference_modes.REFERENCES from a module the config imports (e.g. the module of a class_path)"
        )


def mode_accepted(mode: str, supported: tuple[str, ...] | None) -> bool:
    """Whether an algorithm that supports ``supported`` (None: every registered mode) accepts ``mode``:
    named there, or registered as a subclass of a mode named there."""
    if supported is None or mode in supported:
        return True
    strategy = REFERENCES.get(mode)
    return isinstance(strategy, type) and any(isinstance(REFERENCES.get(s), type) and issubclass(strategy, REFERENCES[s]) for s in supported)


def make_reference(mode: str, lora: LoraSettings | None = None) -> Reference:
    check_mode(mode)
    if lora is not None and mode != "adapter":
        raise ConfigError(f"LoRA settings are only used with reference='adapter' (got reference={mode!r}); remove `lora` or set reference: adapter")
    return AdapterReference(lora) if mode == "adapter" else REFERENCES[mode]()

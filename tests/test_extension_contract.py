"""The contract a plug-in algorithm relies on (issue 15): declared reference modes checked before the
model loads, one strategy object per mode (log-probs, the module acting as the reference, what
checkpoints leave out, the set-up pass), the ``configure_metrics`` hook, ``len(batch)`` = examples."""

from __future__ import annotations


import pytest
import torch
from torchmetrics import Metric

import lit_align.algorithms as algorithms
from lit_align.algorithms import DPO, KTO, ORPO, SFT, AlignmentModule, PairwiseBatch, RewardModel, UnpairedBatch
from lit_align.algorithms import base as algorithms_base
from lit_align.errors import ConfigError
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.policy import PolicyWithReference
from lit_align.reference_modes import REFERENCES, ReferenceMode


@pytest.mark.parametrize(
    "algorithm, mode, message",
    [
        (DPO, "none", r"DPO: reference must be copy or precomputed or adapter, got 'none': the DPO loss is a log-ratio"),
        (ORPO, "copy", r"ORPO: reference must be none, got 'copy': ORPO is reference-free"),
        (KTO, "precomputed", r"KTO: reference must be copy or adapter, got 'precomputed'.*cannot be precomputed"),
        (SFT, "adapter", r"SFT: reference must be none, got 'adapter'"),
        (RewardModel, "copy", r"RewardModel: reference must be none, got 'copy'"),
    ],
)
def test_unsupported_reference_is_refused_before_the_model_loads(algorithm, mode, message, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the reference mode was checked")

    monkeypatch.setattr(algorithms_base, "load_causal_lm", no_load)
    with pytest.raises(ConfigError, match=message + r".*set model.init_args.reference"):
        algorithm(model="embedded:micro", reference=mode)


def micro_pair(mode: str, **kwargs) -> PolicyWithReference:
    return PolicyWithReference(load_causal_lm("embedded:micro", load_tokenizer("embedded:micro")), mode, **kwargs)


def rows(n: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, 40, (n, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    loss_mask = mask.clone()
    loss_mask[:, :3] = 0
    return ids, mask, loss_mask


@pytest.mark.parametrize("mode", ["none", "precomputed"])
def test_modes_without_a_model_refuse_to_act_as_one(mode):
    pair = micro_pair(mode)
    assert pair.strategy.name == mode and not pair.has_reference_model
    with pytest.raises(ConfigError, match=rf"reference='{mode}' holds no reference model.*use reference: copy or adapter"):
        with pair.reference_model():
            pass


def test_copy_reference_model_is_the_frozen_copy():
    pair = micro_pair("copy")
    assert pair.has_reference_model
    with pair.reference_model() as reference:
        assert reference is pair.reference and not reference.training


def test_adapter_reference_model_is_the_policy_with_adapters_off():
    pytest.importorskip("peft")
    pair = micro_pair("adapter")
    with torch.no_grad():  # LoRA's B starts at 0; move it so the adapters change the outputs
        for name, p in pair.policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    pair.train()
    ids, mask, loss_mask = rows()
    policy = pair.policy_logps(ids, mask, loss_mask).sum
    with pair.reference_model() as reference:
        assert reference is pair.policy and not reference.training
        inside = pair.logps_of(reference, ids, mask, loss_mask, None).sum
    assert pair.policy.training  # restored
    torch.testing.assert_close(inside, pair.reference_logps(ids, mask, loss_mask).sum)
    assert not torch.allclose(inside, policy)
    # Adapter mode keeps no second copy, so checkpoints leave nothing out.
    assert pair.checkpoint_left_out(pair.state_dict(prefix="policy."), "policy.") == []


class MovingAnchor(DPO):
    @property
    def reference_in_checkpoint(self) -> bool:
        return True


def test_checkpoints_leave_out_what_the_mode_rebuilds_and_keep_a_saved_reference():
    dpo = DPO(model="embedded:micro")
    checkpoint = {"state_dict": dpo.state_dict()}
    dpo.on_save_checkpoint(checkpoint)
    left_out = set(dpo.state_dict()) - set(checkpoint["state_dict"])
    assert left_out == {"policy.reference." + k for k in dpo.policy.reference.state_dict()}
    dpo.on_load_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(dpo.state_dict())

    # A reference that is training state (e.g. BOND's moving anchor) stays in and is not overwritten on load.
    anchor = MovingAnchor(model="embedded:micro")
    checkpoint = {"state_dict": {k: v.clone() for k, v in anchor.state_dict().items()}}
    anchor.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(anchor.state_dict())
    key = next(k for k in checkpoint["state_dict"] if k.startswith("policy.reference."))
    checkpoint["state_dict"][key] = torch.full_like(checkpoint["state_dict"][key], 7.0)
    anchor.on_load_checkpoint(checkpoint)
    assert bool((checkpoint["state_dict"][key] == 7.0).all())


class Count(Metric):
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total = self.total + values.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        return {"total": self.total}


class Counting(AlignmentModule):
    default_reference = "none"

    def configure_metrics(self) -> Count:
        return Count()


def test_configure_metrics_gives_one_copy_per_stage_fed_by_track_metrics():
    module = Counting(model="embedded:micro")
    train, val = module.metrics["train_metrics"], module.metrics["val_metrics"]
    assert isinstance(train, Count) and isinstance(val, Count) and train is not val
    assert module.track_metrics("train", torch.tensor([1.0, 2.0])) == {}  # the base logs it, reduced over ranks
    assert module.train_step_metrics()["total"].item() == 3.0  # this step's value
    assert module.train_step_metrics() == {}  # reset after the step: nothing fed since
    assert module.track_metrics("val", torch.tensor([1.0, 2.0])) == {}
    module.track_metrics("val", torch.tensor([4.0]))
    assert module.on_validation_epoch_end_metrics()["total"].item() == 7.0  # the union of both batches
    assert module.on_validation_epoch_end_metrics()["total"].item() == 0.0  # reset after logging
    # No hook, no metrics: nothing to log at epoch end.
    assert not hasattr(SFT(model="embedded:micro"), "metrics")
    assert SFT(model="embedded:micro").on_validation_epoch_end_metrics() == {}


def test_len_of_every_batch_is_its_number_of_examples():
    ids = torch.zeros(6, 5, dtype=torch.long)
    pairs = PairwiseBatch(ids, ids, ids)
    assert len(pairs) == pairs.num_pairs == 3  # 6 rows: chosen and rejected of 3 pairs
    unpaired = UnpairedBatch(ids, ids, ids, labels=torch.ones(3, dtype=torch.bool))
    assert len(unpaired) == unpaired.num_examples == 3  # 6 rows: 3 examples + 3 mismatched pairs


def test_a_plugin_needs_only_lit_align_algorithms():
    for name in ("AlignmentModule", "PairwiseAlignmentModule", "PairLogps", "PairwiseOutput", "SequenceLogps", "PairwiseBatch", "REFERENCE_MODES"):
        assert name in algorithms.__all__ and hasattr(algorithms, name), name
    assert algorithms.REFERENCE_MODES == ("copy", "none", "precomputed", "adapter")
    # What configs may name is a plain string checked against the live registry (plug-ins included).
    assert ReferenceMode is str and tuple(REFERENCES)[:4] == algorithms.REFERENCE_MODES

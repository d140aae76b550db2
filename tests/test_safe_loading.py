"""Safe loading: no remote code unless asked, checkpoints that load with weights_only=True,
the final policy written as safetensors only."""

from __future__ import annotations

import inspect
import json
import os

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_align.algorithms import SFT
from lit_align.algorithms.base import AlignmentModule
from lit_align.data.sft import SFTDataModule
from lit_align.modeling import load_causal_lm, load_tokenizer


def test_trust_remote_code_is_off_by_default():
    for function in (AlignmentModule.__init__, load_causal_lm, load_tokenizer):
        assert inspect.signature(function).parameters["trust_remote_code"].default is False


def test_checkpoint_code_is_not_run(tmp_path):
    sentinel = tmp_path / "code_ran"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (tmp_path / name).write_text(f"open({str(sentinel)!r}, 'w').write('x')\n")
    with pytest.raises(Exception, match="trust_remote_code"):
        load_causal_lm(str(tmp_path))
    assert not sentinel.exists()


def test_checkpoints_load_with_weights_only_and_export_is_safetensors(tmp_path):
    model = SFT(model="embedded:micro")
    data = SFTDataModule(num_examples=16, num_val_examples=8, batch_size=8)
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    Trainer(max_steps=2, callbacks=[checkpoint], logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path)).fit(model, data)
    # weights_only=True refuses pickled objects: hyperparameters and callback states are plain types.
    state = torch.load(checkpoint.last_model_path, weights_only=True)
    assert state["hyper_parameters"]["model"] == "embedded:micro"
    restored = SFT.load_from_checkpoint(checkpoint.last_model_path, weights_only=True)
    assert torch.equal(restored.policy.policy.lm_head.weight, model.policy.policy.lm_head.weight)

    export = tmp_path / "export"
    model.export(str(export), data.tokenizer)
    files = os.listdir(export)
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]


@pytest.mark.parametrize("reference", ["copy", "adapter"])
def test_export_from_a_gathered_state_dict_rebuilds_the_unsharded_policy(tmp_path, reference):
    """What ExportPretrained does under FSDP: rank 0 gets the full state dict and rebuilds the policy."""
    if reference == "adapter":
        pytest.importorskip("peft")
    from lit_align.algorithms import DPO

    trained = DPO(model="embedded:micro", reference=reference)
    with torch.no_grad():
        for name, p in trained.policy.policy.named_parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    state = trained.state_dict()
    # A module whose own weights are untouched (like a rank's sharded view) exports the gathered ones.
    DPO(model="embedded:micro", reference=reference).export(str(tmp_path / "out"), state_dict=state)
    exported = load_causal_lm(str(tmp_path / "out"))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    expected = trained.policy.export_model()(input_ids=ids).logits
    torch.testing.assert_close(exported(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)
    assert (expected - load_causal_lm("embedded:micro")(input_ids=ids).logits).abs().max() > 1e-3
    with pytest.raises(RuntimeError, match="does not fit"):
        DPO(model="embedded:micro", reference=reference).export(str(tmp_path / "bad"), state_dict={**state, "policy.policy.extra.weight": torch.zeros(1)})

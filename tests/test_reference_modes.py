"""Reference modes of ``PolicyWithReference``: precomputed (cached on disk) and adapter (LoRA, no copy)."""

from __future__ import annotations

import math
import os

import pytest
import torch

from benchmarks.workload import write_pairs
from lit_align import reference_cache
from lit_align.algorithms import base as algorithms_base
from lit_align.algorithms import DPO
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.modeling import load_causal_lm, load_tokenizer
from lit_align.ops import sequence_logps
from lit_align.policy import LoraSettings, PolicyWithReference, ReferenceSetup


@pytest.fixture
def pairs(tmp_path):
    return write_pairs(str(tmp_path / "pairs.jsonl"), 40, seed=3)


def datamodule(path: str, **kwargs) -> PairwiseDataModule:
    dm = PairwiseDataModule(model="embedded:tiny", dataset=path, val_fraction=0.2, batch_size=4, **kwargs)
    dm.setup("fit")
    return dm


def test_precomputed_matches_live_reference_and_reuses_cache(pairs, monkeypatch):
    live = DPO(model="embedded:tiny", reference="copy")
    cached = DPO(model="embedded:tiny", reference="precomputed", reference_batch_size=7)
    # No reference model is held: the module is exactly one policy.
    assert cached.policy.reference is None
    assert sum(p.numel() for p in cached.parameters()) * 2 == sum(p.numel() for p in live.parameters())

    dm = datamodule(pairs)
    path = reference_cache.precompute_reference(cached, dm, batch_size=7)
    assert os.path.exists(path)
    # A batch of 4 pads differently from the precompute batches of 7: values must not depend on it.
    batch = dm.collate(dm.train_examples[5:9])
    assert batch.reference_logps is not None and batch.reference_logps.sum.shape == (8,)
    expected = live.policy.reference_logps(batch.input_ids, batch.attention_mask, batch.loss_mask)
    got = cached.policy.reference_logps(batch.input_ids, batch.attention_mask, batch.loss_mask, batch=batch)
    torch.testing.assert_close(got.sum, expected.sum, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got.count, expected.count)
    # Policy == reference at the start: the DPO loss is log 2 (Eq. 7 at h = 0) from cached values too.
    loss, _ = cached.compute_loss(batch, "train")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-4)
    val_batch = dm.collate(dm.val_examples)
    assert val_batch.reference_logps.sum.shape == (2 * len(dm.val_examples),)

    # A second run on the same data finds the cache and never builds a reference model.
    def no_load(*args, **kwargs):
        raise AssertionError("the reference model was loaded although the cache exists")

    monkeypatch.setattr(algorithms_base, "load_causal_lm", no_load)  # the module's start-model loader
    dm2 = datamodule(pairs)
    assert reference_cache.precompute_reference(cached, dm2) == path
    assert dm2.train_examples[5][reference_cache.REFERENCE_KEY] == dm.train_examples[5][reference_cache.REFERENCE_KEY]
    # Different tokenisation settings are a different key: the stale cache is not used.
    with pytest.raises(AssertionError, match="was loaded"):
        reference_cache.precompute_reference(cached, datamodule(pairs, max_length=14, max_prompt_length=6))


def test_precompute_pass_runs_from_an_explicit_setup_alone(tmp_path):
    """No LightningModule, no trainer: the set-up pass gets what it needs in a ReferenceSetup."""
    dm = datamodule(write_pairs(str(tmp_path / "other_pairs.jsonl"), 24, seed=11))  # data no other test has cached
    tokenizer = load_tokenizer("embedded:tiny")
    loads = []

    def load_model():
        loads.append("reference")
        return load_causal_lm("embedded:tiny", tokenizer)

    setup = ReferenceSetup(model_name="embedded:tiny", dtype=None, load_model=load_model, device=torch.device("cpu"), batch_size=16)
    live = PolicyWithReference(load_causal_lm("embedded:tiny", tokenizer), "copy")
    live.prepare(setup, dm)  # a live reference has no set-up pass
    assert loads == [] and reference_cache.REFERENCE_KEY not in dm.train_examples[0]
    cached = PolicyWithReference(load_causal_lm("embedded:tiny", tokenizer), "precomputed")
    cached.prepare(setup, dm)
    assert loads == ["reference"]
    batch = dm.collate(dm.train_examples[:4])
    rows = (batch.input_ids, batch.attention_mask, batch.loss_mask)
    torch.testing.assert_close(cached.reference_logps(*rows, batch=batch).sum, live.reference_logps(*rows).sum, atol=1e-4, rtol=1e-5)


def test_precomputed_without_cached_values_fails_clearly(pairs):
    module = DPO(model="embedded:tiny", reference="precomputed")
    dm = datamodule(pairs)
    batch = dm.collate(dm.train_examples[:2])
    with pytest.raises(RuntimeError, match="carries no reference_logps"):
        module.compute_loss(batch, "train")


def _logps(model, batch):
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return sequence_logps(logits, batch.input_ids, batch.loss_mask).sum


def test_adapter_reference_is_the_starting_model_with_one_copy_of_weights(pairs):
    pytest.importorskip("peft", reason="the adapter reference needs peft (pip install -e .[lora])")
    tokenizer = load_tokenizer("embedded:micro")
    start = load_causal_lm("embedded:micro", tokenizer)
    base_numel = sum(p.numel() for p in start.parameters())
    pair = PolicyWithReference(load_causal_lm("embedded:micro", tokenizer), "adapter", LoraSettings(r=4, alpha=8))
    dm = datamodule(pairs)
    batch = dm.collate(dm.train_examples[:4])

    trainable = [p for p in pair.parameters() if p.requires_grad]
    assert trainable and all(n.count("lora_") for n, p in pair.named_parameters() if p.requires_grad)
    frozen_numel = sum(p.numel() for p in pair.parameters() if not p.requires_grad)
    assert frozen_numel == base_numel  # exactly one copy of the base weights, no reference copy
    assert pair.reference is None

    # Train the adapters a few steps: the policy moves, the reference stays the starting model.
    optimizer = torch.optim.SGD(trainable, lr=1.0)
    for _ in range(3):
        loss = -pair.policy_logps(batch.input_ids, batch.attention_mask, batch.loss_mask).sum.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    start_logps = _logps(start, batch)
    policy_logps = pair.policy_logps(batch.input_ids, batch.attention_mask, batch.loss_mask).sum.detach()
    assert (policy_logps - start_logps).abs().max() > 0.1
    reference = pair.reference_logps(batch.input_ids, batch.attention_mask, batch.loss_mask)
    torch.testing.assert_close(reference.sum, start_logps, atol=1e-4, rtol=1e-5)
    assert pair.policy.training  # reference pass restored the train/eval state

    # The exported model is a plain model with the adapters merged: same log-probs as the policy.
    exported = pair.export_model()
    assert not any("lora_" in n for n, _ in exported.named_parameters())
    torch.testing.assert_close(_logps(exported.eval(), batch), _logps(pair.policy.eval(), batch), atol=1e-4, rtol=1e-5)


def test_adapter_on_an_sft_adapter_keeps_the_sft_model_as_reference(pairs):
    peft = pytest.importorskip("peft", reason="the adapter reference needs peft (pip install -e .[lora])")
    LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model

    tokenizer = load_tokenizer("embedded:micro")
    sft = get_peft_model(load_causal_lm("embedded:micro", tokenizer), LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():  # a "trained" SFT adapter: B != 0
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    dm = datamodule(pairs)
    batch = dm.collate(dm.train_examples[:4])
    sft_logps = _logps(sft.eval(), batch)
    base_logps = _logps(load_causal_lm("embedded:micro", tokenizer), batch)
    assert (sft_logps - base_logps).abs().max() > 0.1
    pair = PolicyWithReference(sft, "adapter", LoraSettings(r=4))
    reference = pair.reference_logps(batch.input_ids, batch.attention_mask, batch.loss_mask)
    # The reference is the SFT model (base + its adapter), not the bare base under it.
    torch.testing.assert_close(reference.sum, sft_logps, atol=1e-4, rtol=1e-5)


def test_unknown_mode_and_misplaced_lora_are_rejected():
    model = load_causal_lm("embedded:micro")
    with pytest.raises(ValueError, match="unknown reference mode"):
        PolicyWithReference(model, "frozen")
    with pytest.raises(ValueError, match="only used with reference='adapter'"):
        PolicyWithReference(model, "copy", LoraSettings())


def test_sampled_evaluation_kl_in_adapter_mode_uses_adapters_off_not_a_second_model(pairs, monkeypatch):
    pytest.importorskip("peft")
    from lit_align.callbacks import SampledEvaluation, sampled_eval

    def no_load(*args, **kwargs):
        raise AssertionError("a second reference model was loaded")

    monkeypatch.setattr(sampled_eval, "load_causal_lm", no_load)
    module = DPO(model="embedded:tiny", reference="adapter", lora=LoraSettings(r=4, alpha=8))
    evaluation = SampledEvaluation(num_prompts=4, samples_per_prompt=2, max_new_tokens=8)
    dm = datamodule(pairs)
    # Fresh adapters (LoRA B = 0): policy == reference, so the sampled KL is exactly 0 ...
    assert evaluation.measure(module.policy.policy, dm, evaluation._reference(module))["eval/kl"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # ... and once the adapters are "trained" it is not.
        for name, p in module.policy.policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.02)
    assert abs(evaluation.measure(module.policy.policy, dm, evaluation._reference(module))["eval/kl"]) > 1e-3
    assert module.policy.policy.training  # the adapter context restored train mode


def test_precompute_pass_runs_longest_first_shows_progress_and_keeps_example_order(pairs, capsys):
    dm = datamodule(pairs)
    model = load_causal_lm("embedded:micro").eval()
    batches = []

    def collate(examples):
        batches.append([reference_cache._length(ex) for ex in examples])
        return dm.collate(examples)

    values = reference_cache.compute_reference_logps(model, collate, dm.train_examples, 5, torch.device("cpu"), progress=True)
    # Longest first: every batch is no longer than the one before it, so each pads little.
    flat = [length for batch in batches for length in batch]
    assert flat == sorted(flat, reverse=True) and flat[0] > flat[-1]
    assert "reference log-probs" in capsys.readouterr().err  # the progress bar
    # Results come back in example order, not in the sorted order they were computed in.
    for index in (0, 7, len(dm.train_examples) - 1):
        one = dm.collate([dm.train_examples[index]])
        expected = _logps(model, one)
        torch.testing.assert_close(values[index, :, 0], expected, atol=1e-4, rtol=1e-5)


PLUGIN = '''
"""A user's module: a reference mode registered at import, and a callback the config names."""
from lightning import Callback

from lit_align.reference_modes import REFERENCES, CopyReference


class TwinReference(CopyReference):
    """A frozen copy under a name of its own: accepted wherever ``copy`` is."""

    name = "twin"


REFERENCES["twin"] = TwinReference


class ReportReference(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module):
        with open(self.path, "w") as f:
            f.write(type(pl_module.policy.strategy).__name__ + " " + str(pl_module.policy.reference is not None))
'''


def test_a_mode_registered_by_a_plugin_works_from_the_cli_and_an_unknown_one_is_named(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "twin_plugin.py").write_text(PLUGIN)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": f"review {i} :", "chosen": "good film", "rejected": "bad film"}) + "\n" for i in range(24))
    (tmp_path / "run.yaml").write_text(
        "model:\n  class_path: lit_align.algorithms.DPO\n  init_args: {model: embedded:micro, reference: twin}\n"
        f"data:\n  class_path: lit_align.data.pairwise.PairwiseDataModule\n  init_args: {{dataset: {tmp_path / 'pairs.jsonl'}, batch_size: 2, val_fraction: 0.2}}\n"
        "trainer:\n  max_steps: 1\n  limit_val_batches: 0\n  enable_progress_bar: false\n  callbacks:\n"
        f"    - class_path: twin_plugin.ReportReference\n      init_args: {{path: {tmp_path / 'seen.txt'}}}\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "LIT_ALIGN_DEBUG": ""}

    def fit(cwd, *args) -> subprocess.Popen:
        os.makedirs(cwd, exist_ok=True)
        return subprocess.Popen([sys.executable, "-m", "lit_align", "fit", "--config", str(tmp_path / "run.yaml"), *args], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Both at once, each in its own folder: independent runs, so the test takes the longer one's time.
    runs = {"ok": fit(tmp_path / "ok"), "bad": fit(tmp_path / "bad", "--model.init_args.reference=bogus")}
    (_, ok_err), (_, bad_err) = (runs[name].communicate(timeout=600) for name in ("ok", "bad"))
    assert runs["ok"].returncode == 0, ok_err[-3000:]
    assert (tmp_path / "seen.txt").read_text() == "TwinReference True"  # DPO accepts a copy-like mode; it built its frozen copy
    assert runs["bad"].returncode != 0 and "Traceback" not in bad_err, bad_err[-3000:]
    message = [line for line in bad_err.splitlines() if line.startswith("lit_align: error: ")]
    assert len(message) == 1 and "unknown reference mode 'bogus'; registered modes: copy, none, precomputed, adapter, twin" in message[0], bad_err[-3000:]

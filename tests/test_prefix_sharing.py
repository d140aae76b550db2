"""Prefix sharing (lit_align.prefix_sharing): one [prompt | chosen | rejected] row per pair gives the
per-token log-probs, sums, gradients and DPO trajectory of the usual 2B-row forward."""

from __future__ import annotations


import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from benchmarks.workload import write_pairs
from lit_align import policy as policy_module
from lit_align import prefix_sharing, reference_cache
from lit_align.algorithms import DPO, ORPO
from lit_align.data.collate import sequences_with_mask
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.head import completion_logps, scored_token_logps
from lit_align.ops import token_logps
from lit_align.prefix_sharing import model_attention_mask, pair_layout, share_prefix, shared_completion_logps, unsupported_reason

VOCAB = 50
TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def tiny_model(kind: str, attention: str = "sdpa"):
    """A 2-layer, hidden-32 random model whose weights are large enough that context matters.

    At the usual 0.02 init a wrong mask moves log-probs by ~1e-4 only; std 0.3 makes a mistake
    in the mask or positions move them by ~1, far above the 1e-5 tolerance.
    """
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**TINY, attn_implementation=attention))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**TINY, attn_implementation=attention))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2, attn_implementation=attention))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model.eval()


def pair_batch(lengths=((5, 3, 7), (1, 6, 1), (9, 2, 2), (0, 4, 5))):
    """2B rows as PairwiseDataModule collates them, for (prompt, chosen, rejected) lengths (an empty
    prompt included: its first completion tokens have no predecessor and are not scored)."""
    generator = torch.Generator().manual_seed(1)
    draw = lambda n: torch.randint(3, VOCAB, (n,), generator=generator).tolist()  # noqa: E731
    prompts = [draw(p) for p, _, _ in lengths]
    chosen, rejected = [draw(c) for _, c, _ in lengths], [draw(r) for _, _, r in lengths]
    return sequences_with_mask(prompts * 2, chosen + rejected, 0)


def test_layout_of_one_pair_by_hand():
    # prompt [11, 12], chosen [21], rejected [31, 32]; a second pair pads.
    ids, attention, loss = sequences_with_mask([[11, 12], [13], [11, 12], [13]], [[21], [22], [31, 32], [33]], 0)
    layout = share_prefix(ids, attention, loss)
    assert layout.input_ids[0].tolist() == [11, 12, 21, 31, 32]
    assert layout.position_ids[0].tolist() == [0, 1, 2, 2, 3]  # rejected continues from the prompt
    assert layout.input_ids[1, :3].tolist() == [13, 22, 33] and layout.position_ids[1].tolist() == [0, 1, 1, 0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],  # chosen: causal over prompt + chosen
            [1, 1, 0, 1, 0],  # rejected: prompt and earlier rejected, never chosen
            [1, 1, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(layout.allowed[0, 0], expected)
    assert torch.equal(layout.allowed[1, 0, 3:, 3:], torch.eye(2, dtype=torch.bool))  # padding sees only itself
    assert not layout.allowed[1, 0, :3, 3:].any()  # ... and no real token sees padding
    scored = {(r, s, t, o) for r, s, t, o in zip(*(x.tolist() for x in (layout.rows, layout.sources, layout.targets, layout.out_rows)))}
    # First rejected token (target 3) is predicted from the LAST PROMPT position (1), not the chosen one.
    assert scored == {(0, 1, 2, 0), (0, 1, 3, 2), (0, 3, 4, 2), (1, 0, 1, 1), (1, 0, 2, 3)}
    assert layout.count.tolist() == [1, 1, 2, 1]


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("head", ["compact", "full"])
def test_per_token_logps_match_unshared_forward(kind, attention, head):
    model = tiny_model(kind, attention)
    ids, attention_mask, loss_mask = pair_batch()
    layout = share_prefix(ids, attention_mask, loss_mask)
    assert unsupported_reason(model) is None
    with torch.no_grad():
        unshared = token_logps(model(input_ids=ids, attention_mask=attention_mask).logits, ids)  # [2B, T-1]
        labels = layout.input_ids[layout.rows, layout.targets]
        shared = scored_token_logps(model, layout.input_ids, model_attention_mask(model, layout.allowed), layout.position_ids, layout.rows, layout.sources, labels, head)
        # A token's position id is its column in its own unshared row: that is where to compare.
        columns = layout.position_ids[layout.rows, layout.targets]
        scored = torch.zeros_like(loss_mask[:, 1:])
        scored[layout.out_rows, columns - 1] = 1
        assert torch.equal(scored, loss_mask[:, 1:])  # exactly the unshared scored tokens, each once
        assert torch.equal(labels, ids[layout.out_rows, columns])
        torch.testing.assert_close(shared, unshared[layout.out_rows, columns - 1], rtol=0, atol=1e-5)
        sums = shared_completion_logps(model, layout, head)
        reference = completion_logps(model, ids, attention_mask, loss_mask, head)
        torch.testing.assert_close(sums.sum, reference.sum, rtol=0, atol=1e-5)
        assert torch.equal(sums.count, reference.count)
        # The check has teeth: letting rejected tokens see the chosen ones moves the log-probs a lot.
        broken = share_prefix(ids, attention_mask, loss_mask)
        broken.allowed = torch.ones_like(broken.allowed).tril()
        assert (shared_completion_logps(model, broken, head).sum - reference.sum).abs().max() > 0.1


def test_gradients_of_one_dpo_step_match(tmp_path):
    dm = PairwiseDataModule(model="embedded:tiny", dataset=write_pairs(str(tmp_path / "p.jsonl"), 16, seed=2), val_fraction=0.1, batch_size=6)
    dm.setup("fit")
    batch = dm.collate(dm.train_examples[:6])
    grads, losses = [], []
    for sharing in (False, True):
        module = DPO(model="embedded:tiny", prefix_sharing=sharing)
        with torch.no_grad():  # a policy away from the reference, so the loss has a real gradient
            for p in module.policy.policy.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        module.policy.policy.eval()  # no dropout (the embedded model has none; be explicit)
        loss, _ = module.compute_loss(batch, "train")
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in module.policy.policy.named_parameters()})
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-5)
    assert abs(losses[0].item() - 0.6931) > 1e-3
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _trajectory(path: str, sharing: bool, reference: str = "copy", steps: int = 5) -> list[float]:
    torch.manual_seed(0)
    module = DPO(model="embedded:tiny", reference=reference, prefix_sharing=sharing, beta=0.5)
    dm = PairwiseDataModule(model="embedded:tiny", dataset=path, val_fraction=0.1, batch_size=4)
    dm.setup("fit")
    if reference == "precomputed":
        reference_cache.precompute_reference(module, dm, batch_size=8)
    optimizer = torch.optim.AdamW(module.policy.policy.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        loss, _ = module.compute_loss(dm.collate(dm.train_examples[4 * step : 4 * step + 4]), "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("reference", ["copy", "precomputed"])
def test_dpo_trajectory_with_sharing_matches_without(tmp_path, monkeypatch, reference):
    path = write_pairs(str(tmp_path / "pairs.jsonl"), 30, seed=5)
    plain = _trajectory(path, False, reference)
    calls = []
    real = policy_module.shared_completion_logps
    monkeypatch.setattr(policy_module, "shared_completion_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    shared = _trajectory(path, True, reference)
    assert len(calls) == 5 * (2 if reference == "copy" else 1)  # policy (+ live reference) shared every step
    assert plain[-1] < plain[0] - 0.05  # the policy really moved
    assert shared == pytest.approx(plain, abs=1e-5)


def test_adapter_reference_and_precompute_pass_share_too(tmp_path):
    pytest.importorskip("peft")
    dm = PairwiseDataModule(model="embedded:tiny", dataset=write_pairs(str(tmp_path / "p.jsonl"), 12, seed=4), val_fraction=0.1, batch_size=4)
    dm.setup("fit")
    batch = dm.collate(dm.train_examples[:5])
    module = DPO(model="embedded:tiny", reference="adapter", prefix_sharing=True)
    with torch.no_grad():
        for name, p in module.policy.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    rows = (batch.input_ids, batch.attention_mask, batch.loss_mask)
    layout = pair_layout(module.policy.policy, *rows)
    assert layout is not None
    for shared, plain in (
        (module.policy.policy_logps(*rows, layout=layout), module.policy.policy_logps(*rows)),
        (module.policy.reference_logps(*rows, layout=layout), module.policy.reference_logps(*rows)),
    ):
        torch.testing.assert_close(shared.sum, plain.sum, rtol=0, atol=1e-5)
    # The precompute pass with sharing: same values as without, under its own cache key.
    model = module.load_start_model().eval()
    with_sharing = reference_cache.compute_reference_logps(model, dm.collate, dm.train_examples, 5, torch.device("cpu"), prefix_sharing=True)
    without = reference_cache.compute_reference_logps(model, dm.collate, dm.train_examples, 3, torch.device("cpu"))
    torch.testing.assert_close(with_sharing, without, rtol=0, atol=1e-5)
    splits = {"train": dm.train_examples}
    assert reference_cache.cache_path("embedded:tiny", None, "32", splits, True) != reference_cache.cache_path("embedded:tiny", None, "32", splits)


def test_orpo_with_sharing_runs_one_forward_over_b_rows(tmp_path, monkeypatch):
    dm = PairwiseDataModule(model="embedded:tiny", dataset=write_pairs(str(tmp_path / "p.jsonl"), 8, seed=1), val_fraction=0.1, batch_size=4)
    dm.setup("fit")
    batch = dm.collate(dm.train_examples[:4])
    module = ORPO(model="embedded:tiny", prefix_sharing=True, nll_tokens="completion")  # no extra prompt forward
    seen = []
    backbone = module.policy.policy.get_decoder()
    backbone.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    shared, _ = module.compute_loss(batch, "train")
    module.prefix_sharing = False
    plain, _ = module.compute_loss(batch, "train")
    assert seen == [4, 8]  # B shared rows, then the usual 2B
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-5)


def test_unsupported_models_fall_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(prefix_sharing, "_warned", set())
    torch.manual_seed(0)
    # A 4-token sliding window: a custom 4D mask would bypass it, so longer pairs must not share.
    model = MistralForCausalLM(MistralConfig(**TINY, sliding_window=4, attn_implementation="sdpa")).eval()
    ids, attention_mask, loss_mask = pair_batch()
    with pytest.warns(UserWarning, match="prefix sharing is off.*sliding-window"):
        assert pair_layout(model, ids, attention_mask, loss_mask) is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not every step
        assert pair_layout(model, ids, attention_mask, loss_mask) is None
    short = sequences_with_mask([[5, 6]] * 2, [[7], [8, 9]], 0)
    assert pair_layout(model, *short) is not None  # within the window sharing is exact again
    model.config._attn_implementation = "flash_attention_2"
    assert "attention implementation 'flash_attention_2'" in unsupported_reason(model)


def test_batches_not_built_as_pairs_are_refused():
    ids, attention_mask, loss_mask = pair_batch()
    ids[5, 0] = ids[1, 0] + 1  # row B+1 no longer carries row 1's prompt
    with pytest.raises(ValueError, match="do not share the same prompt"):
        share_prefix(ids, attention_mask, loss_mask)
    with pytest.raises(ValueError, match="even number of rows"):
        share_prefix(ids[:3], attention_mask[:3], loss_mask[:3])


def test_prefix_sharing_is_a_config_option():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(DPO, "model")
    for given, parsed in (("true", True), ("false", False), ("auto", "auto")):
        assert parser.parse_args([f"--model.prefix_sharing={given}"]).model.prefix_sharing == parsed
    assert parser.get_defaults().model.prefix_sharing == "auto"  # auto by default


def test_auto_shares_when_prompts_are_at_least_as_long_as_completions():
    # Equal lengths (P, Y, Y): shared width P + 2Y <= 3/4 of 2 (P + Y) exactly when P >= Y.
    for prompt, expected in ((4, True), (3, False), (20, True), (0, False)):
        batch = pair_batch(((prompt, 4, 4), (prompt, 4, 4)))
        assert prefix_sharing.pays_off(batch[1], batch[2]) is expected, prompt
    # Padded widths, as the model computes them: one long prompt pays for a short-prompt pair beside it.
    assert prefix_sharing.pays_off(*pair_batch(((30, 4, 4), (1, 4, 4)))[1:])
    assert not prefix_sharing.pays_off(*pair_batch(((1, 30, 30), (30, 1, 1)))[1:])


def test_auto_decides_per_batch_and_says_once_why_it_is_off(monkeypatch, caplog):
    import logging
    import warnings

    monkeypatch.setattr(prefix_sharing, "_announced", set())
    model = tiny_model("llama")
    long, short = pair_batch(((9, 2, 3), (6, 3, 1))), pair_batch(((1, 5, 6), (2, 4, 4)))
    assert prefix_sharing.choose_layout(model, *long, "auto") is not None
    assert prefix_sharing.choose_layout(model, *short, "auto") is None
    assert prefix_sharing.choose_layout(model, *short, True) is not None  # true shares whatever the lengths
    assert prefix_sharing.choose_layout(model, *long, False) is None
    model.config._attn_implementation = "flash_attention_2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto is quiet per batch: the reason is said at start-up instead
        assert prefix_sharing.choose_layout(model, *long, "auto") is None
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            prefix_sharing.announce(model, "auto")
    said = [r.getMessage() for r in caplog.records if "prefix_sharing auto" in r.getMessage()]
    assert len(said) == 1 and "off (attention implementation 'flash_attention_2'" in said[0]


def test_prefix_sharing_setting_is_checked_through_the_cli(tmp_path, monkeypatch, capsys):
    from tests.conftest import REPO, cli_in_process

    monkeypatch.chdir(tmp_path)
    code, _, err = cli_in_process(capsys, "fit", "--config", f"{REPO}/configs/dpo.yaml", "--model.init_args.model=embedded:micro", "--data.init_args.model=embedded:micro",
                                  "--model.init_args.prefix_sharing=sometimes")
    assert code == 1
    assert "prefix_sharing: 'sometimes' is not a setting; use true" in err and "false" in err and "auto" in err
    assert "Traceback" not in err


def test_long_prompt_workload_has_prompts_at_least_three_times_the_completions(tmp_path):
    from benchmarks.workload import WORKLOADS, write_long_prompt_pairs

    _, max_length, max_prompt_length = WORKLOADS["long-prompt"]
    dm = PairwiseDataModule(model="embedded:tiny", dataset=write_long_prompt_pairs(str(tmp_path / "long.jsonl"), 40), val_fraction=0.1, batch_size=4, max_length=max_length, max_prompt_length=max_prompt_length)
    dm.setup("fit")
    prompts = [len(ex["prompt_ids"]) for ex in dm.train_examples]
    completions = [(len(ex["chosen_ids"]) + len(ex["rejected_ids"])) / 2 for ex in dm.train_examples]
    assert sum(prompts) >= 3 * sum(completions)
    assert min(p / c for p, c in zip(prompts, completions)) >= 2  # every pair, not just on average

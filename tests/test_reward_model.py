"""RewardModel: last-token pooling (right/left padding, pad == EOS), log 2 at init, exact metrics,
an export that HF and HFClassifierReward score identically, learning on embedded pairs, and the CLI."""

from __future__ import annotations

import json
import logging
import math
import os
import random

import pytest
import torch
from lightning import Trainer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lit_align.algorithms import RewardModel
from lit_align.data.batches import PairwiseBatch
from lit_align.data.collate import sequences_with_mask
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.tokenize import PromptCompletionEncoder
from lit_align.embedded.model import build_model
from lit_align.embedded.task import make_completion, make_prompt
from lit_align.embedded.tokenizer import build_tokenizer
from lit_align.metrics import GoldRankCorrelation, RewardModelMetrics
from lit_align.ops import pad_left, pad_right
from lit_align.reward_head import last_token_index, pool_last_token, score_layer
from lit_align.rewards import HFClassifierReward, LexiconSentimentReward
from tests.conftest import REPO, cli_in_process

ROWS = [[2, 40, 41, 42, 3], [2, 44, 3]]  # BOS ... EOS (ids of the embedded tokenizer: <s> = 2, </s> = 3)


@pytest.fixture(scope="module")
def pad_is_eos_model(tmp_path_factory) -> str:
    """A micro causal LM whose tokenizer pads with EOS, as Llama/Mistral checkpoints do under load_tokenizer."""
    tokenizer = build_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    path = tmp_path_factory.mktemp("pad_is_eos")
    build_model(tokenizer, "micro").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def random_head(module: RewardModel, seed: int = 0) -> RewardModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.nn.init.normal_(score_layer(module.classifier).weight)
    return module.eval()


def padded(rows, pad_id, side):
    ids = (pad_right if side == "right" else pad_left)(rows, pad_id)
    lengths = [[1] * len(r) for r in rows]
    mask = pad_right(lengths, 0, ids.shape[1]) if side == "right" else pad_left(lengths, 0)
    return ids, mask


# ----- pooling (written first: peers had bugs exactly here) ----------------------------------------
def test_last_token_index_reads_the_mask_not_the_pad_id():
    eos = pad = 3
    mask_right = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    mask_left = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert last_token_index(mask_right).tolist() == [3, 5]  # row 0: its real EOS, not the pad after it
    assert last_token_index(mask_left).tolist() == [5, 5]
    ids = torch.tensor([[2, 10, 11, eos, pad, pad]])
    hf_rule = (torch.arange(6) * (ids != pad)).argmax(-1)  # HF's "rightmost token != pad"
    assert hf_rule.item() == 2  # one early when pad == EOS: why the export gets a pad token of its own
    hidden = torch.arange(2 * 6 * 1.0).view(2, 6, 1)
    assert pool_last_token(hidden, mask_right).flatten().tolist() == [3.0, 11.0]
    with pytest.raises(ValueError, match="attended"):
        last_token_index(torch.tensor([[0, 0]]))


@pytest.mark.parametrize("pad_is_eos", [False, True], ids=["own_pad", "pad_is_eos"])
def test_scores_do_not_depend_on_padding(pad_is_eos, request):
    name = request.getfixturevalue("pad_is_eos_model") if pad_is_eos else "embedded:micro"
    module = random_head(RewardModel(model=name))
    pad = module.tokenizer.pad_token_id
    assert (pad == module.tokenizer.eos_token_id) == pad_is_eos
    with torch.no_grad():
        alone = torch.cat([module.score(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)) for r in ROWS])
        for side in ("right", "left"):
            assert torch.allclose(module.score(*padded(ROWS, pad, side)), alone, atol=1e-5), side
        # Pooling one token early (on the token before EOS) would give this instead.
        early = module.score(torch.tensor([ROWS[1][:-1]]), torch.ones(1, len(ROWS[1]) - 1, dtype=torch.long))
    assert not torch.allclose(early, alone[1:], atol=1e-3)


# ----- loss at init and metrics ------------------------------------------------------------------------
def test_loss_at_init_is_log_2_and_every_reward_is_zero():
    module = RewardModel(model="embedded:micro", center_coefficient=0.01)
    batch = PairwiseBatch(*sequences_with_mask([[2, 40], [2, 41]] * 2, [[42, 3], [43, 44, 3], [45, 3], [46, 3]], 0))
    loss, logs = module.compute_loss(batch, "train")
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-7)
    metrics = {**module.train_step_metrics(), **logs}  # the base adds this step's metrics to the logs
    assert metrics["rewards/chosen"].item() == 0.0 and metrics["rewards/accuracies"].item() == 0.0  # a tie is not a win
    loss.backward()
    assert score_layer(module.classifier).weight.grad.abs().sum() > 0  # the zero head still learns


def test_pairwise_metrics_over_two_batches_equal_their_union():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(10), torch.randn(10)
    split, union = RewardModelMetrics(), RewardModelMetrics()
    split.update(chosen[:3], rejected[:3])
    split.update(chosen[3:], rejected[3:])
    union.update(chosen, rejected)
    a, b = split.compute(), union.compute()
    assert all(torch.allclose(a[k], b[k]) for k in b)
    assert b["rewards/accuracies"].item() == pytest.approx((chosen > rejected).float().mean().item())
    assert b["rewards/margins"].item() == pytest.approx((chosen - rejected).mean().item(), abs=1e-6)


def test_gold_rank_correlation_over_two_batches_equals_their_union_and_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(0)
    learned = torch.randn(12)
    gold = torch.tensor([0.0, 0.25, 0.25, -0.5, 0.0, 1.0, 0.25, -0.25, 0.0, 0.5, 0.5, -0.5])  # ties, like the lexicon
    split, union = GoldRankCorrelation(), GoldRankCorrelation()
    split.update(learned[:5], gold[:5])
    split.update(learned[5:], gold[5:])
    union.update(learned, gold)
    expected = scipy_stats.spearmanr(learned.numpy(), gold.numpy()).statistic
    assert split.compute().item() == pytest.approx(union.compute().item(), abs=1e-6)
    assert union.compute().item() == pytest.approx(expected, abs=1e-5)
    # Not an average of per-batch correlations, which is what a sum state would give.
    halves = (GoldRankCorrelation(), GoldRankCorrelation())
    halves[0].update(learned[:5], gold[:5]), halves[1].update(learned[5:], gold[5:])
    assert abs(sum(h.compute().item() for h in halves) / 2 - expected) > 1e-3


# ----- export ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pad_is_eos", [False, True], ids=["own_pad", "pad_is_eos"])
def test_export_scores_like_the_module_in_hf_and_hfclassifierreward(pad_is_eos, request, tmp_path):
    name = request.getfixturevalue("pad_is_eos_model") if pad_is_eos else "embedded:micro"
    module = random_head(RewardModel(model=name), seed=1)
    module.export(str(tmp_path))
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.config.num_labels == 1
    assert hf.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    with torch.no_grad():
        for side in ("right", "left"):
            ours = module.score(*padded(ROWS, module.tokenizer.pad_token_id, side))
            ids, mask = padded(ROWS, tokenizer.pad_token_id, side)
            assert torch.allclose(hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1), ours, atol=1e-5), side
            assert torch.allclose(hf(input_ids=ids).logits.squeeze(-1), ours, atol=1e-5) or side == "left"  # HF's own pooling (right padding)
    # As a reward function on text: the completion's EOS is part of what the model was trained on.
    prompts, completions = ["honestly , the acting was", "sadly , the plot felt"], ["great and fresh .", "dull ."]
    encoder = PromptCompletionEncoder(module.tokenizer, 48, 16)
    rows = sequences_with_mask([encoder.encode_prompt(p) for p in prompts], [encoder.encode_completion(p, c) for p, c in zip(prompts, completions)], module.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = module.score(rows[0], rows[1])
    # HFClassifierReward ends each text with that EOS by default (append_eos), so the default template scores alike.
    reward = HFClassifierReward(str(tmp_path), device="cpu")
    assert torch.allclose(reward(prompts, completions), expected, atol=1e-5)
    assert not torch.allclose(HFClassifierReward(str(tmp_path), append_eos=False, device="cpu")(prompts, completions), expected, atol=1e-3)


# ----- training --------------------------------------------------------------------------------------
def test_short_training_run_beats_chance_and_tracks_the_gold_reward():
    datamodule = PairwiseDataModule(model="embedded:micro", dataset="embedded:pairs", num_examples=384, num_val_examples=64, batch_size=16, max_length=48, max_prompt_length=16)
    module = RewardModel(model="embedded:micro", gold_reward=LexiconSentimentReward(), optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), warmup_ratio=0.0, lr_schedule="constant")
    trainer = Trainer(max_steps=60, val_check_interval=60, check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    # Chance is 0.5 (and 0 at init, where every pair ties at reward 0).
    assert metrics["val/rewards/accuracies"] > 0.7
    assert metrics["val/gold_spearman"] > 0.5
    assert metrics["val/loss"] < math.log(2.0) - 0.1


def test_cli_trains_from_a_local_jsonl_and_exports_a_classifier(tmp_path, monkeypatch, capfd, caplog):
    rng = random.Random(0)
    rows = []
    for _ in range(40):
        prompt = make_prompt(rng)
        rows.append({"prompt": prompt, "chosen": make_completion(prompt, rng, 0.95), "rejected": make_completion(prompt, rng, 0.05)})
    dataset = tmp_path / "pairs.jsonl"
    dataset.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    # ``python -m lit_align fit`` in tmp_path: its ``cli_main``, in-process.
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO):
        code, out, err = cli_in_process(
            capfd, "fit", "--config", os.path.join(REPO, "configs/reward_model.yaml"), "--data.init_args.dataset", str(dataset), "--trainer.max_steps", "4",
            "--model.init_args.model=embedded:micro", "--data.init_args.batch_size=8", "--trainer.val_check_interval=2", "--trainer.enable_progress_bar=false",
        )  # fmt: skip
    assert code == 0, err[-3000:]
    # The data report is logged (stderr in a fresh process; caplog once other tests have set up logging here).
    assert "kept 38/38" in out + err + caplog.text  # 40 rows, 2 held out for validation
    export = tmp_path / "data" / "embedded" / "reward_model"
    model = AutoModelForSequenceClassification.from_pretrained(export)
    assert model.config.num_labels == 1 and type(model).__name__ == "LlamaForSequenceClassification"
    assert any(f.name == "events.out.tfevents" or f.name.startswith("events.out") for f in (tmp_path / "runs" / "reward_model").rglob("*"))


@pytest.mark.parametrize("algorithm", ["OnlineDPO", "BOND"])
def test_bond_and_online_dpo_train_against_an_exported_reward_model(algorithm, tmp_path):
    import lit_align.algorithms as algorithms
    from lit_align.data.best_of_n import BestOfNDataModule

    random_head(RewardModel(model="embedded:micro"), seed=2).export(str(tmp_path / "rm"))
    reward = HFClassifierReward(str(tmp_path / "rm"), template="{prompt} {completion} </s>", device="cpu")
    datamodule = BestOfNDataModule(model="embedded:micro", dataset="embedded:prompts", mode="online", num_examples=8, num_val_examples=4, batch_size=4, num_samples=2, max_new_tokens=4, max_length=32, max_prompt_length=16)
    module = getattr(algorithms, algorithm)(model="embedded:micro", reward=reward)
    trainer = Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    key = "train/online/reward" if algorithm == "OnlineDPO" else "train/reward"
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics[key]) and trainer.callback_metrics[key] != 0.0


@pytest.mark.parametrize("family", ["gpt2", "qwen2", "gemma2"])
def test_export_scores_like_the_module_on_other_families(family, tmp_path):
    """GPT-2 (no pad token: pad = EOS, absolute positions), Qwen2 (no BOS), Gemma-2 (soft-capped LM)."""
    families = pytest.importorskip("tests.families")  # tiny local checkpoints of other families
    module = random_head(RewardModel(model=families.save_family(family, str(tmp_path / "start"))))
    tokenizer = module.tokenizer
    rows = [tokenizer("the film was great .")["input_ids"] + [tokenizer.eos_token_id], tokenizer("dull")["input_ids"] + [tokenizer.eos_token_id]]
    module.export(str(tmp_path / "rm"))
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    exported = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert exported.pad_token_id != exported.eos_token_id
    with torch.no_grad():
        for side in ("right", "left"):
            ours = module.score(*padded(rows, tokenizer.pad_token_id, side))
            ids, mask = padded(rows, exported.pad_token_id, side)
            assert torch.allclose(hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1), ours, atol=1e-5), side

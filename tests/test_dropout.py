"""Dropout off by default, as TRL (issue 23 item 6): the first DPO loss is log 2 on a model with dropout."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from lit_align.cli import main
from lit_align.dropout import disable_dropout
from lit_align.embedded.model import build_model
from lit_align.embedded.tokenizer import build_tokenizer
from tests.families import family_checkpoints  # noqa: F401  (fixture)
from tests.test_families import cli_args


def test_opt_functional_dropout_is_zeroed_too():
    """OPT calls F.dropout(p=self.dropout) with float attributes: zeroing nn.Dropout alone misses them."""
    config = OPTConfig(vocab_size=50, hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16, dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    torch.manual_seed(0)
    model = OPTForCausalLM(config).train()
    ids = torch.randint(0, 50, (2, 12))
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout is live before
    assert disable_dropout(model) > 0
    torch.testing.assert_close(model(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)
    assert config.dropout == 0.1  # the config (and so an export) keeps its own setting


def test_embedded_model_has_no_dropout():
    """The goldens run on the embedded model: it has no dropout, so disabling changes nothing there."""
    assert disable_dropout(build_model(build_tokenizer(), "micro")) == 0


@pytest.mark.parametrize("disable", [True, False])
def test_first_dpo_loss_is_log2_with_dropout_disabled(family_checkpoints, tmp_path, disable):  # noqa: F811
    """GPT-2 has dropout 0.1 in every block; the first step's loss (policy == reference) is log 2 only with it off."""
    checkpoint = family_checkpoints["models"]["gpt2"]
    args = cli_args("lit_align.algorithms.DPO", checkpoint, "lit_align.data.pairwise.PairwiseDataModule", family_checkpoints["data"]["pairwise", "plain"], str(tmp_path))
    args = [a for a in args if a != "lit_align.callbacks.ExportPretrained"]
    args += ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.callbacks", "[]", "--model.disable_dropout", str(disable).lower(), "--model.beta", "1.0", "--model.prefix_sharing", "false"]  # pinned, like the TRL comparison it mirrors
    cli = main(args)
    loss = float(cli.trainer.callback_metrics["train/loss"])
    if disable:
        assert loss == pytest.approx(math.log(2), abs=1e-6)
    else:
        assert abs(loss - math.log(2)) > 1e-4, loss  # dropout noise in the policy's log-ratio (the tiny random model's logits are small)

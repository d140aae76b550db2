"""Hyperparameters are checked when each class is built, with the valid range in the message (issue 14, item 4).

Each case names the class, the argument, the range and the bad value; a value on the edge of the
range is accepted (so the checks are not just "reject everything").
"""

from __future__ import annotations

import os

import pytest

from lit_align.algorithms import KTO
from lit_align.callbacks import SampledEvaluation
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.data.sft import SFTDataModule
from lit_align.data.unpaired import UnpairedDataModule, ratio_subsample
from lit_align.errors import ConfigError
from lit_align.rewards import HFClassifierReward, LexiconSentimentReward
from tests.conftest import cli_in_process

DATA_CASES = [
    ({"batch_size": 0}, r"batch_size must be an integer in \[1, inf\), got 0"),
    ({"batch_size": 2.5}, r"batch_size must be an integer in \[1, inf\), got 2.5"),
    ({"eval_batch_size": 0}, r"eval_batch_size must be an integer in \[1, inf\), got 0"),
    ({"max_length": 1, "max_prompt_length": 1}, r"max_length must be an integer in \[2, inf\), got 1"),
    ({"max_length": 64, "max_prompt_length": 64}, r"max_prompt_length must be an integer in \[1, 64\), got 64"),
    ({"max_prompt_length": 0}, r"max_prompt_length must be an integer in \[1, 128\), got 0"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\), got 1.0"),
    ({"val_fraction": 0.0}, r"val_fraction must be in \(0, 1\), got 0.0"),
    ({"num_examples": 0}, r"num_examples must be an integer in \[1, inf\), got 0"),
    ({"num_val_examples": -3}, r"num_val_examples must be an integer in \[1, inf\), got -3"),
    ({"num_workers": -1}, r"num_workers must be an integer in \[0, inf\), got -1"),
    ({"seed": -1}, r"seed must be an integer in \[0, inf\), got -1"),
    ({"chat_template": "nevr"}, r"chat_template must be one of \['auto', 'always', 'never'\] or a Jinja chat template string.*got 'nevr'"),
]


@pytest.mark.parametrize("cls", [PairwiseDataModule, SFTDataModule, UnpairedDataModule])
@pytest.mark.parametrize(("kwargs", "message"), DATA_CASES)
def test_datamodule_arguments(cls, kwargs, message):
    if cls is UnpairedDataModule and "batch_size" in message:
        message = message.replace(r"\[1, inf\)", r"\[2, inf\)")
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}: {message}"):
        cls(**kwargs)


def test_datamodule_edges_are_accepted():
    module = PairwiseDataModule(batch_size=1, max_length=2, max_prompt_length=1, val_fraction=0.5, num_examples=1, num_workers=0, chat_template="{{ messages }}")
    assert (module.batch_size, module.max_prompt_length) == (1, 1)
    UnpairedDataModule(batch_size=2, desirable_ratio=0.01)


def test_unpaired_arguments():
    with pytest.raises(ConfigError, match=r"UnpairedDataModule: batch_size must be an integer in \[2, inf\), got 1: KTO estimates its reference point from mismatched pairs within a batch"):
        UnpairedDataModule(batch_size=1)
    with pytest.raises(ConfigError, match=r"eval_batch_size must be an integer in \[2, inf\), got 1"):
        UnpairedDataModule(batch_size=4, eval_batch_size=1)
    for ratio in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match=rf"UnpairedDataModule: desirable_ratio must be in \(0, inf\), got {ratio}"):
            UnpairedDataModule(desirable_ratio=ratio)
    with pytest.raises(ConfigError, match=r"desirable_ratio must be in \(0, inf\), got 0"):
        ratio_subsample([True, False], 0)


KTO_CASES = [
    ({"beta": -1.0}, r"KTO: beta must be in \(0, inf\), got -1.0"),
    ({"beta": 0.0}, r"KTO: beta must be in \(0, inf\), got 0.0"),
    ({"beta": float("nan")}, r"KTO: beta must be in \(0, inf\), got nan"),
    ({"desirable_weight": -0.5}, r"KTO: desirable_weight must be in \[0, inf\), got -0.5"),
    ({"undesirable_weight": -1}, r"KTO: undesirable_weight must be in \[0, inf\), got -1"),
    ({"desirable_weight": 0.0, "undesirable_weight": 0.0}, r"KTO: desirable_weight and undesirable_weight are both 0.*at least one > 0"),
    ({"reference": "none"}, r"KTO: reference must be copy or adapter, got 'none'"),
    ({"reference": "precomputed"}, r"KTO: reference must be copy or adapter, got 'precomputed'.*cannot be precomputed"),
    ({"warmup_ratio": 1.5}, r"KTO: warmup_ratio must be in \[0, 1\], got 1.5"),
    ({"warmup_ratio": -0.1}, r"KTO: warmup_ratio must be in \[0, 1\], got -0.1"),
    ({"reference_batch_size": 0}, r"KTO: reference_batch_size must be an integer in \[1, inf\), got 0"),
    ({"dtype": "bfloat17"}, r"KTO: dtype must name a torch floating-point dtype.*got 'bfloat17'"),
    ({"dtype": "int8"}, r"KTO: dtype must name a torch floating-point dtype.*got 'int8'"),
]


@pytest.mark.parametrize(("kwargs", "message"), KTO_CASES)
def test_kto_and_base_arguments(kwargs, message, monkeypatch):
    # Checked before the model loads: a bad value costs nothing, whatever the model's size.
    from lit_align.algorithms import base

    monkeypatch.setattr(base, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded before the arguments were checked"))
    with pytest.raises(ConfigError, match=rf"^{message}"):
        KTO(model="embedded:micro", **kwargs)


def test_kto_edges_are_accepted():
    module = KTO(model="embedded:micro", beta=1e-3, desirable_weight=0.0, undesirable_weight=1.0, warmup_ratio=1.0, reference_batch_size=1, dtype="float32")
    assert module.desirable_weight == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_prompts": 0}, r"num_prompts must be an integer in \[1, inf\), got 0"),
        ({"samples_per_prompt": 0}, r"samples_per_prompt must be an integer in \[1, inf\), got 0"),
        ({"max_new_tokens": -4}, r"max_new_tokens must be an integer in \[1, inf\), got -4"),
        ({"seed": -1}, r"seed must be an integer in \[0, inf\), got -1"),
    ],
)
def test_sampled_evaluation_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=rf"^SampledEvaluation: {message}"):
        SampledEvaluation(**kwargs)


def test_reward_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"LexiconSentimentReward: min_words must be an integer in \[1, inf\), got 0"):
        LexiconSentimentReward(min_words=0)
    assert LexiconSentimentReward(min_words=1).score("great") == 1.0
    # Checked before the reward model is looked up: the path does not even exist.
    missing = str(tmp_path / "nope")
    for kwargs, message in [
        ({"batch_size": 0}, r"batch_size must be an integer in \[1, inf\), got 0"),
        ({"max_length": 1}, r"max_length must be an integer in \[2, inf\), got 1"),
        ({"template": "{prompt}"}, r"template '\{prompt\}' has no \{completion\} field"),
        ({"template": "{prompt} {answer}"}, r"template must be 'chat' or a format string .*got '\{prompt\} \{answer\}' \(KeyError: 'answer'\)"),
        ({"dtype": "half_precision"}, r"dtype must name a torch floating-point dtype.*got 'half_precision'"),
    ]:
        with pytest.raises(ConfigError, match=rf"^HFClassifierReward: {message}"):
            HFClassifierReward(missing, **kwargs)


def test_negative_beta_through_the_cli_is_one_message(tmp_path, monkeypatch, capsys):
    """`--model.beta -1.0` stops at build time with one `lit_align: error:` line, no traceback, before any data is read (``cli_main``, in-process)."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_in_process(capsys, "fit", "--model", "lit_align.algorithms.KTO", "--model.model", "embedded:micro", "--model.beta", "-1.0",
                                  "--data", "lit_align.data.unpaired.UnpairedDataModule", "--data.dataset", str(tmp_path / "never_read.jsonl"),
                                  "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path))
    assert code == 1
    assert "lit_align: error: KTO: beta must be in (0, inf), got -1.0" in err, err[-3000:]
    assert "Traceback" not in err
    assert not os.listdir(tmp_path) or not any(name.startswith(("lightning_logs", "checkpoints")) for name in os.listdir(tmp_path))

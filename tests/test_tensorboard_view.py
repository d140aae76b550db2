"""What TensorBoard shows of a run (issue 22): an HPARAMS row with the run's settings and its final
evaluation, the data report as text (not a page of one-point charts), and sampled-evaluation errors."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lit_align.utils.scalars import read_scalars
from tests.conftest import run_cli
from tests.test_resume import tiny_sft_config

EVALUATION = '--trainer.callbacks+={"class_path": "lit_align.callbacks.SampledEvaluation", "init_args": {"num_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 4, "prompts": "embedded:prompts"}}'
SUMMARY = '--trainer.callbacks+={"class_path": "lit_align.callbacks.HParamsSummary", "init_args": {"extra": {"method": "sft", "strength": 0.5}}}'


def hparams_content(log_dir: str) -> dict[str, bytes]:
    events = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    events.Reload()
    return events.PluginTagToContent("hparams")


def hparams_of(log_dir: str) -> dict:
    """The hparams (name -> value) of the run's session-start summary."""
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams_content(log_dir)["_hparams_/session_start_info"]).session_start_info
    return {name: getattr(v, v.WhichOneof("kind")) for name, v in start.hparams.items()}


@pytest.mark.slow
def test_run_lists_its_settings_and_final_evaluation_and_reports_data_as_text(tmp_path):
    config = tiny_sft_config(tmp_path)
    cli = run_cli(["fit", "--config", config, "--trainer.max_epochs=1", EVALUATION, SUMMARY], str(tmp_path))
    log_dir = cli.trainer.logger.log_dir
    values = hparams_of(log_dir)
    assert values["algorithm"] == "SFT" and values["method"] == "sft" and values["strength"] == 0.5
    assert values["data/seed"] == 0 and values["data/num_examples"] == 48
    # No experiment summary of its own: TensorBoard takes the first one it finds as every run's columns.
    assert "_hparams_/experiment" not in hparams_content(log_dir)

    scalars = read_scalars(log_dir)
    # The hparams metrics are the final evaluation's values, so the HPARAMS scatter is the frontier.
    assert scalars["eval/reward"][-1][1] == pytest.approx(float(cli.trainer.callback_metrics["eval/reward"]))
    assert not any(tag.startswith("data/") for tag in scalars)
    for tag in ("eval/reward_se", "eval/kl_se"):
        assert all(value >= 0 for _, value in scalars[tag]) and any(value > 0 for _, value in scalars[tag])

    events = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    events.Reload()
    (text,) = [t for t in events.Tags()["tensors"] if t.startswith("data/report")]
    table = events.Tensors(text)[0].tensor_proto.string_val[0].decode()
    assert "| data/train/kept | 48 |" in table


def test_standard_error_counts_prompts_not_samples():
    """Two prompts whose samples agree within each prompt: the error is that of two draws, not four."""
    import torch

    from lit_align.callbacks.sampled_eval import standard_error

    values = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert standard_error(values) == pytest.approx(0.5)  # sd of (0, 1) = 0.707, / sqrt(2)
    assert standard_error(torch.tensor([[3.0, 5.0]])) == 0.0


@pytest.mark.slow
def test_final_evaluation_uses_its_larger_sample(tmp_path, monkeypatch):
    """Evaluations at steps 2 and 4 of a 4-step run: only the last (max_steps) one draws the final sample."""
    import lit_align.callbacks.sampled_eval as sampled_eval

    drawn = []

    def recording(sample):
        def draw(model, tokenizer, prompt_ids, num_samples, *args, **kwargs):
            drawn.append((len(prompt_ids), num_samples))
            return sample(model, tokenizer, prompt_ids, num_samples, *args, **kwargs)

        return draw

    # Either sampler: with a KL reference and an fp32 policy the evaluation samples with log-probs.
    for name in ("sample_completions", "sample_completions_with_logps"):
        monkeypatch.setattr(sampled_eval, name, recording(getattr(sampled_eval, name)))
    evaluation = EVALUATION.replace('"max_new_tokens": 4', '"max_new_tokens": 4, "final_num_prompts": 6, "final_samples_per_prompt": 3')
    run_cli(["fit", "--config", tiny_sft_config(tmp_path), "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", evaluation], str(tmp_path))
    assert drawn == [(4, 2), (6, 3)]


def test_sweep_experiment_lists_every_value_of_its_columns(tmp_path):
    """``write_experiment``: one summary at the logdir root whose string columns carry all the runs'
    values (without them TensorBoard's HPARAMS page filters out every row) and the final metrics."""
    from lit_align.callbacks.hparams import FINAL_METRICS, write_experiment

    write_experiment(str(tmp_path), {"method": ["dpo", "ppo"], "strength": ["beta=0.1", "beta=0.3"], "seed": [0, 1, 2]})
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams_content(str(tmp_path))["_hparams_/experiment"]).experiment
    domains = {info.name: [getattr(v, v.WhichOneof("kind")) for v in info.domain_discrete.values] for info in experiment.hparam_infos}
    assert domains == {"method": ["dpo", "ppo"], "strength": ["beta=0.1", "beta=0.3"], "seed": [0.0, 1.0, 2.0]}
    assert [m.name.tag for m in experiment.metric_infos] == list(FINAL_METRICS)

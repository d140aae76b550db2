"""RLOO, GRPO and PPO wired end to end on a stubbed sampler (issue 21, section 3).

The sampler and the scorer are replaced by fixed completions and rewards, the reference is
perturbed away from the policy, and every number the loss uses is recomputed directly, row by row,
from a plain forward of the model on that row's own prompt + completion. The GRADIENT of each
method's loss is compared with the gradient of that direct formula.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer

from lit_align.algorithms import GRPO, PPO, RLOO
from lit_align.losses.policy_gradient import generalized_advantage_estimation, whiten
from lit_align.online.prompts import PromptDataModule

BETA = 0.1


def prompt_data(k=2, batch_size=2):
    dm = PromptDataModule(model="embedded:micro", dataset="embedded:prompts", num_examples=8, num_val_examples=4, batch_size=batch_size, num_samples=k, max_new_tokens=6, max_length=32, max_prompt_length=16)
    dm.setup("fit")
    return dm, dm.collate(dm.train_examples[:batch_size])


def stubbed(module, dm, completions, rewards, step=0):
    """``module`` connected to ``dm``, outside a Trainer, drawing ``completions`` [B][k] scored ``rewards`` [B, k]."""
    module.connect(dm)
    module.trainer = SimpleNamespace(global_step=step, global_rank=0)
    module.sample = lambda model, prompt_ids, k, seed: completions
    module.score = lambda texts, samples: torch.tensor(rewards, dtype=torch.float32)
    with torch.no_grad():  # the reference is no longer the policy: KL terms are not zero
        generator = torch.Generator().manual_seed(0)
        for p in module.policy.reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return module


def fixed_completions(tokenizer):
    words = ["great fun", "awful", "a calm day", "bad bad"]
    ids = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    eos = tokenizer.eos_token_id
    return [[ids[0] + [eos], ids[1]], [ids[2] + [eos], ids[3] + [eos]]]  # one without EOS (truncated)


def direct_token_logps(model, prompt, completion):
    """log pi(y_t | x, y_<t) of each completion token, from one plain forward of this row alone."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.log_softmax(logits, -1)[len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)


def rows(batch, completions):
    k = len(completions[0])
    return [(batch.prompt_ids[i // k], completions[i // k][i % k]) for i in range(len(completions) * k)]


def gradient(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def test_rloo_rollout_rows_and_gradient():
    """B = k = 2: per-row log-probs (policy at sampling time and reference) equal a direct forward on
    that row's prompt; advantages are leave-one-out of score - beta sum_t k1; the gradient is
    -1/R sum_i A_i grad log pi(y_i)."""
    dm, batch = prompt_data()
    module = RLOO(model="embedded:micro", kl_coef=BETA)
    completions = fixed_completions(module.tokenizer)
    scores = [[1.0, -1.0], [0.5, 2.0]]
    stubbed(module, dm, completions, scores)
    experience, logs = module.experience(batch, "train")
    policy, reference = module.policy.policy, module.policy.reference
    mask = experience.rollout.completion_mask.bool()
    totals = []
    for row, (prompt, completion) in enumerate(rows(batch, completions)):
        with torch.no_grad():
            logp, ref = direct_token_logps(policy, prompt, completion), direct_token_logps(reference, prompt, completion)
        assert torch.allclose(experience.rollout.sample_logps[row][mask[row]], logp, atol=1e-5)
        assert torch.allclose(experience.rollout.reference_logps[row][mask[row]], ref, atol=1e-5)
        assert (logp - ref).abs().sum() > 1e-3  # the perturbation shows
        totals.append(scores[row // 2][row % 2] - BETA * (logp - ref).sum())
    totals = torch.stack(totals).view(2, 2)
    advantages = (totals - totals.flip(-1)).reshape(-1)  # k = 2: the other sample is the baseline
    assert torch.allclose(experience.advantages.sum(-1) / mask.sum(-1), advantages, atol=1e-5)
    assert logs["kl"].item() == pytest.approx(((torch.tensor(scores) - totals) / BETA).mean().item(), abs=1e-4)

    params = [p for p in policy.parameters() if p.requires_grad]
    loss, step_logs = module.experience_loss(experience)
    direct = -sum(a * direct_token_logps(policy, p, c).sum() for a, (p, c) in zip(advantages, rows(batch, completions))) / 4
    assert loss.item() == pytest.approx(-advantages.mean().item(), abs=1e-5)  # rho = 1 on-policy
    for got, want in zip(gradient(loss, params), gradient(direct, params)):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-3)


def group_advantages(scores):
    scores = torch.tensor(scores)
    return ((scores - scores.mean(-1, keepdim=True)) / (scores.std(-1, keepdim=True) + 1e-4)).reshape(-1)


@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean"])
def test_grpo_compute_loss_gradient(aggregation):
    """Token-level clipped ratio (rho = 1 on-policy) with group-normalised advantages, plus beta k3."""
    dm, batch = prompt_data()
    module = GRPO(model="embedded:micro", kl_coef=BETA, loss_aggregation=aggregation)
    completions = fixed_completions(module.tokenizer)
    scores = [[1.0, -1.0], [0.5, 2.0]]
    stubbed(module, dm, completions, scores)
    params = [p for p in module.policy.policy.parameters() if p.requires_grad]
    loss, logs = module.compute_loss(batch, "train")
    advantages = group_advantages(scores)
    terms, lengths = [], []
    for a, (prompt, completion) in zip(advantages, rows(batch, completions)):
        logp = direct_token_logps(module.policy.policy, prompt, completion)
        with torch.no_grad():
            ref = direct_token_logps(module.policy.reference, prompt, completion)
        k3 = torch.exp(ref - logp) - (ref - logp) - 1
        terms.append(-a * torch.exp(logp - logp.detach()) + BETA * k3)
        lengths.append(len(completion))
    if aggregation == "seq_mean":
        direct = sum(t.mean() for t in terms) / 4
    else:
        direct = sum(t.sum() for t in terms) / sum(lengths)
    assert loss.item() == pytest.approx(direct.item(), abs=1e-5)
    for got, want in zip(gradient(loss, params), gradient(direct, params)):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-3)
    assert logs["clip_fraction"].item() == 0.0 and logs["advantage_mean"].abs().item() < 1.0


def test_reused_rollout_ratios_use_the_sampling_logps():
    """After the policy moves (as after a first optimiser step), the ratio's denominator stays the
    SAMPLING policy's log-probs: loss and gradient follow rho = pi_new / pi_sampling, with clipping."""
    dm, batch = prompt_data()
    module = GRPO(model="embedded:micro", kl_coef=0.0, clip_range=0.2, loss_aggregation="token_mean")
    completions = fixed_completions(module.tokenizer)
    stubbed(module, dm, completions, [[1.0, -1.0], [0.5, 2.0]])
    experience, _ = module.experience(batch, "train")
    policy = module.policy.policy
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    params = [p for p in policy.parameters() if p.requires_grad]
    loss, logs = module.experience_loss(experience)
    advantages = group_advantages([[1.0, -1.0], [0.5, 2.0]])
    mask = experience.rollout.completion_mask.bool()
    terms = []
    for row, (a, (prompt, completion)) in enumerate(zip(advantages, rows(batch, completions))):
        ratio = torch.exp(direct_token_logps(policy, prompt, completion) - experience.rollout.sample_logps[row][mask[row]])
        terms.append(torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2)))
    direct = torch.cat(terms).mean()
    assert 0.0 < logs["clip_fraction"].item() < 1.0
    assert loss.item() == pytest.approx(direct.item(), abs=1e-5) and abs(loss.item() + advantages.repeat_interleave(mask.sum(-1)).mean().item()) > 1e-3
    for got, want in zip(gradient(loss, params), gradient(direct, params)):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-3)


def test_ppo_gae_on_critic_values_and_loss_gradient():
    """Per-token rewards -beta k1 (+ score at the last token), GAE on the critic's values, whitened
    advantages; the loss is the token-mean clipped surrogate + vf_coef * token-mean 1/2 (V - R)^2."""
    dm, batch = prompt_data(k=1, batch_size=2)
    module = PPO(model="embedded:micro", kl_coef=BETA, vf_coef=0.5, lam=0.9)
    eos = module.tokenizer.eos_token_id
    completions = [[module.tokenizer.encode("great fun", add_special_tokens=False) + [eos]], [module.tokenizer.encode("a day", add_special_tokens=False)]]
    scores = [[1.5], [-0.5]]
    stubbed(module, dm, completions, scores)
    with torch.no_grad():  # a critic that is not zero, so values and GAE are not trivial
        torch.nn.init.normal_(module.critic.score.weight, std=0.5, generator=torch.Generator().manual_seed(2))
    experience, _ = module.experience(batch, "train")
    mask = experience.rollout.completion_mask
    kl = (experience.rollout.sample_logps - experience.rollout.reference_logps) * mask
    token_rewards = -BETA * kl
    for row in range(2):
        token_rewards[row, mask[row].nonzero().max()] += scores[row][0]
    values = module.values(experience.rollout).detach()
    advantages, returns = generalized_advantage_estimation(token_rewards, values, mask, 1.0, 0.9)
    assert torch.allclose(experience.returns, returns, atol=1e-5)
    assert torch.allclose(experience.advantages, whiten(advantages, mask), atol=1e-5)

    params = [p for p in module.trainable_parameters()]
    loss, logs = module.experience_loss(experience)
    logps = torch.cat([direct_token_logps(module.policy.policy, p, c) for p, c in rows(batch, completions)])
    new_values = module.values(experience.rollout)[mask.bool()]
    policy_part = (-experience.advantages[mask.bool()] * torch.exp(logps - logps.detach())).mean()
    direct = policy_part + 0.5 * (0.5 * (new_values - returns[mask.bool()]) ** 2).mean()
    assert loss.item() == pytest.approx(direct.item(), abs=1e-5)
    grads = gradient(loss, params)
    for got, want in zip(grads, gradient(direct, params)):
        assert (got is None and want is None) or torch.allclose(got, want, atol=1e-5, rtol=1e-3)
    assert any(g is not None and g.abs().sum() > 0 for g in grads[-3:])  # the critic trains

    # The critic moves past value_clip_range (as after earlier minibatch steps), towards the returns on
    # some tokens: there the clipped value term binds and its gradient is zero.
    with torch.no_grad():
        module.critic.score.weight.mul_(0.5)
    loss, logs = module.experience_loss(experience)
    new_values = module.values(experience.rollout)[mask.bool()]
    old_values, targets = experience.old_values[mask.bool()], returns[mask.bool()]
    clipped = old_values + (new_values - old_values).clamp(-0.2, 0.2)
    value_part = (0.5 * torch.maximum((new_values - targets) ** 2, (clipped - targets) ** 2)).mean()
    assert logs["value_clip_fraction"].item() > 0
    assert logs["value_loss"].item() == pytest.approx(value_part.item(), abs=1e-5)
    critic = list(module.critic.parameters())
    for got, want in zip(gradient(loss, critic), gradient(0.5 * value_part, critic)):
        assert (got is None and want is None) or torch.allclose(got, want, atol=1e-5, rtol=1e-3)


def test_inner_loop_takes_epochs_times_minibatches_steps_per_rollout():
    """mu = 2 epochs x 2 minibatches: 4 optimiser steps per rollout batch, one Lightning step."""
    dm, _ = prompt_data(k=2, batch_size=2)
    module = GRPO(model="embedded:micro", num_epochs=2, num_minibatches=2)
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 1
    optimizer = trainer.optimizers[0]
    steps = {int(state["step"]) for state in optimizer.state.values()}
    assert steps == {4}
    logged = trainer.logged_metrics
    for name in ("reward", "reward_std", "kl", "entropy", "clip_fraction", "advantage_mean", "advantage_std", "response_length", "kl_loss"):
        assert bool(torch.isfinite(logged[f"train/{name}"])), name


def test_cli_explains_an_unregistered_estimator(tmp_path, monkeypatch, capsys):
    """Through the command line (``cli_main``, in-process): one paragraph naming the option and the fix, no traceback, exit != 0."""
    import os

    from tests.conftest import REPO, cli_in_process

    monkeypatch.chdir(tmp_path)
    code, _, err = cli_in_process(capsys, "fit", "--config", os.path.join(REPO, "configs/grpo.yaml"), "--model.init_args.model=embedded:micro",
                                  "--model.init_args.advantage_estimator=leave_one_in", "--trainer.max_steps=1")  # fmt: skip
    assert code == 1
    message = "GRPO: advantage_estimator 'leave_one_in' is not registered; choose one of dr_grpo, gae, grpo, rloo"
    assert message in err and "Traceback" not in err, err[-2000:]


def test_cli_refuses_groups_of_one_for_a_group_baseline(tmp_path):
    from lit_align.errors import ConfigError
    from tests.conftest import REPO, run_cli

    args = ["fit", "--config", f"{REPO}/configs/grpo.yaml", "--model.init_args.model=embedded:micro", "--data.init_args.num_samples=1", "--trainer.max_steps=1"]
    with pytest.raises(ConfigError, match=r"GRPO with advantage_estimator 'grpo' needs k >= 2 samples per prompt; set data.init_args.num_samples >= 2 \(got 1\)"):
        run_cli(args, str(tmp_path))


def test_sampling_temperature_other_than_one_is_refused():
    from lit_align.errors import ConfigError

    dm = PromptDataModule(model="embedded:micro", num_samples=2, temperature=0.7)
    with pytest.raises(ConfigError, match="must sample at temperature 1; set data.init_args.temperature to 1.0"):
        RLOO(model="embedded:micro").connect(dm)

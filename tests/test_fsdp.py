"""FSDP smoke on CPU. Lightning refuses ``strategy=fsdp`` without a GPU (tests/test_trainer_configs.py
pins the message), so this drives torch FSDP directly — gloo, 2 processes — with the preset's wrap
policy over a policy + frozen reference, the layout ``configs/trainer/fsdp.yaml`` shards on GPUs."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lit_align.losses import dpo_loss
from lit_align.modeling import load_causal_lm
from lit_align.policy import PolicyWithReference

ROWS = 8  # 4 pairs: rows [0, 4) chosen, [4, 8) rejected


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 90, (ROWS, 12), generator=generator)
    loss_mask = torch.zeros_like(input_ids)
    loss_mask[:, 5:] = 1  # 5 prompt tokens, 7 completion tokens
    return input_ids, loss_mask


class DPOStep(nn.Module):
    """The FSDP root: like Lightning's wrapper, every forward enters through it."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = PolicyWithReference(load_causal_lm("embedded:micro"), "copy")

    def forward(self, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        policy = self.pair.policy_logps(input_ids, mask, loss_mask).sum
        reference = self.pair.reference_logps(input_ids, mask, loss_mask).sum
        n = input_ids.shape[0] // 2
        return dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], beta=0.5).losses.mean()


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from lit_align.fsdp import decoder_layers

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    module = DPOStep()
    full = sum(p.numel() for p in module.parameters())
    model = FSDP(module, auto_wrap_policy=decoder_layers, use_orig_params=True, device_id=torch.device("cpu"))
    local = sum(p.numel() for p in model.parameters())
    units = sum(isinstance(m, FSDP) for m in model.modules())
    input_ids, loss_mask = batch()
    at_init = model(input_ids, loss_mask).item()
    # Each rank trains on its half of every side; FSDP averages the gradients over ranks.
    n, half = ROWS // 2, ROWS // 4
    rows = torch.cat([torch.arange(rank * half, (rank + 1) * half), n + torch.arange(rank * half, (rank + 1) * half)])
    model(input_ids[rows], loss_mask[rows]).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:  # None on a rank whose shard of that parameter is empty
                p -= 1.0 * p.grad
    after = model(input_ids, loss_mask).item()
    from lit_align.fsdp import full_state_dict

    gathered = full_state_dict(model)  # a collective: both ranks call it, rank 0 receives the weights
    if rank == 0:
        torch.save({k: v for k, v in gathered.items() if k.startswith("pair.policy.")}, out + ".policy.pt")
        with open(out, "w") as f:
            json.dump({"full": full, "local": local, "units": units, "at_init": at_init, "after": after}, f)
    # Both ranks leave together: a rank that tears gloo down while its peer is still inside a
    # collective or still connected can abort ("terminate called without an active exception",
    # seen once in CI as SIGABRT of rank 1).
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fsdp_on_cpu_shards_policy_and_reference_and_matches_one_process(tmp_path):
    out = str(tmp_path / "fsdp.json")
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), out), nprocs=2)
    with open(out) as f:
        result = json.load(f)
    # 2 models x 2 decoder layers wrapped + the root: the reference is sharded like the policy.
    assert result["units"] == 5
    assert result["local"] == pytest.approx(result["full"] / 2, abs=8)  # each rank holds half of everything
    assert result["at_init"] == pytest.approx(0.6931, abs=1e-4)  # policy == reference: log 2

    # The same update on one process over the whole batch.
    module = DPOStep()
    input_ids, loss_mask = batch()
    module(input_ids, loss_mask).backward()
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p -= 1.0 * p.grad
    after = module(input_ids, loss_mask).item()
    assert after < 0.6931 - 1e-3  # the step moved the loss: the comparison below is not vacuous
    assert result["after"] == pytest.approx(after, abs=1e-5)
    # The gathered full state (what ExportPretrained saves under FSDP) is the unsharded updated policy.
    gathered = torch.load(out + ".policy.pt")
    expected = {f"pair.policy.{k}": v for k, v in module.pair.policy.state_dict().items()}
    assert set(gathered) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(gathered[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_fsdp_preset_resolves_the_decoder_layer_policy():
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import Strategy

    from lit_align.fsdp import decoder_layers

    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs/trainer/fsdp.yaml")) as f:
        config = yaml.safe_load(f)["trainer"]["strategy"]
    strategy = parser.instantiate(parser.parse_object({"strategy": config})).strategy
    assert type(strategy).__name__ == "FSDPStrategy"
    assert strategy.kwargs["auto_wrap_policy"] is decoder_layers
    assert strategy.kwargs["use_orig_params"] is True  # needed to mix frozen and trainable params
    assert decoder_layers(load_causal_lm("embedded:micro"), recurse=True)  # collects LlamaDecoderLayer
    assert decoder_layers(load_causal_lm("embedded:micro").model.layers[0], recurse=False)
    assert not decoder_layers(nn.Linear(2, 2), recurse=False)

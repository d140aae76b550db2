"""reference='precomputed' on 2 processes (gloo) whose caches differ, as on two nodes without a
shared filesystem: one rank finds the cached log-probs, the other does not. Computing gathers every
rank's share (a collective), so both must take the same branch; before, rank 1 waited in the gather
for a rank 0 that had loaded its file and moved on."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.workload import write_pairs
from lit_align import reference_cache
from lit_align.data.pairwise import PairwiseDataModule
from lit_align.modeling import load_causal_lm
from lit_align.policy import ReferenceSetup

MODEL = "embedded:micro"


def reference_values(pairs: str, rank: int = 0, world_size: int = 1) -> list:
    dm = PairwiseDataModule(model=MODEL, dataset=pairs, val_fraction=0.25, batch_size=2, max_length=32, max_prompt_length=12)
    dm.setup("fit")
    setup = ReferenceSetup(model_name=MODEL, dtype=None, load_model=lambda: load_causal_lm(MODEL), device=torch.device("cpu"), batch_size=8, rank=rank, world_size=world_size)
    reference_cache.precompute(setup, dm)
    return [example[reference_cache.REFERENCE_KEY] for example in dm.train_examples + dm.val_examples]


def rank_main(rank: int, port: int, caches: list[str], pairs: str, out: str) -> None:
    os.environ["LIT_ALIGN_CACHE"] = caches[rank]
    torch.set_num_threads(1)
    # A short timeout: a rank left alone in a collective fails the test instead of hanging it.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=90))
    try:
        torch.save(reference_values(pairs, rank, 2), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_agree_when_only_one_of_them_has_the_cache(tmp_path, monkeypatch):
    pairs = write_pairs(str(tmp_path / "pairs.jsonl"), 16, seed=7)
    caches = [str(tmp_path / "cache_node0"), str(tmp_path / "cache_node1")]
    monkeypatch.setenv("LIT_ALIGN_CACHE", caches[0])
    single = reference_values(pairs)  # node 0's cache now holds the values; node 1's is empty
    assert any(name.startswith("reference-") for name in os.listdir(caches[0])) and not os.path.exists(caches[1])
    mp.spawn(rank_main, args=(free_port(), caches, pairs, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        values = torch.load(os.path.join(str(tmp_path), f"rank{rank}.pt"))
        torch.testing.assert_close(torch.tensor(values), torch.tensor(single), atol=1e-5, rtol=1e-5)

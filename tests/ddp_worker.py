"""One DPO training step (+ a validation pass) on a fixed global batch of 8 pairs, written to JSON.

``python tests/ddp_worker.py OUT_DIR DEVICES`` — with DEVICES=2 Lightning's DDP strategy (gloo on
CPU) re-launches this script as rank 1 and each rank sees 4 pairs; with DEVICES=1 one process sees
all 8. tests/test_ddp.py compares the two: a correct DDP step is indistinguishable from one
process on the global batch (same loss, same synced metrics, same updated weights).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from lightning import Callback, Trainer, seed_everything  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.workload import write_pairs  # noqa: E402
from lit_align.algorithms import DPO  # noqa: E402
from lit_align.data.pairwise import PairwiseDataModule  # noqa: E402

GLOBAL_BATCH = 8


class InOrder(PairwiseDataModule):
    """No shuffling: rank r takes rows r, r+W, ... (as DistributedSampler(shuffle=False) would); the
    union of a step's rank batches is then exactly the single process's first batch. Validation
    uses the DataModule's own rank sharding, as under the ddp/fsdp presets."""

    def train_dataloader(self) -> DataLoader:
        rows = self.train_examples[self.trainer.global_rank :: self.trainer.world_size]
        return DataLoader(rows, self.batch_size, shuffle=False, collate_fn=self.collate, drop_last=True)


class Record(Callback):
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # What the step logged: train/loss averaged over the ranks (the mean of each rank's mean, equal
        # rank batch sizes), the metrics from sum/count states reduced over the ranks.
        self.values.update({k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def main(out_dir: str, devices: int) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    seed_everything(0)
    data = write_pairs(os.path.join(out_dir, "pairs.jsonl"), 16, seed=5) if devices == 1 or "LOCAL_RANK" not in os.environ else os.path.join(out_dir, "pairs.jsonl")
    per_rank = GLOBAL_BATCH // devices
    datamodule = InOrder(model="embedded:micro", dataset=data, val_fraction=0.5, batch_size=per_rank, max_length=32, max_prompt_length=12)
    model = DPO(model="embedded:micro", beta=0.5, optimizer=lambda params: torch.optim.SGD(params, lr=0.5))
    record = Record()
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        use_distributed_sampler=False,  # as configs/trainer/ddp.yaml: the DataModule shards
        max_steps=1,
        val_check_interval=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(model, datamodule)
    if trainer.is_global_zero:
        values = dict(record.values)
        values.update({k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        values["num_val_examples"] = len(datamodule.val_examples)
        values["num_val_examples_rank0"] = len(datamodule.val_shard())
        with open(os.path.join(out_dir, f"metrics_{devices}.json"), "w") as f:
            json.dump(values, f, indent=1)
        weights = torch.cat([p.detach().flatten() for p in model.policy.policy.parameters()])
        torch.save(weights, os.path.join(out_dir, f"weights_{devices}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

import torch

from lit_align.algorithms import DPO, SFT
from lit_align.embedded.model import build_model
from lit_align.embedded.tokenizer import build_tokenizer
from lit_align.policy import PolicyWithReference


def test_policy_trains_reference_stays_frozen_in_eval_mode():
    model = build_model(build_tokenizer(), "micro").eval()  # as from_pretrained returns it
    pair = PolicyWithReference(model, "copy")
    assert pair.policy.training and all(m.training for m in pair.policy.modules())
    assert not pair.reference.training and not any(p.requires_grad for p in pair.reference.parameters())
    pair.train()
    assert not any(m.training for m in pair.reference.modules())
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.ones_like(ids)
    torch.testing.assert_close(pair.policy_logps(ids, mask, mask).sum, pair.reference_logps(ids, mask, mask).sum)


def test_reference_modes_per_algorithm_and_no_reference_in_checkpoints():
    assert SFT(model="embedded:micro").policy.reference is None
    dpo = DPO(model="embedded:micro")
    assert dpo.policy.reference is not None
    checkpoint = {"state_dict": dpo.state_dict()}
    dpo.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("policy.reference.") for k in checkpoint["state_dict"])
    dpo.on_load_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(dpo.state_dict())

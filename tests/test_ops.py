import math

import torch

from lit_align.ops import log1mexp, pad_left, pad_right, sequence_logps


def _manual(logits, ids, mask):
    logp = torch.log_softmax(logits.double(), -1)
    total = torch.zeros(ids.shape[0], dtype=torch.double)
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            if mask[b, t]:
                total[b] += logp[b, t - 1, ids[b, t]]
    return total


def test_sequence_logps_matches_manual_sum_and_counts():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    ids = torch.randint(0, 11, (3, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0]])
    out = sequence_logps(logits, ids, mask)
    torch.testing.assert_close(out.sum.double(), _manual(logits, ids, mask), atol=1e-5, rtol=1e-5)
    assert out.count.tolist() == [3.0, 5.0, 1.0]
    torch.testing.assert_close(out.mean, out.sum / out.count)


def test_prompt_tokens_never_contribute():
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 9)
    ids = torch.randint(0, 9, (2, 7))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0]])
    before = sequence_logps(logits, ids, mask).sum
    # Change every prompt token id and the logits that *predict* prompt tokens: nothing may move.
    ids2, logits2 = ids.clone(), logits.clone()
    ids2[0, :3], ids2[1, :2] = 0, 0
    logits2[0, :2] += 5.0
    logits2[1, :1] -= 5.0
    torch.testing.assert_close(sequence_logps(logits2, ids2, mask).sum, before)
    # ... whereas changing a completion token does.
    ids2[0, 4] = (ids2[0, 4] + 1) % 9
    assert not torch.allclose(sequence_logps(logits2, ids2, mask).sum, before)


def test_low_precision_logits_are_upcast():
    torch.manual_seed(2)
    logits = (torch.randn(2, 5, 1000) * 4).to(torch.bfloat16)
    ids = torch.randint(0, 1000, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    out = sequence_logps(logits, ids, mask)
    assert out.sum.dtype == torch.float32
    exact = _manual(logits.float(), ids, mask)
    torch.testing.assert_close(out.sum.double(), exact, atol=1e-4, rtol=1e-5)
    # A bf16 log-softmax (what the upcast avoids) is off by far more.
    sloppy = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).float().sum(-1)
    assert (sloppy.double() - exact).abs().max() > 1e-3


def test_log1mexp_is_finite_near_zero_and_accurate():
    x = torch.tensor([-1e-8, -1e-4, -0.5, -1.0, -20.0])
    out = log1mexp(x)
    assert torch.isfinite(out).all()
    reference = torch.tensor([math.log(-math.expm1(v)) for v in x.tolist()])
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    x = torch.tensor([-1e-8], requires_grad=True)
    log1mexp(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_padding_helpers():
    assert pad_right([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad_left([[1, 2], [3]], 0).tolist() == [[1, 2], [0, 3]]

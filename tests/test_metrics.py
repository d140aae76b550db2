import torch

from lit_align.metrics import PreferenceMetrics


def test_two_batches_equal_their_union():
    torch.manual_seed(0)
    batches = [[torch.randn(n) for _ in range(4)] for n in (3, 7)]
    split = PreferenceMetrics()
    for b in batches:
        split.update(*b)
    union = PreferenceMetrics()
    union.update(*[torch.cat([b[i] for b in batches]) for i in range(4)])
    a, b = split.compute(), union.compute()
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    # ...and differs from the mean of per-batch means (the common mistake), given unequal sizes.
    per_batch = []
    for batch in batches:
        m = PreferenceMetrics()
        m.update(*batch)
        per_batch.append(m.compute()["rewards/margins"])
    assert not torch.isclose(a["rewards/margins"], sum(per_batch) / 2)


def test_values_are_the_usual_definitions():
    m = PreferenceMetrics()
    m.update(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]), torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -6.0]))
    out = m.compute()
    assert out["rewards/chosen"].item() == 0.0
    assert out["rewards/margins"].item() == 0.0
    assert out["rewards/accuracies"].item() == 0.5
    assert out["logps/chosen"].item() == -4.0
    assert out["logps/rejected"].item() == -5.0


def test_states_made_under_inference_mode_stay_usable_in_training():
    """trainer.validate before fit: states are reset (recreated) under inference mode, then updated in training."""
    from lit_align.metrics import KTOMetrics, RewardModelMetrics

    values = [torch.tensor([0.5, -0.2]), torch.tensor([0.1, 0.3]), torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])]
    kto_args = (torch.tensor([0.5, -0.2]), torch.tensor([True, False]), torch.tensor([-1.0, -2.0]), torch.tensor(0.1), 0.1)
    for metric, args in ((PreferenceMetrics(), values), (KTOMetrics(), kto_args), (RewardModelMetrics(), values[:2])):
        with torch.inference_mode():
            metric.update(*args)
            metric.compute()
            metric.reset()
            metric.update(*args)
        metric.update(*args)  # outside inference mode, as a training step after validate
        before = metric.compute()
        metric.reset()
        metric.update(*args)
        metric.update(*args)
        for key, value in metric.compute().items():
            torch.testing.assert_close(value, before[key])

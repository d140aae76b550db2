"""Reading logged scalars back from a TensorBoard run (experiments, result tables, tests)."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` for every scalar in the run directory ``log_dir``."""
    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def last(scalars: dict[str, list[tuple[int, float]]], tag: str) -> float:
    if tag not in scalars:
        raise KeyError(f"tag {tag!r} was not logged; logged tags: {sorted(scalars)}")
    return scalars[tag][-1][1]

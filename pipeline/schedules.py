"""When to do something during training: the weight-snapshot steps, and the validation split.

Plain functions of numbers and label arrays (no params.yaml, no torch), used by the train stage
and usable from a notebook:

- :func:`snapshot_steps`: the optimisation steps after which the weights are saved. ``linear``
  is every ``every`` steps; ``log`` is steps 0, 1, 2, 4, 8, ... (powers of two), so the frames are
  dense early, where the representation changes most, and sparse late, where it has settled.
  Both end with the last step.
- :func:`validation_split`: a seeded, class-stratified share of the training images held out
  and monitored each epoch, so the test split is looked at once, at the end.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCHEDULES", "snapshot_steps", "validation_split"]

SCHEDULES = ("linear", "log")


def snapshot_steps(total_steps: int, schedule: str = "log", every: int = 200) -> list[int]:
    """Sorted, distinct steps in ``0..total_steps`` at which to save the weights (step 0 is the
    initialisation, step ``s`` the weights after ``s`` optimisation steps).

    ``linear``: 0, every, 2 every, ... and ``total_steps``. ``log``: 0, 1, 2, 4, 8, ... (up to
    ``total_steps``) and ``total_steps``; ``every`` only switches it on or off there. ``every`` 0:
    no snapshots at all (an empty list) for either schedule."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown snapshot schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    total_steps, every = int(total_steps), int(every)
    if total_steps < 0 or every < 0:
        raise ValueError(f"total_steps and every must be >= 0, got {total_steps} and {every}")
    if every == 0:
        return []
    if schedule == "linear":
        steps = set(range(0, total_steps + 1, every))
    else:
        steps = {0}
        power = 1
        while power <= total_steps:
            steps.add(power)
            power *= 2
    steps.add(total_steps)
    return sorted(steps)


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of ``labels``, both sorted: ``round(fraction * n)`` rows (at
    least one when ``fraction`` > 0) held out, stratified by class when every class has at least
    two images and the held-out part can hold one of each, a seeded random share otherwise.
    ``fraction`` 0 holds nothing out."""
    labels = np.asarray(labels)
    n = len(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n_val = 0 if fraction == 0 else max(1, int(round(fraction * n)))
    if n_val == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    if n_val >= n:
        raise ValueError(f"a validation fraction of {fraction} leaves no training images out of {n}")
    counts = np.bincount(labels) if n else np.zeros(0, dtype=np.int64)
    present = counts[counts > 0]
    if len(present) and present.min() >= 2 and len(present) <= n_val <= n - len(present):
        from pipeline.datasets import stratified_indices

        train, val = stratified_indices(labels, n - n_val, n_val, seed)
    else:
        order = np.random.default_rng(seed).permutation(n)
        train, val = order[n_val:], order[:n_val]
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)

"""Snapshot schedules and the validation split (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.schedules import snapshot_steps, validation_split


def test_log_schedule_is_powers_of_two_plus_the_end():
    assert snapshot_steps(1575, "log", 200) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1575]
    assert snapshot_steps(16, "log", 1) == [0, 1, 2, 4, 8, 16]          # the end is a power: not twice


def test_linear_schedule_every_n_steps_plus_the_end():
    assert snapshot_steps(1575, "linear", 200) == [0, 200, 400, 600, 800, 1000, 1200, 1400, 1575]
    assert snapshot_steps(20, "linear", 5) == [0, 5, 10, 15, 20]


@pytest.mark.parametrize("schedule", ["linear", "log"])
def test_every_zero_means_no_snapshots_and_zero_steps_only_the_start(schedule):
    assert snapshot_steps(100, schedule, 0) == []
    assert snapshot_steps(0, schedule, 10) == [0]


def test_bad_schedule_or_negative_numbers_are_refused():
    with pytest.raises(ValueError, match="unknown snapshot schedule"):
        snapshot_steps(10, "cosine", 1)
    with pytest.raises(ValueError):
        snapshot_steps(-1, "log", 1)


def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(10), 40)                      # 400 images, 40 per class
    train, val = validation_split(labels, 0.1, seed=3)
    assert len(val) == 40 and len(train) == 360
    assert np.intersect1d(train, val).size == 0 and np.union1d(train, val).size == 400
    assert np.bincount(labels[val], minlength=10).tolist() == [4] * 10
    again, val_again = validation_split(labels, 0.1, seed=3)
    assert np.array_equal(val, val_again) and np.array_equal(train, again)
    assert not np.array_equal(val, validation_split(labels, 0.1, seed=4)[1])


def test_validation_split_zero_and_tiny_fallbacks():
    labels = np.array([0, 0, 1, 1, 2, 2, 3])                   # class 3 has one image: cannot stratify
    train, val = validation_split(labels, 0.3, seed=0)
    assert len(val) == 2 and len(train) == 5
    train, val = validation_split(labels, 0.0, seed=0)
    assert len(val) == 0 and train.tolist() == list(range(7))
    with pytest.raises(ValueError):
        validation_split(labels, 1.0, seed=0)

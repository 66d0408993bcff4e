"""Metrics of emodiff_core.metrics used by training/evaluate.py."""
import numpy as np


def test_r2_within_groups_ignores_per_group_offsets():
    from emodiff_core.metrics import r2_per_component, r2_within_groups

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 40)
    change = rng.normal(size=(200, 2))
    offset = rng.normal(size=(5, 2))[groups] * 3
    target = change + offset
    pred = change + 0.1 * rng.normal(size=(200, 2))          # tracks the changes, misses the offsets
    assert (r2_per_component(pred, target) < 0.3).all()
    assert (r2_within_groups(pred, target, groups) > 0.95).all()

"""Decision thresholds for a target recall."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_dagster.core.metrics import at_threshold, threshold_for_recall


def test_threshold_sits_in_the_middle_of_the_gap_below_the_positives() -> None:
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    p = np.array([0.01, 0.1, 0.2, 0.9, 0.95, 0.99])
    t = threshold_for_recall(y, p, 0.98)
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    assert logit(t) == pytest.approx((logit(0.9) + logit(0.2)) / 2)
    assert 0.2 < t < 0.9
    # a new positive scoring a little below the validation ones is still flagged
    assert t <= 0.85


def test_threshold_leaves_out_the_positives_the_recall_allows() -> None:
    # 100 positives at 0.01..1.00: 98% recall needs the 98 best, so the 2 lowest may go
    pos = np.linspace(0.01, 1.0, 100)
    y = np.r_[np.ones(100, bool), np.zeros(3, bool)]
    p = np.r_[pos, [0.001, 0.002, 0.003]]
    t = threshold_for_recall(y, p, 0.98)
    assert pos[1] < t <= pos[2]  # between the 99th best positive and the 98th
    assert at_threshold(y, p, t)["recall"] == pytest.approx(0.98)


def test_threshold_edge_cases() -> None:
    assert threshold_for_recall(np.zeros(4, bool), np.linspace(0, 1, 4), 0.98) == 0.5
    # nothing scores lower than the positives: the lowest positive itself
    assert threshold_for_recall(np.array([1, 1, 0], bool), np.array([0.3, 0.8, 0.9]), 1.0) == 0.3
    # scores saturated at 1.0 beside a negative just below: never flags that negative
    y, p = np.array([1, 0], bool), np.array([1.0, 1.0 - 1e-9])
    t = threshold_for_recall(y, p, 0.98)
    assert p[1] < t <= 1.0


@pytest.mark.parametrize("seed", range(20))
def test_threshold_flags_the_same_validation_images_as_the_edge(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.random(n) < 0.3
    y[0] = True
    p = np.clip(rng.random(n) * 0.6 + 0.4 * y, 0, 1).round(int(rng.integers(2, 6)))
    t = threshold_for_recall(y, p, 0.98)
    pos = np.sort(p[y])[::-1]
    edge = pos[max(1, int(np.ceil(0.98 * len(pos)))) - 1]
    assert t <= edge
    np.testing.assert_array_equal(p >= t, p >= edge)
    assert at_threshold(y, p, t)["recall"] >= 0.98

"""Review mode's order (core.learning.review): scoring (margin, reason) apart from selection."""

from __future__ import annotations

import pytest

from mammo_dagster.core.learning.review import BorderlineFirst, Reviewable, margin, reason


def test_margin_and_reason() -> None:
    thresholds = {"biopsy": 0.5, "mag": 0.2}
    assert margin((0.5, 0.9), thresholds) == pytest.approx(0.0)
    assert margin((0.9, 0.2), thresholds) == pytest.approx(0.0)
    assert margin((0.1, 0.01), thresholds) > 1.5
    assert reason((True, False), 3.0) == "flagged"
    assert reason((False, False), 1.0) == "borderline"
    assert reason((False, False), 2.0) == "unflagged"


def test_borderline_first_ranks_by_margin_and_mixes_in_checks() -> None:
    ranked = [Reviewable(f"r{i}", margin=i / 10, reason="borderline") for i in range(20)]
    unflagged = [Reviewable(f"u{i}", margin=5.0, reason="unflagged") for i in range(30)]
    order = BorderlineFirst(0.1).order(unflagged + ranked[::-1], seed="s")
    assert [i for i in order if i.startswith("r")] == [f"r{i}" for i in range(20)]
    checks = [i for i in order if i.startswith("u")]
    assert len(checks) == 10  # at least ten when there are ten, though 10% of 20 is 3
    assert order[:2] == ["r0", "r1"] and order[-1].startswith("u")
    assert BorderlineFirst(0.1).order(unflagged + ranked, seed="s") == order  # stable
    assert BorderlineFirst(0.0).order(unflagged + ranked, seed="s") == [r.image_id for r in ranked]
    assert BorderlineFirst(0.1).order([], seed="s") == []

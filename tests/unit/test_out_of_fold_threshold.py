"""The biopsy flag's threshold from out-of-fold scores (`train.out_of_fold_threshold`)."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_dagster.core.metrics import threshold_for_recall
from mammo_dagster.core.model.train import out_of_fold_threshold


def _scores(faint: float, clear: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """20 positive studies (a clear image, a faint one), 20 negative ones."""
    y = np.r_[np.ones(40, bool), np.zeros(20, bool)]
    p = np.r_[np.full(20, clear), np.full(20, 0.9), np.linspace(0.05, 0.5, 20)]
    p[20] = faint  # one image whose marker barely shows
    studies = [f"p{i}" for i in range(20)] * 2 + [f"n{i}" for i in range(20)]
    return y, p, studies


def test_auto_counts_studies_so_one_faint_image_does_not_drag_the_threshold() -> None:
    y, p, studies = _scores(faint=0.01, clear=0.97)
    t, rule = out_of_fold_threshold(y, p, studies, valid_t=0.95, recall=0.98, recall_of="auto")
    assert t == threshold_for_recall(y, p, 0.98, groups=studies)
    assert 0.5 < t < 0.95 and rule == "98% recall of studies on out-of-fold scores"
    images, _ = out_of_fold_threshold(y, p, studies, 0.95, 0.98, "images")
    assert images == threshold_for_recall(y, p, 0.98) < 0.05  # the rule before


def test_auto_never_goes_above_validations_threshold() -> None:
    # every positive study saturated: the middle of the wide gap sits at 0.9997
    y, p, studies = _scores(faint=0.9, clear=0.99999)
    t, rule = out_of_fold_threshold(y, p, studies, valid_t=0.6, recall=0.98, recall_of="auto")
    assert threshold_for_recall(y, p, 0.98, groups=studies) > 0.99
    assert t == 0.6 and rule.endswith("capped at validation's (0.600)")
    uncapped, rule = out_of_fold_threshold(y, p, studies, 0.6, 0.98, "studies")
    assert uncapped > 0.99 and "capped" not in rule


@pytest.mark.parametrize("recall_of", ["auto", "studies", "images"])
def test_the_threshold_flags_the_target_share_of_positive_studies(recall_of: str) -> None:
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.4
    p = np.clip(rng.random(200) * 0.7 + 0.3 * y, 0, 1)
    studies = [f"s{i // 3}" for i in range(200)]
    t, _ = out_of_fold_threshold(y, p, studies, 0.5, 0.98, recall_of)
    flagged = {s for s, q in zip(studies, p, strict=True) if q >= t}
    positive = {s for s, q in zip(studies, y, strict=True) if q}
    assert len(flagged & positive) >= 0.98 * len(positive)

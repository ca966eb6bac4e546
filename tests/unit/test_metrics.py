"""Decision thresholds for a target recall."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_dagster.core import metrics
from mammo_dagster.core.metrics import at_threshold, by_group, threshold_for_recall


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


def _random_scores(seed: int, most: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """(rng, labels, scores) of up to `most` images, positives scoring higher, with ties."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, most))
    y = rng.random(n) < 0.3
    y[0] = True
    p = np.clip(rng.random(n) * 0.6 + 0.4 * y, 0, 1).round(int(rng.integers(2, 6)))
    return rng, y, p


def _edge(y: np.ndarray, p: np.ndarray) -> float:
    """The score of the last positive that 98% recall needs."""
    pos = np.sort(p[y])[::-1]
    return pos[max(1, int(np.ceil(0.98 * len(pos)))) - 1]


@pytest.mark.parametrize("seed", range(20))
def test_threshold_flags_the_same_validation_images_as_the_edge(seed: int) -> None:
    _, y, p = _random_scores(seed, 60)
    t = threshold_for_recall(y, p, 0.98)
    edge = _edge(y, p)
    assert t <= edge
    np.testing.assert_array_equal(p >= t, p >= edge)
    assert at_threshold(y, p, t)["recall"] >= 0.98


def test_by_group_takes_each_groups_highest_score_and_any_label() -> None:
    y = np.array([0, 1, 0, 0, 0], bool)
    p = np.array([0.9, 0.2, 0.1, 0.3, 0.4])
    gy, gp = by_group(y, p, ["s2", "s2", "s1", "s1", "s3"])
    np.testing.assert_array_equal(gy, [True, False, False])  # in order of first appearance
    np.testing.assert_allclose(gp, [0.9, 0.3, 0.4])


def test_a_hard_image_in_a_found_study_does_not_pull_the_study_threshold_down() -> None:
    # 30 positive studies, each with a clear image (0.9..0.99) and one where the marker
    # barely shows; two of those score 0.02 and 0.03, below 35 negative studies at
    # 0.05..0.5 (98% of 60 images: one of them may be missed, not two)
    rng = np.random.default_rng(0)
    clear, faint = rng.uniform(0.9, 0.99, 30), rng.uniform(0.6, 0.9, 30)
    faint[7], faint[19] = 0.02, 0.03
    neg = np.linspace(0.05, 0.5, 35)
    y = np.r_[np.ones(60, bool), np.zeros(35, bool)]
    p = np.r_[clear, faint, neg]
    studies = [f"p{i}" for i in range(30)] * 2 + [f"n{i}" for i in range(35)]
    by_image = threshold_for_recall(y, p, 0.98)
    by_study = threshold_for_recall(y, p, 0.98, groups=studies)
    assert by_image < 0.05  # a faint image flags every negative study
    assert at_threshold(*by_group(y, p, studies), by_image)["confusion"]["fp"] == 35
    assert 0.5 < by_study < 0.9  # every positive study flagged, no negative one
    study = at_threshold(*by_group(y, p, studies), by_study)
    assert study["recall"] == 1.0 and study["confusion"]["fp"] == 0
    # the price, counted in images: faint images below the study threshold go unflagged
    assert (p[:30] >= by_study).all()
    assert at_threshold(y, p, by_study)["recall"] < 0.98


@pytest.mark.parametrize("seed", range(20))
def test_study_threshold_flags_the_same_studies_as_its_edge(seed: int) -> None:
    rng, y, p = _random_scores(seed, 80)
    n = len(y)
    studies = rng.integers(0, max(2, n // 3), n).astype(str)
    t = threshold_for_recall(y, p, 0.98, groups=studies)
    sy, sp = by_group(y, p, studies)
    edge = _edge(sy, sp)
    np.testing.assert_array_equal(sp >= t, sp >= edge)
    assert at_threshold(sy, sp, t)["recall"] >= 0.98
    # one image per study: the same threshold as counting images
    assert threshold_for_recall(y, p, 0.98, groups=np.arange(n)) == threshold_for_recall(y, p, 0.98)


def test_threshold_note_names_a_threshold_one_low_positive_set() -> None:
    """7 mag views, one scoring 0.11: the threshold drops below most negatives, and the
    note says on what it stands, what it flags there and what to do."""
    y = np.array([True] * 7 + [False] * 24)
    p = np.array([0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.11] + [0.05] * 15 + [0.2] * 9)
    t = metrics.threshold_for_recall(y, p, 0.98)
    note = metrics.threshold_note("mag", y, p, t, "the validation split")
    assert note is not None and note.startswith(f"mag: threshold {t:.3f} set on 7 positive images")
    assert "lowest score 0.110, median 0.950" in note
    assert "it flags 9 of 24 negative images there" in note
    assert note.endswith("Label more mag positives to steady it")


def test_threshold_note_is_silent_on_many_well_separated_positives() -> None:
    rng = np.random.default_rng(0)
    y = np.array([True] * metrics.STEADY_POSITIVES + [False] * 100)
    p = np.concatenate([rng.uniform(0.8, 1, metrics.STEADY_POSITIVES), rng.uniform(0, 0.2, 100)])
    t = metrics.threshold_for_recall(y, p, 0.98)
    assert metrics.threshold_note("biopsy", y, p, t, "out-of-fold scores") is None
    # one positive fewer, or a tenth of the negatives above the threshold, and it speaks
    assert metrics.threshold_note("biopsy", y[1:], p[1:], t, "out-of-fold scores") is not None
    p[-10:] = 0.99
    assert "flags 10 of 100 negative images" in metrics.threshold_note(
        "biopsy", y, p, t, "out-of-fold scores"
    )


def test_threshold_note_counts_studies_with_groups_and_says_when_none_is_positive() -> None:
    y = np.array([True, False, False, False])
    p = np.array([0.9, 0.95, 0.1, 0.2])
    studies = ["a", "a", "b", "b"]
    note = metrics.threshold_note("biopsy", y, p, 0.5, "out-of-fold scores", studies)
    assert "set on 1 positive study in out-of-fold scores" in note
    assert "flags 0 of 1 negative studies" in note
    assert "lowest score 0.950" in note  # a study scores as its best image
    assert metrics.threshold_note("mag", ~np.ones(3, bool), p[:3], 0.5, "x") == (
        "mag: no positive images in x to set its threshold: label some"
    )

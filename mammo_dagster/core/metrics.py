"""Per-flag metrics in plain numpy (the inference install has no scikit-learn)."""

from __future__ import annotations

import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC by ranks (ties averaged); None when only one class is present."""
    y = np.asarray(y, bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), float)
    sorted_p = np.asarray(p)[order]
    i = 0
    while i < len(p):  # average ranks over ties
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every threshold."""
    y = np.asarray(y, bool)
    order = np.argsort(-np.asarray(p), kind="mergesort")
    tp = np.concatenate([[0], np.cumsum(y[order])])
    fp = np.concatenate([[0], np.cumsum(~y[order])])
    return fp / max(1, (~y).sum()), tp / max(1, y.sum())


def by_group(y: np.ndarray, p: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """(label, score) per group (e.g. per study): positive when any of its images is,
    scored by its highest image score. Groups in order of first appearance."""
    y, p = np.asarray(y, bool), np.asarray(p, dtype=np.float64)
    keys, index = np.unique(np.asarray(groups), return_inverse=True)
    gy, gp = np.zeros(len(keys), bool), np.full(len(keys), -np.inf)
    np.logical_or.at(gy, index, y)
    np.maximum.at(gp, index, p)
    first = np.full(len(keys), len(y))
    np.minimum.at(first, index, np.arange(len(y)))
    order = np.argsort(first)
    return gy[order], gp[order]


def threshold_for_recall(y: np.ndarray, p: np.ndarray, recall: float, groups=None) -> float:
    """A threshold that flags at least `recall` of the positives, in the middle of the gap
    below them. With `groups` (a key per image, e.g. its study) the positives counted are
    groups (`by_group`): a positive study is flagged when its best image is, so one image
    whose marker barely shows can't pull the threshold down to where it flags most
    negative studies.

    The k-th best positive's score is the highest such threshold, but it sits on that
    positive's edge: with the few positives of a small validation split, positives of
    new data often score a little lower and are missed. The threshold goes halfway (in
    logit space) from that score down to the next lower score of any image, which flags
    exactly the same validation images.
    """
    if groups is not None:
        y, p = by_group(y, p, groups)
    y = np.asarray(y, bool)
    p = np.asarray(p, dtype=np.float64)
    pos = np.sort(p[y])[::-1]
    if len(pos) == 0:
        return 0.5
    k = max(1, int(np.ceil(recall * len(pos))))
    edge = pos[k - 1]
    lower = p[p < edge]
    if not lower.size:
        return float(edge)
    below = lower.max()
    middle = _sigmoid((logit(edge) + logit(below)) / 2)
    return float(middle) if below < middle <= edge else float(edge)


#: fewer positives than this and one of them can set a flag's threshold alone
STEADY_POSITIVES = 20
#: a threshold that flags this share of the negatives it was chosen on is worth a word
NOTED_FALSE_ALARMS = 0.10


def threshold_note(
    flag: str, y: np.ndarray, p: np.ndarray, threshold: float, source: str, groups=None
) -> str | None:
    """A sentence for the person who labels when a threshold stands on little: fewer than
    `STEADY_POSITIVES` positives (with `groups`, positive groups) in `source` (what it
    was chosen on), or `NOTED_FALSE_ALARMS` of the negatives there flagged; None if not."""
    unit = "images"
    if groups is not None:
        y, p, unit = *by_group(y, p, groups), "studies"
    y, p = np.asarray(y, bool), np.asarray(p, dtype=np.float64)
    pos, neg = p[y], p[~y]
    if not len(pos):
        return f"{flag}: no positive {unit} in {source} to set its threshold: label some"
    flagged = int((neg >= threshold).sum())
    if len(pos) >= STEADY_POSITIVES and flagged < NOTED_FALSE_ALARMS * max(1, len(neg)):
        return None
    one = unit[:-1].replace("studie", "study")
    return (
        f"{flag}: threshold {threshold:.3f} set on {len(pos)} positive "
        f"{one if len(pos) == 1 else unit} in {source} "
        f"(lowest score {pos.min():.3f}, median {np.median(pos):.3f}); it flags {flagged} of "
        f"{len(neg)} negative {unit} there. Label more {flag} positives to steady it"
    )


def logit(p: float) -> float:
    """log(p / (1 - p)), with p kept 1e-7 inside (0, 1)."""
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return float(np.log(p / (1 - p)))


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Confusion matrix, precision, recall and F1 when flagging p >= threshold."""
    y = np.asarray(y, bool)
    flag = np.asarray(p) >= threshold
    tp, fp = int((flag & y).sum()), int((flag & ~y).sum())
    fn, tn = int((~flag & y).sum()), int((~flag & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall
        else None
    )
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / len(y) if len(y) else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def flag_report(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    return {"auc": auc(y, p), "n": int(len(y)), "positives": int(np.sum(y))} | at_threshold(
        y, p, threshold
    )

"""What the demo prints about its models: each retrain, the turn-by-turn table on the
hold-out patients' images, and the study CSV scored against the ground truth."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from ..core.home import Home
from ..core.imaging.preprocess import FLAGS


def counts(counter: Counter) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counter.items()))


def report_model(result) -> None:
    trained = result.asset_materializations_for_node("trained_model")[0].metadata
    onnx = result.asset_materializations_for_node("onnx_model")[0].metadata
    checks = ", ".join(
        f"{c.check_name} {check_state(c)}" for c in result.get_asset_check_evaluations()
    )
    print(
        f"  model {trained['version'].value}: trained in {trained['training_seconds'].value} s "
        f"({trained['pretrained'].value}); {checks}; current: {onnx['current'].value}"
    )
    notes = trained.get("threshold_notes")
    if notes is not None and notes.value != "none":
        print("    " + notes.value.replace("\n", "\n    "))


def check_state(check) -> str:
    if check.passed:
        return "passed"
    warn = getattr(check.severity, "value", check.severity) == "WARN"
    return "failed (a warning: the fp32 model is used)" if warn else "FAILED"


def turn_summary(home: Home, store, answers: dict) -> tuple:
    """(model version, labels it learned from, per flag (accuracy at p >= 0.5, AUC, missed,
    false alarms), images) on the hold-out patients' images, labeled or not: no model of
    any turn trains on them. Missed and false alarms are the model's flags."""
    import numpy as np

    from ..core.model.modelstore import read_current
    from ..core.model.splits import split_of
    from ..core.store import queries

    current = read_current(home.models)
    if current is None:
        return ("-", 0, {}, 0)

    rows = [
        r for r in queries.predictions_with_patients(store, current.version)
        if r[0] in answers and split_of(r[5], r[6]) == "holdout"
    ]  # fmt: skip
    out = {
        flag: flag_summary(
            np.array([answers[r[0]][k] for r in rows], bool),
            np.array([r[1 + k] for r in rows], float),
            np.array([bool(r[3 + k]) for r in rows], bool),
        )
        for k, flag in enumerate(FLAGS)
    }
    return (current.version, current.label_count, out, len(rows))


def flag_summary(y, p, flagged) -> tuple:
    """(accuracy at p >= 0.5, AUC, positives not flagged, negatives flagged) of one flag."""
    import numpy as np

    from ..core import metrics

    accuracy = float(np.mean((p >= 0.5) == y)) if len(y) else float("nan")
    return accuracy, metrics.auc(y, p), int((y & ~flagged).sum()), int((flagged & ~y).sum())


def print_loop(summary: list[tuple]) -> None:
    print("active learning, turn by turn (the hold-out patients' images, never trained on):")
    head = " | ".join(f"{flag + ' acc':>10s}   AUC missed false" for flag in FLAGS)
    print(f"  model   labels  images | {head}")
    for version, labels, flags, n in summary:
        cells = " | ".join(
            f"{acc:10.1%} {auc if auc is not None else float('nan'):5.3f} {missed:6d} {false:5d}"
            for acc, auc, missed, false in (flags.get(f, (0, None, 0, 0)) for f in FLAGS)
        )
        print(f"  {version:6s} {labels:7d} {n:7d} | {cells}")
    print("  (acc: p >= 0.5, as in benchmarks/bench_active_learning.py; missed and false alarms:")
    print("  its flags, at the threshold chosen for the target recall: biopsy counting studies on")
    print("  the second look's out-of-fold scores, mag counting images on its validation split)")


def score(csv_path: Path, truth: list) -> None:
    """Study-level accuracy of the CSV against the generator's ground truth."""
    want: dict[str, list[bool]] = {}
    for r in truth:
        w = want.setdefault(r.study_instance_uid, [False, False])
        w[0] |= r.has_biopsy_tool
        w[1] |= r.has_mag_view
    got = {r["study_id"]: r for r in csv.DictReader(csv_path.open())}
    both = [s for s in want if s in got]
    for k, (flag, column) in enumerate((("biopsy", "has_biopsy_tool"), ("mag", "has_mag_view"))):
        right = sum(want[s][k] == (got[s][column] == "1") for s in both)
        missed = sum(want[s][k] and got[s][column] == "0" for s in both)
        false = sum(not want[s][k] and got[s][column] == "1" for s in both)
        positives = sum(want[s][k] for s in both)
        print(
            f"  {flag}: {right}/{len(both)} studies right ({right / max(1, len(both)):.0%}): "
            f"{missed} of {positives} studies with one missed, "
            f"{false} of {len(both) - positives} without one flagged (false alarms)"
        )
    print(f"study CSV: {csv_path}")

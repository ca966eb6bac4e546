"""The label-efficiency benchmark's arithmetic (its numbers go into the README)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_active_learning.py"
_spec = importlib.util.spec_from_file_location("bench_active_learning", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_balanced_accuracy_does_not_reward_flagging_nothing() -> None:
    y = np.zeros((20, 2), np.float32)
    y[:2, 0] = 1  # 2 of 20 images carry a marker
    y[:10, 1] = 1
    p = np.zeros((20, 2), np.float32)  # a model that flags nothing
    p[:10, 1] = 0.9  # ... except every mag view
    out = bench.evaluate(y, p, {"biopsy": 0.5, "mag": 0.5})
    assert out["biopsy"]["accuracy"] == pytest.approx(0.9)
    assert out["biopsy"]["balanced_accuracy"] == pytest.approx(0.5)
    assert out["biopsy"]["recall"] == 0.0
    assert out["mag"]["accuracy"] == out["mag"]["balanced_accuracy"] == 1.0
    assert out["both"]["accuracy"] == pytest.approx(0.9)
    none = bench.evaluate(
        np.zeros((3, 2), np.float32), np.zeros((3, 2)), {"biopsy": 0.5, "mag": 0.5}
    )
    assert none["biopsy"]["balanced_accuracy"] is None and none["biopsy"]["recall"] is None


def _row(labels: int, acc: float, balanced: float | None, found: int) -> dict:
    flag = {"accuracy": acc, "balanced_accuracy": balanced, "accuracy_at_threshold": acc,
            "auc": 0.9, "recall": balanced}  # fmt: skip
    return {"labels": labels, "labeled_positives": {"biopsy": found, "mag": found},
            "biopsy": flag, "mag": flag, "both": {"accuracy": acc}}  # fmt: skip


def test_mean_curve_and_labels_to_reach() -> None:
    seed0 = [_row(50, 0.90, 0.60, 2), _row(100, 0.97, 0.80, 6), _row(150, 0.98, 0.97, 10)]
    seed1 = [_row(50, 0.94, 0.70, 4), _row(100, 0.95, None, 8), _row(150, 0.99, 0.99, 12)]
    mean = bench.mean_curve([seed0, seed1])
    assert [r["biopsy_accuracy"] for r in mean] == pytest.approx([0.92, 0.96, 0.985])
    assert mean[1]["biopsy_balanced_accuracy"] == pytest.approx(0.80)  # None is left out
    assert [r["mag_labeled_positives"] for r in mean] == [3, 7, 11]
    assert bench.labels_to_reach(mean, "biopsy_accuracy", 0.97) == 150
    assert bench.labels_to_reach(bench.flat(seed0), "biopsy_accuracy", 0.97) == 100
    assert bench.labels_to_reach(bench.flat(seed0), "biopsy_balanced_accuracy", 0.97) == 150
    assert bench.labels_to_reach(bench.flat(seed1), "mag_balanced_accuracy", 0.995) is None
    old = [{k: v for k, v in _row(50, 0.9, None, 0).items() if k != "labeled_positives"}]
    assert bench.mean_curve([old])[0]["biopsy_labeled_positives"] is None  # older results

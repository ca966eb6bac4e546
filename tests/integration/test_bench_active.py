"""The label-efficiency benchmark's arithmetic (its numbers go into the README)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_active_learning.py"
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


def test_train_from_replays_the_random_picks_of_a_full_run(monkeypatch, tmp_path) -> None:
    import argparse

    import mammo_dagster.core.model.train as train_module
    import mammo_dagster.core.prediction.onnx_model as onnx_model
    from mammo_dagster.core.model.dataset import Example

    trained: list[list[str]] = []  # the training set of each trained round

    def fake_train(snapshot, out, config):
        trained.append(sorted(e.sop_instance_uid for e in snapshot.split("train")))
        return {"thresholds": {"biopsy": 0.5, "mag": 0.5}}

    class FakeModel:
        def __init__(self, path) -> None: ...

        def probs(self, x: np.ndarray, patches: np.ndarray | None = None) -> np.ndarray:
            return np.full((len(x), 2), 0.3, np.float32)

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(onnx_model, "OnnxModel", FakeModel)
    pool = [Example(f"1.2.{i}", 0, "", i % 7 == 0, i % 5 == 0, "train", f"p{i // 3}", f"s{i // 3}",
                    "ge") for i in range(60)]  # fmt: skip
    holdout = [Example("9.9", 0, "", True, False, "holdout", "h", "hs", "ge"),
               Example("9.8", 0, "", False, False, "holdout", "h", "hs", "ge")]  # fmt: skip
    one = (np.zeros((4, 4), np.uint8), np.zeros((8, 2, 4, 4), np.uint8))  # image, patches
    arrays = {(e.sop_instance_uid, 0): one for e in pool + holdout}
    args = argparse.Namespace(explore=0.2, per_study=2, combine="mean", size=4, epochs=1,
                              schedule=[10, 20, 30, 40], train_from=0)  # fmt: skip
    full = bench.run_loop("random", pool, holdout, arrays, args, 3, tmp_path)
    full_sets = list(trained)
    trained.clear()
    args.train_from = 30
    replay = bench.run_loop("random", pool, holdout, arrays, args, 3, tmp_path)
    assert [r["labels"] for r in full] == [10, 20, 30, 40]
    assert [r["labels"] for r in replay] == [30, 40]  # rounds below 30 were not trained
    assert trained == full_sets[2:]  # ... yet the same images were picked
    assert replay[-1]["labeled_positives"] == full[-1]["labeled_positives"]
    assert len(set(full_sets[-1])) == 40 and set(full_sets[0]) < set(full_sets[1])

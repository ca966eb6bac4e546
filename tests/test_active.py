"""Active learning: scoring vs selection, and the sensors that turn the loop."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from mammo_dagster.core.active import Candidate, RandomStrategy, UncertaintyStrategy, uncertainty
from mammo_dagster.core.labels import LabelEvent, append_events
from mammo_dagster.core.modelstore import CurrentModel, write_current
from mammo_dagster.core.store import DB_NAME, Store
from mammo_dagster.defs.active import active_learning_sensor, new_model_sensor
from mammo_dagster.defs.resources import resources_for
from tests.factory import fake_catalog


def _candidates(n: int = 40) -> list[Candidate]:
    return [
        Candidate(f"1.2.{i}", 0, f"study{i // 4}", "GE" if i % 2 else "HOLOGIC", score=i / n)
        for i in range(n)
    ]


def test_uncertainty_is_highest_for_a_coin_toss() -> None:
    u = uncertainty(np.array([[0.5, 0.5], [0.99, 0.01], [0.5, 0.01]]))
    assert u[0] == pytest.approx(1.0) and u[1] < 0.1 and u[1] < u[2] < u[0]


def test_uncertainty_max_ranks_by_the_less_certain_flag() -> None:
    probs = np.array([[0.5, 0.001], [0.8, 0.8]])
    mean, top = uncertainty(probs), uncertainty(probs, combine="max")
    assert mean[0] < mean[1] and top[0] > top[1]
    assert top[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="combine"):
        uncertainty(probs, combine="median")


def test_uncertainty_strategy_picks_unsure_images_spread_over_studies() -> None:
    picks = UncertaintyStrategy(explore=0.25, per_study=2).select(_candidates(), 12, seed=1)
    assert len(picks) == 12 and len({p.candidate for p in picks}) == 12
    uncertain = [p.candidate for p in picks if p.reason == "uncertain"]
    assert len(uncertain) == 9 and sum(p.reason == "explore" for p in picks) == 3
    studies = [c.study_instance_uid for c in uncertain]
    assert max(studies.count(s) for s in studies) <= 2
    assert min(c.score for c in uncertain) > np.median([c.score for c in _candidates()])
    assert {c.manufacturer for c in uncertain} == {"GE", "HOLOGIC"}


def test_random_strategy_is_a_seeded_sample() -> None:
    a = RandomStrategy().select(_candidates(), 10, seed=3)
    assert a == RandomStrategy().select(_candidates(), 10, seed=3)
    assert {p.reason for p in a} == {"random"}


def _label(store: Store, ids: list[str]) -> None:
    append_events(
        store,
        [LabelEvent(i.rsplit("_", 1)[0], "label", "a", "random", has_biopsy_tool=False,
                    has_mag_view=False) for i in ids],
    )  # fmt: skip


def test_active_learning_sensor(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MAMMO_RETRAIN_EVERY", "50")
    home = tmp_path / "home"
    ids = fake_catalog(home, 160)
    store = Store(home / DB_NAME)
    resources = resources_for(home)
    (tmp_path / "dh").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dh")) as instance:

        def tick(cursor=None):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            return active_learning_sensor(ctx)

        _label(store, ids[:49])
        assert isinstance(tick(), dg.SkipReason)  # below the threshold
        _label(store, ids[49:50])
        result = tick()
        assert [r.run_key for r in result.run_requests] == ["retrain-labels-50"]
        assert isinstance(tick(result.cursor), dg.SkipReason)  # requested once, not twice

        run = instance.create_run_for_job(  # a retrain that has not finished
            job_def=dg.Definitions(
                assets=[dg.asset(name="x")(lambda: None)],
                jobs=[dg.define_asset_job("retrain", selection="x")],
            ).resolve_job_def("retrain"),
        )
        _label(store, ids[50:120])  # a burst while the retrain runs
        assert isinstance(tick(result.cursor), dg.SkipReason)  # in flight: no second run
        instance.report_run_failed(run)  # the run ends (its outcome doesn't matter here)

        # the new model was trained on labels up to seq 50: 70 new labels since
        write_current(home / "models", CurrentModel("m0001", 50, 50))
        follow_up = tick(result.cursor)
        assert [r.run_key for r in follow_up.run_requests] == ["retrain-labels-120"]
        # ... and once that model is current, counting starts again from its watermark
        write_current(home / "models", CurrentModel("m0002", 120, 120))
        assert isinstance(tick(follow_up.cursor), dg.SkipReason)


def test_new_model_sensor_predicts_every_drop_then_the_studies(tmp_path) -> None:
    home = tmp_path / "home"
    fake_catalog(home, 8, drop="d1")
    fake_catalog(home, 8, drop="d2")
    store = Store(home / DB_NAME)
    resources = resources_for(home)
    (tmp_path / "dh").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dh")) as instance:
        instance.add_dynamic_partitions("drops", ["d1", "d2"])
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(new_model_sensor(ctx), dg.SkipReason)
        write_current(home / "models", CurrentModel("m0001", 0, 0))
        first = new_model_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert sorted(r.partition_key for r in first.run_requests) == ["d1", "d2"]
        store.run(
            lambda c: c.execute(
                "INSERT INTO image_predictions SELECT drop_name, sop_instance_uid, frame, "
                "'m0001', 0.1, 0.2, false, false, now() FROM dicom_index"
            )
        )
        done = new_model_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert [r.job_name for r in done.run_requests] == ["study_csv"]

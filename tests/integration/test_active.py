"""Active learning: scoring vs selection, and the sensors that turn the loop."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from mammo_dagster.core.learning.active import (
    Candidate,
    RandomStrategy,
    UncertaintyStrategy,
    uncertainty,
)
from mammo_dagster.core.model.modelstore import CurrentModel, write_current
from mammo_dagster.core.store.db import DB_NAME, Store
from mammo_dagster.core.store.labels import LabelEvent, append_events
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


def _predict(store: Store, drop: str, version: str = "m0001") -> None:
    """What image_predictions writes for a drop's decodable frames."""
    store.run(
        lambda c: c.execute(
            "INSERT OR REPLACE INTO image_predictions SELECT drop_name, sop_instance_uid, frame, "
            "?, 0.1, 0.2, false, false, now() FROM dicom_index "
            "WHERE drop_name = ? AND status = 'ok'",
            [version, drop],
        )
    )


def _nothing_new(store: Store, drop: str, status: str, n: int = 3) -> None:
    """A drop indexed as only duplicates (or only bad files)."""
    from mammo_dagster.core.imaging.index import IndexRow, save_index

    rows = [IndexRow(drop, f"f{i}", 0, 10, "x", status, error_kind="not_dicom" if
                     status == "error" else None) for i in range(n)]  # fmt: skip
    save_index(store, drop, rows)


def _run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    """A run record as the daemon leaves it (not started until reported otherwise)."""
    job = dg.Definitions(
        assets=[dg.asset(name="x")(lambda: None)], jobs=[dg.define_asset_job("j", selection="x")]
    ).resolve_job_def("j")
    return instance.create_run_for_job(job_def=job, tags=tags)


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
        _predict(store, "d1")
        _predict(store, "d2")
        done = new_model_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert [r.job_name for r in done.run_requests] == ["study_csv"]


def test_new_model_sensor_never_stalls_on_a_drop_with_nothing_to_predict(tmp_path) -> None:
    """Duplicate-only, junk and failed drops are reported; new drops still reach the CSV."""
    home = tmp_path / "home"
    fake_catalog(home, 8, drop="d1")
    store = Store(home / DB_NAME)
    _nothing_new(store, "dup", "duplicate")
    _nothing_new(store, "junk", "error")
    resources = resources_for(home)
    write_current(home / "models", CurrentModel("m0001", 0, 0))
    (tmp_path / "dh").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dh")) as instance:
        instance.add_dynamic_partitions("drops", ["d1", "dup", "junk"])

        def tick(cursor=None):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            return new_model_sensor(ctx)

        first = tick()
        assert [r.partition_key for r in first.run_requests] == ["d1"]  # not dup, not junk
        _predict(store, "d1")
        studies = tick(first.cursor)
        assert [r.job_name for r in studies.run_requests] == ["study_csv"]
        idle = tick(studies.cursor)
        assert isinstance(idle, dg.SkipReason)
        assert "study CSV up to date (m0001: 8 images of 1 drops)" in idle.skip_message
        assert "nothing to predict in dup (3 duplicates); junk (3 bad files)" in idle.skip_message

        # a new drop arrives: its ingest run holds predictions back until it ends
        fake_catalog(home, 4, drop="d2")
        instance.add_dynamic_partitions("drops", ["d2"])
        ingest = _run(instance, {"dagster/partition": "d2"})
        waiting = tick(studies.cursor)
        assert isinstance(waiting, dg.SkipReason)
        assert waiting.skip_message.startswith("predictions pending for d2")
        instance.report_run_canceled(ingest)  # its outcome doesn't matter here
        second = tick(studies.cursor)
        [request] = second.run_requests
        assert request.partition_key == "d2"

        # its predict run fails: reported, and the CSV goes ahead with the rest
        failed = _run(instance, {"dagster/run_key": request.run_key, "dagster/partition": "d2"})
        instance.report_run_failed(failed)
        report = tick(second.cursor)  # the CSV it would write is the one already written
        assert isinstance(report, dg.SkipReason)
        assert report.skip_message.startswith("study CSV up to date (m0001: 8 images of 1 drops)")
        assert f"d2 (4 of 4 frames unscored, run {failed.run_id[:8]} failure)" in (
            report.skip_message
        )

        # a rerun of the drop's predictions (by hand) brings it into the next CSV
        _predict(store, "d2")
        final = tick(second.cursor)
        assert [r.job_name for r in final.run_requests] == ["study_csv"]
        assert final.run_requests[0].run_key == "m0001:studies:2:12"


def test_new_model_sensor_predicts_a_drop_again_when_it_grows(tmp_path) -> None:
    from mammo_dagster.core.imaging.index import save_drop_state

    home = tmp_path / "home"
    fake_catalog(home, 4, drop="d1")
    store = Store(home / DB_NAME)
    save_drop_state(store, "d1", "aaaaaaaaaaaa", 4)
    resources = resources_for(home)
    write_current(home / "models", CurrentModel("m0001", 0, 0))
    (tmp_path / "dh").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dh")) as instance:
        instance.add_dynamic_partitions("drops", ["d1"])
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        [first] = new_model_sensor(ctx).run_requests
        assert first.run_key == "m0001:d1:aaaaaaaa"
        _predict(store, "d1")
        fake_catalog(home, 6, drop="d1")  # re-indexed with two more frames
        save_drop_state(store, "d1", "bbbbbbbbbbbb", 6)
        [grown] = new_model_sensor(ctx).run_requests
        assert grown.run_key == "m0001:d1:bbbbbbbb" and grown.partition_key == "d1"

"""The drop sensor and the nightly sweep, evaluated the way Dagster's daemon does."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import numpy as np

from mammo_dagster.core.imaging.index import drop_state, save_drop_state
from mammo_dagster.defs.resources import MammoHome, StoreResource
from mammo_dagster.defs.schedules import nightly_drop_sweep
from mammo_dagster.defs.sensors import dicom_drop_sensor
from tests.factory import make_file

PX = np.full((64, 48), 1500, dtype=np.uint16)


def age(folder: Path, seconds: float) -> None:
    """Pretend every file was last written `seconds` ago."""
    old = time.time() - seconds
    for p in folder.rglob("*"):
        os.utime(p, (old, old))


def evaluate(home: Path, instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "paths": MammoHome(home=str(home)),
            "store": StoreResource(path=str(home / "mammo.duckdb")),
        },
    )
    result = dicom_drop_sensor(context)
    for request in result.dynamic_partitions_requests:  # what the daemon does with them
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_drop_sensor_lifecycle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    copying = home / "incoming" / "copying"
    make_file(copying / "IM1", PX, "ge", tag="c1")  # just written: still arriving
    ready = home / "incoming" / "ready"
    make_file(ready / "IM1", PX, "ge", tag="r1")
    (ready / "_READY").write_text("")

    first = evaluate(home, instance, None)
    assert [r.partition_key for r in first.run_requests] == ["ready"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["ready"]

    again = evaluate(home, instance, first.cursor)  # nothing changed: nothing to do
    assert again.run_requests == [] and again.dynamic_partitions_requests == []

    age(copying, 600)  # the copy went quiet: complete now
    third = evaluate(home, instance, again.cursor)
    assert [r.partition_key for r in third.run_requests] == ["copying"]

    make_file(ready / "IM2", PX, "ge", tag="r2")  # the drop grew: process it again
    fourth = evaluate(home, instance, third.cursor)
    assert [r.partition_key for r in fourth.run_requests] == ["ready"]
    assert fourth.run_requests[0].run_key != first.run_requests[0].run_key
    assert fourth.dynamic_partitions_requests == []  # the partition already exists
    assert sorted(instance.get_dynamic_partitions("drops")) == ["copying", "ready"]


def test_drop_sensor_skips_a_drop_indexed_already(tmp_path: Path) -> None:
    """Issue 19: `make dev` after `make demo` must not ingest the demo's drop again."""
    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    drop = home / "incoming" / "demo"
    make_file(drop / "IM1", PX, "ge", tag="d1")
    (drop / "_READY").write_text("")
    store = StoreResource(path=str(home / "mammo.duckdb")).store()
    save_drop_state(store, "demo", drop_state(drop, 0)[1], 2)  # what the demo's ingest did

    first = evaluate(home, instance, None)
    assert first.run_requests == []
    assert "indexed already in their current state: demo" in first.skip_reason.skip_message
    assert evaluate(home, instance, first.cursor).skip_reason.skip_message == (
        "no complete drop changed since the last tick"
    )
    make_file(drop / "IM2", PX, "ge", tag="d2")  # the drop grew after the demo: ingest it
    grown = evaluate(home, instance, first.cursor)
    assert [r.partition_key for r in grown.run_requests] == ["demo"]


def test_nightly_sweep_processes_stale_drops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = StoreResource(path=str(home / "mammo.duckdb"))
    for name in ("fresh", "stale"):
        make_file(home / "incoming" / name / "IM1", PX, "ge", tag=name)
        age(home / "incoming" / name, 600)
    _c, fingerprint, files = drop_state(home / "incoming" / "fresh", 0)
    save_drop_state(store.store(), "fresh", fingerprint, files)  # indexed in its current state
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home"))
    try:
        context = dg.build_schedule_context(
            instance=instance, resources={"paths": MammoHome(home=str(home)), "store": store}
        )
        requests = nightly_drop_sweep(context)
        assert [r.partition_key for r in requests] == ["stale"]
        assert instance.get_dynamic_partitions("drops") == ["stale"]
    finally:
        instance.dispose()

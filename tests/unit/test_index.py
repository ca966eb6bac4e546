"""Indexing a drop into the store: rows per frame, error rows, cross-drop duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo_dagster.core.imaging.batch import iter_files
from mammo_dagster.core.imaging.index import index_file, mark_duplicates, save_index, seen_elsewhere
from mammo_dagster.core.store.db import Store
from tests.factory import FAKE_PATIENT_ID, make_file

PX = np.full((64, 48), 1500, dtype=np.uint16)


def index(store: Store, drop: Path) -> list:
    rows = [r for f in iter_files(drop) for r in index_file(f, drop, drop.name)]
    rows = mark_duplicates(rows, seen_elsewhere(store, drop.name))
    save_index(store, drop.name, rows)
    return rows


def test_index_two_drops(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.duckdb")
    store.migrate()
    a = tmp_path / "incoming" / "a"
    make_file(a / "P1" / "S1" / "IM0001", PX, "ge", tag="one")
    make_file(a / "P1" / "S1" / "IM0002", np.stack([PX, PX]), "siemens", tag="two")
    (a / "DICOMDIR.txt").write_text("not an image")
    rows = index(store, a)
    assert sorted((r.path, r.frame, r.status) for r in rows) == [
        ("DICOMDIR.txt", 0, "error"),
        ("P1/S1/IM0001", 0, "ok"),
        ("P1/S1/IM0002", 0, "ok"),
        ("P1/S1/IM0002", 1, "ok"),
    ]
    assert all(r.content_hash and r.file_size for r in rows)

    b = tmp_path / "incoming" / "b"
    make_file(b / "again.dcm", PX, "ge", tag="one")  # same SOP UID as drop a
    rows_b = index(store, b)
    assert [(r.status, r.duplicate_of) for r in rows_b] == [("duplicate", "a/P1/S1/IM0001")]

    index(store, a)  # re-indexing replaces, never doubles
    counts = store.run(
        lambda c: c.execute(
            "SELECT drop_name, status, count(*) FROM dicom_index GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    )
    assert counts == [("a", "error", 1), ("a", "ok", 3), ("b", "duplicate", 1)]
    dump = store.run(lambda c: str(c.execute("SELECT * FROM dicom_index").fetchall()))
    assert FAKE_PATIENT_ID not in dump


def test_parallel_index_matches_serial(tmp_path: Path) -> None:
    from mammo_dagster.core.imaging.index import PARALLEL_FROM, index_folder

    drop = tmp_path / "big"
    for i in range(PARALLEL_FROM + 6):
        make_file(drop / f"S{i % 3}" / f"IM{i:04d}", PX, "ge", tag=f"img{i}")
    (drop / "junk.txt").write_text("x")
    serial = index_folder(drop, "big", workers=1)
    parallel = index_folder(drop, "big", workers=2)
    assert parallel == serial and len(serial) == PARALLEL_FROM + 7
    assert sum(r.status == "error" for r in parallel) == 1


def test_ingest_drop_is_the_one_way_a_drop_is_indexed(tmp_path: Path) -> None:
    """Rows keyed with the home's salt, duplicates of other drops marked, the drop's
    indexed state saved (the sensor and the sweep compare against it), idempotent."""
    from mammo_dagster.core.home import Home
    from mammo_dagster.core.imaging.header import patient_key
    from mammo_dagster.core.imaging.index import drop_state, indexed_states, ingest_drop

    home = Home(tmp_path / "home")
    make_file(home.drop("a") / "IM1", PX, "ge", tag="one")
    make_file(home.drop("b") / "IM1", PX, "ge", tag="one")  # the same image sent again
    rows = ingest_drop(home, "a", workers=1)
    assert [(r.status, r.patient_key) for r in rows] == [
        ("ok", patient_key(FAKE_PATIENT_ID, home.patient_salt()))
    ]
    assert [(r.status, r.duplicate_of) for r in ingest_drop(home, "b")] == [("duplicate", "a/IM1")]
    ingest_drop(home, "a")  # again: replaced, never doubled
    store = Store(home.db)
    assert store.query("SELECT drop_name, status FROM dicom_index ORDER BY ALL") == [
        ("a", "ok"),
        ("b", "duplicate"),
    ]
    assert indexed_states(store) == {d: drop_state(home.drop(d), 0)[1] for d in ("a", "b")}

"""The DuckDB store: idempotent migrations, all-or-nothing work, waiting out a lock."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from mammo_dagster.core.store.db import MIGRATIONS, Store, StoreBusy


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the file read-write, as a Dagster run would."""
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
        "c.execute('CREATE TABLE IF NOT EXISTS held (x INT)'); print('held', flush=True); "
        "time.sleep(float(sys.argv[2]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.duckdb")
    assert store.migrate() == len(MIGRATIONS)
    assert store.migrate() == len(MIGRATIONS)
    versions = store.run(lambda c: c.execute("SELECT version FROM schema_version").fetchall())
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    assert store.run(lambda c: c.execute("SELECT count(*) FROM dicom_index").fetchone()[0]) == 0


def test_failed_work_writes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.duckdb")
    store.run(lambda c: c.execute("CREATE TABLE t (x INT)"))

    def half(c) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        store.run(half)
    assert store.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0


@pytest.mark.parametrize("read_only", [False, True])
def test_waits_for_another_process_lock(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "m.duckdb"
    store = Store(path, timeout_s=30)
    store.migrate()
    holder = hold_write_lock(path, 2.0)
    try:
        t0 = time.monotonic()
        if read_only:
            n = store.run(
                lambda c: c.execute("SELECT count(*) FROM dicom_index").fetchone()[0],
                read_only=True,
            )
            assert n == 0
        else:
            store.run(lambda c: c.execute("CREATE TABLE mine (x INT); INSERT INTO mine VALUES (7)"))
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=30)
    assert waited >= 0.5  # it really met the lock, and waited instead of failing
    if not read_only:
        assert store.run(lambda c: c.execute("SELECT x FROM mine").fetchall()) == [(7,)]


def test_gives_up_with_a_clear_error_after_the_deadline(tmp_path: Path) -> None:
    path = tmp_path / "m.duckdb"
    Store(path).migrate()
    holder = hold_write_lock(path, 3.0)
    try:
        with pytest.raises(StoreBusy, match="stayed locked"):
            Store(path, timeout_s=0.5).run(lambda c: c.execute("SELECT 1"))
    finally:
        holder.wait(timeout=30)


def test_query_and_one_read_with_parameters(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.duckdb")
    store.run(lambda c: c.execute("CREATE TABLE t (x INT, s VARCHAR); INSERT INTO t VALUES "
                                  "(1, 'a'), (2, 'it''s')"))  # fmt: skip
    assert store.query("SELECT x FROM t WHERE s = ? ORDER BY x", ["it's"]) == [(2,)]
    assert store.one("SELECT count(*), max(x) FROM t WHERE x >= ?", [1]) == (2, 2)
    assert store.one("SELECT x FROM t WHERE x > ?", [5]) is None
    with pytest.raises(duckdb.Error):  # read-only: a write through query is refused
        store.query("INSERT INTO t VALUES (?, ?)", [3, "c"])
    assert store.one("SELECT count(*) FROM t") == (2,)


def test_no_sql_outside_the_core() -> None:
    """The store owns its SQL: the Dagster layer, the labeler and the CLI call the core's
    named queries (core/store/queries.py and the modules beside the schema), never a statement
    of their own."""
    import ast

    root = Path(__file__).resolve().parents[2]
    words = re.compile(r"\b(SELECT|INSERT|DELETE|UPDATE|CREATE|COPY)\b")
    places = [*(root / "mammo_dagster" / "defs").rglob("*.py"), *(root / "labeler").rglob("*.py"),
              root / "mammo_dagster" / "pipeline.py", *(root / "mammo_dagster").glob("cli*.py"),
              *(root / "mammo_dagster" / "cli").rglob("*.py")]  # fmt: skip
    found = [
        f"{path.relative_to(root)}:{node.lineno}"
        for path in places
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and words.search(node.value)
    ]  # fmt: skip
    assert found == []

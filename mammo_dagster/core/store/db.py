"""The DuckDB store: the one module that owns the schema and every connection.

DuckDB lets one process hold a file read-write *or* several hold it read-only,
never both, and even a read-only open fails while a writer holds it. Dagster
runs and the labeler are separate processes on the same file, so every access
is a short-lived connection opened through :meth:`Store.connect`, which retries
a lock conflict with jittered exponential backoff until a deadline, and only
then raises :class:`StoreBusy` (nothing is written half-way: work runs in a
transaction that is retried whole).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from ..home import DB_NAME as DB_NAME  # the file's name within a Home (its `db`)

T = TypeVar("T")

#: Schema migrations, applied in order, each once; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS dicom_index (
        drop_name VARCHAR NOT NULL,
        path VARCHAR NOT NULL,             -- relative to the drop folder
        frame INTEGER NOT NULL,
        file_size BIGINT,
        content_hash VARCHAR,              -- blake2b of the file bytes
        status VARCHAR NOT NULL,           -- ok | error | duplicate | skipped
        error_kind VARCHAR,
        error VARCHAR,
        duplicate_of VARCHAR,              -- drop/path first seen with this SOP UID
        sop_instance_uid VARCHAR,
        study_instance_uid VARCHAR,
        series_instance_uid VARCHAR,
        patient_key VARCHAR,               -- salted hash, never the ID
        manufacturer VARCHAR,
        model VARCHAR,
        laterality VARCHAR,
        view_position VARCHAR,
        view_modifiers VARCHAR,
        transfer_syntax_uid VARCHAR,
        transfer_syntax VARCHAR,
        rows_ INTEGER,
        columns_ INTEGER,
        number_of_frames INTEGER,
        bits_stored INTEGER,
        photometric VARCHAR,
        presentation_intent_type VARCHAR,
        voi_function VARCHAR,
        mag_factor DOUBLE,
        paddle_description VARCHAR,
        series_description VARCHAR,
        header_mag_hint BOOLEAN,
        header_marker_hint BOOLEAN,
        study_mag_hint BOOLEAN,
        study_marker_hint BOOLEAN,
        indexed_at TIMESTAMP DEFAULT current_timestamp,
        PRIMARY KEY (drop_name, path, frame)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS drops (
        drop_name VARCHAR PRIMARY KEY,
        fingerprint VARCHAR NOT NULL,      -- files, sizes, mtimes when indexed
        files INTEGER NOT NULL,
        indexed_at TIMESTAMP NOT NULL
    )
    """,
    "CREATE SEQUENCE IF NOT EXISTS label_seq START 1",
    """
    CREATE TABLE IF NOT EXISTS label_events (
        event_id VARCHAR PRIMARY KEY,      -- made by the writer: a replay inserts nothing
        seq BIGINT NOT NULL DEFAULT nextval('label_seq'),  -- the order events were stored
        sop_instance_uid VARCHAR NOT NULL,
        frame INTEGER NOT NULL DEFAULT 0,
        action VARCHAR NOT NULL,           -- label | skip | retract
        has_biopsy_tool BOOLEAN,           -- label events only
        has_mag_view BOOLEAN,
        annotator VARCHAR NOT NULL,
        source VARCHAR NOT NULL,           -- queue | random | holdout | review | import
        model_version VARCHAR,             -- the model whose prediction was shown, if any
        retracts VARCHAR,                  -- retract events: the event_id they undo
        created_at TIMESTAMP NOT NULL      -- UTC, when the annotator acted
    )
    """,
    # The current label of each image: its newest label event that no retract undoes.
    """
    CREATE OR REPLACE VIEW current_labels AS
    SELECT sop_instance_uid, frame, has_biopsy_tool, has_mag_view, annotator, source,
           model_version, created_at, seq, event_id
    FROM label_events e
    WHERE action = 'label'
      AND NOT EXISTS (
          SELECT 1 FROM label_events r WHERE r.action = 'retract' AND r.retracts = e.event_id
      )
    QUALIFY row_number() OVER (PARTITION BY sop_instance_uid, frame ORDER BY seq DESC) = 1
    """,
    """
    CREATE TABLE IF NOT EXISTS image_predictions (
        drop_name VARCHAR NOT NULL,
        sop_instance_uid VARCHAR NOT NULL,
        frame INTEGER NOT NULL,
        model_version VARCHAR NOT NULL,
        prob_biopsy DOUBLE NOT NULL,
        prob_mag DOUBLE NOT NULL,
        flag_biopsy BOOLEAN NOT NULL,      -- prob at or above the model's threshold
        flag_mag BOOLEAN NOT NULL,
        predicted_at TIMESTAMP NOT NULL,
        PRIMARY KEY (drop_name, sop_instance_uid, frame, model_version)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS labeling_queue (
        sop_instance_uid VARCHAR NOT NULL,
        frame INTEGER NOT NULL,
        rank INTEGER NOT NULL,             -- 1 = label first
        score DOUBLE,                      -- the strategy's score (e.g. uncertainty)
        reason VARCHAR,                    -- uncertain | explore | ...
        model_version VARCHAR,
        created_at TIMESTAMP NOT NULL,
        PRIMARY KEY (sop_instance_uid, frame)
    )
    """,
    # One row per decodable frame across all drops. Indexing already marks repeats as
    # duplicates; this also holds if two drops were indexed at the same moment.
    """
    CREATE OR REPLACE VIEW indexed_frames AS
    SELECT * FROM dicom_index WHERE status = 'ok'
    QUALIFY row_number() OVER (PARTITION BY sop_instance_uid, frame
                               ORDER BY drop_name, path) = 1
    """,
    # PACS pulls (core/pacs/pull.py): one row per pull into a drop, one per instance fetched
    # (the cursor: an instance fetched once is never fetched again), one per study listed.
    """
    CREATE TABLE IF NOT EXISTS pacs_pulls (
        drop_name VARCHAR PRIMARY KEY,
        source VARCHAR NOT NULL,           -- the DICOMweb base URL (no credentials)
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP              -- NULL: killed or still running; a rerun resumes it
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS pacs_instances (
        source VARCHAR NOT NULL,
        sop_instance_uid VARCHAR NOT NULL,
        study_instance_uid VARCHAR NOT NULL,
        series_instance_uid VARCHAR NOT NULL,
        drop_name VARCHAR NOT NULL,
        path VARCHAR NOT NULL,             -- relative to the drop folder
        status VARCHAR NOT NULL,           -- ok | error (an error is tried again next pull)
        error_kind VARCHAR,
        error VARCHAR,
        fetched_at TIMESTAMP NOT NULL,
        PRIMARY KEY (source, sop_instance_uid)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS pacs_studies (
        source VARCHAR NOT NULL,
        study_instance_uid VARCHAR NOT NULL,
        instances_seen INTEGER,            -- NumberOfStudyRelatedInstances when last listed
        listed_at TIMESTAMP NOT NULL,
        PRIMARY KEY (source, study_instance_uid)
    )
    """,
    # Write-back (core/pacs/push.py): every object sent (or written), so a rerun sends
    # nothing new and a newer model's documents can name the ones they supersede.
    """
    CREATE TABLE IF NOT EXISTS pacs_sent (
        destination VARCHAR NOT NULL,      -- a DICOMweb base URL or a folder
        sop_instance_uid VARCHAR NOT NULL,
        sop_class_uid VARCHAR NOT NULL,
        series_instance_uid VARCHAR NOT NULL,
        study_instance_uid VARCHAR NOT NULL,
        model_version VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,             -- kos | sr
        sent_at TIMESTAMP NOT NULL,
        PRIMARY KEY (destination, sop_instance_uid)
    )
    """,
    # What the codecs said while reading the header ("; " between notes): a damaged file
    # is a row with its warnings, not stderr noise (core.imaging.guard.capture).
    "ALTER TABLE dicom_index ADD COLUMN IF NOT EXISTS warnings VARCHAR",
)


#: One connection per file at a time within a process: DuckDB refuses a read-only and a
#: read-write connection to one file side by side in one process (threads of the labeler).
_IN_PROCESS: dict[str, threading.RLock] = {}
_IN_PROCESS_GUARD = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    with _IN_PROCESS_GUARD:
        return _IN_PROCESS.setdefault(str(path.resolve()), threading.RLock())


class StoreBusy(RuntimeError):
    """The database stayed locked by another process past the deadline."""


def _is_lock_conflict(e: Exception) -> bool:
    text = str(e).lower()
    return isinstance(e, duckdb.IOException) and ("lock" in text or "conflicting" in text)


class Store:
    """Short-lived, retrying connections to one DuckDB file."""

    def __init__(
        self,
        path: Path,
        *,
        timeout_s: float = 60.0,
        first_delay_s: float = 0.02,
        max_delay_s: float = 0.25,  # poll often: another process may free it briefly
    ) -> None:
        self.path = Path(path)  # a Home's `db`
        self.timeout_s, self.first_delay_s, self.max_delay_s = (
            timeout_s,
            first_delay_s,
            max_delay_s,
        )

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.timeout_s
        delay = self.first_delay_s
        while True:
            try:
                if read_only and not self.path.exists():
                    read_only = False  # a read-only open can't create the file
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as e:
                if not _is_lock_conflict(e):
                    raise
                if time.monotonic() + delay > deadline:
                    raise StoreBusy(
                        f"{self.path} stayed locked for {self.timeout_s:.0f} s by another process"
                    ) from e
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, self.max_delay_s)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held only for the `with` block (open retried on lock conflicts)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _process_lock(self.path):
            conn = self._open(read_only)
            try:
                yield conn
            finally:
                conn.close()

    def run(self, work: Callable[[duckdb.DuckDBPyConnection], T], *, read_only: bool = False) -> T:
        """`work(conn)` in one transaction on a fresh connection: all of it or none."""
        with self.connect(read_only=read_only) as conn:
            if read_only:
                return work(conn)
            conn.execute("BEGIN TRANSACTION")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Every row of one read-only statement (`?` placeholders for `params`)."""
        return self.run(lambda c: c.execute(sql, list(params)).fetchall(), read_only=True)

    def one(self, sql: str, params: Sequence[object] = ()) -> tuple | None:
        """The first row of one read-only statement, None when there is none."""
        return self.run(lambda c: c.execute(sql, list(params)).fetchone(), read_only=True)

    def migrate(self) -> int:
        """Apply pending migrations (idempotent); returns the schema version."""

        def apply(conn: duckdb.DuckDBPyConnection) -> int:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = (row[0] if row else None) or 0
            for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
                conn.execute(sql)
                conn.execute("INSERT INTO schema_version VALUES (?)", [version])
            return len(MIGRATIONS)

        return self.run(apply)

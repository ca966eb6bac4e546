"""The store's named queries: what the Dagster layer, the labeler and the CLI read and write.

Beside the schema (store.py), so that no SQL lives in ``defs/``, ``labeler/`` or the
CLI. Reads go through `Store.query` / `Store.one` (or one read-only connection when a
caller needs several statements to agree); writes run in one transaction. Values are
always `?` parameters, never formatted into the SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from .db import Store
from .studies import write_study_csv

# -- dicom_index -------------------------------------------------------------------------


def duplicate_frames(store: Store, limit: int = 20) -> list[tuple[str, int, int]]:
    """(SOP UID, frame, count) of frames that are an `ok` row more than once."""
    return store.query(
        "SELECT sop_instance_uid, frame, count(*) FROM dicom_index WHERE status = 'ok' "
        "GROUP BY ALL HAVING count(*) > 1 LIMIT ?",
        [limit],
    )


def failure_rates(store: Store) -> list[tuple[str, float]]:
    """(drop, share of its rows that are errors) for every indexed drop."""
    return store.query(
        "SELECT drop_name, avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) "
        "FROM dicom_index GROUP BY ALL"
    )


def ok_frames(store: Store, drop: str | None = None) -> list[tuple[str, int]]:
    """(SOP UID, frame) of the decodable frames of every drop, or of one `drop` in file
    order."""
    if drop is None:
        return store.query("SELECT sop_instance_uid, frame FROM dicom_index WHERE status = 'ok'")
    return store.query(
        "SELECT sop_instance_uid, frame FROM dicom_index WHERE drop_name = ? "
        "AND status = 'ok' ORDER BY path, frame",
        [drop],
    )


# -- labels ------------------------------------------------------------------------------


def label_observation(store: Store) -> tuple[int, int, int]:
    """(label events, newest event seq, images with a current label)."""
    row = store.one(
        "SELECT count(*), coalesce(max(seq), 0), "
        "(SELECT count(*) FROM current_labels) FROM label_events"
    )
    assert row is not None  # an aggregate always has a row
    return row


def new_label_count(store: Store, since_seq: int) -> tuple[int, int]:
    """(current labels newer than `since_seq`, newest label event seq)."""
    row = store.one(
        "SELECT (SELECT count(*) FROM current_labels WHERE seq > ?), "
        "coalesce((SELECT max(seq) FROM label_events), 0)",
        [since_seq],
    )
    assert row is not None
    return row


# -- image_predictions -------------------------------------------------------------------


def replace_image_predictions(store: Store, drop: str, version: str, rows: list[list]) -> None:
    """A drop's predictions by one model version, replaced whole: rows of (drop, SOP UID,
    frame, version, prob_biopsy, prob_mag, flag_biopsy, flag_mag)."""

    def write(c: duckdb.DuckDBPyConnection) -> None:
        c.execute(
            "DELETE FROM image_predictions WHERE drop_name = ? AND model_version = ?",
            [drop, version],
        )
        if rows:
            c.executemany(
                "INSERT INTO image_predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
                rows,
            )

    store.run(write)


def flagged_images(store: Store, version: str, limit: int) -> list[tuple]:
    """(SOP UID, frame, flag_biopsy, flag_mag, prob_biopsy, prob_mag) of the images the
    model flagged, most confident first."""
    return store.query(
        "SELECT DISTINCT sop_instance_uid, frame, flag_biopsy, flag_mag, prob_biopsy, "
        "prob_mag FROM image_predictions WHERE model_version = ? AND (flag_biopsy OR "
        "flag_mag) ORDER BY greatest(prob_biopsy, prob_mag) DESC, sop_instance_uid LIMIT ?",
        [version, limit],
    )


def predictions_with_patients(store: Store, version: str) -> list[tuple]:
    """(SOP UID, prob_biopsy, prob_mag, flag_biopsy, flag_mag, patient key, study UID) of
    every frame the model predicted."""
    return store.query(
        """
        SELECT p.sop_instance_uid, p.prob_biopsy, p.prob_mag, p.flag_biopsy, p.flag_mag,
               i.patient_key, i.study_instance_uid
        FROM image_predictions p
        JOIN indexed_frames i USING (sop_instance_uid, frame)
        WHERE p.model_version = ?
        """,
        [version],
    )


#: The current model's image rows, as `studies.write_study_csv` aggregates them.
STUDY_IMAGES_SQL = """
    SELECT i.study_instance_uid, p.prob_biopsy, p.prob_mag, p.flag_biopsy, p.flag_mag,
           i.header_mag_hint OR i.study_mag_hint AS header_mag_hint,
           i.header_marker_hint OR i.study_marker_hint AS header_marker_hint,
           p.model_version
    FROM image_predictions p
    JOIN dicom_index i USING (drop_name, sop_instance_uid, frame)
    WHERE p.model_version = ? AND i.status = 'ok'
"""


def write_study_predictions(store: Store, version: str, out: Path) -> tuple[int, tuple]:
    """The study CSV at `out` from `version`'s image predictions, and the same rows as the
    table `study_predictions`. Returns (studies, (with a biopsy tool, with a mag view,
    images))."""

    def write(c: duckdb.DuckDBPyConnection) -> tuple[int, tuple]:
        n = write_study_csv(c, STUDY_IMAGES_SQL, out, [version])
        c.execute(
            "CREATE OR REPLACE TABLE study_predictions AS SELECT * FROM read_csv(?, "
            "header=true, types={'study_id': 'VARCHAR'})",
            [str(out)],
        )
        flagged = c.execute(
            "SELECT sum(has_biopsy_tool), sum(has_mag_view), sum(image_count) "
            "FROM study_predictions"
        ).fetchone()
        return n, flagged

    return store.run(write)


# -- labeling_queue ----------------------------------------------------------------------


def unlabeled_pool(store: Store, version: str) -> list[tuple]:
    """(SOP UID, frame, study UID, patient key, manufacturer, prob_biopsy, prob_mag) of
    each indexed frame without a current label; the probabilities are `version`'s, or
    None where it has not predicted the frame."""
    return store.query(
        """
        SELECT i.sop_instance_uid, i.frame, i.study_instance_uid, i.patient_key,
               coalesce(i.manufacturer, ''), p.prob_biopsy, p.prob_mag
        FROM indexed_frames i
        LEFT JOIN current_labels l USING (sop_instance_uid, frame)
        LEFT JOIN image_predictions p
          ON p.sop_instance_uid = i.sop_instance_uid AND p.frame = i.frame
         AND p.model_version = ?
        WHERE l.sop_instance_uid IS NULL
        QUALIFY row_number() OVER (PARTITION BY i.sop_instance_uid, i.frame) = 1
        """,
        [version],
    )


def replace_queue(store: Store, rows: Sequence[Sequence]) -> None:
    """The labeling queue, replaced whole: rows of (SOP UID, frame, rank, score, reason,
    model version)."""

    def write(c: duckdb.DuckDBPyConnection) -> None:
        c.execute("DELETE FROM labeling_queue")
        if rows:
            c.executemany(
                "INSERT INTO labeling_queue VALUES (?, ?, ?, ?, ?, ?, current_timestamp)",
                [list(r) for r in rows],
            )

    store.run(write)


def queued_count(store: Store, version: str) -> int:
    """Images in the labeling queue that model `version` ranked."""
    row = store.one("SELECT count(*) FROM labeling_queue WHERE model_version = ?", [version])
    return row[0] if row else 0


# -- what the labeler holds in memory ----------------------------------------------------

INDEX_VERSION = "SELECT count(*), max(indexed_at) FROM dicom_index WHERE status = 'ok'"
CATALOG = (
    "SELECT sop_instance_uid, frame, study_instance_uid, patient_key, manufacturer, "
    "laterality, view_position, view_modifiers, mag_factor, header_mag_hint, "
    "header_marker_hint FROM dicom_index WHERE status = 'ok'"
)
QUEUE_VERSION = "SELECT count(*), max(created_at), max(model_version) FROM labeling_queue"
QUEUE_ORDER = "SELECT sop_instance_uid, frame FROM labeling_queue ORDER BY rank"
PREDICTIONS_VERSION = (
    "SELECT ?, count(*), max(predicted_at) FROM image_predictions WHERE model_version = ?"
)
PREDICTIONS = (
    "SELECT sop_instance_uid, frame, prob_biopsy, prob_mag, flag_biopsy, flag_mag "
    "FROM image_predictions WHERE model_version = ?"
)


def catalog_changes(store: Store, index_seen: tuple | None, queue_seen: tuple | None) -> tuple:
    """(index version, catalog rows or None, queue version, queue order or None): rows
    only where the version differs from the one seen (one connection, so they agree)."""

    def read(c: duckdb.DuckDBPyConnection) -> tuple:
        version = c.execute(INDEX_VERSION).fetchone()
        rows = c.execute(CATALOG).fetchall() if version != index_seen else None
        qversion = c.execute(QUEUE_VERSION).fetchone()
        queue = c.execute(QUEUE_ORDER).fetchall() if qversion != queue_seen else None
        return version, rows, qversion, queue

    return store.run(read, read_only=True)


def prediction_changes(store: Store, version: str, seen: tuple | None) -> tuple:
    """(key, `version`'s prediction rows or None when the key is the one `seen`): new
    drops get predicted after the current-model pointer moved, so the key counts them."""

    def read(c: duckdb.DuckDBPyConnection) -> tuple:
        key = c.execute(PREDICTIONS_VERSION, [version, version]).fetchone()
        if key == seen:
            return key, None
        return key, c.execute(PREDICTIONS, [version]).fetchall()

    return store.run(read, read_only=True)

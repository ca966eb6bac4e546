"""The study CSV: one row per StudyInstanceUID, flagged if any of its images is.

The first six columns are a contract other tools read, in this order:
``study_id,has_biopsy_tool,has_mag_view,max_prob_biopsy,max_prob_mag,image_count``;
more columns follow them. Flags are 1/0, probabilities have 4 decimals.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `mammo predict`'s decoding workers import this module; keep it light
    import duckdb

CONTRACT_COLUMNS = (
    "study_id",
    "has_biopsy_tool",
    "has_mag_view",
    "max_prob_biopsy",
    "max_prob_mag",
    "image_count",
)
EXTRA_COLUMNS = (
    "flagged_biopsy_images",
    "flagged_mag_images",
    "header_mag_hint",
    "header_marker_hint",
    "model_version",
)
COLUMNS = CONTRACT_COLUMNS + EXTRA_COLUMNS

#: SQL over an `images` relation with columns study_instance_uid, prob_biopsy, prob_mag,
#: flag_biopsy, flag_mag, header_mag_hint, header_marker_hint, model_version.
STUDY_SQL = """
SELECT study_instance_uid AS study_id,
       max(CAST(flag_biopsy AS INTEGER)) AS has_biopsy_tool,
       max(CAST(flag_mag AS INTEGER)) AS has_mag_view,
       round(max(prob_biopsy), 4) AS max_prob_biopsy,
       round(max(prob_mag), 4) AS max_prob_mag,
       count(*) AS image_count,
       CAST(sum(CAST(flag_biopsy AS INTEGER)) AS INTEGER) AS flagged_biopsy_images,
       CAST(sum(CAST(flag_mag AS INTEGER)) AS INTEGER) AS flagged_mag_images,
       coalesce(max(CAST(header_mag_hint AS INTEGER)), 0) AS header_mag_hint,
       coalesce(max(CAST(header_marker_hint AS INTEGER)), 0) AS header_marker_hint,
       string_agg(DISTINCT model_version, ';') AS model_version
FROM images
GROUP BY study_instance_uid
ORDER BY study_instance_uid
"""


def write_study_csv(
    conn: duckdb.DuckDBPyConnection, images_sql: str, out: Path, params: Sequence[object] = ()
) -> int:
    """Aggregate the image rows that `images_sql` selects (its `?` placeholders bound to
    `params`) into the study CSV at `out` (written to a temp file, then renamed).
    Returns the number of studies."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    query = f"WITH images AS ({images_sql}) {STUDY_SQL}"
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _studies AS {query}", list(params))
    conn.execute("COPY _studies TO ? (HEADER, DELIMITER ',')", [str(tmp)])
    tmp.replace(out)
    return conn.execute("SELECT count(*) FROM _studies").fetchone()[0]

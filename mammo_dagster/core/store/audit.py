"""Header vs image: what the DICOM header says about each flag, what the model sees, and
what the labelers said; where they disagree, and how often per vendor and model.

Also the header-only rule baseline ("the header says mag -> mag"), scored on the
labels beside the model.
"""

from __future__ import annotations

from pathlib import Path

from .. import metrics
from .db import Store

#: Per-image rows: header hints (image or study level), the model's flags, the label.
AUDIT_SQL = """
SELECT i.drop_name, i.sop_instance_uid, i.frame, i.study_instance_uid,
       coalesce(i.manufacturer, '') AS manufacturer, coalesce(i.model, '') AS model,
       coalesce(i.header_mag_hint OR i.study_mag_hint, false) AS header_mag,
       coalesce(i.header_marker_hint OR i.study_marker_hint, false) AS header_marker,
       p.flag_mag AS model_mag, p.flag_biopsy AS model_biopsy,
       p.prob_mag, p.prob_biopsy,
       l.has_mag_view AS label_mag, l.has_biopsy_tool AS label_biopsy,
       i.mag_factor, i.view_modifiers, i.paddle_description, i.series_description
FROM dicom_index i
LEFT JOIN image_predictions p
  ON p.drop_name = i.drop_name AND p.sop_instance_uid = i.sop_instance_uid
 AND p.frame = i.frame AND p.model_version = ?
LEFT JOIN current_labels l ON l.sop_instance_uid = i.sop_instance_uid AND l.frame = i.frame
WHERE i.status = 'ok'
"""

#: Per vendor and model: how often the header disagrees with the model and the labels.
RATES_SQL = """
SELECT manufacturer, model, count(*) AS images,
       round(avg(CAST(header_mag AS INTEGER)), 4) AS header_says_mag,
       round(avg(CAST(model_mag AS INTEGER)), 4) AS model_sees_mag,
       round(avg(CASE WHEN model_mag IS NULL THEN NULL
                      ELSE CAST(header_mag <> model_mag AS INTEGER) END), 4)
           AS mag_header_vs_model,
       round(avg(CASE WHEN label_mag IS NULL THEN NULL
                      ELSE CAST(header_mag <> label_mag AS INTEGER) END), 4)
           AS mag_header_vs_label,
       round(avg(CASE WHEN model_biopsy IS NULL THEN NULL
                      ELSE CAST(header_marker <> model_biopsy AS INTEGER) END), 4)
           AS marker_header_vs_model,
       round(avg(CASE WHEN label_biopsy IS NULL THEN NULL
                      ELSE CAST(header_marker <> label_biopsy AS INTEGER) END), 4)
           AS marker_header_vs_label
FROM audit GROUP BY ALL ORDER BY images DESC, manufacturer, model
"""


def write_audit(store: Store, model_version: str | None, out: Path) -> tuple[int, int, list]:
    """Per-image audit CSV at `out` (disagreements first). Returns (images, disagreements,
    rate rows per vendor/model)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")

    def work(c):
        c.execute(f"CREATE TEMP TABLE audit AS {AUDIT_SQL}", [model_version or ""])
        c.execute(
            "CREATE TEMP TABLE audit_out AS SELECT *, "
            "(model_mag IS NOT NULL AND header_mag <> model_mag) "
            "OR (label_mag IS NOT NULL AND header_mag <> label_mag) AS mag_disagrees, "
            "(model_biopsy IS NOT NULL AND header_marker <> model_biopsy) "
            "OR (label_biopsy IS NOT NULL AND header_marker <> label_biopsy) AS marker_disagrees "
            "FROM audit"
        )
        c.execute(
            "COPY (SELECT * FROM audit_out ORDER BY (mag_disagrees OR marker_disagrees) DESC, "
            "manufacturer, study_instance_uid, sop_instance_uid) TO ? (HEADER)",
            [str(tmp)],
        )
        n, bad = c.execute(
            "SELECT count(*), count(*) FILTER (WHERE mag_disagrees OR marker_disagrees) "
            "FROM audit_out"
        ).fetchone()
        cols = [d[0] for d in c.execute(RATES_SQL).description]
        rates = [dict(zip(cols, r, strict=True)) for r in c.execute(RATES_SQL).fetchall()]
        return n, bad, rates

    n, bad, rates = store.run(work, read_only=True)
    tmp.replace(out)
    return n, bad, rates


def header_baseline(store: Store, sops: set[str] | None = None) -> dict:
    """The header-only rule scored on current labels (optionally only these images):
    header says mag -> mag; a description naming a marker -> biopsy tool."""
    rows = store.query(
        "SELECT i.sop_instance_uid, coalesce(i.header_mag_hint OR i.study_mag_hint, false), "
        "coalesce(i.header_marker_hint OR i.study_marker_hint, false), "
        "l.has_mag_view, l.has_biopsy_tool FROM current_labels l "
        "JOIN indexed_frames i USING (sop_instance_uid, frame)"
    )
    if sops is not None:
        rows = [r for r in rows if r[0] in sops]
    out = {}
    for flag, k in (("mag", 1), ("biopsy", 2)):
        y = [bool(r[k + 2]) for r in rows]
        p = [1.0 if r[k] else 0.0 for r in rows]
        out[flag] = metrics.at_threshold(y, p, 0.5) | {"n": len(rows), "positives": sum(y)}
    return out

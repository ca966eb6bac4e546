"""How far a model's predictions cover each indexed drop (what the new-model sensor reads)."""

from __future__ import annotations

from dataclasses import dataclass

from .db import Store

COVERAGE_SQL = """
SELECT i.drop_name,
       coalesce(any_value(d.fingerprint), '') AS fingerprint,
       count(*) FILTER (WHERE i.status = 'ok') AS frames,
       count(p.sop_instance_uid) FILTER (WHERE i.status = 'ok') AS predicted,
       count(*) FILTER (WHERE i.status = 'duplicate') AS duplicates,
       count(*) FILTER (WHERE i.status = 'error') AS errors
FROM dicom_index i
LEFT JOIN drops d USING (drop_name)
LEFT JOIN image_predictions p
  ON p.drop_name = i.drop_name AND p.sop_instance_uid = i.sop_instance_uid
 AND p.frame = i.frame AND p.model_version = ?
GROUP BY i.drop_name
ORDER BY i.drop_name
"""


@dataclass(frozen=True)
class DropCoverage:
    """One indexed drop against one model version."""

    drop_name: str
    fingerprint: str  # of the drop state last indexed ('' if unknown)
    frames: int  # new decodable frames (status ok)
    predicted: int  # of those, with a prediction by the model
    duplicates: int
    errors: int

    @property
    def unpredicted(self) -> int:
        return self.frames - self.predicted

    @property
    def nothing_to_predict(self) -> bool:
        """Only duplicates and bad files: no frame a model could score."""
        return self.frames == 0

    def describe(self) -> str:
        parts = [f"{self.duplicates} duplicates" if self.duplicates else "",
                 f"{self.errors} bad files" if self.errors else ""]  # fmt: skip
        return f"{self.drop_name} ({', '.join(p for p in parts if p) or 'empty'})"


def prediction_coverage(store: Store, model_version: str) -> list[DropCoverage]:
    """Every indexed drop with its frame counts and how many `model_version` predicted."""
    rows = store.query(COVERAGE_SQL, [model_version])
    return [DropCoverage(*r) for r in rows]

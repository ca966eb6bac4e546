"""The training set: a snapshot of current labels joined with thumbnails, split by patient.

The split comes from :mod:`splits` (by patient, salted hash, stable as the
archive grows); hold-out examples are kept for evaluation and never trained on.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..files import atomic_write
from ..imaging.batch import thumbnail_name
from ..store.db import Store
from .splits import split_of

#: Fewer labeled examples than this for a flag (train split) earns a warning.
MIN_PER_CLASS = 20


@dataclass
class Example:
    sop_instance_uid: str
    frame: int
    thumbnail: str
    biopsy: bool
    mag: bool
    split: str  # train | valid | holdout
    patient_key: str
    study_instance_uid: str
    manufacturer: str


@dataclass
class Snapshot:
    examples: list[Example]
    label_seq: int  # the newest label event included
    label_count: int
    missing_thumbnails: int

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def counts(self) -> dict:
        out: dict = {}
        for split in ("train", "valid", "holdout"):
            ex = self.split(split)
            out[split] = {
                "images": len(ex),
                "biopsy": sum(e.biopsy for e in ex),
                "mag": sum(e.mag for e in ex),
                "both": sum(e.biopsy and e.mag for e in ex),
                "neither": sum(not e.biopsy and not e.mag for e in ex),
                "patients": len({e.patient_key for e in ex}),
            }
        return out

    def vendors(self) -> dict[str, int]:
        return dict(Counter(e.manufacturer for e in self.examples).most_common())

    def warnings(self) -> list[str]:
        train = self.split("train")
        out = []
        for flag in ("biopsy", "mag"):
            pos = sum(getattr(e, flag) for e in train)
            if pos < MIN_PER_CLASS or len(train) - pos < MIN_PER_CLASS:
                out.append(
                    f"{flag}: {pos} positive / {len(train) - pos} negative training images "
                    f"(fewer than {MIN_PER_CLASS} of one kind: the model will be weak)"
                )
        return out


def build_snapshot(store: Store, thumbnails: Path) -> Snapshot:
    """Current labels of indexed images that have a thumbnail, each with its split."""

    def read(conn):
        rows = conn.execute(
            """
            SELECT l.sop_instance_uid, l.frame, l.has_biopsy_tool, l.has_mag_view,
                   i.patient_key, i.study_instance_uid, i.manufacturer
            FROM current_labels l
            JOIN indexed_frames i USING (sop_instance_uid, frame)
            ORDER BY l.sop_instance_uid, l.frame
            """
        ).fetchall()
        seq = conn.execute("SELECT coalesce(max(seq), 0) FROM label_events").fetchone()[0]
        count = conn.execute("SELECT count(*) FROM current_labels").fetchone()[0]
        return rows, seq, count

    rows, seq, count = store.run(read, read_only=True)
    examples, missing = [], 0
    for sop, frame, biopsy, mag, patient, study, vendor in rows:
        thumb = thumbnails / thumbnail_name(sop, frame)
        if not thumb.is_file():
            missing += 1
            continue
        examples.append(
            Example(
                sop,
                frame,
                str(thumb),
                bool(biopsy),
                bool(mag),
                split_of(patient, study),
                patient or f"study:{study}",
                study or "",
                vendor or "",
            )
        )
    return Snapshot(examples, int(seq), int(count), missing)


def save_snapshot(snapshot: Snapshot, path: Path) -> Path:
    with atomic_write(path, "w", newline="") as f:
        f.write(
            f"# label_seq={snapshot.label_seq} label_count={snapshot.label_count} "
            f"missing_thumbnails={snapshot.missing_thumbnails}\n"
        )
        w = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Example)])
        w.writeheader()
        w.writerows(asdict(e) for e in snapshot.examples)
    return path


def load_snapshot(path: Path) -> Snapshot:
    with path.open(newline="") as f:
        meta = dict(kv.split("=") for kv in f.readline().lstrip("# ").split())
        rows = list(csv.DictReader(f))
    examples = [
        Example(
            r["sop_instance_uid"],
            int(r["frame"]),
            r["thumbnail"],
            r["biopsy"] == "True",
            r["mag"] == "True",
            r["split"],
            r["patient_key"],
            r["study_instance_uid"],
            r["manufacturer"],
        )
        for r in rows
    ]
    return Snapshot(
        examples, int(meta["label_seq"]), int(meta["label_count"]), int(meta["missing_thumbnails"])
    )

"""Flags back into the PACS as DICOM, with `highdicom`: for each flagged study a Key
Object Selection document and a Comprehensive SR.

- The **Key Object Selection** (KOS) references the flagged images under the document
  title (113000, DCM, "Of Interest"), never a rejection title (113001 / 113037 / 113038
  / 113039: IOCM-aware archives hide or delete what those reference), with a key object
  description naming the flag(s) and the model version.
- The **Comprehensive SR** carries, per image, the probability of each flag and the
  decision, with the thresholds and the model version; a newer model's SR names the
  earlier ones in its Predecessor Documents Sequence (it supersedes, never duplicates).

UIDs are derived from study + model version (+ kind): building twice gives the same
objects, STOW-RS stores them once, and the store's ``pacs_sent`` ledger makes a rerun
send nothing new. Only studies whose images were all classified by the current model
(no image without a prediction, no instance the pull could not fetch) get anything.
Patient and study attributes are copied from the source images only (as the standard
requires), and never logged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from ..files import atomic_write
from ..home import Home
from ..model.modelstore import ModelCard, model_dir, read_current
from ..store.db import Store
from .documents import Image, StudyFlags, build_kos, build_sr, object_uids, validate
from .source import PacsError, PacsSource, Retry, describe, redact, with_retries

log = logging.getLogger("mammo.pacs")

STUDY_IMAGES_SQL = """
SELECT f.study_instance_uid, f.drop_name, f.path, f.sop_instance_uid,
       max(p.prob_biopsy), max(p.prob_mag), bool_or(p.flag_biopsy), bool_or(p.flag_mag),
       count(*) - count(p.prob_biopsy) AS unclassified_frames
FROM indexed_frames f
LEFT JOIN image_predictions p
  ON p.sop_instance_uid = f.sop_instance_uid AND p.frame = f.frame AND p.model_version = ?
WHERE f.study_instance_uid IS NOT NULL
GROUP BY ALL
ORDER BY 1, 4
"""


def study_flags(store: Store, version: str) -> list[StudyFlags]:
    """Every indexed study with its images and `version`'s predictions of them."""
    rows = store.query(STUDY_IMAGES_SQL, [version])
    unfetched = dict(
        store.query(
            "SELECT study_instance_uid, count(*) FROM pacs_instances WHERE status = 'error' "
            "GROUP BY ALL"
        )
    )
    studies: dict[str, StudyFlags] = {}
    for study, drop, path, sop, pb, pm, fb, fm, missing in rows:
        s = studies.setdefault(study, StudyFlags(study, [], unfetched.get(study, 0)))
        if missing:  # a frame without a prediction: the image is not classified
            pb = pm = fb = fm = None
        s.images.append(Image(drop, path, sop, pb, pm, fb, fm))
    return list(studies.values())


# -- sending ----------------------------------------------------------------------------------


@dataclass
class PushReport:
    destination: str
    model_version: str
    sent: int = 0  # studies whose documents were sent (or written) now
    objects: int = 0  # documents sent (or written) now
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # reason -> n
    failed: int = 0  # studies whose documents could not be built or sent
    errors: list[str] = field(default_factory=list)  # one line each, UIDs only

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _headers(home: Home, images: list[Image]) -> dict[str, Dataset]:
    return {
        i.sop: pydicom.dcmread(home.drop(i.drop) / i.path, stop_before_pixels=True) for i in images
    }


def _sent(store: Store, destination: str) -> dict[str, tuple]:
    rows = store.query(
        "SELECT sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, "
        "model_version, kind FROM pacs_sent WHERE destination = ?",
        [destination],
    )
    return {r[0]: r[1:] for r in rows}


def _previous_srs(sent: dict[str, tuple], study: str, version: str) -> list[Dataset]:
    out = []
    for sop, (st, series, cls, v, kind) in sorted(sent.items()):
        if st == study and kind == "sr" and v != version:
            ds = Dataset()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = st, series
            ds.SOPClassUID, ds.SOPInstanceUID = cls, sop
            out.append(ds)
    return out


def _record(store: Store, destination: str, version: str, docs: list[tuple[str, Dataset]]):
    rows = [
        [destination, str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.SeriesInstanceUID),
         str(ds.StudyInstanceUID), version, kind]
        for kind, ds in docs
    ]  # fmt: skip
    store.run(
        lambda c: c.executemany(
            "INSERT OR REPLACE INTO pacs_sent VALUES (?, ?, ?, ?, ?, ?, ?, current_timestamp)",
            rows,
        )
    )


def _stow(client, study: str, docs: list[Dataset], source: PacsSource) -> None:
    try:
        answer = with_retries(
            lambda: client.store_instances(datasets=docs, study_instance_uid=study), Retry()
        )
    except Exception as e:
        raise describe(e, "storing documents (STOW-RS)", source) from e
    failed = answer.get("FailedSOPSequence") if answer is not None else None
    if failed:
        reasons = {str(item.get("FailureReason", "?")) for item in failed}
        raise PacsError(f"STOW-RS refused {len(failed)} document(s): reason {sorted(reasons)}")


def push(
    home: Home,
    *,
    source: PacsSource | None = None,
    folder: Path | None = None,
    store: Store | None = None,
    progress: Callable[[int], object] | None = None,
) -> PushReport:
    """KOS + SR for the current model's flagged, fully classified studies: sent with
    STOW-RS to `source`, or written to `folder` (``<study>/<kind>-<version>.dcm``; files
    already there are not rewritten). Objects sent before to the same destination are
    not sent again."""
    if (source is None) == (folder is None):
        raise ValueError("push to a DICOMweb source or to a folder, one of them")
    if store is None:
        store = Store(home.db)
        store.migrate()
    current = read_current(home.models)
    if current is None:
        raise PacsError("no current model: train one (or run the pipeline) first")
    version = current.version
    thresholds = ModelCard.read(model_dir(home.models, version)).thresholds
    destination = redact(source.url) if source else str(folder.resolve())
    report = PushReport(destination, version)
    sent = _sent(store, destination) if source else {}
    client = source.client() if source else None
    for study in study_flags(store, version):
        if progress:
            progress(1)
        if not study.fully_classified:
            report.skipped["not fully classified"] += 1
            continue
        if not study.flagged:
            report.skipped["not flagged"] += 1
            continue
        uids = object_uids(study.uid, version)
        if folder is not None:
            paths = {k: folder / study.uid / f"{k}-{version}.dcm" for k in ("kos", "sr")}
            if all(p.exists() for p in paths.values()):
                report.skipped["already written"] += 1
                continue
        elif uids["kos"] in sent and uids["sr"] in sent:
            report.skipped["already sent"] += 1
            continue
        try:
            headers = _headers(home, study.images)
            source_ds = headers[study.images[0].sop]
            previous = _previous_srs(sent, study.uid, version)
            docs = [
                ("kos", build_kos(study, headers, version)),
                ("sr", build_sr(study, headers, version, thresholds, previous)),
            ]
            docs = [(kind, validate(ds, study, source_ds)) for kind, ds in docs]
        except (OSError, ValueError, KeyError, AttributeError) as e:
            report.failed += 1
            report.errors.append(f"study {study.uid}: cannot build: {type(e).__name__}: {e}")
            continue
        if folder is not None:
            for kind, ds in docs:
                with atomic_write(paths[kind], "wb") as f:
                    ds.save_as(f, enforce_file_format=True)
        else:
            try:
                _stow(client, study.uid, [ds for _, ds in docs], source)
            except PacsError as e:
                report.failed += 1
                report.errors.append(f"study {study.uid}: {e}")
                if "refused the credentials" in str(e) or "cannot reach" in str(e):
                    raise
                continue
            _record(store, destination, version, docs)
        report.sent += 1
        report.objects += len(docs)
    for line in report.errors:
        log.warning("%s", line)
    return report

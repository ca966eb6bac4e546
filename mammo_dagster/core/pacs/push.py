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

import io
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from ..files import atomic_write
from ..home import Home
from ..imaging.dicom_write import stable_uid
from ..model.modelstore import ModelCard, model_dir, read_current
from ..store.db import Store
from .pull import PacsError, PacsSource, Retry, describe, redact, with_retries

log = logging.getLogger("mammo.pacs")

OF_INTEREST = ("113000", "DCM", "Of Interest")
#: Key object titles that IOCM-aware archives act on (hide or delete the images): never.
REJECTION_TITLES = frozenset({"113001", "113037", "113038", "113039"})
#: Private coding scheme for what DICOM has no code for; code values fit SH (16 chars):
#: REPORT, IMAGE-RESULT, THR-<FLAG>, P-<FLAG>, FLAG-<FLAG> (FLAG: BIOPSY | MAG).
SCHEME = "99MAMMODAGSTER"
FLAG_NAMES = {"biopsy": "biopsy tool/marker", "mag": "magnification view"}
MANUFACTURER = "mammo-dagster"
KOS_SERIES_NUMBER, SR_SERIES_NUMBER = 9901, 9902
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
COMPREHENSIVE_SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


@dataclass
class Image:
    drop: str
    path: str
    sop: str
    prob_biopsy: float | None
    prob_mag: float | None
    flag_biopsy: bool | None
    flag_mag: bool | None

    @property
    def classified(self) -> bool:
        return self.prob_biopsy is not None

    @property
    def flags(self) -> list[str]:
        return [f for f, on in (("biopsy", self.flag_biopsy), ("mag", self.flag_mag)) if on]


@dataclass
class StudyFlags:
    uid: str
    images: list[Image]
    unfetched: int = 0  # instances of the study a pull could not fetch

    @property
    def fully_classified(self) -> bool:
        return self.unfetched == 0 and all(i.classified for i in self.images)

    @property
    def flagged(self) -> list[Image]:
        return [i for i in self.images if i.flags]


#: Each SOP instance once (its first indexed file), with the version's predictions
#: (max over frames); NULL probabilities where the model has not classified it.
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


# -- building the documents ---------------------------------------------------------------


def object_uids(study: str, version: str) -> dict[str, str]:
    """The deterministic UIDs of a study's documents: the series are one per kind for all
    versions, the instances one per (kind, version)."""
    return {
        "kos_series": stable_uid(MANUFACTURER, "kos-series", study),
        "sr_series": stable_uid(MANUFACTURER, "sr-series", study),
        "kos": stable_uid(MANUFACTURER, "kos", study, version),
        "sr": stable_uid(MANUFACTURER, "sr", study, version),
    }


def _instance_number(version: str) -> int:
    digits = "".join(ch for ch in version if ch.isdigit())
    return int(digits[-8:]) if digits else 1


def _code(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def _device(version: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=stable_uid(MANUFACTURER, "device"),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=version,
        ),
    )


def description(flagged: list[Image], version: str) -> str:
    """The key object description: which flags, on how many images, by which model."""
    counts = defaultdict(int)
    for image in flagged:
        for f in image.flags:
            counts[f] += 1
    parts = [f"{FLAG_NAMES[f]} ({n} image{'s' if n != 1 else ''})" for f, n in counts.items()]
    return f"{MANUFACTURER} {version} flagged: {'; '.join(parts)}"[:1024]


def build_kos(study: StudyFlags, headers: dict[str, Dataset], version: str) -> Dataset:
    """The Key Object Selection ("Of Interest") referencing the flagged images."""
    import highdicom as hd
    from highdicom.sr import CodedConcept

    uids = object_uids(study.uid, version)
    evidence = [headers[i.sop] for i in study.flagged]
    content = hd.ko.KeyObjectSelection(
        document_title=CodedConcept(*OF_INTEREST),
        referenced_objects=evidence,
        observer_device_context=_device(version),
        description=description(study.flagged, version),
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=evidence,
        content=content,
        series_instance_uid=uids["kos_series"],
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=uids["kos"],
        instance_number=_instance_number(version),
        manufacturer=MANUFACTURER,
        series_description=f"{MANUFACTURER} key images",
    )


def build_sr(
    study: StudyFlags,
    headers: dict[str, Dataset],
    version: str,
    thresholds: dict[str, float],
    previous: list[Dataset] | None = None,
) -> Dataset:
    """The Comprehensive SR: per image the probabilities and decisions, the thresholds
    and the model version; `previous` versions' SRs as predecessors."""
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    rel = hd.sr.RelationshipTypeValues.CONTAINS
    unit = CodedConcept("1", "UCUM", "no units")
    yes, no = CodedConcept("373066001", "SCT", "Yes"), CodedConcept("373067005", "SCT", "No")
    items = [
        hd.sr.TextContentItem(codes.DCM.AlgorithmName, MANUFACTURER, relationship_type=rel),
        hd.sr.TextContentItem(codes.DCM.AlgorithmVersion, version, relationship_type=rel),
    ]
    for flag, name in FLAG_NAMES.items():
        items.append(
            hd.sr.NumContentItem(
                _code(f"THR-{flag.upper()}", f"Decision threshold, {name}"),
                round(float(thresholds[flag]), 6), unit, relationship_type=rel,
            )
        )  # fmt: skip
    for image in study.images:
        ds = headers[image.sop]
        container = hd.sr.ContainerContentItem(
            _code("IMAGE-RESULT", "Image result"), relationship_type=rel
        )
        container.ContentSequence = hd.sr.ContentSequence([
            hd.sr.ImageContentItem(
                codes.SCT.Source, ds.SOPClassUID, ds.SOPInstanceUID, relationship_type=rel
            ),
        ])  # fmt: skip
        for flag, name in FLAG_NAMES.items():
            prob = image.prob_biopsy if flag == "biopsy" else image.prob_mag
            container.ContentSequence.append(
                hd.sr.NumContentItem(
                    _code(f"P-{flag.upper()}", f"Probability of {name}"),
                    round(float(prob), 6), unit, relationship_type=rel,
                )
            )  # fmt: skip
            container.ContentSequence.append(
                hd.sr.CodeContentItem(
                    _code(f"FLAG-{flag.upper()}", f"{name.capitalize()} flagged"),
                    yes if flag in image.flags else no, relationship_type=rel,
                )
            )  # fmt: skip
        items.append(container)
    root = hd.sr.ContainerContentItem(
        _code("REPORT", f"{MANUFACTURER} image flags"), template_id=None
    )
    root.ContentSequence = hd.sr.ContentSequence(items)
    uids = object_uids(study.uid, version)
    return hd.sr.ComprehensiveSR(
        evidence=[headers[i.sop] for i in study.images],
        content=root,
        series_instance_uid=uids["sr_series"],
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids["sr"],
        instance_number=_instance_number(version),
        manufacturer=MANUFACTURER,
        is_complete=True,
        previous_versions=previous or None,
        series_description=f"{MANUFACTURER} flags report",
    )


def validate(ds: Dataset, study: StudyFlags, source: Dataset) -> Dataset:
    """Round-trip `ds` through DICOM bytes and check what a receiver relies on: the
    file meta, the study and patient of the source images, the document's class and
    title, and (KOS) that it references exactly the flagged images. Returns the dataset
    as read back; raises ValueError on any mismatch."""
    import highdicom as hd

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    problems = []
    for kw in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber"):
        if str(back.get(kw, "")) != str(source.get(kw, "")):
            problems.append(f"{kw} differs from the source images")
    if back.file_meta.MediaStorageSOPInstanceUID != back.SOPInstanceUID:
        problems.append("file meta names another instance")
    title = back.ConceptNameCodeSequence[0].CodeValue
    if back.SOPClassUID == KOS_CLASS:
        hd.ko.KeyObjectSelectionDocument.from_dataset(back)  # raises on a malformed tree
        if title != OF_INTEREST[0] or title in REJECTION_TITLES:
            problems.append(f"document title {title} is not 'Of Interest'")
        if referenced_sops(back) != {i.sop for i in study.flagged}:
            problems.append("references other images than the flagged ones")
    elif back.SOPClassUID == COMPREHENSIVE_SR_CLASS:
        hd.sr.ComprehensiveSR.from_dataset(back)
        if referenced_sops(back) != {i.sop for i in study.images}:
            problems.append("does not reference every image of the study")
    else:
        problems.append(f"unexpected SOP class {back.SOPClassUID}")
    if problems:
        raise ValueError("; ".join(problems))
    return back


def referenced_sops(ds: Dataset) -> set[str]:
    """SOP Instance UIDs referenced anywhere in an SR content tree."""
    out: set[str] = set()

    def walk(items) -> None:
        for item in items:
            for ref in item.get("ReferencedSOPSequence", []):
                out.add(str(ref.ReferencedSOPInstanceUID))
            walk(item.get("ContentSequence", []))

    walk(ds.get("ContentSequence", []))
    return out


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

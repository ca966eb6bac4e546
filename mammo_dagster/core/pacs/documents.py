"""The DICOM objects that carry the flags: a Key Object Selection document titled 113000
"Of Interest" (never a rejection title) that references the flagged images, and a
Comprehensive SR with each image's probabilities, thresholds and the model version;
deterministic UIDs from study + model version, and a check of what was built."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from ..imaging.dicom_write import stable_uid

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

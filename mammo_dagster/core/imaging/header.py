"""What a DICOM header says about one image: `HeaderFacts` (UIDs, vendor, view,
geometry, VOI, header hints of magnification and markers) and the salted patient key;
never the patient's name or ID. Reads no pixel data."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

_MAG_WORDS = re.compile(r"\bMAG(?:N|NIF\w*|\b|\.|\d)|MAGNIF|VERGR", re.I)
_MARKER_WORDS = re.compile(
    r"CLIP|MARKER|BIOPS|\bBX\b|POST[ -]?BX|NEEDLE|\bWIRE|HOOK|LOCALI[SZ]|SPECIMEN|STEREO|\bVAB\b",
    re.I,
)
#: Contact views sit at 1.0-1.15; geometric magnification views at 1.5-2.0.
MAG_FACTOR_HINT = 1.3


@dataclass(frozen=True)
class HeaderFacts:
    """What the header says about one image; never the patient's name or ID."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    patient_key: str | None
    modality: str
    manufacturer: str
    model: str
    laterality: str
    view_position: str
    view_code: str
    view_modifiers: tuple[str, ...]
    transfer_syntax_uid: str
    transfer_syntax: str
    rows: int
    columns: int
    number_of_frames: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    presentation_intent_type: str
    voi_function: str
    window_count: int
    has_voi_lut_sequence: bool
    pixel_spacing_mm: float | None
    mag_factor: float | None
    paddle_description: str
    series_description: str
    study_description: str
    header_mag_hint: bool
    header_marker_hint: bool
    study_mag_hint: bool
    study_marker_hint: bool
    hint_reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


def text(ds: Dataset, keyword: str) -> str:
    """An attribute as one line of text (multi-values joined by a backslash)."""
    value = ds.get(keyword, "")
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    return " ".join(str(value or "").split())


def _float(value: Any) -> float | None:
    try:
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def patient_key(patient_id: str | None, salt: str, issuer: str | None = None) -> str | None:
    """A salted, irreversible key for a PatientID (16 hex chars), None when absent.

    The salt is the data folder's (`Home.patient_salt`). The Issuer of Patient ID takes
    part, so equal IDs from two sites don't collide.
    """
    if not patient_id:
        return None
    text = f"{salt}|{patient_id}" + (f"|{issuer}" if issuer else "")
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _codes(seq: Any) -> list[Dataset]:
    return list(seq) if seq else []


def _view(ds: Dataset) -> tuple[str, tuple[str, ...]]:
    view_items = _codes(ds.get("ViewCodeSequence"))
    view_code = view_items[0].get("CodeMeaning", "") if view_items else ""
    modifiers: list[Dataset] = []
    for item in view_items:
        modifiers += _codes(item.get("ViewModifierCodeSequence"))
    modifiers += _codes(ds.get("ViewModifierCodeSequence"))  # some writers put it top level
    names = tuple(str(m.get("CodeMeaning") or m.get("CodeValue") or "") for m in modifiers)
    return str(view_code), names


def _mentions(ds: Dataset, keywords: tuple[str, ...], words: re.Pattern) -> list[str]:
    return [f"{k}: {t}" for k in keywords if (t := text(ds, k)) and words.search(t)]


_IMAGE_TEXT = ("SeriesDescription", "AcquisitionDeviceProcessingDescription")
_STUDY_TEXT = ("StudyDescription", "RequestedProcedureDescription")


def _hints(
    ds: Dataset, modifiers: tuple[str, ...], mag_factor: float | None
) -> tuple[bool, bool, bool, bool, tuple[str, ...]]:
    """(image mag, image marker, study mag, study marker, reasons) claimed by the header.

    Image-level claims come from this image's own attributes; a study description
    ("DIAG LEFT W MAG", "STEREO BX") speaks for the study, not for every image in it.
    """
    mag: list[str] = []
    if any("magnif" in m.lower() for m in modifiers):
        mag.append("view modifier: magnification")
    if mag_factor is not None and mag_factor >= MAG_FACTOR_HINT:
        mag.append(f"magnification factor {mag_factor:g}")
    paddle = text(ds, "PaddleDescription")
    if paddle and _MAG_WORDS.search(paddle):
        mag.append(f"paddle: {paddle}")
    mag += _mentions(ds, _IMAGE_TEXT, _MAG_WORDS)
    marker = _mentions(ds, _IMAGE_TEXT, _MARKER_WORDS)
    study_mag = _mentions(ds, _STUDY_TEXT, _MAG_WORDS)
    study_marker = _mentions(ds, _STUDY_TEXT, _MARKER_WORDS)
    reasons = tuple(dict.fromkeys(mag + marker + study_mag + study_marker))
    return bool(mag), bool(marker), bool(study_mag), bool(study_marker), reasons


def header_facts(
    ds: Dataset, *, salt: str | None = None, warnings: tuple[str, ...] = ()
) -> HeaderFacts:
    """Header facts of a dataset (reads no pixel data); the patient key only with the
    data folder's `salt` (None: no key)."""
    meta = getattr(ds, "file_meta", None)
    ts = (
        UID(str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
        if meta
        else UID("1.2.840.10008.1.2")
    )
    view_code, modifiers = _view(ds)
    mag_factor = _float(ds.get("EstimatedRadiographicMagnificationFactor"))
    mag_hint, marker_hint, study_mag, study_marker, reasons = _hints(ds, modifiers, mag_factor)
    windows = ds.get("WindowWidth")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return HeaderFacts(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        patient_key=None
        if salt is None
        else patient_key(str(ds.get("PatientID", "") or ""), salt, text(ds, "IssuerOfPatientID")),
        modality=text(ds, "Modality"),
        manufacturer=text(ds, "Manufacturer"),
        model=text(ds, "ManufacturerModelName"),
        laterality=text(ds, "ImageLaterality") or text(ds, "Laterality"),
        view_position=text(ds, "ViewPosition"),
        view_code=view_code,
        view_modifiers=modifiers,
        transfer_syntax_uid=str(ts),
        transfer_syntax=ts.name if ts.is_valid else str(ts),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        number_of_frames=int(ds.NumberOfFrames if "NumberOfFrames" in ds else 1),
        bits_allocated=int(ds.get("BitsAllocated", 0) or 0),
        bits_stored=int(ds.get("BitsStored", 0) or 0),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        photometric=text(ds, "PhotometricInterpretation"),
        presentation_intent_type=text(ds, "PresentationIntentType"),
        voi_function=text(ds, "VOILUTFunction") or "LINEAR",
        window_count=len(windows)
        if isinstance(windows, pydicom.multival.MultiValue)
        else int(windows is not None),
        has_voi_lut_sequence=bool(ds.get("VOILUTSequence")),
        pixel_spacing_mm=_float(spacing),
        mag_factor=mag_factor,
        paddle_description=text(ds, "PaddleDescription"),
        series_description=text(ds, "SeriesDescription"),
        study_description=text(ds, "StudyDescription"),
        header_mag_hint=mag_hint,
        header_marker_hint=marker_hint,
        study_mag_hint=study_mag,
        study_marker_hint=study_marker,
        hint_reasons=reasons,
        warnings=warnings,
    )

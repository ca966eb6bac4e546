"""Open mammography DICOM files: typed failures and header facts, no pixel decoding."""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID


class Failure(StrEnum):
    """Why a file gave no image. Values are stable: they are stored in tables."""

    EMPTY_FILE = "empty_file"
    UNREADABLE = "unreadable"
    NOT_DICOM = "not_dicom"
    DICOMDIR = "dicomdir"
    TRUNCATED = "truncated"
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_SOP_CLASS = "unsupported_sop_class"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    UNSUPPORTED_PIXEL_FORMAT = "unsupported_pixel_format"
    ZERO_SIZE_IMAGE = "zero_size_image"
    INVALID_HEADER = "invalid_header"
    FRAME_OUT_OF_RANGE = "frame_out_of_range"
    DECODE_ERROR = "decode_error"


class DicomError(Exception):
    """A file that yields no image, with a typed kind and a one-line reason."""

    def __init__(self, kind: Failure, reason: str) -> None:
        self.kind = kind
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{kind.value}: {self.reason}")


TOMOSYNTHESIS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.13.1.3"
DEFLATED = "1.2.840.10008.1.2.1.99"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image - For Processing
}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: Transfer syntaxes we decode, with the pydicom plugin to use (fastest correct one
#: measured here; "" = pydicom's own). Passing it explicitly stops pydicom trying gdcm first.
DECODERS: dict[str, str] = {
    "1.2.840.10008.1.2": "",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99": "",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2": "",  # Explicit VR Big Endian (retired, still found)
    "1.2.840.10008.1.2.5": "pylibjpeg",  # RLE Lossless (pylibjpeg-rle)
    "1.2.840.10008.1.2.4.90": "pylibjpeg",  # JPEG 2000 Lossless (openjpeg)
    "1.2.840.10008.1.2.4.91": "pylibjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg",  # HTJ2K
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS Lossless (CharLS)
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.70": "gdcm",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57": "gdcm",  # JPEG Lossless
    "1.2.840.10008.1.2.4.50": "gdcm",  # JPEG Baseline 8-bit
    "1.2.840.10008.1.2.4.51": "gdcm",  # JPEG Extended 12-bit
}
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
J2K_SYNTAXES = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}

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


@dataclass
class DicomFile:
    """An opened file: the dataset (pixel data deferred) and where its pixels are."""

    path: Path
    ds: Dataset
    facts: HeaderFacts
    file_size: int

    @property
    def transfer_syntax(self) -> str:
        return self.facts.transfer_syntax_uid


def _text(ds: Dataset, keyword: str) -> str:
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
    return [f"{k}: {t}" for k in keywords if (t := _text(ds, k)) and words.search(t)]


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
    paddle = _text(ds, "PaddleDescription")
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
        else patient_key(str(ds.get("PatientID", "") or ""), salt, _text(ds, "IssuerOfPatientID")),
        modality=_text(ds, "Modality"),
        manufacturer=_text(ds, "Manufacturer"),
        model=_text(ds, "ManufacturerModelName"),
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        view_position=_text(ds, "ViewPosition"),
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
        photometric=_text(ds, "PhotometricInterpretation"),
        presentation_intent_type=_text(ds, "PresentationIntentType"),
        voi_function=_text(ds, "VOILUTFunction") or "LINEAR",
        window_count=len(windows)
        if isinstance(windows, pydicom.multival.MultiValue)
        else int(windows is not None),
        has_voi_lut_sequence=bool(ds.get("VOILUTSequence")),
        pixel_spacing_mm=_float(spacing),
        mag_factor=mag_factor,
        paddle_description=_text(ds, "PaddleDescription"),
        series_description=_text(ds, "SeriesDescription"),
        study_description=_text(ds, "StudyDescription"),
        header_mag_hint=mag_hint,
        header_marker_hint=marker_hint,
        study_mag_hint=study_mag,
        study_marker_hint=study_marker,
        hint_reasons=reasons,
        warnings=warnings,
    )


def _sniff(head: bytes) -> str:
    """'part10', 'raw' (a dataset without preamble/meta) or 'unknown'."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    if head[:4] == b"DICM":
        return "raw"
    if len(head) >= 8:
        group, elem = struct.unpack("<HH", head[:4])
        if group in (0x0002, 0x0008) and elem < 0x0100:
            return "raw"
    return "unknown"


def open_dicom(path: str | Path, *, pixels: bool = True, salt: str | None = None) -> DicomFile:
    """Open and validate one file, raising :class:`DicomError` for anything unusable.

    With ``pixels=False`` only the header is read (fast, for indexing). With
    ``pixels=True`` the pixel data is located (not decoded) and checked for
    truncation, so that decoding can only fail inside the codec. The facts carry a
    patient key only when given the data folder's `salt`.
    """
    path = Path(path)
    try:
        if not path.is_file():
            what = (
                "no such file"
                if not path.exists()
                else "it is a folder"
                if path.is_dir()
                else "not a regular file"
            )
            raise DicomError(Failure.UNREADABLE, f"cannot read file: {what}")
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(2048)
    except OSError as e:
        raise DicomError(Failure.UNREADABLE, f"cannot read file: {e.strerror or e}") from e
    if size == 0:
        raise DicomError(Failure.EMPTY_FILE, "file is empty (0 bytes)")
    kind = _sniff(head)
    if kind == "unknown":
        raise DicomError(Failure.NOT_DICOM, "no DICOM preamble ('DICM') and no DICOM tags at start")
    warnings: tuple[str, ...] = ()
    if kind == "raw":
        warnings = ("no DICOM preamble/file meta: read as a bare dataset",)
    # A deflated dataset is inflated in memory: file offsets mean nothing, defer nothing.
    deflated = DEFLATED.encode() in head
    try:
        ds = pydicom.dcmread(
            path,
            force=kind == "raw",
            stop_before_pixels=not pixels,
            defer_size="64 KB" if pixels and not deflated else None,
        )
    except InvalidDicomError as e:
        raise DicomError(Failure.NOT_DICOM, str(e).splitlines()[0]) from e
    except (EOFError, struct.error) as e:
        raise DicomError(Failure.TRUNCATED, f"file ends inside the header ({e})") from e
    except Exception as e:  # pydicom raises many types on garbage
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "end of file" in msg.lower() or "truncat" in msg.lower():
            raise DicomError(Failure.TRUNCATED, f"file ends inside the header ({msg})") from e
        raise DicomError(Failure.NOT_DICOM, f"unparseable DICOM: {msg}") from e

    try:
        return _validate(path, ds, size, pixels, salt, warnings, deflated)
    except DicomError:
        raise
    except Exception as e:  # a value pydicom can't convert: bad VR, odd length, garbage
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DicomError(Failure.INVALID_HEADER, f"unreadable attribute value: {msg}") from e


def _validate(
    path: Path,
    ds: Dataset,
    size: int,
    pixels: bool,
    salt: str | None,
    warnings: tuple[str, ...],
    deflated: bool,
) -> DicomFile:
    if not deflated and (reason := _truncation(path, ds, size, pixels)):
        raise DicomError(Failure.TRUNCATED, reason)
    sop_class = str(
        ds.get("SOPClassUID", "")
        or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
        or ""
    )
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise DicomError(Failure.DICOMDIR, "DICOMDIR (media directory), not an image")
    if "SOPInstanceUID" not in ds:
        raise DicomError(Failure.NOT_DICOM, "no SOP Instance UID: not a DICOM image object")
    if not _UID.match(str(ds.SOPInstanceUID)) or len(str(ds.SOPInstanceUID)) > 64:
        raise DicomError(Failure.INVALID_HEADER, "SOP Instance UID is not a valid UID")
    if sop_class == TOMOSYNTHESIS_SOP_CLASS:
        raise DicomError(
            Failure.UNSUPPORTED_SOP_CLASS, "breast tomosynthesis volume, not a 2D mammogram"
        )
    modality = _text(ds, "Modality")
    if sop_class not in MG_SOP_CLASSES and modality != "MG":
        name = UID(sop_class).name if sop_class else "unknown SOP class"
        raise DicomError(
            Failure.UNSUPPORTED_SOP_CLASS,
            f"not a mammogram: Modality {modality or 'missing'}, {name}",
        )
    facts = header_facts(ds, salt=salt, warnings=warnings)
    dicom = DicomFile(path=path, ds=ds, facts=facts, file_size=size)
    if pixels:
        _check_pixels(dicom)
    return dicom


_PIXEL_TAG = b"\xe0\x7f\x10\x00"
_UNDEFINED = 0xFFFFFFFF


def _truncation(path: Path, ds: Dataset, size: int, pixels: bool) -> str | None:
    """Why the file looks cut short, or None. pydicom returns a partial dataset silently."""
    tags = list(ds.keys())
    if not tags:  # pydicom gives up on a cut encapsulated stream and returns nothing
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            header = None
        if header is not None and len(header) and _PIXEL_TAG in path.read_bytes():
            return "file ends inside the (compressed) Pixel Data"
        return "file ends before the first data element"
    raw = ds.get_item(tags[-1], keep_deferred=True)
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", _UNDEFINED)
    if tell is None:
        return None
    defined = length != _UNDEFINED
    if defined and tell + length > size:
        return f"file ends inside element {tags[-1]} ({size - tell} of {length} bytes)"
    if pixels and "PixelData" not in ds:
        start = tell + length if defined else tell
        with path.open("rb") as f:
            f.seek(start)
            rest = f.read()
        if _PIXEL_TAG in rest:
            return "file ends inside Pixel Data"
        if defined and rest:
            return f"file ends after element {tags[-1]}: {len(rest)} trailing bytes unparsed"
    return None


def _check_pixels(dicom: DicomFile) -> None:
    ds, facts = dicom.ds, dicom.facts
    if "PixelData" not in ds:
        hint = " although the header describes an image (file cut short?)" if facts.rows else ""
        raise DicomError(Failure.NO_PIXEL_DATA, f"no Pixel Data element{hint}")
    if facts.rows <= 0 or facts.columns <= 0 or facts.number_of_frames <= 0:
        raise DicomError(
            Failure.ZERO_SIZE_IMAGE,
            f"image has no pixels ({facts.rows}x{facts.columns}, {facts.number_of_frames} frames)",
        )
    if facts.transfer_syntax_uid not in DECODERS:
        raise DicomError(
            Failure.UNSUPPORTED_TRANSFER_SYNTAX,
            f"transfer syntax {facts.transfer_syntax} ({facts.transfer_syntax_uid}) not supported",
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if (
        samples != 1
        or facts.bits_allocated not in (8, 16)
        or not (0 < facts.bits_stored <= facts.bits_allocated)
    ):
        raise DicomError(
            Failure.UNSUPPORTED_PIXEL_FORMAT,
            f"{samples} samples/pixel, {facts.bits_allocated} bits allocated, "
            f"{facts.bits_stored} stored: only grayscale 8/16-bit is supported",
        )
    raw = ds.get_item("PixelData", keep_deferred=True)
    if facts.transfer_syntax_uid in NATIVE_SYNTAXES and raw is not None:
        expected = facts.rows * facts.columns * facts.number_of_frames * facts.bits_allocated // 8
        length = getattr(raw, "length", None) or len(getattr(raw, "value", b"") or b"")
        tell = getattr(raw, "value_tell", None)
        available = dicom.file_size - tell if tell is not None else length
        if min(length, available) < expected:
            raise DicomError(
                Failure.TRUNCATED,
                f"pixel data has {min(length, available)} bytes, {expected} expected",
            )

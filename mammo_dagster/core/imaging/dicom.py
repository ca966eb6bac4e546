"""Open mammography DICOM files: typed failures, the dataset and where its pixels are, no
pixel decoding; the header facts come from `header`."""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from .header import HeaderFacts, header_facts, text
from .limits import ENV_MAX_FRAME_MB, ENV_MAX_FRAMES, Limits


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
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"


class DicomError(Exception):
    """A file that yields no image, with a typed kind and a one-line reason."""

    def __init__(self, kind: Failure, reason: str) -> None:
        self.kind = kind
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{kind.value}: {self.reason}")

    def __reduce__(self):  # crosses process boundaries (the guarded workers) intact
        return (type(self), (self.kind, self.reason))


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
    modality = text(ds, "Modality")
    if sop_class not in MG_SOP_CLASSES and modality != "MG":
        name = UID(sop_class).name if sop_class else "unknown SOP class"
        raise DicomError(
            Failure.UNSUPPORTED_SOP_CLASS,
            f"not a mammogram: Modality {modality or 'missing'}, {name}",
        )
    facts = header_facts(ds, salt=salt, warnings=warnings)
    check_header(ds, facts)
    dicom = DicomFile(path=path, ds=ds, facts=facts, file_size=size)
    if pixels:
        _check_pixels(dicom)
    return dicom


#: Rescaled values beyond this magnitude are nonsense (and overflow the display's float32).
MAX_RESCALED = 2.0**31


def _number(ds: Dataset, keyword: str) -> float | None:
    """A numeric attribute's (first) value; None when absent or not a number at all."""
    value = ds.get(keyword)
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_PIXEL_INTEGERS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
)


def _one_integer(value: object) -> bool:
    if isinstance(value, pydicom.multival.MultiValue | bytes | bytearray | list | tuple):
        return False
    try:
        return float(value) == int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False


def check_header(ds: Dataset, facts: HeaderFacts, limits: Limits | None = None) -> None:
    """Refuse header values no image can have, before a byte is decoded or a frame tried:
    frame counts and frame sizes over the limits (`core.imaging.limits`), a PixelRepresentation
    other than 0/1, a rescale that is not a finite, non-zero slope and a finite
    intercept, or one that sends the stored values past +-2^31."""
    limits = limits or Limits.from_env()
    for keyword in _PIXEL_INTEGERS:  # a swapped VR makes them lists or bytes
        value = ds.get(keyword)
        if value is not None and value != "" and not _one_integer(value):
            many = isinstance(value, pydicom.multival.MultiValue | list | tuple)
            shown = " ".join(repr(list(value) if many else value).split())[:40]
            raise DicomError(Failure.INVALID_HEADER, f"{keyword} is not one whole number: {shown}")
    if facts.number_of_frames > limits.max_frames:
        raise DicomError(
            Failure.TOO_LARGE,
            f"NumberOfFrames {facts.number_of_frames} is over the limit of "
            f"{limits.max_frames} frames per file (${ENV_MAX_FRAMES})",
        )
    sample_bytes = max(1, -(-max(facts.bits_allocated, 1) // 8))
    frame_bytes = facts.rows * facts.columns * sample_bytes
    if frame_bytes > limits.max_frame_bytes:
        raise DicomError(
            Failure.TOO_LARGE,
            f"{facts.rows} x {facts.columns} pixels of {sample_bytes} bytes is "
            f"{frame_bytes / 2**20:,.0f} MiB per frame, over the limit of "
            f"{limits.max_frame_mb:g} MiB (${ENV_MAX_FRAME_MB})",
        )
    if facts.pixel_representation not in (0, 1):
        raise DicomError(
            Failure.INVALID_HEADER,
            f"PixelRepresentation {facts.pixel_representation}: must be 0 (unsigned) or 1 (signed)",
        )
    slope, intercept = _number(ds, "RescaleSlope"), _number(ds, "RescaleIntercept")
    if slope is not None and (not math.isfinite(slope) or slope == 0):
        raise DicomError(Failure.INVALID_HEADER, f"RescaleSlope {slope:g}: no image")
    if intercept is not None and not math.isfinite(intercept):
        raise DicomError(Failure.INVALID_HEADER, f"RescaleIntercept {intercept:g}: no image")
    reach = abs(slope if slope is not None else 1.0) * 2.0 ** min(
        max(facts.bits_stored, 1), 64
    ) + abs(intercept or 0.0)
    if reach > MAX_RESCALED:
        raise DicomError(
            Failure.INVALID_HEADER,
            f"RescaleSlope {slope if slope is not None else 1:g} and RescaleIntercept "
            f"{intercept or 0:g} put the values at {reach:.3g}: nonsense",
        )


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
    if UID(facts.transfer_syntax_uid).is_encapsulated:
        fragments = _fragments(ds)
        if fragments is not None and facts.number_of_frames > fragments:
            raise DicomError(
                Failure.INVALID_HEADER,
                f"NumberOfFrames {facts.number_of_frames}, but the compressed Pixel Data "
                f"holds {fragments} fragment{'s' * (fragments != 1)} (one or more per frame)",
            )
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


def _fragments(ds: Dataset) -> int | None:
    """How many fragments encapsulated Pixel Data holds; None when it can't be parsed
    (the decoder then says what is wrong)."""
    try:
        data = ds.PixelData
        if len(data) < 8 or data[:4] != b"\xfe\xff\x00\xe0":
            return None
        (offsets,) = struct.unpack("<I", data[4:8])
        return parse_fragments(data[8 + offsets :])[0]
    except Exception:
        return None

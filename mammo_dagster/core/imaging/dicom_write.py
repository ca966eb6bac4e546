"""Build and encode mammography DICOM datasets the way real vendors write them.

Owns the DICOM writing (with the vendor profiles of `vendors`) used by the synthetic
archive generator, the PACS write-back's stable UIDs and the tests (which build tiny
images with known pixel values and check how they render).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from .vendors import MAG_MODIFIER, SPOT_MODIFIER, VIEW_CODES, VendorProfile, VoiFunction, VoiKind

#: Transfer syntaxes the writer can produce (name -> UID). The lossy ones are what
#: archives and VNAs convert to: JPEG 2000 at a compression ratio, JPEG extended (12-bit
#: data, 14-bit data brought down to 12) and JPEG baseline (an 8-bit copy), at a quality.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "j2k": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "rle": RLELossless,
    "jpeg-lossless": JPEGLosslessSV1,  # process 14 SV1, common in older archives
    "j2k-lossy": JPEG2000,
    "jpeg-lossy": JPEGExtended12Bit,
    "jpeg8": JPEGBaseline8Bit,
}
LOSSY_SYNTAXES = frozenset({JPEG2000, JPEGExtended12Bit, JPEGBaseline8Bit})

_ENCODER = {JPEG2000Lossless: "pylibjpeg", JPEGLSLossless: "pyjpegls", RLELossless: "pylibjpeg"}


def stable_uid(*parts: object) -> UID:
    """A deterministic 2.25 UID derived from `parts` (same inputs, same UID)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return UID(f"2.25.{int.from_bytes(digest[:16], 'big')}")


@dataclass
class ImageHeader:
    """Per-image header values a generator (or a test) chooses."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str
    laterality: Literal["L", "R"] = "L"
    view: Literal["CC", "MLO"] = "CC"
    mag_modifier: bool = False
    spot_modifier: bool = False
    mag_factor: float | None = None
    paddle: str | None = None
    series_description: str | None = None
    study_description: str = "MAMMO SCREENING BILATERAL"
    study_date: str = "20240101"
    accession: str = "A0000001"
    instance_number: int = 1


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def build_dataset(
    stored: np.ndarray,
    profile: VendorProfile,
    header: ImageHeader,
    *,
    photometric: str | None = None,
    voi: VoiKind | None = None,
    voi_function: VoiFunction | None = None,
    bits_stored: int | None = None,
    signed: bool | None = None,
    padding_value: int | None = None,
    windows: tuple[tuple[float, float], ...] | None = None,
    declared_bits: int | None = None,
) -> Dataset:
    """An MG For Presentation dataset (explicit VR LE) holding `stored` pixel values.

    `stored` is a 2-D array (one frame) or 3-D (frames, rows, cols) of stored
    values. Keyword arguments override the vendor's profile so tests can try
    every combination; `windows` are absolute (center, width) pairs.
    `declared_bits` writes another BitsStored than the data's depth (a writer that
    declares 16 bits for 12-bit data); windows and LUTs stay those of the real depth.
    """
    photometric = photometric or profile.photometric
    voi = voi or profile.voi
    voi_function = voi_function or profile.voi_function
    bits = bits_stored or profile.bits_stored
    signed = profile.signed if signed is None else signed

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = header.sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1484.1")
    meta.ImplementationVersionName = "MAMMO_SYNTH_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = header.sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = header.study_date
    ds.StudyTime = ds.ContentTime = "101500"
    ds.AccessionNumber = header.accession
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model
    ds.InstitutionName = "Synthetic Breast Centre"
    ds.StudyDescription = header.study_description
    if header.series_description:
        ds.SeriesDescription = header.series_description
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = "19650101"
    ds.PatientSex = "F"
    ds.BodyPartExamined = "BREAST"
    if header.mag_factor is not None:
        ds.EstimatedRadiographicMagnificationFactor = f"{header.mag_factor:.2f}"
    if header.paddle:
        ds.PaddleDescription = header.paddle
    ds.StudyInstanceUID = header.study_instance_uid
    ds.SeriesInstanceUID = header.series_instance_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = header.instance_number
    ds.ImageLaterality = header.laterality
    ds.ViewPosition = header.view
    ds.PatientOrientation = ["A", "R"] if header.laterality == "L" else ["P", "L"]
    view_item = _code_item(VIEW_CODES[header.view])
    modifiers = [
        m
        for m, on in ((MAG_MODIFIER, header.mag_modifier), (SPOT_MODIFIER, header.spot_modifier))
        if on
    ]
    view_item.ViewModifierCodeSequence = Sequence([_code_item(m) for m in modifiers])
    ds.ViewCodeSequence = Sequence([view_item])
    ds.ImagerPixelSpacing = ds.PixelSpacing = [profile.pixel_spacing_mm] * 2
    ds.BurnedInAnnotation = "NO"
    if profile.private_creator:
        block = ds.private_block(0x0029, profile.private_creator, create=True)
        block.add_new(0x10, "LO", f"{profile.name.upper()} PROC v1")

    arr = np.asarray(stored)
    frames = arr[None] if arr.ndim == 2 else arr
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = frames.shape[1:]
    if frames.shape[0] > 1:
        ds.NumberOfFrames = frames.shape[0]
    ds.BitsAllocated = 16
    ds.BitsStored = declared_bits or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    dtype = np.int16 if signed else np.uint16
    ds.PixelData = frames.astype(dtype).tobytes()
    ds["PixelData"].VR = "OW"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    if padding_value is not None:
        vr = "SS" if signed else "US"
        ds.add_new(0x00280120, vr, padding_value)

    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if windows is None:
        span = hi - lo
        windows = tuple((lo + c * span, w * span) for c, w in profile.windows)
    if voi == "window":
        ds.WindowCenter = [f"{c:.1f}" for c, _ in windows]
        ds.WindowWidth = [f"{w:.1f}" for _, w in windows]
        ds.WindowCenterWidthExplanation = [f"WINDOW{i + 1}" for i in range(len(windows))]
        if voi_function != "LINEAR":
            ds.VOILUTFunction = voi_function
    elif voi == "lut":
        items = windows[: max(profile.lut_items, 1)]
        ds.VOILUTSequence = Sequence(
            [linear_voi_lut_item(lo, hi, c, w, profile.lut_shape) for c, w in items]
        )
        if profile.lut_with_windows:
            ds.WindowCenter = [f"{c:.1f}" for c, _ in windows]
            ds.WindowWidth = [f"{w:.1f}" for _, w in windows]
            if voi_function != "LINEAR":
                ds.VOILUTFunction = voi_function
    return ds


def linear_voi_lut_item(
    lo: int, hi: int, center: float, width: float, shape: str = "linear"
) -> Dataset:
    """A 12-bit VOI LUT Sequence item tabulating a window over [lo, hi]: linear, or the
    S-shaped curve vendors use ("sigmoid", the standard's SIGMOID function)."""
    x = np.arange(lo, hi + 1, dtype=np.float64)
    if shape == "sigmoid":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        y = np.clip((x - center) / width + 0.5, 0.0, 1.0)
    lut = np.round(y * 4095).astype(np.uint16)
    item = Dataset()
    n = len(lut)
    item.LUTDescriptor = [0 if n == 65536 else n, lo, 12]
    item.LUTExplanation = "NORMAL"
    item.LUTData = lut.tobytes()
    item["LUTData"].VR = "OW"
    return item


def encode(
    ds: Dataset, transfer_syntax: str | UID, *, j2k_ratio: float = 15.0, jpeg_quality: int = 85
) -> Dataset:
    """Compress `ds` to a transfer syntax name or UID, keeping the SOP Instance UID.

    pydicom compresses in place; JPEG (which pydicom can't encode) goes through GDCM
    and comes back as a new dataset. Use the returned dataset. Lossy syntaxes record
    Lossy Image Compression (ratio, method); JPEG extended takes at most 12 bits and
    JPEG baseline 8, so deeper data is first brought down to that depth (`requantize`).
    """
    name = str(transfer_syntax)
    uid = TRANSFER_SYNTAXES[name] if name in TRANSFER_SYNTAXES else UID(name)
    if uid == JPEGLosslessSV1:
        return _gdcm_encode(ds, uid)
    if uid in (JPEGExtended12Bit, JPEGBaseline8Bit):
        ds = requantize(ds, 12 if uid == JPEGExtended12Bit else 8)
        raw = len(ds.PixelData)
        out = _gdcm_encode(ds, uid, quality=jpeg_quality)
        return _mark_lossy(out, raw, "ISO_10918_1")
    if uid == JPEG2000:
        raw = len(ds.PixelData)
        ds.compress(uid, encoding_plugin="pylibjpeg", j2k_cr=[j2k_ratio],
                    generate_instance_uid=False)  # fmt: skip
        return _mark_lossy(ds, raw, "ISO_15444_1")
    if uid != ExplicitVRLittleEndian:
        ds.compress(uid, encoding_plugin=_ENCODER[uid], generate_instance_uid=False)
    return ds


def _mark_lossy(ds: Dataset, raw_bytes: int, method: str) -> Dataset:
    from pydicom.encaps import generate_frames

    frames = ds.get("NumberOfFrames", 1) or 1
    packed = sum(len(f) for f in generate_frames(ds.PixelData, number_of_frames=int(frames)))
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{raw_bytes / max(packed, 1):.2f}"
    ds.LossyImageCompressionMethod = method
    return ds


def requantize(ds: Dataset, bits: int) -> Dataset:
    """`ds` with its stored values brought down to `bits` bits (the top bits kept), its
    windows, padding and VOI LUT items rescaled to match; 8 bits also allocate 8."""
    real = int(ds.BitsStored)
    shift = real - bits
    if shift <= 0:
        return ds
    if int(ds.get("PixelRepresentation", 0)):
        raise ValueError("requantize takes unsigned data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(frames, ds.Rows, ds.Columns)
    arr = (arr & ((1 << real) - 1)) >> shift
    ds.BitsStored, ds.HighBit = bits, bits - 1
    if bits <= 8:
        ds.BitsAllocated = 8
        ds.PixelData = arr.astype(np.uint8).tobytes()
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = arr.astype(np.uint16).tobytes()
    factor = float(1 << shift)
    if "WindowCenter" in ds:
        ds.WindowCenter = [f"{c / factor:.2f}" for c in _numbers(ds.WindowCenter)]
        ds.WindowWidth = [f"{max(w / factor, 1.0):.2f}" for w in _numbers(ds.WindowWidth)]
    if "PixelPaddingValue" in ds:
        ds.PixelPaddingValue = int(ds.PixelPaddingValue) >> shift
    for item in ds.get("VOILUTSequence") or []:
        n, first, out_bits = (int(v) for v in item.LUTDescriptor)
        table = np.frombuffer(item.LUTData, dtype="<u2")[: n or 65536]
        table = table[:: 1 << shift]
        item.LUTDescriptor = [len(table), first >> shift, out_bits]
        item.LUTData = table.astype(np.uint16).tobytes()
        item["LUTData"].VR = "OW"
    return ds


def _numbers(value: object) -> list[float]:
    seq = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [float(v) for v in seq]


_GDCM_SYNTAX = {
    JPEGLosslessSV1: "JPEGLosslessProcess14_1",
    JPEGExtended12Bit: "JPEGExtendedProcess2_4",
    JPEGBaseline8Bit: "JPEGBaselineProcess1",
}


def _gdcm_encode(ds: Dataset, uid: UID, quality: int | None = None) -> Dataset:
    import gdcm

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        ds.save_as(src, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        if not reader.Read():
            raise RuntimeError(f"GDCM could not read the dataset to encode {uid.name}")
        change = gdcm.ImageChangeTransferSyntax()
        syntax = getattr(gdcm.TransferSyntax, _GDCM_SYNTAX[uid])
        change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
        if quality is not None:
            codec = gdcm.JPEGCodec()
            codec.SetLossless(False)
            codec.SetQuality(float(quality))
            change.SetUserCodec(codec)
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError(f"GDCM could not encode {uid.name}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError(f"GDCM could not write {uid.name}")
        out = pydicom.dcmread(dst)
        out.PixelData  # noqa: B018 - load it before the temp folder goes
        return out


def write(ds: Dataset, path: str | Path) -> Path:
    """Write `ds` as a DICOM Part 10 file (preamble + file meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path

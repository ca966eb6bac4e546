"""Get one frame's stored pixel values, at full or reduced resolution, fast.

- uncompressed little endian: memory-mapped, nothing copied until used;
- JPEG 2000 / HTJ2K: OpenJPEG's reduced-resolution decode through Pillow
  (``reduce``), which skips the finest wavelet levels entirely;
- everything else: pydicom with the measured-fastest plugin passed explicitly.

Every failure inside a codec becomes a :class:`DicomError` (DECODE_ERROR).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_j2k_parameters

from .dicom import DECODERS, J2K_SYNTAXES, NATIVE_SYNTAXES, DicomError, DicomFile, Failure


def _check_frame(dicom: DicomFile, frame: int) -> None:
    n = dicom.facts.number_of_frames
    if not 0 <= frame < n:
        raise DicomError(Failure.FRAME_OUT_OF_RANGE, f"frame {frame} requested, file has {n}")


def full_frame(dicom: DicomFile, frame: int = 0) -> np.ndarray:
    """The frame's stored values at full resolution (pydicom decode, or a memory map)."""
    _check_frame(dicom, frame)
    if dicom.transfer_syntax in NATIVE_SYNTAXES:
        return _native_frame(dicom, frame)
    try:
        arr = pixel_array(dicom.ds, index=frame, decoding_plugin=DECODERS[dicom.transfer_syntax])
    except Exception as e:  # codecs raise anything from ValueError to RuntimeError
        raise DicomError(Failure.DECODE_ERROR, f"{dicom.facts.transfer_syntax}: {e}") from e
    if arr.shape != (dicom.facts.rows, dicom.facts.columns):
        raise DicomError(
            Failure.DECODE_ERROR,
            f"decoded shape {arr.shape} != {dicom.facts.rows}x{dicom.facts.columns}",
        )
    return arr


def _native_frame(dicom: DicomFile, frame: int) -> np.ndarray:
    f = dicom.facts
    raw = dicom.ds.get_item("PixelData")
    dtype = np.dtype(f"<{'i' if f.pixel_representation else 'u'}{f.bits_allocated // 8}")
    shape = (f.rows, f.columns)
    frame_bytes = f.rows * f.columns * dtype.itemsize
    tell = getattr(raw, "value_tell", None)
    if tell is not None and getattr(raw, "value", None) is None:  # deferred: map the file
        return np.memmap(
            dicom.path, dtype=dtype, mode="r", offset=tell + frame * frame_bytes, shape=shape
        )
    data = dicom.ds.PixelData
    return np.frombuffer(
        data, dtype=dtype, count=f.rows * f.columns, offset=frame * frame_bytes
    ).reshape(shape)


def reduce_level(rows: int, cols: int, target_long_side: int) -> int:
    """Wavelet levels we may skip: one level finer than the target, never below it.

    Pillow rounds reduced sizes where OpenJPEG takes the ceiling, which breaks
    the decode when they differ, so only levels where they agree qualify.
    """
    long_side = max(rows, cols)
    level = 0
    while long_side / 2 ** (level + 2) >= target_long_side:
        level += 1
    while level > 0 and any(round(n / 2**level) != math.ceil(n / 2**level) for n in (rows, cols)):
        level -= 1
    return level


def reduced_frame(dicom: DicomFile, frame: int, target_long_side: int) -> tuple[np.ndarray, int]:
    """Stored values at reduced resolution and the downscale factor applied (1, 2, 4, ...).

    Only JPEG 2000 codestreams can skip decoding the fine detail; other syntaxes
    return the full frame with factor 1.
    """
    _check_frame(dicom, frame)
    f = dicom.facts
    if f.transfer_syntax_uid not in J2K_SYNTAXES or f.pixel_representation:
        return full_frame(dicom, frame), 1
    level = reduce_level(f.rows, f.columns, target_long_side)
    if level == 0:
        return full_frame(dicom, frame), 1
    try:
        stream = get_frame(dicom.ds.PixelData, frame, number_of_frames=f.number_of_frames)
        params = get_j2k_parameters(stream)
        precision = int(params.get("precision") or f.bits_stored)
        if params.get("is_signed"):
            return full_frame(dicom, frame), 1
        img = Image.open(io.BytesIO(stream))
        img.reduce = level
        img.load()
        arr = np.asarray(img)
    except DicomError:
        raise
    except Exception as e:
        raise DicomError(Failure.DECODE_ERROR, f"{f.transfer_syntax}: {e}") from e
    expected = (math.ceil(f.rows / 2**level), math.ceil(f.columns / 2**level))
    if arr.shape != expected:
        raise DicomError(Failure.DECODE_ERROR, f"reduced decode gave {arr.shape}, not {expected}")
    if arr.dtype != np.uint16 and arr.dtype.itemsize >= 2:
        arr = arr.astype(np.uint16)
    # Pillow scales <16-bit samples up to 16 bits; bring them back to stored values.
    if arr.dtype == np.uint16 and precision < 16:
        arr = arr >> (16 - precision)
    return arr, 2**level

"""Get one frame's stored pixel values, at full or reduced resolution, fast.

- uncompressed little endian: memory-mapped, nothing copied until used;
- JPEG 2000 / HTJ2K: OpenJPEG's reduced-resolution decode through Pillow
  (``reduce``), which skips the finest wavelet levels entirely;
- everything else: pydicom with the measured-fastest plugin passed explicitly.

Every failure inside a codec becomes a :class:`DicomError` (DECODE_ERROR), a Rust
decoder's panic (``pyo3_runtime.PanicException``, a `BaseException`) included; what a
codec can do that no ``except`` catches (an abort) is `core.imaging.guard`'s to contain.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_j2k_parameters

from .dicom import DECODERS, J2K_SYNTAXES, NATIVE_SYNTAXES, DicomError, DicomFile, Failure
from .limits import ENV_MAX_FRAME_MB, Limits


def codec_error(dicom: DicomFile, e: BaseException) -> DicomError:
    """A codec's exception as a typed, one-line DECODE_ERROR naming the syntax."""
    name = type(e).__name__
    text = " ".join(str(e).split()) or name
    if name == "PanicException":  # pyo3: the decoder hit a bug on these bytes
        text = f"codec crashed ({name}: {text})"
    return DicomError(Failure.DECODE_ERROR, f"{dicom.facts.transfer_syntax}: {text}")


def _check_frame(dicom: DicomFile, frame: int) -> None:
    n = dicom.facts.number_of_frames
    if not 0 <= frame < n:
        raise DicomError(
            Failure.FRAME_OUT_OF_RANGE,
            f"frame {frame} requested; frames are numbered from 0 and this file has {n}",
        )


def full_frame(dicom: DicomFile, frame: int = 0) -> np.ndarray:
    """The frame's stored values at full resolution (pydicom decode, or a memory map)."""
    _check_frame(dicom, frame)
    if dicom.transfer_syntax in NATIVE_SYNTAXES:
        return _native_frame(dicom, frame)
    if dicom.transfer_syntax == JPEG_EXTENDED and dicom.facts.bits_stored > 8:
        return _gdcm_frame(dicom, frame)
    try:
        arr = pixel_array(dicom.ds, index=frame, decoding_plugin=DECODERS[dicom.transfer_syntax])
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # codecs raise anything, a Rust panic included
        raise codec_error(dicom, e) from e
    if arr.shape != (dicom.facts.rows, dicom.facts.columns):
        raise DicomError(
            Failure.DECODE_ERROR,
            f"decoded shape {arr.shape} != {dicom.facts.rows}x{dicom.facts.columns}",
        )
    return arr


#: JPEG Extended (process 2 & 4): 12-bit lossy JPEG, which archives and VNAs write.
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def _gdcm_frame(dicom: DicomFile, frame: int) -> np.ndarray:
    """A 12-bit JPEG Extended frame through GDCM itself: its libjpeg decodes 12-bit
    samples, but pydicom's GDCM plugin refuses them (and Pillow can't)."""
    import gdcm

    f = dicom.facts
    limit = Limits.from_env()
    if f.rows * f.columns * 2 * f.number_of_frames > limit.max_frame_bytes:
        raise DicomError(
            Failure.TOO_LARGE,
            f"{f.transfer_syntax}: GDCM decodes all {f.number_of_frames} frames at once, "
            f"over the limit of {limit.max_frame_mb:g} MiB (${ENV_MAX_FRAME_MB})",
        )
    try:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(dicom.path))
        if not reader.Read():
            raise ValueError("GDCM could not read the file")
        image = reader.GetImage()
        buffer = image.GetBuffer()
        if not isinstance(buffer, str):
            raise ValueError("GDCM decoded no pixels")
        buffer = buffer.encode("utf-8", errors="surrogateescape")
    except DicomError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        raise codec_error(dicom, e) from e
    size = f.rows * f.columns
    dtype = np.dtype(f"<{'i' if f.pixel_representation else 'u'}2")
    if len(buffer) < size * 2 * f.number_of_frames:
        raise DicomError(
            Failure.DECODE_ERROR,
            f"{f.transfer_syntax}: GDCM gave {len(buffer)} bytes, "
            f"{size * 2 * f.number_of_frames} expected",
        )
    arr = np.frombuffer(buffer, dtype=dtype, count=size, offset=frame * size * 2)
    return arr.reshape(f.rows, f.columns)


def _native_frame(dicom: DicomFile, frame: int) -> np.ndarray:
    f = dicom.facts
    raw = dicom.ds.get_item("PixelData", keep_deferred=True)
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


#: How many halvings finer than the target the fast path stops at. One keeps it
#: within ~1 gray level of the exact path and keeps 4-px markers bright; 0 is
#: ~2-3x faster for JPEG 2000 at ~2 levels (see benchmarks/bench_thumbnails.py).
DEFAULT_OVERSAMPLE = 1


def reduce_level(
    rows: int, cols: int, target_long_side: int, oversample: int = DEFAULT_OVERSAMPLE
) -> int:
    """Halvings we may apply before windowing, stopping `oversample` levels finer than
    the target."""
    long_side = max(rows, cols)
    level = 0
    while long_side / 2 ** (level + 1 + oversample) >= target_long_side:
        level += 1
    return level


def _pillow_safe_level(rows: int, cols: int, level: int) -> int:
    """Pillow rounds reduced sizes where OpenJPEG takes the ceiling, which breaks the
    decode when they differ, so only levels where they agree qualify."""

    def agree(n: int, level: int) -> bool:
        power = 1 << level
        return (n + (power >> 1)) // power == -(-n // power)  # Pillow's size == OpenJPEG's

    while level > 0 and not (agree(rows, level) and agree(cols, level)):
        level -= 1
    return level


@dataclass
class Reduced:
    """Stored values at 1/`factor` resolution, pixel i standing for the cell of
    full-resolution pixels [factor*i, factor*(i+1)) in each direction."""

    pixels: np.ndarray
    factor: int
    #: per-cell minimum and/or maximum stored values ("min", "max"), when kept
    extremes: dict[str, np.ndarray] | None = None


def _halve(a: np.ndarray, how: str, bits: int = 16) -> np.ndarray:
    """One 2x2 reduction of a 2-D uint16 array of `bits`-bit values: "mean" (rounded),
    "min" or "max"."""
    h, w = a.shape
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2)), mode="edge")
    if how == "mean":
        # four 14-bit values and the rounding term still fit in 16 bits: half the traffic
        acc = np.uint16 if bits <= 14 else np.uint32
        rows = np.add(a[0::2], a[1::2], dtype=acc)
        cols = rows[:, 0::2] + rows[:, 1::2]
        cols += 2
        cols >>= 2
        return cols.astype(np.uint16, copy=False)
    combine = np.maximum if how == "max" else np.minimum
    rows = combine(a[0::2], a[1::2])
    return combine(rows[:, 0::2], rows[:, 1::2])


def box_reduce(
    stored: np.ndarray, levels: int, bits_stored: int, extremes: tuple[str, ...] = ("min", "max")
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Halve unsigned 16-bit stored values `levels` times: the cell mean, and `extremes`.

    Bits above BitsStored are dropped first; odd sizes repeat their last row/column.
    Averaging before windowing moves a 512-px thumbnail by well under one gray
    level (see benchmarks) and makes the per-pixel lookup 4-16x cheaper; the cell
    minimum or maximum keeps small bright objects (a metal clip) findable whichever
    way the display maps values (MONOCHROME1 makes metal the minimum).
    """
    a = np.asarray(stored)
    if bits_stored < 16:
        a = a & np.uint16((1 << bits_stored) - 1)
    mean, ext = a, dict.fromkeys(extremes, a)
    for _ in range(levels):
        mean = _halve(mean, "mean", bits_stored)
        ext = {how: _halve(arr, how) for how, arr in ext.items()}
    return mean, ext


def reduced_frame(
    dicom: DicomFile,
    frame: int,
    target_long_side: int,
    extremes: tuple[str, ...] = ("min", "max"),
    oversample: int = DEFAULT_OVERSAMPLE,
    max_level: int | None = None,
) -> Reduced:
    """Stored values `oversample` levels finer than `target_long_side`, cheaply.

    JPEG 2000 skips decoding the finest wavelet levels altogether; other syntaxes
    decode in full and are box-averaged in stored space. Signed or 8-bit data
    is returned at full resolution. `extremes` says which per-cell extremes a box
    reduction keeps. `max_level` caps the halvings (a caller that needs a pixel size).
    """
    _check_frame(dicom, frame)
    f = dicom.facts
    level = reduce_level(f.rows, f.columns, target_long_side, oversample)
    if max_level is not None:
        level = min(level, max(max_level, 0))
    if f.transfer_syntax_uid in J2K_SYNTAXES and not f.pixel_representation:
        j2k_level = _pillow_safe_level(f.rows, f.columns, level)
        if j2k_level:
            arr = _j2k_reduced(dicom, frame, j2k_level)
            if arr is not None:  # peaks from the raw decode: interpolation would dim them
                return Reduced(
                    _onto_box_grid(arr, 2**j2k_level),
                    2**j2k_level,
                    extremes=dict.fromkeys(extremes, arr),
                )
    full = full_frame(dicom, frame)
    if level == 0 or f.pixel_representation or f.bits_allocated != 16:
        return Reduced(full, 1)
    mean, ext = box_reduce(full, level, f.bits_stored, extremes)
    return Reduced(mean, 2**level, extremes=ext)


def _onto_box_grid(arr: np.ndarray, factor: int) -> np.ndarray:
    """Move an OpenJPEG reduced image onto the box-average grid.

    Its pixel i is centred on full-resolution pixel factor*i, (factor - 1) / 2
    pixels before the centre of cell i; uncorrected, that offset alone costs
    ~35 stored values per pixel on smooth tissue at factor 4. Linear
    interpolation by the fractional offset removes it.
    """
    s = np.float32((factor - 1) / (2 * factor))
    a = arr.astype(np.float32)
    a = np.concatenate([a, a[-1:]], axis=0)
    a = (1 - s) * a[:-1] + s * a[1:]
    a = np.concatenate([a, a[:, -1:]], axis=1)
    a = (1 - s) * a[:, :-1] + s * a[:, 1:]
    return np.rint(a).astype(np.uint16)


def _j2k_reduced(dicom: DicomFile, frame: int, level: int) -> np.ndarray | None:
    """OpenJPEG reduced-resolution decode through Pillow; None when it can't apply."""
    f = dicom.facts
    try:
        stream = get_frame(dicom.ds.PixelData, frame, number_of_frames=f.number_of_frames)
        params = get_j2k_parameters(stream)
        if params.get("is_signed"):
            return None
        precision = int(params.get("precision") or f.bits_stored)
        img = Image.open(io.BytesIO(stream))
        img.reduce = level
        img.load()
        arr = np.asarray(img)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        raise codec_error(dicom, e) from e
    expected = (math.ceil(f.rows / 2**level), math.ceil(f.columns / 2**level))
    if arr.shape != expected:
        raise DicomError(Failure.DECODE_ERROR, f"reduced decode gave {arr.shape}, not {expected}")
    # Pillow opens <= 8-bit streams as "L" and scales 9-15-bit ones up to 16 bits;
    # bring them back to stored values.
    out_bits = 8 if arr.dtype == np.uint8 else 16
    arr = arr.astype(np.uint16)
    if precision < out_bits:
        arr >>= out_bits - precision
    return arr

"""Stored pixel values -> the 8-bit image a radiologist sees (PS3.3 C.11, C.7.6.3).

The chain is modality LUT / rescale -> VOI (window with LINEAR, LINEAR_EXACT or
SIGMOID, or a VOI LUT Sequence) -> MONOCHROME1 / INVERSE inversion -> 8 bit, with
Pixel Padding Value kept black. :func:`display_values` is the exact per-pixel
function; :func:`display_lut` tabulates it once per header for every possible
16-bit stored pattern, so the fast path is one table lookup per pixel and gives
exactly the same values.

Images with no VOI in the header get an automatic window: linear from the 1st
to the 99.5th percentile of modality values inside the breast, where the breast
is everything except Pixel Padding and air (values within 5% of the value
range from the air end: the low end for MONOCHROME2, the high end for
MONOCHROME1). Percentiles rather than min/max keep small metal markers and
burned-in labels from squeezing the window.

8-bit values keep **headroom** above the window (:func:`display8`): the window
maps to 0..``WINDOW_TOP`` and what lies beyond its bright end takes the levels
above, rising to 255 at the bright extreme of the stored range (which is 255
even when the window reaches it). Metal (a clip, a wire, a needle) sits at that
extreme; tissue a little denser than the window top does not, and a plain 8-bit
window would make both the same white.

**Two images, two purposes.** That headroom image is what the *model* reads (the stored
thumbnail). What a *person* sees, in the labeler and in Dagster's contact sheets, is
the radiologist's rendering: the window over the full 0..255 and everything past it
white, as a PS3.3 viewer shows it. :data:`VIEWING_LUT` makes it from the model's
image: each window level is stretched back over 0..255 (within one gray level of the
exact window, as the model's image has 224 window levels) and headroom becomes white.
Code asks for one or the other by name (`thumbnails.viewing_image`), never by
reading the thumbnail file itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_modality_lut

from .voi import Voi, auto_window, choose_voi, lut_table, voi_source, window_value

#: The 8-bit level the window's bright end maps to; the levels above are headroom.
WINDOW_TOP = 223
#: Past the window, the level rises toward 255 with t ** HEADROOM_GAMMA, t being how far a
#: value lies from the window's end toward the stored extreme (0..1): values just past
#: the window stay near WINDOW_TOP, the extreme itself is 255.
HEADROOM_GAMMA = 3.0
#: The model's 8-bit level -> the radiologist's: the window (0..WINDOW_TOP) stretched over
#: 0..255, the headroom above it white.
VIEWING_LUT: np.ndarray = np.minimum(np.rint(np.arange(256) * 255.0 / WINDOW_TOP), 255).astype(
    np.uint8
)


def _patterns_unsigned(arr: np.ndarray) -> np.ndarray:
    """A signed pixel array viewed as its raw unsigned bit patterns."""
    return arr.view(f"u{arr.dtype.itemsize}") if arr.dtype.kind == "i" else arr


def stored_values(patterns: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Stored pixel values from raw bit patterns: drop bits above BitsStored, sign-extend."""
    v = patterns.astype(np.int64) & ((1 << bits_stored) - 1)
    if signed:
        v = np.where(v >= 1 << (bits_stored - 1), v - (1 << bits_stored), v)
    return v


def rescale_slope(ds: Dataset) -> float:
    """|RescaleSlope|, 1 where the header's value is missing, zero or unusable (as
    `_modality` then renders with the identity)."""
    try:
        slope = abs(float(ds.get("RescaleSlope", 1) or 1))
    except (TypeError, ValueError):
        return 1.0
    return slope if np.isfinite(slope) and slope else 1.0


def _modality(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT / rescale (pydicom's); identity when the header's values are unusable."""
    try:
        return np.asarray(apply_modality_lut(values, ds), dtype=np.float64)
    except Exception:  # e.g. RescaleSlope "1,5", a 12-bit-entry Modality LUT
        return np.asarray(values, dtype=np.float64)


def _lut_voi(modality: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    table, first, bits = lut_table(voi_source(ds).VOILUTSequence[index], ds)
    idx = np.clip(np.rint(modality).astype(np.int64) - first, 0, len(table) - 1)
    return np.clip(table[idx] / ((1 << bits) - 1), 0.0, 1.0)


def _as_stored(value: object, ds: Dataset) -> int | None:
    """A padding attribute as a stored value: US/SS/bytes, masked and sign-extended the
    way the pixels are (writers often put a signed value in a US)."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = int.from_bytes(value[:2], "little") if len(value) >= 2 else None
    try:
        raw = int(value) & 0xFFFF  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    bits = int(ds.get("BitsStored", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return int(stored_values(np.array([raw]), bits, signed)[0])


def padding_mask(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """True where stored values are Pixel Padding (value, or range up to the limit).

    Padding is compared with stored values, before any rescale (PS3.3 C.7.5.1.1.2).
    """
    ppv = _as_stored(ds.get("PixelPaddingValue"), ds)
    if ppv is None:
        return None
    limit = _as_stored(ds.get("PixelPaddingRangeLimit"), ds)
    if limit is None:
        return values == ppv
    lo, hi = sorted((ppv, limit))
    return (values >= lo) & (values <= hi)


def inverts(ds: Dataset) -> bool:
    """MONOCHROME1, or Presentation LUT Shape INVERSE: one inversion either way."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper().strip()
    shape = str(ds.get("PresentationLUTShape", "") or "").upper().strip()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def display_values(values: np.ndarray, ds: Dataset, voi: Voi) -> np.ndarray:
    """Exact display value in [0, 1] for each stored value (float64)."""
    return _display(_modality(values, ds), padding_mask(values, ds), ds, voi)


def _display(modality: np.ndarray, pad: np.ndarray | None, ds: Dataset, voi: Voi) -> np.ndarray:
    if voi.kind == "lut":
        y = _lut_voi(modality, ds, voi.index)
    else:
        y = window_value(modality, voi.center, voi.width, voi.function)
    if inverts(ds):
        y = 1.0 - y
    if pad is not None:
        y = np.where(pad, 0.0, y)
    return y


def to_uint8(y: np.ndarray) -> np.ndarray:
    """Display values in [0, 1] -> 0..255 (no headroom)."""
    return np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Headroom:
    """Where the window's bright end is and where the stored range ends, in modality units."""

    top: float  # the window's bright end
    extreme: float  # the brightest value the stored range can hold

    def fraction(self, modality: np.ndarray) -> np.ndarray:
        """How far each value lies past the window's end toward the extreme (0..1)."""
        span = self.extreme - self.top
        return np.clip((np.asarray(modality, dtype=np.float64) - self.top) / span, 0.0, 1.0)


def headroom(ds: Dataset, voi: Voi) -> Headroom | None:
    """The headroom of `voi` over every stored value the header allows (None when there is
    no value to tell apart).

    The bright end of a window (any function) is center + width / 2 (center - width / 2
    when the display inverts); that of a VOI LUT is where its output first reaches its
    maximum. The extreme is the end of the range BitsStored declares (metal saturates
    the detector): data that uses fewer bits than declared gets no headroom.
    """
    bits = min(int(ds.get("BitsStored", 16) or 16), 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    values = stored_values(np.arange(1 << bits, dtype=np.int64), bits, signed)
    modality = _modality(values, ds)
    pad = padding_mask(values, ds)
    real = np.isfinite(modality) if pad is None else ~pad & np.isfinite(modality)
    if real.sum() < 2:
        return None
    m = modality[real]
    y = _display(m, None, ds, voi)  # padding is already left out
    lo, hi = int(np.argmin(m)), int(np.argmax(m))
    if voi.kind == "lut":  # the table's own direction; its top is where it peaks
        bright_high = y[hi] > y[lo] if y[hi] != y[lo] else not inverts(ds)
        white = y >= y.max() - 0.5 / 255.0
        if white.all():
            return None
        top = float(m[white].min() if bright_high else m[white].max())
    else:  # windows rise with the value; only the inversion turns them around
        bright_high = not inverts(ds)
        top = voi.center + (voi.width / 2 if bright_high else -voi.width / 2)
    extreme = float(m[hi] if bright_high else m[lo])
    if (extreme - top) * (1 if bright_high else -1) <= 0:  # the window reaches the extreme:
        others = m[m != extreme]  # only the extreme itself takes 255
        if not others.size:
            return None
        top = float(others.max() if bright_high else others.min())
    return Headroom(top, extreme)


def window_width(ds: Dataset, voi: Voi) -> float:
    """The VOI's width in modality units: the window's, or for a VOI LUT the span over
    which its output rises from 10% to 90% of its range (divided by 0.8)."""
    if voi.kind != "lut":
        return max(float(voi.width), 1e-6)
    table, _first, _bits = lut_table(voi_source(ds).VOILUTSequence[voi.index], ds)
    lo, hi = float(table.min()), float(table.max())
    if hi <= lo:
        return 1.0
    t = table if table[-1] >= table[0] else table[::-1]
    a = int(np.argmax(t >= lo + 0.1 * (hi - lo)))
    b = int(np.argmax(t >= lo + 0.9 * (hi - lo)))
    return max((b - a) / 0.8, 1.0)  # LUT entries step by one modality value


def bright_is_high(ds: Dataset, voi: Voi) -> bool:
    """Whether the display brightens with the modality value (False for MONOCHROME1, an
    INVERSE shape, or a falling VOI LUT)."""
    if voi.kind == "lut":
        table, _first, _bits = lut_table(voi_source(ds).VOILUTSequence[voi.index], ds)
        rising = bool(table[-1] >= table[0])
        return rising != inverts(ds)
    return not inverts(ds)


def window_lut(ds: Dataset, voi: Voi) -> np.ndarray:
    """uint8 table indexed by raw stored pattern: the window mapped to 0..WINDOW_TOP, no
    headroom (rendering contract v3 adds its own, see `core.imaging.lift`)."""
    bits_alloc = int(ds.get("BitsAllocated", 16))
    bits_stored = int(ds.get("BitsStored", bits_alloc))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    bits = bits_stored if 0 < bits_stored < bits_alloc else bits_alloc
    values = stored_values(np.arange(1 << bits, dtype=np.int64), bits_stored, signed)
    y = np.clip(display_values(values, ds, voi), 0.0, 1.0) * WINDOW_TOP
    return np.tile(np.rint(y).astype(np.uint8), 1 << (bits_alloc - bits))


def display8(values: np.ndarray, ds: Dataset, voi: Voi, room: Headroom | None = None) -> np.ndarray:
    """Stored values -> 8-bit display with headroom (see module docstring).

    The display maps to 0..WINDOW_TOP; values past the window's bright end rise from
    there toward 255 with (their fraction of the way to the stored extreme) **
    HEADROOM_GAMMA. `room` defaults to :func:`headroom` of the header and `voi`.
    """
    modality, pad = _modality(values, ds), padding_mask(values, ds)
    y = np.clip(_display(modality, pad, ds, voi), 0.0, 1.0) * WINDOW_TOP
    room = room if room is not None else headroom(ds, voi)
    if room is not None:
        y += (255.0 - y) * room.fraction(modality) ** HEADROOM_GAMMA
        if pad is not None:
            y[pad] = 0.0
    return np.rint(y).astype(np.uint8)


def resolve_voi(ds: Dataset, sample_values: np.ndarray, index: int = 0) -> Voi:
    """The header's VOI, or an automatic window from a sample of stored values."""
    voi = choose_voi(ds, index)
    if voi is not None:
        return voi
    sample = sample_values.ravel()
    pad = padding_mask(sample, ds)
    # which stored end is air depends on the photometric interpretation, not the display
    mono1 = str(ds.get("PhotometricInterpretation", "")).upper().strip() == "MONOCHROME1"
    return auto_window(_modality(sample, ds), mono1, pad)


def display_lut(ds: Dataset, voi: Voi, room: bool = True) -> np.ndarray:
    """uint8 table indexed by the raw 8/16-bit pattern of a stored pixel (`display8`, or a
    plain 8-bit window without headroom when not `room`)."""
    bits_alloc = int(ds.get("BitsAllocated", 16))
    bits_stored = int(ds.get("BitsStored", bits_alloc))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    # A pattern's display depends only on its low BitsStored bits: compute those 2**bits
    # entries once and repeat them for every value of the bits above.
    bits = bits_stored if 0 < bits_stored < bits_alloc else bits_alloc
    values = stored_values(np.arange(1 << bits, dtype=np.int64), bits_stored, signed)
    table = display8(values, ds, voi) if room else to_uint8(display_values(values, ds, voi))
    return np.tile(table, 1 << (bits_alloc - bits))


def apply_lut(pixels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Look pixels up by their raw bit pattern (signed data through an unsigned view)."""
    if pixels.dtype.kind == "i":
        pixels = pixels.view(f"u{pixels.dtype.itemsize}")
    if pixels.dtype.itemsize > 2 or pixels.dtype.kind not in "u":
        pixels = pixels.astype(np.int64) & (len(lut) - 1)
    return np.take(lut, pixels)

"""DICOM frame -> 8-bit thumbnail: the one preprocessing every consumer shares.

Downsampling is an area average (what a radiologist's eye integrates) blended
toward the local maximum where that maximum is near white: a 2-4 mm metal clip
is a few pixels in a 224-512 px thumbnail, and a plain average would fade it to
a smudge indistinguishable from tissue. Only near-white maxima are kept, so
ordinary texture is unchanged: the maximum must be near white *and* stand out
from its neighbourhood's mean (a marker does; saturated dense tissue doesn't).
The aspect ratio is kept and the image padded (black) to a square, never
stretched.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import full_frame, reduced_frame
from .dicom import DicomFile, HeaderFacts, open_dicom
from .display import (
    Voi,
    apply_lut,
    display_lut,
    display_values,
    resolve_voi,
    stored_values,
    to_uint8,
)

DEFAULT_SIZE = 512
#: Local maxima from this display level up are blended in, fully from KEEP_MAX_FULL,
#: when they stand out from the local mean by CONTRAST_FROM (fully CONTRAST_FULL) levels.
KEEP_MAX_FROM, KEEP_MAX_FULL = 232, 250
CONTRAST_FROM, CONTRAST_FULL = 32, 64
_SAMPLE_PIXELS = 512 * 512


@dataclass
class Thumbnail:
    """A rendered frame and how it was made."""

    image: np.ndarray  # uint8, (size, size) when padded
    facts: HeaderFacts
    frame: int
    voi: Voi
    content_shape: tuple[int, int]  # the image inside the padding
    method: str  # "fast" or "exact"


def fit_size(rows: int, cols: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side `long_side` and the aspect ratio kept."""
    scale = long_side / max(rows, cols)
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def _block_max(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape
    hh, ww = -(-h // k) * k, -(-w // k) * k
    if (hh, ww) != (h, w):
        img = np.pad(img, ((0, hh - h), (0, ww - w)))
    rows = img.reshape(hh // k, k, ww).max(axis=1)
    return rows.reshape(hh // k, ww // k, k).max(axis=2)


def shrink(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average `img` (uint8) to (height, width), keeping near-white local maxima."""
    if img.shape == (height, width):
        return np.ascontiguousarray(img)
    mean = np.asarray(
        Image.fromarray(np.ascontiguousarray(img)).resize((width, height), Image.Resampling.BOX)
    )
    k = -(-img.shape[0] // height)
    k = max(k, -(-img.shape[1] // width))
    if k < 2:
        return mean
    peaks = Image.fromarray(_block_max(img, k)).resize((width, height), Image.Resampling.NEAREST)
    peak = np.asarray(peaks).astype(np.float32)
    lift = np.maximum(peak - mean, 0.0)
    weight = np.clip((peak - KEEP_MAX_FROM) / (KEEP_MAX_FULL - KEEP_MAX_FROM), 0.0, 1.0)
    weight *= np.clip((lift - CONTRAST_FROM) / (CONTRAST_FULL - CONTRAST_FROM), 0.0, 1.0)
    out = mean + weight * lift
    return np.rint(out).astype(np.uint8)


def pad_square(img: np.ndarray, size: int) -> np.ndarray:
    """Center `img` on a black `size` x `size` canvas."""
    h, w = img.shape
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def _sample(stored: np.ndarray) -> np.ndarray:
    step = max(1, int(np.sqrt(stored.size / _SAMPLE_PIXELS)))
    return np.asarray(stored[::step, ::step])


def _patterns(arr: np.ndarray) -> np.ndarray:
    return arr.view(f"u{arr.dtype.itemsize}") if arr.dtype.kind == "i" else arr


def render_frame(
    dicom: DicomFile,
    frame: int = 0,
    size: int = DEFAULT_SIZE,
    *,
    pad: bool = True,
    exact: bool = False,
    voi_index: int = 0,
) -> Thumbnail:
    """Render one frame of an opened file as a `size`-px thumbnail.

    The fast path (default) decodes at reduced resolution where the codec allows
    it and windows through a 16-bit lookup table; ``exact=True`` decodes in full
    and applies the float VOI per pixel. Both downsample the same way.
    """
    ds, facts = dicom.ds, dicom.facts
    bits, signed = facts.bits_stored, facts.pixel_representation == 1
    if exact:
        stored = full_frame(dicom, frame)
        values = stored_values(_patterns(np.asarray(stored)), bits, signed)
        voi = resolve_voi(ds, _sample(values), voi_index)
        img = to_uint8(display_values(values, ds, voi))
    else:
        stored, _factor = reduced_frame(dicom, frame, size)
        voi = resolve_voi(ds, stored_values(_patterns(_sample(stored)), bits, signed), voi_index)
        img = apply_lut(stored, display_lut(ds, voi))
    h, w = fit_size(facts.rows, facts.columns, size)
    small = shrink(img, h, w)
    return Thumbnail(
        image=pad_square(small, size) if pad else small,
        facts=facts,
        frame=frame,
        voi=voi,
        content_shape=(h, w),
        method="exact" if exact else "fast",
    )


def render(
    path: str | Path, frame: int = 0, size: int = DEFAULT_SIZE, **kwargs: object
) -> Thumbnail:
    """Open `path` and render one frame (raises DicomError with a typed reason)."""
    return render_frame(open_dicom(path), frame, size, **kwargs)  # type: ignore[arg-type]


def save_png(img: np.ndarray, path: str | Path) -> Path:
    """Write a PNG atomically: a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(img).save(f, format="PNG", compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

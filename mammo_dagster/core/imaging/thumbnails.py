"""DICOM frame -> 8-bit thumbnail: the one preprocessing every consumer shares.

Downsampling is an area average (what a radiologist's eye integrates) blended
toward the local maximum where that maximum is near white: a 2-4 mm metal clip
is a few pixels in a 224-512 px thumbnail, and a plain average would fade it to
a smudge indistinguishable from tissue. Only near-white maxima are kept, so
ordinary texture is unchanged: the maximum must be near white *and* stand out
from its neighbourhood's mean (a marker does; saturated dense tissue doesn't).
The aspect ratio is kept and the image padded (black) to a square, never
stretched.

The 8-bit values keep headroom above the window (see `display.display8`), so a
metal marker stays brighter than tissue that merely clips the window. Every PNG
carries the version of this contract (`RENDER_VERSION`, a PNG text chunk): a
thumbnail of another version is re-rendered, and a model refuses thumbnails of
a version it was not trained on.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..files import atomic_write
from .decode import DEFAULT_OVERSAMPLE, full_frame, reduced_frame
from .dicom import DicomError, DicomFile, Failure, HeaderFacts, open_dicom
from .display import (
    VIEWING_LUT,
    WINDOW_TOP,
    apply_lut,
    display8,
    display_lut,
    display_values,
    inverts,
    resolve_voi,
    stored_values,
    to_uint8,
    window_lut,
)
from .lift import MAG_SCALE, PATCH_PX, Lifter, lift_up, working_level
from .voi import Voi, choose_voi

DEFAULT_SIZE = 512
#: The rendering contract's version: "8" lifts nothing on a compact round object that
#: reaches the skin line (`lift.skin_objects`: a skin BB, however wide); "7" lifted
#: nothing within `lift.SKIN_MM` of the air (a skin BB is not a biopsy marker); "6" let
#: one straight bright object (a wire, a speckled paddle edge) take at most
#: `lift.OBJECT_SPOTS` second-look spots of a set; "5" carries a second set of second-look patches
#: MAG_SCALE times as wide (a magnified view's objects at their size in the breast);
#: "4" lifts what stands above its surroundings into the headroom above the window
#: (`core.imaging.lift`), measured against the room left where the background is near
#: the stored extreme (an implant); "3" did so in window widths only; "2" lifted what
#: lay toward the stored extreme; "1" had no headroom.
RENDER_VERSION = "8"
#: The first version (no headroom); PNGs without a version tag are this one.
LEGACY_RENDER = "1"
#: Headroom toward the stored extreme (display.display8).
EXTREME_RENDER = "2"
#: Headroom by local lift (in window widths).
LIFT_RENDER = "3"
#: Headroom by local lift, against the room left over bright backgrounds.
ROOM_RENDER = "4"
#: As v4, with a second set of patches MAG_SCALE times as wide: a magnified view's
#: objects at the size they have in the breast (`lift.MAG_SCALE`).
MAG_RENDER = "5"
#: As v5, with distinct spots: one straight bright object (a wire, a speckled paddle
#: edge) takes at most `lift.OBJECT_SPOTS` spots of a set while other objects remain.
DISTINCT_RENDER = "6"
#: As v6, with no lift within `lift.SKIN_MM` of the air (metal on the skin line: a skin BB).
SKIN_RENDER = "7"
#: As v7, nor on a compact round object that reaches the skin line (`lift.skin_objects`):
#: a skin BB whose far side lies deeper than `lift.SKIN_MM`, or one past a sliver of air.
OBJECT_RENDER = "8"
#: The contracts that lift (and carry second-look patches), with two sets, distinct spots,
#: a skin gate.
LIFT_RENDERS = (LIFT_RENDER, ROOM_RENDER, MAG_RENDER, DISTINCT_RENDER, SKIN_RENDER, OBJECT_RENDER)
WIDE_RENDERS = (MAG_RENDER, DISTINCT_RENDER, SKIN_RENDER, OBJECT_RENDER)
DISTINCT_RENDERS = (DISTINCT_RENDER, SKIN_RENDER, OBJECT_RENDER)
SKIN_RENDERS = (SKIN_RENDER, OBJECT_RENDER)
RENDERS = (LEGACY_RENDER, EXTREME_RENDER, *LIFT_RENDERS)
#: The PNG text chunk that carries it.
RENDER_KEY = "mammo-render"
#: v3's chunks: the patches (a base64 PNG strip) and their spots (JSON).
PATCHES_KEY, SPOTS_KEY = "mammo-patches", "mammo-spots"
#: Local maxima from this display level up are blended in, fully from KEEP_MAX_FULL,
#: when they stand out from the local mean by CONTRAST_FROM (fully CONTRAST_FULL) levels.
#: Both levels lie in the headroom above the window (display.WINDOW_TOP): metal and
#: calcifications well past the window, not tissue that merely clips it.
KEEP_MAX_FROM, KEEP_MAX_FULL = 232, 250
CONTRAST_FROM, CONTRAST_FULL = 32, 64
#: Maxima from this level up (metal: only the stored extreme gets there) are kept whatever
#: their neighbourhood: over tissue at the window top the lift can't reach CONTRAST_FROM.
KEEP_METAL = 252
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
    render: str = RENDER_VERSION  # "1" when rendered without headroom
    #: v3's second look: uint8 [PATCHES, channels, PATCH_PX, PATCH_PX] (see core.imaging.lift)
    patches: np.ndarray | None = None
    #: where the patches are: (row, column, lift) in the thumbnail's pixels
    spots: list[tuple[float, float, float]] = field(default_factory=list)


def fit_size(rows: int, cols: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side `long_side` and the aspect ratio kept."""
    scale = long_side / max(rows, cols)
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def _block_max(img: np.ndarray, k: int) -> np.ndarray:
    """Maximum over k x k blocks (the last partial block padded with black)."""
    h, w = img.shape
    hh, ww = -(-h // k) * k, -(-w // k) * k
    if (hh, ww) != (h, w):
        img = np.pad(img, ((0, hh - h), (0, ww - w)))
    rows = np.maximum.reduce([img[i::k] for i in range(k)])  # strided slices: no copies
    return np.maximum.reduce([rows[:, i::k] for i in range(k)])


def shrink(
    img: np.ndarray,
    height: int,
    width: int,
    *,
    area: tuple[float, float] | None = None,
    peaks: np.ndarray | None = None,
    keep_metal: bool = True,
    keep_headroom: bool = False,
    keep_peaks: bool = True,
) -> np.ndarray:
    """Area-average `img` (uint8) to (height, width), keeping near-white local maxima.

    `area` is the (height, width) of the image content in `img`'s pixels when it is
    not all of `img` (a reduced image covers a fractional number of pixels).
    `peaks` is the brightest display value within each pixel of `img` when `img`
    itself was averaged from a finer image (default: `img`). `keep_metal` keeps maxima
    from KEEP_METAL up whatever their contrast (rendering contract v2; in v1 such levels
    were also tissue that clipped the window). `keep_headroom` keeps every maximum in the
    headroom above the window (rendering contract v3, where only lifted pixels get there).
    `keep_peaks` False is the plain area average (v3's window levels, lifted afterwards).
    """
    if img.shape == (height, width) and area is None and peaks is None:
        return np.ascontiguousarray(img)
    box = None if area is None else (0.0, 0.0, area[1], area[0])
    src = Image.fromarray(np.ascontiguousarray(img))
    mean = np.asarray(src.resize((width, height), Image.Resampling.BOX, box=box))
    if not keep_peaks:
        return mean
    k = -(-img.shape[0] // height)
    k = max(k, -(-img.shape[1] // width))
    if k < 2 and peaks is None:
        return mean
    top = _block_max(img if peaks is None else peaks, k)
    peak = np.asarray(Image.fromarray(top).resize((width, height), Image.Resampling.NEAREST))
    peak = peak.astype(np.float32)
    lift = np.maximum(peak - mean, 0.0)
    weight = np.clip((peak - KEEP_MAX_FROM) / (KEEP_MAX_FULL - KEEP_MAX_FROM), 0.0, 1.0)
    contrast = np.clip((lift - CONTRAST_FROM) / (CONTRAST_FULL - CONTRAST_FROM), 0.0, 1.0)
    weight *= np.where(peak >= KEEP_METAL, 1.0, contrast) if keep_metal else contrast
    if keep_headroom:
        np.maximum(weight, np.clip((peak - WINDOW_TOP) / 8.0, 0.0, 1.0), out=weight)
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


def _bright_extremes(lut: np.ndarray, bits_stored: int) -> tuple[str, ...]:
    """Which stored extreme of a cell shows brightest: "max" when the display rises with
    the stored value, "min" when it falls (MONOCHROME1), both when it does neither."""
    used = lut[: 1 << min(bits_stored, 16)].astype(np.int16)
    steps = np.diff(used[used > 0]) if (used > 0).sum() > 1 else np.zeros(1)
    if (steps >= 0).all():
        return ("max",)
    if (steps <= 0).all():
        return ("min",)
    return ("min", "max")


def _patterns(arr: np.ndarray) -> np.ndarray:
    return arr.view(f"u{arr.dtype.itemsize}") if arr.dtype.kind == "i" else arr


def render_frame(
    dicom: DicomFile, frame: int = 0, size: int = DEFAULT_SIZE, **kwargs: Any
) -> Thumbnail:
    """Render one frame of an opened file as a `size`-px thumbnail (see `_render`).

    Raises :class:`DicomError` only: header values no codec or LUT can use become
    ``invalid_header``, anything else that stops the pixels ``decode_error``.
    """
    try:
        return _render(dicom, frame, size, **kwargs)
    except DicomError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
        raise DicomError(Failure.INVALID_HEADER, f"cannot render: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise DicomError(Failure.DECODE_ERROR, f"cannot render: {type(e).__name__}: {e}") from e
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # a native extension's panic: this file's error, not ours
        raise DicomError(Failure.DECODE_ERROR, f"codec crashed ({type(e).__name__}: {e})") from e


def _render(
    dicom: DicomFile,
    frame: int = 0,
    size: int = DEFAULT_SIZE,
    *,
    pad: bool = True,
    exact: bool = False,
    voi_index: int = 0,
    oversample: int = DEFAULT_OVERSAMPLE,
    render: str = RENDER_VERSION,
) -> Thumbnail:
    """Render one frame as a `size`-px thumbnail under rendering contract `render`.

    The fast path (default) gets stored values at `oversample` halvings finer than
    `size` (a reduced JPEG 2000 decode, else a box average that keeps each cell's
    extremes) and windows them through a 16-bit lookup table; ``exact=True``
    decodes in full and applies the float VOI per pixel. Both downsample the same
    way. Older contracts ("1": a plain 8-bit window; "2": headroom toward the stored
    extreme) stay renderable for comparisons and for models trained on them.
    """
    if render not in RENDERS:
        raise ValueError(f"unknown rendering contract {render!r}; use one of {RENDERS}")
    ds, facts = dicom.ds, dicom.facts
    bits, signed = facts.bits_stored, facts.pixel_representation == 1
    lifted, room = render in LIFT_RENDERS, render in (ROOM_RENDER, *WIDE_RENDERS)
    h, w = fit_size(facts.rows, facts.columns, size)
    if exact:
        stored = full_frame(dicom, frame)
        values = stored_values(_patterns(np.asarray(stored)), bits, signed)
        voi = resolve_voi(ds, _sample(values), voi_index)
        if lifted:
            lifter = Lifter(ds, voi, facts, room=room)
            bright = lifter.orient(np.asarray(stored))
            lift_map = lifter.analyse(
                bright, bright, 1.0, render in SKIN_RENDERS, render == OBJECT_RENDER
            )
        else:
            img = display8(values, ds, voi) if render != LEGACY_RENDER else None
            img = to_uint8(display_values(values, ds, voi)) if img is None else img
            small = shrink(img, h, w, keep_metal=render != LEGACY_RENDER)
    else:
        header_voi = choose_voi(ds, voi_index)
        table = window_lut if lifted else partial(display_lut, room=render != LEGACY_RENDER)
        if header_voi is not None:
            voi, lut = header_voi, table(ds, header_voi)
            extremes = _bright_extremes(lut, bits)
        else:  # an automatic window rises with the stored value, then inversion applies
            extremes = ("min",) if inverts(ds) else ("max",)
        finest = working_level(facts) if lifted else None  # the patches' pixel size
        reduced = reduced_frame(dicom, frame, size, extremes, oversample, max_level=finest)
        if header_voi is None:
            sample = stored_values(_patterns(_sample(reduced.pixels)), bits, signed)
            voi = resolve_voi(ds, sample, voi_index)
            lut = table(ds, voi)
        area = (facts.rows / reduced.factor, facts.columns / reduced.factor)
        if lifted:
            lifter = Lifter(ds, voi, facts, lut, room=room)
            mean = lifter.orient(reduced.pixels)
            raw = (reduced.extremes or {}).get("max" if lifter.high else "min", reduced.pixels)
            peak = lifter.orient(raw) if raw.shape == mean.shape else mean
            lift_map = lifter.analyse(
                mean, peak, reduced.factor, render in SKIN_RENDERS, render == OBJECT_RENDER
            )
        else:
            img = apply_lut(reduced.pixels, lut)
            peaks = None
            if reduced.extremes:
                peaks = np.maximum.reduce([apply_lut(e, lut) for e in reduced.extremes.values()])
            small = shrink(img, h, w, area=area, peaks=peaks, keep_metal=render != LEGACY_RENDER)
    patches, spots = None, []
    if lifted:
        small = shrink(lift_map.display, h, w, area=None if exact else area, keep_peaks=False)
        small = lift_up(small, lift_map.share((h, w)))
        offset = ((size - h) // 2, (size - w) // 2) if pad else (0, 0)
        distinct = render in DISTINCT_RENDERS
        patches, spots = lift_map.patches((h, w), offset, distinct=distinct)
        if render in WIDE_RENDERS:
            wide, wide_spots = lift_map.patches((h, w), offset, MAG_SCALE, distinct)
            patches, spots = np.concatenate([patches, wide]), spots + wide_spots
    _refuse_blank(small, stored if exact else reduced.pixels, voi)
    return Thumbnail(
        image=pad_square(small, size) if pad else small,
        facts=facts,
        frame=frame,
        voi=voi,
        content_shape=(h, w),
        method="exact" if exact else "fast",
        render=render,
        patches=patches,
        spots=spots,
    )


def _refuse_blank(small: np.ndarray, source: np.ndarray, voi: Voi) -> None:
    """A frame whose stored values vary but that renders as one gray level: the header's
    window or rescale is nonsense (a center of 1e308, a slope read as 8241), and an
    all-black "success" would hide it."""
    if small.size and small.min() == small.max():
        src = np.asarray(source)
        if src.size and src.min() != src.max():
            raise DicomError(
                Failure.INVALID_HEADER,
                f"every pixel renders as gray level {int(small.flat[0])} under "
                f"{voi.describe()}: the header's window or rescale is nonsense",
            )


def render(
    path: str | Path, frame: int = 0, size: int = DEFAULT_SIZE, **kwargs: object
) -> Thumbnail:
    """Open `path` and render one frame (raises DicomError with a typed reason)."""
    return render_frame(open_dicom(path), frame, size, **kwargs)  # type: ignore[arg-type]


#: A temp file older than this was left by a killed writer (a live one lives milliseconds).
STALE_TEMP_S = 600.0


def remove_stale_temps(folder: Path, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete temp files that a killed `save_png` left in `folder`; returns how many."""
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in folder.glob(".*.png.*.tmp"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # another run removed it first
            pass
    return removed


def save_png(
    img: np.ndarray,
    path: str | Path,
    render: str = RENDER_VERSION,
    patches: np.ndarray | None = None,
    spots: list[tuple[float, float, float]] | None = None,
) -> Path:
    """Write a thumbnail PNG atomically (see `files.atomic_write`), tagged with the
    rendering contract's version and, for v3, carrying its patches and their spots in
    compressed text chunks (`PATCHES_KEY`, `SPOTS_KEY`): one file is the model's whole
    input."""
    info = PngInfo()
    info.add_text(RENDER_KEY, render)
    if patches is not None:
        strip = np.ascontiguousarray(patches.transpose(0, 2, 1, 3).reshape(
            patches.shape[0] * patches.shape[2], patches.shape[1] * patches.shape[3]))  # fmt: skip
        buf = io.BytesIO()
        Image.fromarray(strip).save(buf, format="PNG", compress_level=6)
        info.add_text(PATCHES_KEY, base64.b64encode(buf.getvalue()).decode("ascii"), zip=True)
        info.add_text(SPOTS_KEY, json.dumps([[round(v, 2) for v in s] for s in spots or []]))
    with atomic_write(path, "wb") as f:
        Image.fromarray(img).save(f, format="PNG", compress_level=1, pnginfo=info)
    return Path(path)


def viewing_image(path: Path) -> Image.Image:
    """The thumbnail at `path` as a person sees it: the radiologist's rendering (the
    window over 0..255, anything past it white; see `display`), never the model's
    headroom image. Untagged first-version thumbnails already are that."""
    with Image.open(path) as im:
        render, gray = render_version(im), im.convert("L")
    return gray if render == LEGACY_RENDER else gray.point(VIEWING_LUT.tolist())


def viewing_png(path: Path) -> bytes:
    """`viewing_image` as PNG bytes (no text chunks: no patches, no contract tag)."""
    buf = io.BytesIO()
    viewing_image(path).save(buf, format="PNG")
    return buf.getvalue()


def render_version(im: Image.Image) -> str:
    """The rendering contract version an opened thumbnail was made with ("1" when untagged:
    the first version wrote no tag)."""
    return str(im.info.get(RENDER_KEY, LEGACY_RENDER))


def read_patches(im: Image.Image) -> tuple[np.ndarray | None, list[tuple[float, float, float]]]:
    """The patches and spots an opened v3 thumbnail carries ((None, []) for older ones).
    Raises ValueError when the chunk is damaged."""
    raw = im.info.get(PATCHES_KEY)
    if raw is None:
        return None, []
    try:
        with Image.open(io.BytesIO(base64.b64decode(raw))) as strip:
            a = np.asarray(strip.convert("L"))
        channels = a.shape[1] // PATCH_PX
        patches = a.reshape(-1, PATCH_PX, channels, PATCH_PX).transpose(0, 2, 1, 3)
        spots = [tuple(float(v) for v in s) for s in json.loads(im.info.get(SPOTS_KEY, "[]"))]
    except (ValueError, OSError, TypeError) as e:
        raise ValueError(f"damaged patches chunk: {e}") from e
    return np.ascontiguousarray(patches), spots  # type: ignore[return-value]

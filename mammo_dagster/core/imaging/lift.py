"""Local lift: how far a pixel stands above its surroundings (rendering contract v3).

Metal in a mammogram (a clip, a wire, a needle) is small and far brighter than the
tissue around it, whatever level the vendor's processing, the file's bit depth or a
lossy codec leaves it at. The lift measures exactly that: a white top-hat, the stored
value minus a grey opening (erosion, then dilation, with a square of `SE_MM`
millimetres), oriented so that "bright on the display" is up, in units of the display
window's width. Structures narrower than the square keep their full lift; tissue, an
implant or a collimation edge, which the square fits into, have none. Where the
background itself is air (lead letters beside the breast, a marker tag in the corner)
the lift is gated off: biopsy markers sit in tissue. Where the background itself is
near the stored extreme (a silicone implant, dense tissue past the window's top), a clip
has no more than the room left to rise by: there (contract v4, `room=True`) the lift
is measured against that room (`ROOM_SHARE` times it is the unit), up to `ROOM_CAP`
times what a window width would give.

Each thumbnail pixel is raised toward 255 by the lift of the brightest value in its
cell (`LiftMap.share`). And since a 128-px model input can't show a 3-mm clip's shape,
the contract also keeps a second look: `PATCHES` small patches at ~0.25 mm per pixel
around the highest-lift spots (`LiftMap.patches`), each holding the window display and
the lift there; the model's biopsy flag is decided on them (see `core.model.train`).

Running minima and maxima double their window (log2 of its width passes per pixel), in
plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from .display import (
    WINDOW_TOP,
    _patterns_unsigned,
    bright_is_high,
    rescale_slope,
    stored_values,
    window_lut,
    window_width,
)
from .voi import Voi

#: Without a usable pixel spacing, a mammogram's long side is taken to be this long (mm).
FIELD_MM = 300.0

#: Side of the square structuring element (mm at the detector): wider than any marker
#: stroke or needle (<= 3.2 mm) even magnified 1.8x, narrower than tissue structures.
SE_MM = 6.0
#: The background is computed on a grid of about this pitch (mm): block minima first.
GRID_MM = 1.0
#: Lift (in window widths) where the headroom starts, and where it reaches 255.
LIFT_FROM, LIFT_FULL = 0.3, 1.2
#: The background's display level (0..1 of the window) under which it counts as air.
AIR_FROM, AIR_FULL = 0.04, 0.12
#: v7: no lift within this many millimetres (at the detector) of the air: the skin line.
SKIN_MM = 4.0
#: v8: nor anywhere on a compact, round bright object that reaches within OBJECT_SKIN_MM of
#: the air (the skin line itself): at most COMPACT_MM across (at the detector) and at most
#: ROUND_ASPECT times as long as it is wide. A skin BB (a bead, a ring up to 7 mm across
#: magnified up to 2x) is one; a localization wire or a needle that crosses the skin is
#: long, and stays lifted; a clip a few millimetres under the skin does not reach the air.
COMPACT_MM, ROUND_ASPECT, OBJECT_SKIN_MM = 20.0, 2.5, 2.0
#: v8's finer air: a cell dark enough to be air at its darkest counts only when a path of
#: such cells about this long (mm, counted in cells) joins it to the background's air: a
#: sliver of air where a skin line runs into a collimated border does, a pocket of fat that
#: its window leaves dark, inside the breast, does not.
REACH_MM = 25.0
#: v4: over a background with less than 1 / ROOM_SHARE window widths of room left to the
#: stored extreme, ROOM_SHARE times that room counts as the unit (at most ROOM_CAP x).
ROOM_SHARE, ROOM_CAP = 2.0, 8.0
#: The second look: this many patches of PATCH_PX x PATCH_PX pixels covering PATCH_MM,
#: around lift maxima at least CANDIDATE_MM apart; channels: window display, lift.
PATCHES, PATCH_PX, PATCH_MM, CANDIDATE_MM = 8, 32, 8.0, 3.0
PATCH_CHANNELS = ("window", "lift")
#: Rendering contract v5's second set of patches is this many times as wide: a mag view
#: (1.5-2.0x) then shows each object at about the size it has in a contact view.
MAG_SCALE = 1.8
#: Contract v6: one bright object takes at most OBJECT_SPOTS spots of a set while other
#: objects remain; cells belong to one object when the path between them stays above
#: OBJECT_SHARE of their lift.
OBJECT_SPOTS, OBJECT_SHARE = 2, 0.5
#: The lift a patch's lift channel shows as 255 (window widths).
PATCH_LIFT_FULL = 2.0


def _running(a: np.ndarray, k: int, axis: int, op: np.ufunc, neutral: int) -> np.ndarray:
    """`op` (np.maximum / np.minimum) over a centred window of odd size k along `axis`;
    outside the array counts as `neutral`. Windows double in width (1, 2, 4, ...) until
    two overlapping ones cover k: log2(k) + 1 whole-array passes over contiguous slices,
    5-30x faster here than the van Herk / Gil-Werman prefix and suffix accumulations."""
    if k <= 1:
        return a
    n, r = a.shape[axis], k // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    cur = np.pad(a, pad, constant_values=neutral)

    def part(x: np.ndarray, start: int, length: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + length)
        return x[tuple(index)]

    width = 1  # cur[i] is `op` over the padded array's [i, i + width)
    while 2 * width <= k:
        m = cur.shape[axis] - width
        cur = op(part(cur, 0, m), part(cur, width, m))
        width *= 2
    return op(part(cur, 0, n), part(cur, k - width, n))


def opening(a: np.ndarray, k: int) -> np.ndarray:
    """Grey opening of a 2-D unsigned array with a k x k square (k odd)."""
    top = np.iinfo(a.dtype).max
    eroded = _running(_running(a, k, 0, np.minimum, top), k, 1, np.minimum, top)
    return _running(_running(eroded, k, 0, np.maximum, 0), k, 1, np.maximum, 0)


def block_min(a: np.ndarray, k: int) -> np.ndarray:
    """Minimum over k x k blocks (a last partial block over what it holds)."""
    if k <= 1:
        return a
    top = np.iinfo(a.dtype).max
    h, w = a.shape
    hh, ww = -(-h // k) * k, -(-w // k) * k
    if (hh, ww) != (h, w):
        a = np.pad(a, ((0, hh - h), (0, ww - w)), constant_values=top)
    rows = np.minimum.reduce([a[i::k] for i in range(k)])
    return np.minimum.reduce([rows[:, i::k] for i in range(k)])


def lift_background(bright: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, int]:
    """The local background of an oriented image (bright = high) of `pixel_mm` pixels:
    block minima on a ~GRID_MM grid, a grey opening of SE_MM, then a dilation by one
    cell. Returns the background grid and its cell size in input pixels."""
    background, cell, _darkest = lift_grids(bright, pixel_mm)
    return background, cell


def lift_grids(bright: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, int, np.ndarray]:
    """`lift_background`'s background grid and cell size, and the block minima it
    started from (each cell's darkest value)."""
    cell = max(1, int(round(GRID_MM / max(pixel_mm, 1e-3))))
    coarse = block_min(np.ascontiguousarray(bright), cell)
    background = opening(coarse, se_pixels(cell * pixel_mm))
    # one more cell of dilation: a pixel beside a bright edge (an implant's, a muscle's)
    # takes the bright side's background, not the dark side's that shares its cell
    background = _running(_running(background, 3, 0, np.maximum, 0), 3, 1, np.maximum, 0)
    return background, cell, coarse


def se_pixels(pixel_mm: float) -> int:
    """The structuring element's side in pixels of `pixel_mm` (odd, at least 3)."""
    k = int(round(SE_MM / max(pixel_mm, 1e-3)))
    return max(3, k | 1)


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.asarray(x, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def head(lift_windows: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """The headroom share (0..1) of each pixel: its lift ramped, times the tissue gate."""
    return ramp(lift_windows, LIFT_FROM, LIFT_FULL) * gate


def lift_up(display: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Display levels (0..WINDOW_TOP) raised toward 255 by their headroom share."""
    y = display.astype(np.float32)
    y += (255.0 - y) * share
    return np.rint(y).astype(np.uint8)


def block_max(a: np.ndarray, k: int) -> np.ndarray:
    """Maximum over k x k blocks (a last partial block over what it holds)."""
    if k <= 1:
        return a
    h, w = a.shape
    hh, ww = -(-h // k) * k, -(-w // k) * k
    if (hh, ww) != (h, w):
        low = np.iinfo(a.dtype).min if a.dtype.kind in "ui" else -np.inf
        a = np.pad(a, ((0, hh - h), (0, ww - w)), constant_values=low)
    rows = np.maximum.reduce([a[i::k] for i in range(k)])
    return np.maximum.reduce([rows[:, i::k] for i in range(k)])


@dataclass
class LiftMap:
    """One frame at the rendering's working resolution, ready for the lift.

    `peak` holds the oriented brightest value of each pixel's cell, `display` the window
    levels (0..WINDOW_TOP) of the pixels, `background` and `gate` the background and the
    air gate (times the window-width unit) on a grid of `cell`-pixel cells, `pixel_mm`
    the pixels' size at the detector. The lift (window widths, 0 over air) is only ever
    computed where it is used: per thumbnail cell, and inside the patches.
    """

    peak: np.ndarray
    display: np.ndarray
    background: np.ndarray
    gate: np.ndarray
    cell: int
    pixel_mm: float

    def __post_init__(self) -> None:
        self._blocks: dict[tuple[int, int], tuple[np.ndarray, int]] = {}

    def lift_of(self, values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The lift of oriented `values` at pixel rows x cols (index vectors)."""
        r = np.minimum(rows // self.cell, self.background.shape[0] - 1)[:, None]
        c = np.minimum(cols // self.cell, self.background.shape[1] - 1)[None, :]
        return (values.astype(np.float32) - self.background[r, c]) * self.gate[r, c]

    def blocks(self, out: tuple[int, int]) -> tuple[np.ndarray, int]:
        """The lift of each k x k block's brightest value, k the block an `out` (h, w)
        thumbnail pixel covers at most."""
        if out not in self._blocks:
            h, w = self.peak.shape
            k = max(-(-h // out[0]), -(-w // out[1]), 1)
            top = block_max(self.peak, k)
            rows = np.minimum(np.arange(top.shape[0]) * k + k // 2, h - 1)
            cols = np.minimum(np.arange(top.shape[1]) * k + k // 2, w - 1)
            self._blocks[out] = self.lift_of(top, rows, cols), k
        return self._blocks[out]

    def share(self, out: tuple[int, int]) -> np.ndarray:
        """The headroom share (0..1) of each pixel of an `out` (h, w) thumbnail of the
        frame: the highest lift in its cell, ramped."""
        top, _k = self.blocks(out)
        h, w = out
        img = Image.fromarray(np.ascontiguousarray(top, dtype=np.float32), mode="F")
        return ramp(np.asarray(img.resize((w, h), Image.Resampling.NEAREST)), LIFT_FROM, LIFT_FULL)

    def patches(
        self,
        out: tuple[int, int],
        offset: tuple[int, int] = (0, 0),
        scale: float = 1.0,
        distinct: bool = False,
    ) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
        """The second look: uint8 [PATCHES, 2, PATCH_PX, PATCH_PX] patches around the
        highest-lift spots, and each spot as (row, column, lift) in the coordinates of
        an `out` thumbnail placed at `offset` (a padded square's). Fewer spots than
        PATCHES leave black patches at lift 0. `scale` > 1 widens every patch and the
        spacing between spots by that factor (a magnified view read in breast millimetres);
        `distinct` (contract v6) gives one bright object at most OBJECT_SPOTS spots while
        other objects are left (`_distinct_spots`)."""
        top, k = self.blocks(out)
        apart = max(1, int(round(CANDIDATE_MM * scale / (self.pixel_mm * k))))
        chosen = (_distinct_spots if distinct else _spots)(top, apart)
        side = max(4, int(round(PATCH_MM * scale / self.pixel_mm)))
        half = side // 2
        h, w = self.peak.shape
        out_patches = np.zeros((PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX), np.uint8)
        spots: list[tuple[float, float, float]] = []
        sy, sx = out[0] / h, out[1] / w
        for n, (by, bx) in enumerate(chosen):
            block = self.peak[by * k : (by + 1) * k, bx * k : (bx + 1) * k]
            dy, dx = np.unravel_index(int(np.argmax(block)), block.shape)
            y, x = self._centre(by * k + dy, bx * k + dx, scale)
            y0, x0 = y - half, x - half
            rows = np.clip(np.arange(y0, y0 + side), 0, h - 1)
            cols = np.clip(np.arange(x0, x0 + side), 0, w - 1)
            lift = self.lift_of(_crop(self.peak, y0, x0, side), rows, cols)
            lift *= _inside((h, w), y0, x0, side)  # nothing past the edge
            out_patches[n, 0] = _resized(_crop(self.display, y0, x0, side))
            out_patches[n, 1] = _resized(lift * (255.0 / PATCH_LIFT_FULL))
            spots.append((float((y + 0.5) * sy + offset[0]), float((x + 0.5) * sx + offset[1]),
                          float(top[by, bx])))  # fmt: skip
        return out_patches, spots

    def _centre(self, y: int, x: int, scale: float = 1.0) -> tuple[int, int]:
        """The lift-weighted centre of the bright object at (y, x): the pixels within
        CANDIDATE_MM whose lift is at least half the highest there. A patch is then
        centred on the object, wherever in it the grid found its maximum."""
        h, w = self.peak.shape
        r = max(1, int(round(CANDIDATE_MM * scale / self.pixel_mm)))
        rows = np.arange(max(y - r, 0), min(y + r + 1, h))
        cols = np.arange(max(x - r, 0), min(x + r + 1, w))
        lift = self.lift_of(self.peak[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], rows, cols)
        weight = np.where(lift >= 0.5 * lift.max(), lift, 0.0) if lift.max() > 0 else None
        if weight is None or weight.sum() <= 0:
            return y, x
        cy = float((weight.sum(axis=1) * rows).sum() / weight.sum())
        cx = float((weight.sum(axis=0) * cols).sum() / weight.sum())
        return int(round(cy)), int(round(cx))


def _ranked(flat: np.ndarray, n: int) -> np.ndarray:
    """The indices of the n highest values of `flat`, highest first, equal values in
    index order: the same on every CPU (argpartition's order, and which of equal values
    at the cut it keeps, depend on the SIMD code numpy picks for the CPU)."""
    best = np.argpartition(-flat, n - 1)[:n]
    cut = flat[best].min()
    above = np.flatnonzero(flat > cut)
    best = np.concatenate([above, np.flatnonzero(flat == cut)[: n - len(above)]])
    return best[np.argsort(-flat[best], kind="stable")]


def _spots(top: np.ndarray, apart: int) -> list[tuple[int, int]]:
    """Up to PATCHES cells of the highest lift, each more than `apart` cells from the
    others (contracts v3-v5)."""
    flat = top.ravel()
    n = min(len(flat), 36 * PATCHES)  # enough maxima to find PATCHES apart
    chosen: list[tuple[int, int]] = []
    for i in _ranked(flat, n):
        by, bx = divmod(int(i), top.shape[1])
        if all(max(abs(by - y), abs(bx - x)) > apart for y, x in chosen):
            chosen.append((by, bx))
            if len(chosen) == PATCHES:
                break
    return chosen


def _links(
    near: np.ndarray,
    cells: np.ndarray,
    lifts: np.ndarray,
    spots: np.ndarray,
    spot_lifts: np.ndarray,
) -> np.ndarray:
    """bool [len(cells), len(spots)]: whether the straight path from each cell (int [B, 2])
    to each spot (int [m, 2]) keeps a cell at or above OBJECT_SHARE of the lower of their
    lifts in every step's 3 x 3 neighbourhood (a path may step beside a one-cell line);
    `near`: the lift grid's 3 x 3 maxima (`_neighbourhood_max`)."""
    d = spots[None, :, :] - cells[:, None, :]  # [B, m, 2]
    n = np.abs(d).max(axis=2)
    steps = np.arange(int(n.max()) + 1)
    t = np.minimum(steps, n[:, :, None]) / np.maximum(n, 1)[:, :, None]  # past its end: the end
    rows = np.rint(cells[:, None, :1] + 1 + d[:, :, :1] * t).astype(np.intp) - 1
    cols = np.rint(cells[:, None, 1:] + 1 + d[:, :, 1:] * t).astype(np.intp) - 1
    floors = (OBJECT_SHARE * np.minimum(lifts[:, None], spot_lifts[None, :])).astype(np.float32)
    return near[rows, cols].min(axis=2) >= floors


def _neighbourhood_max(top: np.ndarray) -> np.ndarray:
    """float32 3 x 3 maxima of a grid, over what lies inside it (nine shifted slices:
    ~10x faster than two `_running` passes at k = 3)."""
    padded = np.pad(top.astype(np.float32, copy=False), 1, constant_values=-np.inf)
    h, w = top.shape
    return np.maximum.reduce(
        [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    )


#: Candidates whose links `_distinct_spots` computes at once.
LINK_BATCH = 64


def _first_links(
    near: np.ndarray,
    cells: np.ndarray,
    lifts: np.ndarray,
    spots: np.ndarray,
    spot_lifts: np.ndarray,
    first: np.ndarray,
    start: int = 0,
) -> None:
    """For each of `cells` whose `first` is -1, the first of spots[start:] (as an index
    into `spots`) it is linked to (`_links`), or -1: `first` updated in place."""
    for j in range(start, len(spots)):
        open_ = np.flatnonzero(first < 0)
        if not len(open_):
            break
        hit = _links(near, cells[open_], lifts[open_], spots[j : j + 1], spot_lifts[j : j + 1])
        first[open_[hit[:, 0]]] = j


def _distinct_spots(top: np.ndarray, apart: int) -> list[tuple[int, int]]:
    """As `_spots`, but one straight bright object (a wire, a needle, a collimation or
    paddle edge that a lossy codec has left speckled) takes at most OBJECT_SPOTS spots
    while other objects remain. A cell belongs to the object of the first chosen spot
    it is linked to (`_links`: the straight path between them stays above OBJECT_SHARE
    of the lower of their lifts). The cells passed over fill what the other objects
    leave."""
    h, w = top.shape
    flat = top.ravel()
    n = min(len(flat), 36 * PATCHES * 8)  # a long line can fill the first 36 * PATCHES
    order = _ranked(flat, n)
    cells = np.stack(np.divmod(order, w), axis=1)
    lifts = flat[order].astype(np.float64)
    near = _neighbourhood_max(top)
    taken = np.zeros((h, w), bool)
    chosen: list[int] = []  # positions in `order`
    passed: list[int] = []
    objects: list[int] = []  # each chosen spot's object
    spots_of: list[int] = []  # spots per object
    p = 0
    while p < n and len(chosen) < PATCHES:
        # the next candidates not yet taken (what lies between them is, for good)
        ahead = p + np.flatnonzero(~taken[cells[p:, 0], cells[p:, 1]])[:LINK_BATCH]
        if not len(ahead):
            break
        sub_cells, sub_lifts = cells[ahead], lifts[ahead]
        first = np.full(len(ahead), -1, np.intp)
        if chosen:
            _first_links(near, sub_cells, sub_lifts, cells[chosen], lifts[chosen], first)
        for r, (q, (by, bx)) in enumerate(zip(ahead.tolist(), sub_cells.tolist(), strict=True)):
            if taken[by, bx]:
                continue
            taken[max(by - apart, 0) : by + apart + 1, max(bx - apart, 0) : bx + apart + 1] = True
            j = int(first[r])
            obj = objects[j] if j >= 0 else len(spots_of)
            if obj == len(spots_of):
                spots_of.append(0)
            if spots_of[obj] < OBJECT_SPOTS:
                spots_of[obj] += 1
                chosen.append(q)
                objects.append(obj)
                if len(chosen) == PATCHES:
                    break
                # the links of this batch's candidates to the new spot
                _first_links(near, sub_cells, sub_lifts, cells[chosen], lifts[chosen], first,
                             len(chosen) - 1)  # fmt: skip
            else:
                passed.append(q)
        p = int(ahead[-1]) + 1
    picked = chosen + passed[: PATCHES - len(chosen)]
    return [(int(cells[p, 0]), int(cells[p, 1])) for p in picked]


def _crop(a: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """The side x side window of `a` from (y0, x0), zeros beyond its edges (float32)."""
    out = np.zeros((side, side), np.float32)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + side, a.shape[0]), min(x0 + side, a.shape[1])
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = a[ys:ye, xs:xe]
    return out


def _inside(shape: tuple[int, ...], y0: int, x0: int, side: int) -> np.ndarray:
    """float32 side x side: 1 where the window from (y0, x0) lies inside an array of
    `shape`, 0 beyond its edges (`_crop` of an array of ones, without the array)."""
    out = np.zeros((side, side), np.float32)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + side, shape[0]), min(x0 + side, shape[1])
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = 1.0
    return out


def _resized(a: np.ndarray) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    small = np.asarray(img.resize((PATCH_PX, PATCH_PX), Image.Resampling.BILINEAR))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def pixel_mm(facts) -> float:
    """The detector pixel size of a header (FIELD_MM over the long side without one)."""
    spacing = facts.pixel_spacing_mm
    if not spacing or not 0.01 <= spacing <= 2.0:
        spacing = FIELD_MM / max(facts.rows, facts.columns, 1)
    return float(spacing)


def working_level(facts) -> int:
    """The most halvings that keep pixels no coarser than the patches' (PATCH_MM /
    PATCH_PX, 10% slack): the second look sees the same pixel size from every vendor,
    whatever size the thumbnail is rendered at."""
    target = PATCH_MM / PATCH_PX * 1.1
    level, spacing = 0, pixel_mm(facts)
    while spacing * 2 ** (level + 1) <= target:
        level += 1
    return level


class Lifter:
    """The v3 lift for one header and VOI: orientation, units, window, pixel size."""

    def __init__(
        self, ds: Dataset, voi: Voi, facts, lut: np.ndarray | None = None, *, room: bool = False
    ) -> None:
        """`lut`: the header's `display.window_lut`, when the caller has it already;
        `room`: lift against the room left over bright backgrounds (contract v4)."""
        bits, signed = facts.bits_stored, facts.pixel_representation == 1
        self.bits, self.signed = bits, signed
        self.lo = -(1 << (bits - 1)) if signed else 0
        self.hi = self.lo + (1 << bits) - 1
        self.high = bright_is_high(ds, voi)
        self.unit = rescale_slope(ds) / window_width(ds, voi)
        # the window (0..WINDOW_TOP) and the air gate, indexed by the oriented value
        oriented = np.arange(1 << bits, dtype=np.int64)
        values = self.lo + oriented if self.high else self.hi - oriented
        lut = window_lut(ds, voi) if lut is None else lut
        self.lut = lut[values & ((1 << facts.bits_allocated) - 1)]
        self.gate = ramp(self.lut / WINDOW_TOP, AIR_FROM, AIR_FULL) * np.float32(self.unit)
        if room:  # the gate is indexed by the background's oriented value: fold it in
            left = (len(oriented) - oriented).astype(np.float32) * np.float32(self.unit)
            self.gate *= np.clip(1.0 / (ROOM_SHARE * left), 1.0, ROOM_CAP)
        self.spacing = pixel_mm(facts)

    def orient(self, patterns: np.ndarray) -> np.ndarray:
        """Raw stored patterns -> uint16 values that grow with display brightness (0 is
        the darkest), bits above BitsStored dropped."""
        if not self.signed:
            v = np.asarray(patterns).astype(np.uint16, copy=False) & np.uint16(self.hi)
            return v if self.high else np.uint16(self.hi) - v
        v = stored_values(_patterns_unsigned(np.asarray(patterns)), self.bits, True)
        b = v - self.lo if self.high else self.hi - v
        return b.astype(np.uint16)

    def near_air(self, darkest: np.ndarray, air: np.ndarray, cell_mm: float) -> np.ndarray:
        """bool, per background cell: within OBJECT_SKIN_MM of the background's `air` or
        of a cell whose `darkest` value (`lift_grids`) is air (below the middle of the air
        gate's ramp) and joined to that air within REACH_MM (`reach`). Finer than the
        background's air, which an opening and a dilation have taken from a sliver of air
        a few millimetres wide (a skin line that runs into a collimated border)."""
        dark = self.lut[darkest] < np.float32((AIR_FROM + AIR_FULL) / 2 * WINDOW_TOP)
        steps = int(np.ceil(REACH_MM / max(cell_mm, 1e-3)))
        return skin_gate(~(air | reach(dark & ~air, air, steps)), cell_mm, OBJECT_SKIN_MM) == 0

    def analyse(
        self,
        mean: np.ndarray,
        peak: np.ndarray,
        factor: float,
        skin: bool = False,
        objects: bool = False,
    ) -> LiftMap:
        """The lift map of oriented cell means and cell maxima (the same array when the
        cells are single pixels) whose pixels span `factor` detector pixels; `skin`
        (contract v7): no lift within SKIN_MM of the air either (`skin_gate`); `objects`
        (contract v8, with `skin`): nor on a compact round object that reaches within
        OBJECT_SKIN_MM of air seen at the cells' darkest and joined to the background's air
        within REACH_MM (`skin_objects`, `near_air`)."""
        px = self.spacing * factor
        coarse, cell, darkest = lift_grids(mean, px)
        gate = self.gate[coarse]
        if skin:
            tissue = gate > 0
            skin_map = skin_gate(tissue, cell * px)
            if objects:
                top = block_max(np.ascontiguousarray(peak), cell)
                lifted = (top.astype(np.float32) - coarse) * gate >= LIFT_FROM
                if lifted.any():
                    zone = tissue & self.near_air(darkest, ~tissue, cell * px)
                    skin_map *= skin_objects(lifted, zone, cell * px)
            gate = gate * skin_map
        display = np.take(self.lut, mean)  # a uint8 table: take is ~2x faster than indexing
        return LiftMap(peak, display, coarse.astype(np.float32), gate, cell, px)


def skin_gate(tissue: np.ndarray, cell_mm: float, mm: float = SKIN_MM) -> np.ndarray:
    """1 where a background cell is tissue at least `mm` from any air cell, else 0:
    metal on the skin line (a skin BB, a scar marker) is not a biopsy marker, which sits
    in a lesion inside the breast. The array's edges count as tissue (a chest wall or a
    collimated border is not skin)."""
    k = 2 * int(np.ceil(mm / max(cell_mm, 1e-3))) + 1
    t = tissue.astype(np.uint8)
    return _running(_running(t, k, 0, np.minimum, 1), k, 1, np.minimum, 1).astype(np.float32)


def components(mask: np.ndarray) -> np.ndarray:
    """The 8-connected components of a 2-D bool array: each True cell labelled with the
    smallest flat index of its component, -1 elsewhere. Works on the True cells only (a
    lift map has few): each pair of neighbours takes the lower of their labels, and a
    label jumps to its own label, until nothing changes."""
    h, w = mask.shape
    out = np.full(h * w, -1, np.int64)
    cells = np.flatnonzero(mask)
    if not len(cells):
        return out.reshape(h, w)
    ys, xs = np.divmod(cells, w)
    where = np.full(h * w, -1, np.int64)
    where[cells] = np.arange(len(cells))
    a_parts, b_parts = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each neighbour pair once
        ny, nx = ys + dy, xs + dx
        inside = np.flatnonzero((ny < h) & (nx >= 0) & (nx < w))
        other = where[ny[inside] * w + nx[inside]]
        linked = other >= 0
        a_parts.append(inside[linked])
        b_parts.append(other[linked])
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    label = np.arange(len(cells))
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        while True:  # a label is a cell of the same component: take that cell's label
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            break
        label = new
    out[cells] = cells[label]
    return out.reshape(h, w)


def reach(mask: np.ndarray, seeds: np.ndarray, steps: int) -> np.ndarray:
    """bool: the cells of `mask` joined to a cell of `seeds` (cells outside `mask`) by an
    8-connected path of at most `steps` cells of `mask`: a cell beside a seed is one step
    away. Grows from the newly reached cells only, so a step costs what it adds."""
    h, w = mask.shape
    inside = np.pad(mask.astype(bool, copy=False), 1).ravel()
    near = np.flatnonzero(inside)
    reached = np.zeros(inside.shape, bool)
    if len(near) and steps >= 1:
        offsets = np.array([dy * (w + 2) + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        offsets = offsets[offsets != 0]
        seeded = np.pad(seeds.astype(bool, copy=False), 1).ravel()
        front = near[seeded[near[:, None] + offsets].any(axis=1)]
        reached[front] = True
        for _ in range(steps - 1):
            if not len(front):
                break
            grown = (front[:, None] + offsets).ravel()
            grown = np.unique(grown[inside[grown] & ~reached[grown]])
            reached[grown] = True
            front = grown
    return reached.reshape(h + 2, w + 2)[1:-1, 1:-1]


def object_shape(rows: np.ndarray, cols: np.ndarray) -> tuple[float, float]:
    """(length, width) in cells of a set of cells: their spread along and across their
    principal axis, each plus one cell."""
    pts = np.stack([rows, cols], axis=1).astype(np.float64)
    pts -= pts.mean(axis=0)
    _, vectors = np.linalg.eigh(pts.T @ pts)
    along, across = pts @ vectors[:, 1], pts @ vectors[:, 0]
    return float(np.ptp(along) + 1.0), float(np.ptp(across) + 1.0)


def skin_objects(lifted: np.ndarray, zone: np.ndarray, cell_mm: float) -> np.ndarray:
    """float32 1, and 0 on every cell of (and one cell around) each compact, round object
    (8-connected `lifted` cells, those lifted by at least LIFT_FROM window widths; at most
    COMPACT_MM long, at most ROUND_ASPECT times as long as wide) with a cell in `zone`, the
    tissue within OBJECT_SKIN_MM of the air: a skin BB, which `skin_gate` alone leaves
    lifted past SKIN_MM (a ring wider than that, a skin line that runs on under a
    collimated border)."""
    out = np.ones(lifted.shape, np.float32)
    if not (lifted & zone).any():
        return out
    labels = components(lifted)
    cells = np.flatnonzero(lifted)
    of = labels.ravel()[cells]
    gone = np.zeros(lifted.shape, bool)
    for label in np.unique(labels[lifted & zone]):
        rows, cols = np.divmod(cells[of == label], lifted.shape[1])
        length, width = object_shape(rows, cols)
        if length * cell_mm <= COMPACT_MM and length <= ROUND_ASPECT * width:
            gone[rows, cols] = True
    if gone.any():
        out[_neighbourhood_max(gone) > 0] = 0.0
    return out

"""What is put on the breast: biopsy markers and tools, and the bright confounders
(skin BBs, calcifications, lead letters, implants)."""

from __future__ import annotations

import math

import numpy as np

from .drawing import MetalLayer, _box_dilate, _burn_metal, _rot, _stroke
from .truth import BIOPSY_KINDS, CALC_MAX, CLIP_KINDS, METAL_MARGIN, SATURATION

# ---------------------------------------------------------------------------------------------
# markers and confounders


def _pick_inside(
    rng: np.random.Generator, mask: np.ndarray, inset_px: float, tries: int = 200
) -> tuple[float, float]:
    """A random point in `mask`, preferably `inset_px` away from its edge."""
    rows_any = np.flatnonzero(mask.any(axis=1))
    cols_any = np.flatnonzero(mask.any(axis=0))
    if len(rows_any) == 0:
        return mask.shape[0] / 2, mask.shape[1] / 2
    y_lo, y_hi = rows_any[0], rows_any[-1] + 1
    x_lo, x_hi = cols_any[0], cols_any[-1] + 1
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    best = None
    for attempt in range(tries):
        inset = inset_px * (1.0 - attempt / tries)
        y, x = rng.uniform(y_lo, y_hi), rng.uniform(x_lo, x_hi)
        if not mask[int(y), int(x)]:
            continue
        best = best or (y, x)
        py = np.clip((y + inset * np.sin(ang)).astype(int), 0, mask.shape[0] - 1)
        px = np.clip((x + inset * np.cos(ang)).astype(int), 0, mask.shape[1] - 1)
        if mask[py, px].all():
            return y, x
    return best if best is not None else ((y_lo + y_hi) / 2, (x_lo + x_hi) / 2)


def _exit_point(
    mask: np.ndarray, y: float, x: float, theta: float, max_px: float
) -> tuple[float, float]:
    """Where a ray from (y, x) at angle theta leaves the mask (or the image)."""
    steps = np.arange(0.0, max_px, 1.0)
    ys = y + steps * math.sin(theta)
    xs = x + steps * math.cos(theta)
    inside = (ys >= 0) & (ys < mask.shape[0] - 0.5) & (xs >= 0) & (xs < mask.shape[1] - 0.5)
    yi = np.clip(np.rint(ys).astype(int), 0, mask.shape[0] - 1)
    xi = np.clip(np.rint(xs).astype(int), 0, mask.shape[1] - 1)
    inside &= mask[yi, xi]
    out = np.flatnonzero(~inside)
    k = int(out[0]) if len(out) else len(steps) - 1
    return float(ys[k]), float(xs[k])


def _clip_shape(rng: np.random.Generator, kind: str) -> tuple[list[np.ndarray], float]:
    """Polylines (x, y in mm, centred) and stroke half-width (mm) of a biopsy clip."""
    if kind == "ribbon":
        length, gap = rng.uniform(2.0, 3.5), rng.uniform(0.8, 1.5)
        arc = np.linspace(-np.pi / 2, np.pi / 2, 12)
        leg1 = np.array([[0.0, -gap / 2], [length, -gap / 2]])
        bend = np.stack([length + gap / 2 * np.cos(arc), gap / 2 * np.sin(arc)], axis=1)
        tail = rng.uniform(0.2, 0.5) * length
        leg2 = np.array([[length, gap / 2], [tail, gap / 2], [0.0, gap / 2 + gap * 0.4]])
        lines = [np.vstack([leg1, bend, leg2])]
        half_w = rng.uniform(0.18, 0.3)
    elif kind == "coil":
        length, r = rng.uniform(3.0, 5.0), rng.uniform(0.5, 0.9)
        turns, k = rng.uniform(3, 6), rng.uniform(0.3, 0.8)
        t = np.linspace(0.0, 1.0, 80)
        lines = [
            np.stack(
                [
                    t * length + r * k * np.cos(2 * np.pi * turns * t),
                    r * np.sin(2 * np.pi * turns * t),
                ],
                axis=1,
            )
        ]
        half_w = rng.uniform(0.13, 0.2)
    elif kind == "cylinder":
        length = rng.uniform(2.5, 4.0)
        lines = [np.array([[0.0, 0.0], [length, 0.0]])]
        half_w = rng.uniform(0.45, 0.75)
    elif kind == "x":
        la, lb = rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.5)
        ang = rng.uniform(np.pi / 3, np.pi / 2)
        a = np.array([[-la / 2, 0.0], [la / 2, 0.0]])
        b = _rot(np.array([[-lb / 2, 0.0], [lb / 2, 0.0]]), ang)
        hook = np.array([[la / 2, 0.0], [la / 2 - 0.4, 0.4]])
        lines = [a, b, hook]
        half_w = rng.uniform(0.18, 0.28)
    elif kind == "ring":
        diam = rng.uniform(1.8, 3.0)
        stop = 2 * np.pi if rng.random() < 0.6 else rng.uniform(1.5 * np.pi, 1.85 * np.pi)
        t = np.linspace(0.0, stop, 40)
        lines = [np.stack([diam / 2 * np.cos(t), diam / 2 * np.sin(t)], axis=1)]
        half_w = rng.uniform(0.18, 0.3)
    else:
        raise ValueError(f"unknown clip kind {kind!r}")
    return lines, half_w


def add_marker(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    *,
    pixel_spacing_mm: float,
    kind: str | None = None,
    layer: MetalLayer | None = None,
) -> str:
    """Burn a metallic biopsy marker/tool into img in place (value well above tissue: it
    must saturate after windowing); returns the kind used.

    `kind` is one of `BIOPSY_KINDS` (random when None). Pass the pixel spacing at the
    breast (detector spacing / magnification) so sizes stay physical. Strokes are at least
    2 px wide so that every marker has fully covered (saturated) pixels at any resolution.
    `layer` records the metal (and its level, see `MetalLayer`).
    """
    kind = kind or str(rng.choice(BIOPSY_KINDS))
    ps = float(pixel_spacing_mm)
    if kind in CLIP_KINDS:
        lines, half_w = _clip_shape(rng, kind)
        theta = rng.uniform(0, 2 * np.pi)
        squash = rng.uniform(0.4, 1.0)  # projection foreshortening
        y, x = _pick_inside(rng, mask, 8.0 / ps)
        centre = np.mean(np.vstack(lines), axis=0)
        r = max(half_w / ps, 1.0)
        for line in lines:
            pts = (line - centre) * np.array([1.0, squash])
            pts = _rot(pts, theta) / ps
            stroke = _stroke(img.shape, np.stack([y + pts[:, 1], x + pts[:, 0]], 1), r)
            _burn_metal(img, stroke, layer)
        return kind
    if kind not in ("wire", "needle"):
        raise ValueError(f"unknown marker kind {kind!r}; expected one of {BIOPSY_KINDS}")
    inset = (25.0 if kind == "wire" else 15.0) / ps
    ty, tx = _pick_inside(rng, mask, inset)
    theta = rng.uniform(0, 2 * np.pi)
    ey, ex = _exit_point(mask, ty, tx, theta, 2.0 * max(img.shape))
    outside = rng.uniform(5.0, 30.0) / ps
    oy, ox = ey + outside * math.sin(theta), ex + outside * math.cos(theta)
    dy, dx = math.sin(theta), math.cos(theta)
    if kind == "wire":
        r = max(rng.uniform(0.15, 0.25) / ps, 1.0)
        _burn_metal(img, _stroke(img.shape, np.array([[oy, ox], [ty, tx]]), r), layer)
        if rng.random() < 0.5:  # reinforced segment near the tip
            seg = rng.uniform(8.0, 20.0) / ps
            pts = np.array([[ty + 2 / ps * dy, tx + 2 / ps * dx], [ty + seg * dy, tx + seg * dx]])
            seg_r = max(rng.uniform(0.3, 0.45) / ps, 1.0)
            _burn_metal(img, _stroke(img.shape, pts, seg_r), layer)
        hook_len = rng.uniform(4.0, 8.0) / ps
        for sign in (1, -1) if rng.random() < 0.5 else (1,):
            ang = theta + sign * rng.uniform(0.3, 0.6)
            hook = np.array(
                [[ty, tx], [ty + hook_len * math.sin(ang), tx + hook_len * math.cos(ang)]]
            )
            _burn_metal(img, _stroke(img.shape, hook, r), layer)
        return kind
    # core-biopsy needle: thick shaft, aperture notch, tapered tip
    r = max(rng.uniform(0.75, 1.6) / ps, 1.5)
    tip = rng.uniform(1.5, 3.0) / ps
    notch0, notch1 = tip + rng.uniform(1.0, 4.0) / ps, tip + rng.uniform(12.0, 20.0) / ps
    ny, nx = -dx, dy  # normal

    def at(s: float, off: float = 0.0) -> list[float]:
        return [ty + s * dy + off * ny, tx + s * dx + off * nx]

    far = math.hypot(oy - ty, ox - tx)
    _burn_metal(img, _stroke(img.shape, np.array([at(notch1), at(far)]), r), layer)
    _burn_metal(img, _stroke(img.shape, np.array([at(notch0), at(notch1)]), r * 0.4), layer)
    wall = np.array([at(notch0, r * 0.6), at(notch1, r * 0.6)])
    _burn_metal(img, _stroke(img.shape, wall, max(r * 0.3, 1.0)), layer)
    cone = np.array([at(0.0), at(tip), at(notch0)])
    _burn_metal(img, _stroke(img.shape, cone, np.array([1.0, r, r])), layer)
    return kind


def _skin_points(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, 2) row/col of mask pixels next to air (the skin line), not on the image border."""
    air = ~mask & (img < 0.05)
    near = np.zeros_like(mask)
    near[1:, :] |= air[:-1, :]
    near[:-1, :] |= air[1:, :]
    near[:, 1:] |= air[:, :-1]
    near[:, :-1] |= air[:, 1:]
    edge = mask & near
    edge[[0, -1], :] = False
    edge[:, [0, -1]] = False
    return np.argwhere(edge)


def add_skin_marker(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    *,
    pixel_spacing_mm: float,
    layer: MetalLayer | None = None,
) -> str:
    """Burn a skin BB (solid metal bead or ring on the skin, often at the nipple) in place.

    A confounder: metallic and saturated, but not a biopsy tool. Returns "skin_bb", or ""
    when the mask has no skin line in view.
    """
    ps = float(pixel_spacing_mm)
    pts = _skin_points(img, mask)
    if len(pts) < 10:
        return ""
    if rng.random() < 0.6:  # nipple: the skin point farthest from the chest wall
        left = mask[:, 0].sum() >= mask[:, -1].sum()
        col = pts[:, 1] if left else mask.shape[1] - 1 - pts[:, 1]
        y, x = pts[int(np.argmax(col))]
    else:
        y, x = pts[int(rng.integers(len(pts)))]
    diam = rng.uniform(1.5, 3.5) / ps
    if rng.random() < 0.7:
        drawn = _stroke(img.shape, np.array([[y, x]], float), max(diam / 2, 1.2))
    else:
        t = np.linspace(0, 2 * np.pi, 32)
        ring = np.stack([y + diam * np.sin(t), x + diam * np.cos(t)], 1)
        drawn = _stroke(img.shape, ring, max(0.25 / ps, 1.0))
    _burn_metal(img, drawn, layer)
    return "skin_bb"


def add_calcifications(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    *,
    pixel_spacing_mm: float,
) -> str:
    """Burn a cluster (and maybe a few scattered) calcifications, 0.1-0.5 mm, in place.

    Bright but capped at `CALC_MAX` so they never read as metal; sub-pixel specks fade
    with their area as a detector would. Returns "calcs".
    """
    ps = float(pixel_spacing_mm)
    cy, cx = _pick_inside(rng, mask, 6.0 / ps)
    n = int(rng.integers(5, 26))
    spread = rng.uniform(2.0, 6.0) / ps
    centres = np.stack([cy + rng.normal(0, spread, n), cx + rng.normal(0, spread, n)], 1)
    sizes = rng.uniform(0.1, 0.5, n)
    if rng.random() < 0.3:
        k = int(rng.integers(2, 6))
        extra = np.stack([rng.uniform(0, img.shape[0], k), rng.uniform(0, img.shape[1], k)], axis=1)
        centres = np.vstack([centres, extra])
        sizes = np.concatenate([sizes, rng.uniform(0.3, 0.9, k)])
    for (y, x), size in zip(centres, sizes, strict=True):
        sigma = size / 2.5 / ps
        amp = rng.uniform(0.12, 0.3)
        if sigma < 0.5:
            amp *= (sigma / 0.5) ** 2
            sigma = 0.5
        r = int(math.ceil(3 * sigma)) + 1
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, img.shape[0])
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, img.shape[1])
        if y1 <= y0 or x1 <= x0:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - x
        blob = amp * np.exp(-(yy * yy + xx * xx) / (2 * sigma * sigma)) * mask[y0:y1, x0:x1]
        sub = img[y0:y1, x0:x1]
        new = sub + blob
        sub[...] = np.where(new > CALC_MAX, np.maximum(sub, CALC_MAX), new)
    return "calcs"


#: Stroke font for lead letters: polylines in a cell 1 high (y down), width in the tuple.
_LETTERS: dict[str, tuple[float, list[list[tuple[float, float]]]]] = {
    "L": (0.6, [[(0.0, 0.0), (0.0, 1.0), (0.6, 1.0)]]),
    "R": (
        0.62,
        [
            [
                (0.0, 1.0),
                (0.0, 0.0),
                (0.38, 0.0),
                (0.55, 0.08),
                (0.62, 0.25),
                (0.55, 0.42),
                (0.38, 0.5),
                (0.0, 0.5),
            ],
            [(0.3, 0.5), (0.62, 1.0)],
        ],
    ),  # fmt: skip
    "C": (
        0.62,
        [
            [
                (0.31 + 0.31 * math.cos(t), 0.5 + 0.5 * math.sin(t))
                for t in np.linspace(0.25 * math.pi, 1.75 * math.pi, 16)
            ]
        ],
    ),  # fmt: skip
    "M": (0.75, [[(0.0, 1.0), (0.0, 0.0), (0.375, 0.6), (0.75, 0.0), (0.75, 1.0)]]),
    "O": (
        0.62,
        [
            [
                (0.31 + 0.31 * math.cos(t), 0.5 + 0.5 * math.sin(t))
                for t in np.linspace(0.0, 2.0 * math.pi, 24)
            ]
        ],
    ),  # fmt: skip
}


def add_lead_letters(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    text: str,
    *,
    pixel_spacing_mm: float,
    layer: MetalLayer | None = None,
) -> str:
    """Burn lead letters (e.g. "LCC", "RMLO") into the air beside the breast, in place.

    A confounder: metal, as bright as a marker, but no biopsy tool. Placed near a corner
    on the side away from the chest wall, where there is air; returns "letters", or ""
    when no corner has room.
    """
    ps = float(pixel_spacing_mm)
    height = rng.uniform(7.0, 12.0) / ps
    half_w = max(rng.uniform(0.5, 0.9) / ps, 1.0)
    gap = 0.25 * height
    widths = [_LETTERS[c][0] * height for c in text]
    total = sum(widths) + gap * (len(text) - 1) + 2 * half_w
    rows, cols = img.shape
    if total + 4 * half_w >= cols or height + 4 * half_w >= rows:
        return ""
    left_wall = mask[:, 0].sum() >= mask[:, -1].sum()
    inset = rng.uniform(6.0, 15.0) / ps
    x0 = cols - inset - total if left_wall else inset
    air = ~_box_dilate(mask, max(int(3.0 / ps), 1)) & (img < 0.1)
    corners = [inset, rows - inset - height]
    if rng.random() < 0.5:
        corners.reverse()
    for y0 in corners:
        ys = slice(max(int(y0 - half_w), 0), min(int(y0 + height + half_w) + 1, rows))
        xs = slice(max(int(x0 - half_w), 0), min(int(x0 + total + half_w) + 1, cols))
        if ys.stop - ys.start < height or not air[ys, xs].all():
            continue
        x = x0 + half_w
        for char, width in zip(text, widths, strict=True):
            for line in _LETTERS[char][1]:
                pts = np.array([[y0 + py * height, x + px * height] for px, py in line])
                _burn_metal(img, _stroke(img.shape, pts, half_w), layer)
            x += width + gap
        return "letters"
    return ""


def add_implant(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, *, pixel_spacing_mm: float
) -> str:
    """A silicone implant behind the glandular tissue, in place: a large, nearly uniform
    region almost as bright as metal (`METAL_MARGIN` below saturation, never on the
    stored extreme), whose edge crosses the breast. Returns "implant"."""
    ps = float(pixel_spacing_mm)
    rows, cols = img.shape
    left_wall = mask[:, 0].sum() >= mask[:, -1].sum()
    ys = np.flatnonzero(mask.any(axis=1))
    if len(ys) < 4:
        return ""
    depth = mask.sum(axis=1).max()
    cy = rng.uniform(ys[0] + 0.35 * len(ys), ys[0] + 0.65 * len(ys))
    ry = rng.uniform(0.3, 0.42) * len(ys)
    rx = rng.uniform(0.35, 0.6) * depth
    cx = -rx * rng.uniform(0.1, 0.4) if left_wall else cols - 1 + rx * rng.uniform(0.1, 0.4)
    yy = np.arange(rows, dtype=np.float32)[:, None]
    xx = np.arange(cols, dtype=np.float32)[None, :]
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    edge = max(rng.uniform(0.6, 1.5) / ps, 1.0) / min(rx, ry)
    # over the pectoral muscle too: an implant's outline is smooth, not cut by the muscle
    cover = np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0) * (img > 0.02)
    level = rng.uniform(0.9, 0.955)
    inside = level + 0.08 * (img - 0.5)
    # METAL_MARGIN below saturation, as metal out-attenuates its surroundings: closer, the
    # quantum noise of `to_stored` would put implant pixels on the stored extreme itself,
    # where a marker over the implant can't differ from them (invisible, not hard to see)
    img += cover * (np.minimum(inside, SATURATION - METAL_MARGIN) - img)
    return "implant"

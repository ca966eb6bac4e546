"""The breast: geometry, tissue texture, vessels and the magnified field of a mag view."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .drawing import _power_noise, _resize, _sigmoid, _smoothstep, _stroke
from .truth import TISSUE_MAX

# ---------------------------------------------------------------------------------------------
# anatomy


@dataclass
class _Geometry:
    """A compressed breast in breast millimetres (chest wall at x=0, y down)."""

    a: float  # nipple depth from the chest wall
    b_up: float  # half-height above the axis
    b_down: float  # half-height below the axis
    cy: float  # axis height at the chest wall
    alpha: float  # axis tilt (radians, positive = nipple points down)
    eps: tuple[float, float, float, float]  # contour harmonics
    w_round: float  # width of the rounded (thinning) edge zone
    floor: float  # thickness equalization floor
    nipple_r: float  # 0 = nipple not in profile
    pect: tuple[float, float, float] | None  # (width at top, height on chest wall, bulge)
    ox: float = 0.0  # image mm of breast x=0
    oy: float = 0.0  # image mm of breast y=0
    mag: float = 1.0  # image mm per breast mm


def _sample_geometry(rng: np.random.Generator, h_mm: float, w_mm: float, view: str) -> _Geometry:
    """Random breast geometry for a detector of h_mm x w_mm (contact view)."""
    size = rng.uniform(0.0, 1.0)
    depth = 60.0 + 100.0 * size + rng.normal(0.0, 8.0)
    eps = (
        rng.uniform(-0.03, 0.03),
        rng.uniform(-0.04, 0.04),
        rng.uniform(-0.03, 0.03),
        rng.uniform(-0.06, 0.02),
    )
    w_round = rng.uniform(10.0, 22.0)
    floor = rng.uniform(0.35, 0.6)
    nipple_r = rng.uniform(2.5, 5.0) if rng.random() < 0.8 else 0.0
    if view == "CC":
        a = min(depth, 0.88 * w_mm)
        b = min(55.0 + 60.0 * size + rng.normal(0.0, 6.0), 0.55 * h_mm)
        return _Geometry(
            a=a,
            b_up=b * rng.uniform(0.9, 1.1),
            b_down=b * rng.uniform(0.9, 1.1),
            cy=h_mm * rng.uniform(0.44, 0.56),
            alpha=rng.uniform(-0.06, 0.06),
            eps=eps,
            w_round=w_round,
            floor=floor,
            nipple_r=nipple_r,
            pect=None,
        )
    alpha = rng.uniform(0.35, 0.65)
    ca, sa = math.cos(alpha), math.sin(alpha)
    a = min(depth * rng.uniform(1.05, 1.2), 0.92 * w_mm / ca)
    cy = h_mm * rng.uniform(0.3, 0.45)
    b_up = cy / ca * rng.uniform(1.05, 1.4)
    # the lower contour meets the chest wall (inframammary fold) low in the image
    yy_fold = h_mm * rng.uniform(0.82, 0.98) - cy
    inv = 1.0 / yy_fold**2 - (sa / a) ** 2
    b_down = min(ca / math.sqrt(max(inv, 1e-6)), 1.3 * a, b_up)
    g = _Geometry(a, b_up, b_down, cy, alpha, eps, w_round, floor, nipple_r, None)
    # breast width along the top edge decides how wide the pectoral can be
    xs = np.linspace(0.0, w_mm, 256, dtype=np.float32)[None, :]
    d_top, _, _, _ = _geometry_fields(g, np.zeros((1, 1), np.float32), xs)
    inside = np.flatnonzero(d_top[0] > 0)
    top_w = float(xs[0, inside[-1]]) if len(inside) else 0.3 * a
    g.pect = (
        max(top_w * rng.uniform(0.4, 0.85), 15.0),
        h_mm * rng.uniform(0.25, 0.5),
        rng.uniform(-2.0, 10.0),
    )
    return g


def _geometry_fields(
    g: _Geometry, y_img: np.ndarray, x_img: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Distance inside the skin (breast mm), normalized axis coords (nu, nv), pectoral sd."""
    xb = (x_img - g.ox) / g.mag
    yb = (y_img - g.oy) / g.mag
    yy = yb - g.cy
    ca, sa = math.cos(g.alpha), math.sin(g.alpha)
    u = xb * ca + yy * sa
    v = -xb * sa + yy * ca
    b = np.where(v < 0, g.b_up, g.b_down)
    nu = u / g.a
    nv = v / b
    rho = np.hypot(nu, nv) + 1e-6
    cphi, sphi = nu / rho, nv / rho
    c1, c2, c3, c4 = g.eps
    rho_p = rho * (1.0 + c1 * cphi + c2 * sphi + 2.0 * c3 * sphi * cphi + c4 * (cphi**2 - sphi**2))
    d = np.hypot(u, v) * (1.0 / rho_p - 1.0)
    if g.nipple_r > 0:
        un = g.a / (1.0 + c1 + c4) - 0.2 * g.nipple_r
        d = np.maximum(d, g.nipple_r - np.hypot(u - un, v))
    d = np.minimum(d, xb + 50.0)  # nothing behind the chest wall
    pect_sd = None
    if g.pect is not None:
        pw, ph, bulge = g.pect
        norm = math.hypot(pw, ph)
        pect_sd = (ph * pw - ph * xb - pw * yb) / norm
        s = np.clip((xb * pw - (yb - ph) * ph) / (pw * pw + ph * ph), 0.0, 1.0)
        pect_sd = pect_sd + bulge * 4.0 * s * (1.0 - s)
    return d, nu, nv, pect_sd


def synth_breast(
    rng: np.random.Generator,
    rows: int,
    cols: int,
    *,
    view: str,
    laterality: str,
    mag: bool,
    pixel_spacing_mm: float,
    mag_factor: float | None = None,
    density: float | None = None,
    paddle_band: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation-like image in [0,1] float32 (0 = air/background, higher = denser tissue)
    and a bool breast mask (breast tissue in view; the pectoral muscle is left out).

    L breasts have the chest wall on the left edge, R breasts on the right. A magnification
    view (`mag`) shows a part of the breast magnified by `mag_factor` (default 1.5-2.0) in a
    collimated field, with compression-paddle edges; its mask is the tissue in the field.
    `density` in [0, 1] (fatty .. extremely dense) defaults to a random value.
    `paddle_band` False leaves out the paddle's bright edge band (mag views only).
    """
    if view not in ("CC", "MLO") or laterality not in ("L", "R"):
        raise ValueError(f"view must be CC/MLO and laterality L/R, got {view!r}/{laterality!r}")
    ps = float(pixel_spacing_mm)
    h_mm, w_mm = rows * ps, cols * ps
    m = (float(mag_factor) if mag_factor else float(rng.uniform(1.5, 2.0))) if mag else 1.0
    density = float(rng.beta(2.0, 2.5)) if density is None else float(density)

    g = _sample_geometry(rng, h_mm, w_mm, view)
    field_box: tuple[int, int, int, int] | None = None
    if mag:
        field_box = _place_mag_field(rng, g, rows, cols, ps, m)

    # smooth fields on a coarse grid (<= ~0.25 mm) then bilinear upsampling
    step = max(ps, 0.25)
    cr, cc = max(int(round(h_mm / step)), 8), max(int(round(w_mm / step)), 8)
    sy, sx = h_mm / cr, w_mm / cc
    yc = ((np.arange(cr, dtype=np.float32) + 0.5) * sy)[:, None]
    xc = ((np.arange(cc, dtype=np.float32) + 0.5) * sx)[None, :]
    d, nu, nv, pect_sd = _geometry_fields(g, yc, xc)

    # texture in breast millimetres: the spectrum is evaluated at f_breast = f_image * m;
    # ducts and glandular lobes are elongated toward the nipple
    n1 = _power_noise(
        rng,
        (cr, cc),
        sy / m,
        rng.uniform(2.6, 3.2),
        1.0 / 30.0,
        stretch=rng.uniform(1.5, 3.0),
        angle=g.alpha,
    )
    n2 = _power_noise(rng, (cr, cc), sy / m, 3.6, 1.0 / 25.0)
    n3 = _power_noise(rng, (cr, cc), sy / m, 2.2, 1.0 / 4.0, stretch=1.5, angle=g.alpha)

    dpos = np.maximum(d, 0.0)
    t = np.sqrt(np.clip(1.0 - (1.0 - np.clip(dpos / g.w_round, 0.0, 1.0)) ** 2, 0.0, 1.0))
    t_eq = g.floor + (1.0 - g.floor) * t
    # fibroglandular cone: wide at the chest wall, narrowing to the nipple, kept off the
    # skin by subcutaneous fat and off the chest wall by retromammary fat
    width = 0.8 - 0.4 * np.clip(nu, 0.0, 1.0)
    env = (
        np.exp(-((nv / width) ** 2))
        * _smoothstep(dpos, rng.uniform(3.0, 8.0), rng.uniform(15.0, 30.0))
        * _smoothstep(nu, 0.02, 0.25)
    )
    bias = -2.0 + 3.0 * density
    dense = _sigmoid(0.9 * (n1 + 0.15 * n3 + bias + 3.0 * (env - 0.5)))
    f0 = rng.uniform(0.28, 0.36)
    f1 = f0 + rng.uniform(0.25, 0.33)
    lig = np.exp(-((n2 / 0.06) ** 2)) * _smoothstep(dpos, 1.0, 6.0)
    tissue = t_eq * (f0 + (f1 - f0) * dense + 0.012 * n3) + 0.05 * lig * (1.0 - dense) * t_eq
    if pect_sd is not None:
        pw = _sigmoid(pect_sd / 0.8)
        pval = (
            rng.uniform(0.5, 0.64)
            + 0.07 * np.clip(pect_sd / 30.0, 0.0, 1.0)
            + 0.02 * n1
            + 0.012 * n3
        )
        tissue = tissue * (1.0 - pw) + pw * pval * np.maximum(t_eq, 0.9)
        d = np.maximum(d, np.minimum(pect_sd, 40.0))
    tissue = np.clip(tissue, 0.0, TISSUE_MAX).astype(np.float32)

    # full resolution: mask, antialiased skin edge, skin band
    d_full = _resize(d.astype(np.float32), rows, cols)
    img = _resize(tissue, rows, cols)
    ps_b = ps / m
    cover = np.clip(d_full / ps_b + 0.5, 0.0, 1.0)
    skin_amp = rng.uniform(0.04, 0.09)
    skin_w = rng.uniform(0.4, 0.8)
    img += skin_amp * np.exp(-(((d_full - 1.2 * skin_w) / skin_w) ** 2))
    img *= cover
    mask = d_full > 0.0
    if pect_sd is not None:  # the breast mask leaves out the pectoral muscle
        mask &= _resize(pect_sd.astype(np.float32), rows, cols) < 0.0

    _add_vessels(rng, img, mask, g, ps)
    if mag and field_box is not None:
        _apply_mag_field(rng, img, mask, field_box, ps, band=paddle_band)
    np.clip(img, 0.0, TISSUE_MAX, out=img)
    if laterality == "R":
        img = np.ascontiguousarray(img[:, ::-1])
        mask = np.ascontiguousarray(mask[:, ::-1])
    return img, mask


def _place_mag_field(
    rng: np.random.Generator, g: _Geometry, rows: int, cols: int, ps: float, m: float
) -> tuple[int, int, int, int]:
    """Collimated field (px) of a magnification view; moves `g` so tissue fills most of it.

    The field is the compression paddle (70-110 mm) projected at magnification `m`.
    """
    fh = min(int(rng.uniform(70.0, 110.0) * m / ps), int(rows * 0.85))
    fw = min(int(rng.uniform(70.0, 110.0) * m / ps), int(cols * 0.85))
    fx0 = 0 if rng.random() < 0.6 else int(cols * rng.uniform(0.02, 0.1))
    fy0 = int((rows - fh) * rng.uniform(0.2, 0.8))
    box = (fy0, fy0 + fh, fx0, min(fx0 + fw, cols - 2))
    cy_img = (box[0] + box[1]) / 2 * ps
    cx_img = (box[2] + box[3]) / 2 * ps
    yq = ((np.linspace(box[0], box[1], 24) + 0.5) * ps).astype(np.float32)[:, None]
    xq = ((np.linspace(box[2], box[3], 24) + 0.5) * ps).astype(np.float32)[None, :]
    g.mag = m
    g.w_round *= rng.uniform(0.6, 1.0)
    ca, sa = math.cos(g.alpha), math.sin(g.alpha)
    hi = 0.85
    best: tuple[float, float, float] | None = None
    for attempt in range(16):
        if attempt in (6, 11):  # a small breast cannot fill the field: this one is larger
            for name in ("a", "b_up", "b_down", "cy"):
                setattr(g, name, getattr(g, name) * 1.3)
            best, hi = None, 0.85
        # the region of interest (breast mm) goes to the field centre
        u0, v0 = rng.uniform(0.2, hi), rng.uniform(-0.4, 0.4)
        b0 = g.b_up if v0 < 0 else g.b_down
        roi_x = u0 * g.a * ca - v0 * b0 * sa
        roi_y = g.cy + u0 * g.a * sa + v0 * b0 * ca
        g.ox = min(cx_img - m * roi_x, 0.0)
        g.oy = cy_img - m * roi_y
        cover = float((_geometry_fields(g, yq, xq)[0] > 0).mean())
        if best is None or cover > best[0]:
            best = (cover, g.ox, g.oy)
        if cover >= 0.8:
            break
        hi = max(0.35, hi - 0.1)
    assert best is not None
    g.ox, g.oy = best[1], best[2]
    return box


def _add_vessels(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, g: _Geometry, ps: float
) -> None:
    """A few meandering vessels from the retro-areolar region toward the chest wall."""
    ca, sa = math.cos(g.alpha), math.sin(g.alpha)
    for _ in range(int(rng.integers(2, 7))):
        nu = np.linspace(rng.uniform(0.55, 0.9), rng.uniform(-0.05, 0.15), 24)
        nv = rng.uniform(-0.5, 0.5) + np.cumsum(rng.normal(0.0, 0.04, 24))
        u = nu * g.a
        v = nv * np.where(nv < 0, g.b_up, g.b_down)
        xb = u * ca - v * sa
        yb = g.cy + u * sa + v * ca
        px = np.stack([(g.oy + g.mag * yb) / ps, (g.ox + g.mag * xb) / ps], axis=1)
        radius = g.mag * rng.uniform(0.4, 1.1) / ps * np.linspace(0.6, 1.0, 24)
        drawn = _stroke(img.shape, px, np.maximum(radius, 0.5), soft=True)
        if drawn is None:
            continue
        box, cov = drawn
        img[box] += rng.uniform(0.025, 0.05) * cov * mask[box]


def _edge_profile(n: int, lo: float, hi: float, pen: float) -> np.ndarray:
    """1-D soft indicator of [lo, hi) with a penumbra of `pen` px."""
    i = np.arange(n, dtype=np.float32) + 0.5
    return np.clip((i - lo) / pen + 0.5, 0, 1) * np.clip((hi - i) / pen + 0.5, 0, 1)


def _apply_mag_field(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    field_box: tuple[int, int, int, int],
    ps: float,
    band: bool = True,
) -> None:
    """Compression-paddle edges and collimation of a magnification view (in place); no
    bright edge band when not `band` (the same random draws either way)."""
    rows, cols = img.shape
    fy0, fy1, fx0, fx1 = field_box
    # paddle rectangle: at least one of its edges lies inside the field
    fh, fw = fy1 - fy0, fx1 - fx0
    show = {k: rng.random() < p for k, p in (("x1", 0.7), ("y0", 0.5), ("y1", 0.5))}
    if not any(show.values()):
        show["x1"] = True
    px1 = fx0 + fw * rng.uniform(0.6, 0.9) if show["x1"] else fx1 + 50
    py0 = fy0 + fh * rng.uniform(0.08, 0.3) if show["y0"] else fy0 - 50
    py1 = fy0 + fh * rng.uniform(0.7, 0.92) if show["y1"] else fy1 + 50
    px0 = -50.0
    tissue = mask.astype(np.float32)
    inpad = _edge_profile(rows, py0, py1, 3.0)[:, None] * _edge_profile(cols, px0, px1, 3.0)[None]
    # outside the paddle the breast is not compressed: thicker, brighter
    img += rng.uniform(0.04, 0.1) * (1.0 - inpad) * tissue
    band_w = rng.uniform(0.8, 2.0) / ps  # px
    band_amp = rng.uniform(0.12, 0.22)  # drawn either way: the stream stays the same
    if not band:
        band_amp = 0.0
    yy = np.arange(rows, dtype=np.float32)[:, None]
    xx = np.arange(cols, dtype=np.float32)[None, :]
    seg_y = _edge_profile(rows, py0, py1, 2.0)[:, None]
    seg_x = _edge_profile(cols, px0, px1, 2.0)[None, :]
    band = np.zeros_like(img)
    if show["x1"]:
        band += np.exp(-(((xx - px1) / band_w) ** 2)) * seg_y
    if show["y0"]:
        band += np.exp(-(((yy - py0) / band_w) ** 2)) * seg_x
    if show["y1"]:
        band += np.exp(-(((yy - py1) / band_w) ** 2)) * seg_x
    img += band_amp * np.minimum(band, 1.0)
    # collimation: outside the field is unexposed (bright) or blanked (dark)
    pen = max(1.0, 0.3 / ps)
    infield = _edge_profile(rows, fy0, fy1, pen)[:, None] * _edge_profile(cols, fx0, fx1, pen)[None]
    coll = rng.uniform(0.72, 0.84) if rng.random() < 0.5 else rng.uniform(0.0, 0.03)
    img *= infield
    img += (1.0 - infield) * coll
    mask &= infield > 0.5

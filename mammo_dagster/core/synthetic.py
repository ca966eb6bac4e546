"""Synthetic mammography archive: anatomy, biopsy markers, magnification views, DICOM files.

No real mammograms ship with the project, so the demo, the tests and the benchmarks run
on images made here. The images are built to make a model learn the real cues:

* anatomy: a compressed breast seen from the chest wall (skin line, thickness fall-off,
  fibroglandular 1/f^beta texture, ligaments, vessels, nipple, pectoral muscle on MLO);
* biopsy markers and tools: small metallic clips (ribbon, coil, cylinder, X, ring),
  localization wires and core-biopsy needles, all saturating after windowing;
* confounders: skin BBs (metal, but *not* a biopsy tool) and calcifications;
* magnification views: a magnified, collimated field with compression-paddle edges;
* headers that only sometimes say what the pixels show, and sometimes lie.

Coordinates: the breast is synthesized with the chest wall on the left edge (L breast) and
mirrored for the R breast. Attenuation-like images are float32 in [0, 1]: 0 is air, tissue
stays below ``TISSUE_MAX``, calcifications below ``CALC_MAX`` and metal is ``METAL`` (1.0);
``to_stored`` saturates everything at or above ``SATURATION``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mammo_dagster.core.dicom_write import (
    DEFAULT_VENDORS,
    LOSSY_SYNTAXES,
    TRANSFER_SYNTAXES,
    VENDOR_PROFILES,
    ImageHeader,
    VendorProfile,
    build_dataset,
    encode,
    stable_uid,
    write,
)
from mammo_dagster.core.mixes import MIXES, StudyMix, study_mix
from mammo_dagster.core.realism import Realism

__all__ = [
    "BIOPSY_KINDS",
    "CLIP_KINDS",
    "GROUND_TRUTH_COLUMNS",
    "MARKER_HINT_WORDS",
    "MIXES",
    "MetalLayer",
    "Realism",
    "StudyMix",
    "SynthImage",
    "add_calcifications",
    "add_implant",
    "add_lead_letters",
    "add_marker",
    "add_skin_marker",
    "generate_archive",
    "padding_value",
    "plan_labels",
    "read_ground_truth",
    "synth_breast",
    "to_stored",
    "write_ground_truth",
]

#: Small clips left at a biopsy site.
CLIP_KINDS: tuple[str, ...] = ("ribbon", "coil", "cylinder", "x", "ring")
#: Everything `add_marker` can burn in (all count as a biopsy marker/tool).
BIOPSY_KINDS: tuple[str, ...] = (*CLIP_KINDS, "wire", "needle")
#: Words that make a description claim a marker/procedure (see `SynthImage.header_marker_hint`).
MARKER_HINT_WORDS: tuple[str, ...] = ("CLIP", "POST BX", "NEEDLE LOC", "STEREO BX", "WIRE LOC")

METAL = 1.0  #: attenuation value of metal (markers, wires, needles, skin BBs)
SATURATION = 0.97  #: values at or above this reach the extreme end of the stored range
TISSUE_MAX = 0.85  #: anatomy never exceeds this
CALC_MAX = 0.93  #: calcifications never exceed this (they must not look like metal)
#: Metal below the extreme (`Realism.metal_level`) stays this far (stored fraction) above
#: the tissue under it: it always out-attenuates its surroundings.
METAL_MARGIN = 0.05

GROUND_TRUTH_COLUMNS: tuple[str, ...] = (
    "path",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "patient_id",
    "has_biopsy_tool",
    "has_mag_view",
    "vendor",
    "transfer_syntax",
    "view",
    "laterality",
    "marker_kind",
    "header_mag_hint",
    "header_marker_hint",
    "marker_boxes",
)
_BOOL_COLUMNS = frozenset(
    {"has_biopsy_tool", "has_mag_view", "header_mag_hint", "header_marker_hint"}
)


@dataclass
class SynthImage:
    """Ground truth for one generated image.

    `marker_kind` lists every object burned in, joined by "+": biopsy kinds first
    (see `BIOPSY_KINDS`), then confounders ("skin_bb", "calcs"); "" when none.
    `has_biopsy_tool` is the label; a "skin_bb" alone is not a biopsy tool.
    `header_mag_hint` is true when the header claims magnification (mag or spot view
    modifier, magnification factor >= 1.3, the vendor's mag paddle, or "MAG"/"SPOT" in the
    series description); `header_marker_hint` when a description contains one of
    `MARKER_HINT_WORDS`.
    `marker_boxes` says where each biopsy marker/tool lies, in the order of its kind in
    `marker_kind`: the bounding box of the pixels it changed, "row0 col0 row1 col1"
    (half-open, pixels of the stored matrix), boxes joined by ";"; "" when none.
    """

    path: Path
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    has_biopsy_tool: bool
    has_mag_view: bool
    vendor: str
    transfer_syntax: str
    view: str
    laterality: str
    marker_kind: str
    header_mag_hint: bool
    header_marker_hint: bool
    marker_boxes: str = ""


# ---------------------------------------------------------------------------------------------
# small numeric helpers


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def _resize(arr: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resize of a float image (pixel-centre aligned) to (rows, cols)."""
    if arr.shape == (rows, cols):
        return arr.astype(np.float32, copy=False)
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    return np.array(im.resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float32)


def _power_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    step_mm: float,
    beta: float,
    f0: float,
    *,
    stretch: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Zero-mean, unit-std 1/f^beta noise on a grid of `step_mm` (f in cycles/mm, knee f0).

    `stretch` > 1 elongates features along direction `angle` (radians, x toward y).
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(shape[0], d=step_mm)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=step_mm)[None, :]
    if stretch != 1.0:
        c, s = math.cos(angle), math.sin(angle)
        fu = (fx * c + fy * s) * stretch
        fv = -fx * s + fy * c
        f2 = fu * fu + fv * fv
    else:
        f2 = fy * fy + fx * fx
    amp = (f2 + f0 * f0) ** (-beta / 4.0)
    amp[0, 0] = 0.0
    out = np.fft.irfft2(spec * amp, s=shape).astype(np.float32)
    out -= out.mean()
    out /= out.std() + 1e-12
    return out


def _box_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilate a bool mask by a (2r+1)^2 box (separable cumulative sums)."""
    if r <= 0:
        return mask.copy()
    out = mask
    for axis in (0, 1):
        c = np.cumsum(out, axis=axis, dtype=np.int32)
        n = out.shape[axis]
        pad_shape = list(out.shape)
        pad_shape[axis] = 1
        c = np.concatenate([np.zeros(pad_shape, np.int32), c], axis=axis)
        hi = np.minimum(np.arange(n) + r + 1, n)
        lo = np.maximum(np.arange(n) - r, 0)
        out = (np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)) > 0
    return out


def _stroke(
    shape: tuple[int, int],
    pts: np.ndarray,
    radius: float | np.ndarray,
    *,
    soft: bool = False,
    closed: bool = False,
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Coverage of a polyline (points (n, 2) as (row, col) px) drawn with `radius` px.

    Hard strokes are antialiased capsules (coverage 1 within radius - 0.5 px); soft strokes
    have a Gaussian cross-section (vessels). `radius` may be per point. Returns the
    bounding-box slices and the coverage in that box, or None when off-image.
    """
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if closed:
        pts = np.vstack([pts, pts[:1]])
    rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(pts),))
    reach = rad.max() * (3.0 if soft else 1.0) + 2.0
    y0 = max(int(math.floor(pts[:, 0].min() - reach)), 0)
    y1 = min(int(math.ceil(pts[:, 0].max() + reach)) + 1, shape[0])
    x0 = max(int(math.floor(pts[:, 1].min() - reach)), 0)
    x1 = min(int(math.ceil(pts[:, 1].max() + reach)) + 1, shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    cov = np.zeros((y1 - y0, x1 - x0), np.float32)
    segs = [(pts[i], pts[i + 1], rad[i], rad[i + 1]) for i in range(len(pts) - 1)]
    if len(pts) == 1:
        segs = [(pts[0], pts[0], rad[0], rad[0])]
    for p, q, ra, rb in segs:
        rr = max(ra, rb) * (3.0 if soft else 1.0) + 2.0
        sy0 = max(int(math.floor(min(p[0], q[0]) - rr)), y0)
        sy1 = min(int(math.ceil(max(p[0], q[0]) + rr)) + 1, y1)
        sx0 = max(int(math.floor(min(p[1], q[1]) - rr)), x0)
        sx1 = min(int(math.ceil(max(p[1], q[1]) + rr)) + 1, x1)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        yy = np.arange(sy0, sy1, dtype=np.float32)[:, None]
        xx = np.arange(sx0, sx1, dtype=np.float32)[None, :]
        dy, dx = q[0] - p[0], q[1] - p[1]
        ll = dy * dy + dx * dx
        if ll > 1e-12:
            t = np.clip(((yy - p[0]) * dy + (xx - p[1]) * dx) / ll, 0.0, 1.0)
        else:
            t = np.zeros((1, 1), np.float32)
        dist = np.hypot(yy - (p[0] + t * dy), xx - (p[1] + t * dx))
        r = ra + (rb - ra) * t
        c = (
            np.exp(-((dist / np.maximum(r, 0.3)) ** 2))  # Gaussian cross-section
            if soft
            else np.clip(r - dist + 0.5, 0.0, 1.0)  # antialiased capsule
        )
        sub = cov[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
        np.maximum(sub, c, out=sub)
    return (slice(y0, y1), slice(x0, x1)), cov


class MetalLayer:
    """Where metal objects lie and at what level of the stored range (`to_stored` reads it).

    Set `level` before drawing an object; pixels a later object covers at a lower level
    keep the lower one. `tissue` is what lay under the metal before it was burned in.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.level = 1.0
        self.levels = np.ones(shape, np.float32)
        self.tissue = np.zeros(shape, np.float32)
        self.used = False

    def record(self, box: tuple[slice, slice], cov: np.ndarray, before: np.ndarray) -> None:
        if self.level >= 1.0:
            return
        hit = cov > 0.0
        levels, tissue = self.levels[box], self.tissue[box]
        fresh = hit & (levels >= 1.0)
        tissue[fresh] = before[fresh]
        levels[hit] = np.minimum(levels[hit], self.level)
        self.used = True


def _burn_metal(
    img: np.ndarray,
    drawn: tuple[tuple[slice, slice], np.ndarray] | None,
    layer: MetalLayer | None = None,
) -> None:
    """Blend metal into `img` in place with the coverage from `_stroke` (and note it in
    `layer`)."""
    if drawn is None:
        return
    box, cov = drawn
    sub = img[box]
    if layer is not None:
        layer.record(box, cov, sub.copy())
    sub += cov * (METAL - sub)


def _rot(pts: np.ndarray, theta: float) -> np.ndarray:
    """Rotate (x, y) points by theta."""
    c, s = math.cos(theta), math.sin(theta)
    return pts @ np.array([[c, s], [-s, c]])


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


# ---------------------------------------------------------------------------------------------
# stored values


def padding_value(profile: VendorProfile) -> int | None:
    """The Pixel Padding Value `to_stored` writes for `profile` (air end), or None."""
    if not profile.pixel_padding:
        return None
    return profile.max_stored if profile.photometric == "MONOCHROME1" else 0


def to_stored(
    img: np.ndarray,
    mask: np.ndarray,
    profile: VendorProfile,
    rng: np.random.Generator,
    layer: MetalLayer | None = None,
) -> np.ndarray:
    """Map to stored pixel values for the profile (MONOCHROME2: dense/metal = high values;
    MONOCHROME1: inverted, dense/metal = LOW values; background = air). Metal reaches the
    extreme end of the stored range (max for MONO2, 0 or near for MONO1).

    Adds a background offset, a mild gain curve and quantum-like noise (almost none in
    air, which vendors' processing flattens). Where the profile
    has pixel padding, air more than ~2% of the image height away from the breast is set
    to `padding_value(profile)` and no other pixel takes that value.

    Metal that `layer` records below the extreme gets its plateau there (with noise), never
    darker than the tissue under it plus `METAL_MARGIN`.
    """
    maxv = profile.max_stored
    img = np.asarray(img, dtype=np.float32)
    gamma = rng.uniform(0.9, 1.1)
    bg = rng.uniform(0.01, 0.05)
    sigma = rng.uniform(0.003, 0.007)
    s = np.clip(img * (1.0 / SATURATION), 0.0, 1.0)
    s **= gamma
    s *= 1.0 - bg
    s += bg
    # quantum-like noise in tissue; processed For Presentation images flatten the air
    # (vendors clamp it), which is also why real archives compress 2.5-4:1 losslessly
    noise = rng.standard_normal(s.shape, dtype=np.float32)
    noise *= 0.03 + 0.97 * _smoothstep(img, 0.005, 0.04)
    s += sigma * noise
    s[img >= SATURATION] = 1.0
    if layer is not None and layer.used:
        below = layer.levels < 1.0
        under = np.clip(layer.tissue[below] * (1.0 / SATURATION), 0.0, 1.0) ** gamma
        under = under * (1.0 - bg) + bg
        cap = np.maximum(layer.levels[below], under + METAL_MARGIN) + sigma * noise[below]
        s[below] = np.minimum(s[below], cap)
    np.clip(s, 0.0, 1.0, out=s)
    stored = np.rint(s * maxv).astype(np.uint16)
    if profile.photometric == "MONOCHROME1":
        stored = maxv - stored
    pad = padding_value(profile)
    if pad is not None:
        r = max(2, img.shape[0] // 50)
        region = ~_box_dilate(mask, r) & (img < 0.1)
        if pad == 0:
            np.maximum(stored, 1, out=stored)
        else:
            np.minimum(stored, pad - 1, out=stored)
        stored[region] = pad
    return stored


# ---------------------------------------------------------------------------------------------
# archive plan

#: Fake names for fake patients.
_SURNAMES = (
    "DOE",
    "SMITH",
    "JOHNSON",
    "GARCIA",
    "MILLER",
    "MARTIN",
    "MULLER",
    "SCHMIDT",
    "ROSSI",
    "DUBOIS",
    "NOVAK",
    "KOWALSKA",
    "TANAKA",
    "OKAFOR",
    "SILVA",
    "NGUYEN",
    "HANSEN",
    "JANSEN",
    "MORENO",
    "PETROVA",
    "LINDQVIST",
    "OBRIEN",
    "KELLY",
    "FISCHER",
    "WEBER",
    "BAKER",
    "HUGHES",
    "PATEL",
    "CHEN",
    "LEE",
)
_GIVEN = (
    "JANE",
    "MARY",
    "ANNA",
    "MARIA",
    "LINDA",
    "SUSAN",
    "KAREN",
    "EVA",
    "SOFIA",
    "ELENA",
    "GRACE",
    "HELEN",
    "ALICE",
    "CLARA",
    "NORA",
    "IRENE",
    "ROSA",
    "LUCIA",
    "PAULA",
    "RUTH",
    "AMINA",
    "YUKI",
    "MEI",
    "INGRID",
    "HANNA",
    "JULIA",
    "MARTA",
    "OLGA",
)


StudyKind = Literal["screening", "diagnostic", "followup", "followup_diag", "stereo", "needle_loc"]


@dataclass
class _ImagePlan:
    view: str
    laterality: str
    mag: bool
    mag_factor: float
    markers: tuple[str, ...]
    skin_bb: bool
    calcs: bool
    extra: bool  # additional (non-standard) view
    mag_modifier: bool = False
    spot_modifier: bool = False
    header_mag_factor: float | None = None
    paddle: str | None = None
    series_description: str | None = None


@dataclass
class _StudyPlan:
    kind: StudyKind
    patient_index: int
    patient_id: str
    patient_name: str
    vendor: str
    study_date: str
    accession: str
    density: float
    side: str  # the breast the study is about
    clips: dict[str, str]  # side -> clip kind present at the time of the study
    new_clip: str | None  # clip placed during this study (stereotactic biopsy)
    nipple_bbs: bool
    study_description: str = ""
    images: list[_ImagePlan] = field(default_factory=list)


def _side_word(side: str) -> str:
    return {"L": "LEFT", "R": "RIGHT"}[side]


def _plan_patient(
    seed: int,
    p_idx: int,
    vendors: Sequence[str],
    home: str,
    used_ids: set[str],
    mix: StudyMix,
) -> list[_StudyPlan]:
    """The studies of one patient over time: kinds, dates, vendors, clips (kept once placed)."""
    rng = np.random.default_rng([seed, 1, p_idx])
    while True:
        pid = f"PID{int(rng.integers(1_000_000, 10_000_000)):07d}"
        if pid not in used_ids:
            used_ids.add(pid)
            break
    name = f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}"
    if rng.random() < 0.3:
        name += f"^{chr(65 + int(rng.integers(26)))}"
    density = float(rng.beta(2.0, 2.5))
    n_studies = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    date = _dt.date(2014, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 3300)))
    clips: dict[str, str] = {}
    if rng.random() < mix.prior_clip:  # arrives with a clip from a biopsy elsewhere
        clips[str(rng.choice(["L", "R"]))] = str(rng.choice(CLIP_KINDS))
    nipple_bbs = bool(rng.random() < 0.15)  # a site habit
    studies = []
    for _ in range(n_studies):
        table = mix.after_biopsy if clips else mix.no_biopsy
        kind = str(rng.choice(list(table), p=list(table.values())))
        if clips and rng.random() < 0.9:
            side = str(rng.choice(sorted(clips)))
        else:
            side = str(rng.choice(["L", "R"]))
        new_clip = (clips.get(side) or str(rng.choice(CLIP_KINDS))) if kind == "stereo" else None
        vendor = home if rng.random() < 0.85 or len(vendors) == 1 else str(rng.choice(vendors))
        studies.append(
            _StudyPlan(
                kind=kind,  # type: ignore[arg-type]
                patient_index=p_idx,
                patient_id=pid,
                patient_name=name,
                vendor=vendor,
                study_date=date.strftime("%Y%m%d"),
                accession=f"A{int(rng.integers(10_000_000, 100_000_000))}",
                density=density,
                side=side,
                clips=dict(clips),
                new_clip=new_clip,
                nipple_bbs=nipple_bbs,
            )
        )
        if new_clip:
            clips[side] = new_clip
        if kind == "needle_loc":
            clips.pop(side, None)  # the lesion and its clip are excised
            if rng.random() < 0.3:
                clips[side] = str(rng.choice(CLIP_KINDS))  # post-surgical clip
        date += _dt.timedelta(days=int(rng.integers(20, 500)))
    return studies


def _plan_study_images(rng: np.random.Generator, study: _StudyPlan) -> None:
    """Fill `study.images` and `study.study_description` (4-8 images)."""
    kind, side, clips = study.kind, study.side, study.clips
    views: list[tuple[str, str, bool, bool]] = []  # laterality, view, mag, extra
    if kind in ("stereo", "needle_loc"):
        views = [(side, ("CC", "MLO")[i % 2], False, i >= 2) for i in range(rng.integers(4, 7))]
    else:
        views = [
            ("R", "CC", False, False),
            ("L", "CC", False, False),
            ("R", "MLO", False, False),
            ("L", "MLO", False, False),
        ]
        if kind in ("screening", "followup") and rng.random() < 0.2:
            for _ in range(int(rng.integers(1, 3))):
                lat, view = str(rng.choice(["L", "R"])), str(rng.choice(["CC", "MLO"]))
                views.append((lat, view, False, True))
        if kind in ("diagnostic", "followup_diag"):
            p_mag = [0.2, 0.35, 0.3, 0.15] if kind == "diagnostic" else [0.1, 0.3, 0.35, 0.25]
            n_mag = int(rng.choice([1, 2, 3, 4], p=p_mag))
            mag_side = side
            if kind == "followup_diag" and rng.random() < 0.15:
                mag_side = "L" if side == "R" else "R"
            for i in range(n_mag):
                views.append((mag_side, ("CC", "MLO")[i % 2], True, True))

    site_bare = rng.random() < 0.3  # this site writes almost no hints
    sw = _side_word(side)
    descriptions = {
        "screening": ["MAMMO SCREENING BILATERAL", "MG SCREEN BILAT W CAD", "SCREENING MAMMOGRAM"],
        "diagnostic": [f"MAMMO DIAGNOSTIC {sw}", "MG DIAG BILAT", f"MAMMO DIAG {sw} W MAG"],
        "followup": ["MAMMO SCREENING BILATERAL", "MAMMO DIAGNOSTIC BILATERAL", "MG FOLLOW UP"],
        "followup_diag": [f"MAMMO DIAGNOSTIC {sw}", "MG DIAG BILAT"],
        "stereo": [f"MG BREAST BIOPSY {sw}", f"MAMMO PROCEDURE {sw}"],
        "needle_loc": [f"MG LOCALIZATION {sw}", f"MAMMO PROCEDURE {sw}"],
    }
    desc = str(rng.choice(descriptions[kind]))
    hint_desc = {
        "followup": (0.08, "MAMMO POST BX FOLLOW UP"),
        "followup_diag": (0.1, f"MG DIAG POST BX {sw}"),
        "stereo": (0.55, f"STEREO BX {sw}"),
        "needle_loc": (0.6, f"MG NEEDLE LOC {sw}"),
    }
    if kind in hint_desc and not site_bare and rng.random() < hint_desc[kind][0]:
        desc = hint_desc[kind][1]
    study.study_description = desc

    profile = VENDOR_PROFILES[study.vendor]
    for i, (lat, view, mag, extra) in enumerate(views):
        markers: list[str] = []
        if kind == "stereo":  # needle in the breast, then the clip it left
            markers = ["needle"] if i < len(views) - 2 else [study.new_clip or "ribbon"]
            if i < len(views) - 2 and clips.get(lat) and rng.random() < 0.5:
                markers.append(clips[lat])
        elif kind == "needle_loc":
            markers = ["wire"] + ([clips[lat]] if clips.get(lat) else [])
        elif lat in clips and (not mag or rng.random() < 0.9):
            markers = [clips[lat]]
        m = float(rng.uniform(1.5, 1.9)) if mag else 1.0
        calcs = bool((mag and rng.random() < 0.6) or (not mag and rng.random() < 0.12))
        skin_bb = bool(not mag and (study.nipple_bbs or rng.random() < 0.06))
        img = _ImagePlan(
            view=view,
            laterality=lat,
            mag=mag,
            mag_factor=m,
            markers=tuple(markers),
            skin_bb=skin_bb,
            calcs=calcs,
            extra=extra,
        )
        _plan_header(rng, img, profile, site_bare, kind)
        study.images.append(img)


def _plan_header(
    rng: np.random.Generator, img: _ImagePlan, profile: VendorProfile, bare: bool, kind: str
) -> None:
    """Header hints: present only sometimes, and sometimes wrong."""
    lat_view = f"{img.laterality} {img.view}"
    if bare:
        return
    if img.mag:
        img.mag_modifier = rng.random() < 0.85
        img.spot_modifier = rng.random() < 0.4
        if rng.random() < 0.7:
            img.header_mag_factor = float(np.clip(round(img.mag_factor, 1), 1.5, 1.8))
        if profile.mag_paddle and rng.random() < 0.7:
            img.paddle = profile.mag_paddle
        if rng.random() < 0.55:
            img.series_description = (
                f"{lat_view} {rng.choice(['MAG', 'SPOT MAG', 'MAGNIFICATION'])}"
            )
        elif rng.random() < 0.5:
            img.series_description = lat_view
    else:
        if rng.random() < 0.7:
            img.header_mag_factor = float(rng.uniform(1.05, 1.12))
        if profile.contact_paddle and rng.random() < 0.7:
            img.paddle = profile.contact_paddle
        if rng.random() < 0.6:
            img.series_description = lat_view + (" XCCL" if img.extra and img.view == "CC" else "")
        if rng.random() < 0.06:  # a wrong magnification hint
            wrong = rng.integers(4)
            if wrong == 0:
                img.header_mag_factor = 1.8
            elif wrong == 1:
                img.spot_modifier = True
            elif wrong == 2 and profile.mag_paddle:
                img.paddle = profile.mag_paddle
            else:
                img.mag_modifier = True
    marker_hint_p = {"followup": 0.45, "followup_diag": 0.45, "stereo": 0.2, "needle_loc": 0.2}
    if img.markers and rng.random() < marker_hint_p.get(kind, 0.45):
        word = {"needle": "STEREO BX", "wire": "NEEDLE LOC"}.get(img.markers[0], "CLIP")
        word = str(rng.choice([word, "POST BX"])) if word == "CLIP" else word
        img.series_description = f"{lat_view} {word}"
    elif not img.markers and rng.random() < 0.01:  # a stale description
        img.series_description = f"{lat_view} POST BX"


def _header_mag_hint(img: _ImagePlan, profile: VendorProfile) -> bool:
    """What the image's own header claims (a spot-compression modifier is not a mag claim).

    Must agree with `mammo_dagster.core.dicom.header_facts` (a test checks it).
    """
    desc = (img.series_description or "").upper().split()
    return bool(
        img.mag_modifier
        or (img.header_mag_factor is not None and img.header_mag_factor >= 1.3)
        or (img.paddle is not None and img.paddle == profile.mag_paddle)
        or any(w in ("MAG", "MAGNIFICATION") for w in desc)
    )


def _header_marker_hint(img: _ImagePlan, study: _StudyPlan) -> bool:
    """Image-level claim only: the study description is a study-level fact."""
    return any(w in (img.series_description or "").upper() for w in MARKER_HINT_WORDS)


def _plan_archive(
    seed: int, studies: int, vendors: Sequence[str], mix: StudyMix
) -> list[_StudyPlan]:
    """Patients and their studies, in order, truncated to `studies` studies.

    Every vendor gets at least one study when `studies >= len(vendors)` (a patient's later
    study moves to a missing vendor's site). Images are planned per study from their own
    random stream, so a study's content does not depend on the studies before it.
    """
    rng = np.random.default_rng([seed, 0])
    order = [vendors[i] for i in rng.permutation(len(vendors))]
    used: set[str] = set()
    plans: list[_StudyPlan] = []
    p_idx = 0
    while len(plans) < studies:
        home = order[p_idx % len(order)]
        plans.extend(_plan_patient(seed, p_idx, vendors, home, used, mix))
        p_idx += 1
    plans = plans[:studies]
    for vendor in order:
        counts = {v: sum(p.vendor == v for p in plans) for v in order}
        if counts[vendor] or len(plans) < len(vendors):
            continue
        donor = max(order, key=lambda v: counts[v])
        idx = max(i for i, p in enumerate(plans) if p.vendor == donor)
        plans[idx].vendor = vendor
    for s_idx, study in enumerate(plans):
        _plan_study_images(np.random.default_rng([seed, 4, s_idx]), study)
    return plans


def plan_labels(
    *, studies: int, seed: int, vendors: Sequence[str] | None = None, mix: str = "enriched"
) -> list[dict[str, object]]:
    """The per-image labels `generate_archive` would write, without making any pixels.

    Keys: study_index, image_index, patient_id, vendor, view, laterality, has_biopsy_tool,
    has_mag_view, header_mag_hint, header_marker_hint. Cheap: use it for class-mix checks.
    """
    vendors = _check_vendors(vendors)
    out: list[dict[str, object]] = []
    for s_idx, study in enumerate(_plan_archive(seed, studies, vendors, study_mix(mix))):
        profile = VENDOR_PROFILES[study.vendor]
        for i_idx, ip in enumerate(study.images):
            out.append(
                {
                    "study_index": s_idx,
                    "image_index": i_idx,
                    "patient_id": study.patient_id,
                    "vendor": study.vendor,
                    "view": ip.view,
                    "laterality": ip.laterality,
                    "has_biopsy_tool": bool(ip.markers),
                    "has_mag_view": ip.mag,
                    "header_mag_hint": _header_mag_hint(ip, profile),
                    "header_marker_hint": _header_marker_hint(ip, study),
                }
            )
    return out


def _check_vendors(vendors: Sequence[str] | None) -> list[str]:
    vendors = list(vendors) if vendors else list(DEFAULT_VENDORS)
    unknown = [v for v in vendors if v not in VENDOR_PROFILES]
    if unknown:
        raise ValueError(f"unknown vendors {unknown}; use {sorted(VENDOR_PROFILES)}")
    return vendors


# ---------------------------------------------------------------------------------------------
# archive writing


def _relative_path(study: _StudyPlan, s_idx: int, i_idx: int, sop: str) -> str:
    """Vendor-flavoured folder layout; no patient identifiers in paths."""
    pdir = f"P{study.patient_index + 1:05d}"
    if study.vendor == "hologic":
        return f"{pdir}/{study.study_date}_{study.accession}/IM{i_idx + 1:04d}"
    if study.vendor == "ge":
        return f"{pdir}/ST{s_idx + 1:05d}/SE{i_idx + 1:03d}/IM0001.dcm"
    if study.vendor == "siemens":
        return f"{pdir}/{study.accession}/{sop}.dcm"
    return f"{pdir}/{study.study_date}/S{i_idx + 1:03d}/I{s_idx * 10 + i_idx + 1:07d}"


def _resolve_syntaxes(names: Sequence[str]) -> list[str]:
    by_uid = {str(uid): name for name, uid in TRANSFER_SYNTAXES.items()}
    out = []
    for n in names:
        if n in TRANSFER_SYNTAXES:
            out.append(n)
        elif str(n) in by_uid:
            out.append(by_uid[str(n)])
        else:
            raise ValueError(f"unknown transfer syntax {n!r}; use {sorted(TRANSFER_SYNTAXES)}")
    return out


def generate_archive(
    out: Path,
    *,
    studies: int,
    seed: int,
    size: Literal["full", "small"] = "small",
    vendors: Sequence[str] | None = None,
    transfer_syntaxes: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    ground_truth: Path | None = None,
    mix: str = "enriched",
    realism: Realism | None = None,
) -> list[SynthImage]:
    """Write a synthetic archive under out/ and out/ground_truth.csv; deterministic by seed.

    `ground_truth` puts the CSV elsewhere (e.g. outside a drop folder that a pipeline
    scans); its paths are then absolute.

    Studies hold 4-8 images; a patient may have several studies (later ones keep earlier
    clips) and may change vendor between them. size="small" divides the matrix by 8 and
    multiplies the pixel spacing by 8. Transfer syntaxes (names of
    `dicom_write.TRANSFER_SYNTAXES` or UIDs) are cycled through within each study, from the
    vendor's list or from `transfer_syntaxes` when given. `progress` receives the number of
    images written so far after each image. `mix` names the study mix (`MIXES`).
    `realism` shifts the archive away from the base generator (see `core.realism`): the
    same studies, changed only as it says, drawn from random streams of their own. A
    shifted or lossy archive gets UIDs of its own (a lossy copy is a new instance).
    """
    out = Path(out)
    if size not in ("full", "small"):
        raise ValueError(f"size must be 'full' or 'small', got {size!r}")
    vendors = _check_vendors(vendors)
    forced = _resolve_syntaxes(transfer_syntaxes) if transfer_syntaxes else None
    realism = realism or Realism()
    plans = _plan_archive(seed, studies, vendors, study_mix(mix))
    uid_key: tuple = ("mammo-synth", seed, size, ",".join(vendors))
    if mix != "enriched":  # another mix's archive of the same seed holds other images
        uid_key += (mix,)
    lossy = sorted({n for n in forced or () if TRANSFER_SYNTAXES[n] in LOSSY_SYNTAXES})
    if realism != Realism() or lossy:
        uid_key += (repr(realism), ",".join(lossy))
    images: list[SynthImage] = []
    for s_idx, study in enumerate(plans):
        profile = VENDOR_PROFILES[study.vendor]
        div = 8 if size == "small" else 1
        scale = realism.matrix_scale
        rows, cols = round(profile.rows // div * scale), round(profile.columns // div * scale)
        ps = profile.pixel_spacing_mm * div / scale
        syntaxes = forced or list(profile.transfer_syntaxes)
        ts_offset = int(np.random.default_rng([seed, 3, s_idx]).integers(len(syntaxes)))
        study_uid = str(stable_uid(*uid_key, "study", s_idx))
        for i_idx, ip in enumerate(study.images):
            rng = np.random.default_rng([seed, 2, s_idx, i_idx])
            img, mask = synth_breast(
                rng,
                rows,
                cols,
                view=ip.view,
                laterality=ip.laterality,
                mag=ip.mag,
                pixel_spacing_mm=ps,
                mag_factor=ip.mag_factor,
                density=study.density,
                paddle_band=realism.paddle_band,
            )
            ps_breast = ps / ip.mag_factor
            kinds, confounders, layer, boxes = _burn_objects(
                rng, np.random.default_rng([seed, 7, s_idx, i_idx]), img, mask, ip,
                ps_breast, realism,
            )  # fmt: skip
            stored = to_stored(img, mask, profile, rng, layer)
            sop = str(stable_uid(*uid_key, "sop", s_idx, i_idx))
            series = str(stable_uid(*uid_key, "series", s_idx, i_idx))
            header = ImageHeader(
                sop_instance_uid=sop,
                study_instance_uid=study_uid,
                series_instance_uid=series,
                patient_id=study.patient_id,
                patient_name=study.patient_name,
                laterality=ip.laterality,  # type: ignore[arg-type]
                view=ip.view,  # type: ignore[arg-type]
                mag_modifier=ip.mag_modifier,
                spot_modifier=ip.spot_modifier,
                mag_factor=ip.header_mag_factor,
                paddle=ip.paddle,
                series_description=ip.series_description,
                study_description=study.study_description,
                study_date=study.study_date,
                accession=study.accession,
                instance_number=i_idx + 1,
            )
            ds = build_dataset(  # the header's pixel spacing matches the (small) matrix
                stored,
                dataclasses.replace(profile, pixel_spacing_mm=ps),
                header,
                padding_value=padding_value(profile),
                declared_bits=realism.declared_bits
                if (realism.declared_bits or 0) > profile.bits_stored
                else None,
            )
            ts_name = syntaxes[(ts_offset + i_idx) % len(syntaxes)]
            ds = encode(ds, ts_name, j2k_ratio=realism.j2k_ratio, jpeg_quality=realism.jpeg_quality)
            path = write(ds, out / _relative_path(study, s_idx, i_idx, sop))
            images.append(
                SynthImage(
                    path=path,
                    sop_instance_uid=sop,
                    study_instance_uid=study_uid,
                    series_instance_uid=series,
                    patient_id=study.patient_id,
                    has_biopsy_tool=bool(kinds),
                    has_mag_view=ip.mag,
                    vendor=study.vendor,
                    transfer_syntax=str(TRANSFER_SYNTAXES[ts_name]),
                    view=ip.view,
                    laterality=ip.laterality,
                    marker_kind="+".join(kinds + confounders),
                    header_mag_hint=_header_mag_hint(ip, profile),
                    header_marker_hint=_header_marker_hint(ip, study),
                    marker_boxes=";".join(" ".join(map(str, b)) for b in boxes),
                )
            )
            if progress is not None:
                progress(len(images))
    write_ground_truth(images, ground_truth or out / "ground_truth.csv")
    return images


def _burn_objects(
    rng: np.random.Generator,
    shift_rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    ip: _ImagePlan,
    ps: float,
    realism: Realism,
) -> tuple[list[str], list[str], MetalLayer | None, list[tuple[int, int, int, int]]]:
    """The planned markers and confounders, then the realism's distractors, in place.

    Returns (biopsy kinds, confounders, the metal layer when metal moves off the
    extreme, each biopsy marker's bounding box (see `_changed_box`)). The plan's
    objects draw from `rng` exactly as the base generator does; everything the realism
    adds or changes draws from `shift_rng`.
    """
    extra = set(realism.distractors)
    layer = MetalLayer(img.shape) if realism.shifts_metal else None

    def metal(level: tuple[float, float]) -> MetalLayer | None:
        if layer is not None:
            layer.level = float(shift_rng.uniform(*level))
        return layer

    kinds: list[str] = []
    confounders: list[str] = []
    if "implants" in extra:
        confounders.append(add_implant(shift_rng, img, mask, pixel_spacing_mm=ps))
    if ip.calcs:
        confounders.append(add_calcifications(rng, img, mask, pixel_spacing_mm=ps))
    elif "calcs" in extra:
        confounders.append(add_calcifications(shift_rng, img, mask, pixel_spacing_mm=ps))
    boxes = []
    for k in ip.markers:
        lay = metal(realism.metal_level)
        before = img.copy()
        kinds.append(add_marker(rng, img, mask, pixel_spacing_mm=ps, kind=k, layer=lay))
        boxes.append(_changed_box(before, img))
    if ip.skin_bb:
        lay = metal(realism.metal_level)
        confounders.append(add_skin_marker(rng, img, mask, pixel_spacing_mm=ps, layer=lay))
    elif "bbs" in extra:
        lay = metal(realism.metal_level)
        confounders.append(add_skin_marker(shift_rng, img, mask, pixel_spacing_mm=ps, layer=lay))
    if "letters" in extra:
        lay = metal(realism.letter_level)
        text = f"{ip.laterality}{ip.view}"
        confounders.append(
            add_lead_letters(shift_rng, img, mask, text, pixel_spacing_mm=ps, layer=lay)
        )
    return kinds, [c for c in confounders if c], layer, boxes


def _changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), half-open: the smallest box holding every changed pixel."""
    changed = after != before
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if not len(rows):
        return (0, 0, 0, 0)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def write_ground_truth(images: Iterable[SynthImage], path: Path) -> Path:
    """Write `GROUND_TRUTH_COLUMNS` as CSV (paths relative to the CSV's folder, bools 0/1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(GROUND_TRUTH_COLUMNS)
        for im in images:
            row = []
            for col in GROUND_TRUTH_COLUMNS:
                val = getattr(im, col)
                if col == "path":
                    p = Path(val)
                    try:
                        val = p.resolve().relative_to(root).as_posix()
                    except ValueError:
                        val = p.as_posix()
                elif col in _BOOL_COLUMNS:
                    val = int(bool(val))
                row.append(val)
            w.writerow(row)
    return path


def read_ground_truth(path: Path) -> list[SynthImage]:
    """Read a ground_truth.csv back (paths made absolute against the CSV's folder)."""
    path = Path(path)
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            kw: dict[str, object] = dict(row)
            kw["path"] = path.parent / row["path"]
            for col in _BOOL_COLUMNS:
                kw[col] = row[col] == "1"
            out.append(SynthImage(**kw))  # type: ignore[arg-type]
    return out


def truth_labels(images: Sequence[SynthImage], annotator: str = "truth") -> list:
    """Label events that say what the ground truth says (demo, benchmarks, tests): a
    perfect labeler, imported."""
    from .labels import LabelEvent

    return [
        LabelEvent(
            i.sop_instance_uid,
            "label",
            annotator,
            "import",
            has_biopsy_tool=i.has_biopsy_tool,
            has_mag_view=i.has_mag_view,
        )
        for i in images
    ]

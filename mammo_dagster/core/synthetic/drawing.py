"""Drawing on attenuation images: noise, strokes, dilation and burning in metal."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .truth import METAL

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

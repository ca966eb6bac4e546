"""Rendering contracts v3 and v4: the local lift, and the invariances it exists for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammo_dagster.core.imaging.display import WINDOW_TOP
from mammo_dagster.core.imaging.lift import _running, block_min, lift_background, opening, se_pixels
from mammo_dagster.core.imaging.thumbnails import render
from tests.factory import make_file

ROWS, COLS, SPACING = 1200, 960, 0.1  # a 120 x 96 mm detector, 10 px per mm


def _brute(a: np.ndarray, k: int, axis: int, op) -> np.ndarray:
    r = k // 2
    out = np.empty_like(a)
    for i in range(a.shape[axis]):
        sl = [slice(None)] * a.ndim
        sl[axis] = slice(max(i - r, 0), i + r + 1)
        idx = [slice(None)] * a.ndim
        idx[axis] = i
        out[tuple(idx)] = op.reduce(a[tuple(sl)], axis=axis)
    return out


@pytest.mark.parametrize("k", [1, 3, 5, 8, 31])
@pytest.mark.parametrize("axis", [0, 1])
def test_running_extremes_match_a_brute_force_window(k: int, axis: int) -> None:
    a = np.random.default_rng(k).integers(0, 4096, (37, 29)).astype(np.uint16)
    k_odd = k | 1
    for op, neutral in ((np.maximum, 0), (np.minimum, 65535)):
        np.testing.assert_array_equal(_running(a, k_odd, axis, op, neutral),
                                      _brute(a, k_odd, axis, op))  # fmt: skip


def test_opening_removes_what_the_square_does_not_fit_into() -> None:
    a = np.full((60, 60), 100, np.uint16)
    a[10:13, 10:13] = 900  # small: removed
    a[30:50, 30:50] = 700  # large: kept
    o = opening(a, 7)
    assert (o <= a).all()  # anti-extensive
    assert o[11, 11] == 100 and o[40, 40] == 700
    np.testing.assert_array_equal(opening(o, 7), o)  # idempotent
    assert block_min(np.arange(16, dtype=np.uint16).reshape(4, 4), 3).tolist() == [[0, 3], [12, 15]]
    assert se_pixels(0.1) == 61 and se_pixels(10.0) == 3
    background, cell = lift_background(a, 0.5)
    assert cell == 2 and background.shape == (30, 30)


def _phantom(tissue: int = 1500, bits: int = 12) -> np.ndarray:
    """Textured tissue (a mammogram's mid window) with room around it."""
    rng = np.random.default_rng(0)
    img = np.full((ROWS, COLS), tissue, np.float64)
    img += rng.normal(0, 20, (ROWS, COLS))
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    img += 150 * np.sin(yy / 40.0) * np.cos(xx / 55.0)  # broad structure: no lift
    return np.clip(img, 0, (1 << bits) - 1)


def _file(tmp_path: Path, stored: np.ndarray, name: str, **kw) -> Path:
    kw.setdefault("voi", "window")
    kw.setdefault("voi_function", "LINEAR_EXACT")
    kw.setdefault("windows", ((2000.0, 2400.0),))
    kw.setdefault("bits_stored", 12)
    path = make_file(tmp_path / name, stored.astype(np.uint16), "siemens", "explicit", **kw)
    import pydicom

    ds = pydicom.dcmread(path)  # a detector of known size
    ds.PixelSpacing = ds.ImagerPixelSpacing = [SPACING, SPACING]
    ds.save_as(path)
    return path


def _marker(img: np.ndarray, value: float, at=(600, 500)) -> tuple[slice, slice]:
    """A 3 mm x 0.6 mm clip: a short bright bar."""
    box = (slice(at[0], at[0] + 6), slice(at[1], at[1] + 30))
    img[box] = value
    return box


def _at(thumb: np.ndarray, box: tuple[slice, slice], size: int = 256) -> np.ndarray:
    s = size / ROWS
    y0, y1 = int(box[0].start * s) - 2, int(box[0].stop * s) + 3
    x0, x1 = int(box[1].start * s) - 2, int(box[1].stop * s) + 3
    return thumb[y0:y1, x0:x1]


@pytest.mark.parametrize("exact", [False, True])
def test_metal_is_lifted_whatever_its_level_and_tissue_is_not(tmp_path: Path, exact: bool) -> None:
    levels = {}
    for level in (4095, 3800, 3500):  # at the extreme, 93% and 85% of it
        img = _phantom()
        box = _marker(img, level)
        thumb = render(_file(tmp_path, img, f"m{level}.dcm"), size=256, pad=False,
                       exact=exact).image  # fmt: skip
        assert thumb.shape[0] == 256
        levels[level] = int(_at(thumb, box).max())
        rest = thumb.copy()
        rest[_at_slices(box)] = 0
        assert rest.max() <= WINDOW_TOP  # tissue and its broad structure stay in the window
    assert min(levels.values()) >= 240
    assert levels[4095] >= levels[3800] >= levels[3500]


def _at_slices(box: tuple[slice, slice], size: int = 256) -> tuple[slice, slice]:
    s = size / ROWS
    return (slice(int(box[0].start * s) - 2, int(box[0].stop * s) + 3),
            slice(int(box[1].start * s) - 2, int(box[1].stop * s) + 3))  # fmt: skip


def test_no_lift_for_a_large_bright_region_or_metal_in_the_air(tmp_path: Path) -> None:
    img = _phantom()
    img[:, 800:] = 30  # air on the right
    img[200:500, 100:400] = 3900  # an implant: as bright as metal, 30 mm wide
    letter = (slice(600, 700), slice(860, 875))  # a lead letter's stroke in the air
    img[letter] = 4095
    thumb = render(_file(tmp_path, img, "big.dcm"), size=256, pad=False).image
    inner = thumb[int(250 * 256 / ROWS) : int(450 * 256 / ROWS), 30:80]
    assert inner.max() <= WINDOW_TOP  # the implant's inside: white, but no headroom
    s = 256 / ROWS
    ring = thumb[int(190 * s) : int(510 * s), int(90 * s) : int(410 * s)].copy()
    ring[3:-3, 3:-3] = 0
    assert ring.max() <= WINDOW_TOP  # nor its edge
    assert _at(thumb, letter).max() <= WINDOW_TOP  # gated off: no tissue around it


def test_the_lift_ignores_bits_stored_and_the_photometric(tmp_path: Path) -> None:
    """12-bit data declared as 16 bits, and the same image stored MONOCHROME1, render the
    same v3 thumbnail (v2's headroom depended on both)."""
    img = _phantom()
    box = _marker(img, 3600)
    base = render(_file(tmp_path, img, "a.dcm"), size=256, pad=False).image
    wide = render(_file(tmp_path, img, "b.dcm", bits_stored=16), size=256, pad=False).image
    inverted = _file(tmp_path, 4095 - img, "c.dcm", photometric="MONOCHROME1",
                     windows=((4095 - 2000.0, 2400.0),))  # fmt: skip
    mono1 = render(inverted, size=256, pad=False).image
    np.testing.assert_array_equal(base, wide)
    assert np.abs(base.astype(int) - mono1).max() <= 1
    assert _at(base, box).max() >= 240
    v2 = render(_file(tmp_path, img, "d.dcm", bits_stored=16), size=256, pad=False, render="2")
    assert _at(v2.image, box).max() <= WINDOW_TOP + 1  # v2 lost the marker in the headroom


def test_fast_and_exact_paths_agree(tmp_path: Path) -> None:
    img = _phantom()
    _marker(img, 4095)
    _marker(img, 3700, at=(300, 200))
    path = _file(tmp_path, img, "f.dcm")
    fast = render(path, size=256, pad=False).image.astype(int)
    exact = render(path, size=256, pad=False, exact=True).image.astype(int)
    assert np.abs(fast - exact).mean() <= 1.0
    assert abs(fast.max() - exact.max()) <= 8


def test_the_second_look_finds_the_marker_and_travels_in_the_png(tmp_path: Path) -> None:
    from PIL import Image

    from mammo_dagster.core.imaging.lift import PATCH_CHANNELS, PATCH_PX, PATCHES
    from mammo_dagster.core.imaging.preprocess import patch_sets
    from mammo_dagster.core.imaging.thumbnails import RENDER_VERSION, read_patches, save_png

    img = _phantom()
    box = _marker(img, 3600)
    thumb = render(_file(tmp_path, img, "p.dcm"), size=256)
    k = PATCHES * patch_sets(RENDER_VERSION)  # v5: the contact-size set, then the wide one
    assert thumb.patches.shape == (k, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX)
    y, x, lift = thumb.spots[0]  # the highest-lift spot is on the marker
    offset = (256 - thumb.content_shape[1]) // 2  # the square's padding (left and right)
    assert box[0].start * 256 / ROWS - 2 <= y <= box[0].stop * 256 / ROWS + 2
    assert box[1].start * 256 / ROWS - 2 <= x - offset <= box[1].stop * 256 / ROWS + 2
    assert lift > 0.5 and lift > 2 * thumb.spots[1][2]
    centre = thumb.patches[0, 1, 12:20, 12:20]  # its lift channel is bright in the middle
    assert centre.max() > 100 and thumb.patches[0, 1, :4].max() < centre.max() / 2
    png = save_png(thumb.image, tmp_path / "t.png", thumb.render, thumb.patches, thumb.spots)
    with Image.open(png) as im:
        patches, spots = read_patches(im)
        np.testing.assert_array_equal(patches, thumb.patches)
        np.testing.assert_allclose(np.array(spots), np.array(thumb.spots), atol=0.01)
        im.info["mammo-patches"] = "not base64 at all!"
        with pytest.raises(ValueError, match="damaged patches chunk"):
            read_patches(im)


def test_patches_have_one_pixel_size_whatever_the_thumbnail_size(tmp_path: Path) -> None:
    from mammo_dagster.core.imaging.lift import PATCH_MM, PATCH_PX, working_level
    from mammo_dagster.core.imaging.vendors import VENDOR_PROFILES

    for profile in VENDOR_PROFILES.values():
        level = working_level(_Facts(profile.pixel_spacing_mm))
        assert profile.pixel_spacing_mm * 2**level <= PATCH_MM / PATCH_PX * 1.1
        assert profile.pixel_spacing_mm * 2 ** (level + 1) > PATCH_MM / PATCH_PX * 1.1
    img = _phantom()
    _marker(img, 3800)
    path = _file(tmp_path, img, "s.dcm")
    small, large = render(path, size=160), render(path, size=512)
    # the marker's patch (the first) is the same; the weak spots after it may differ
    assert np.abs(small.patches[0].astype(int) - large.patches[0]).mean() < 2.0


class _Facts:
    def __init__(self, spacing: float) -> None:
        self.pixel_spacing_mm, self.rows, self.columns = spacing, 4000, 3000


def test_v4_measures_a_clip_over_an_implant_against_the_room_left(tmp_path: Path) -> None:
    """A clip at the extreme over an implant at 95% of it rises only ~0.08 window widths:
    v3 leaves it inside the window, v4 (the lift against the room left) lifts it into
    the headroom and makes it the first spot; where tissue leaves room, v3 and v4 agree."""
    from mammo_dagster.core.imaging.lift import LIFT_FROM

    img = _phantom()
    rng = np.random.default_rng(1)
    img[200:500, 100:400] = 3900 + rng.normal(0, 20, (300, 300))  # an implant
    clip = _marker(img, 4095, at=(330, 220))
    for spot in ((650, 300), (700, 600), (560, 650)):  # small bright specks in tissue
        img[spot[0] : spot[0] + 3, spot[1] : spot[1] + 3] += 700
    img = np.clip(img, 0, 4095)
    path = _file(tmp_path, img, "implant.dcm")
    v3 = render(path, size=256, pad=False, render="3")
    v4 = render(path, size=256, pad=False, render="4")
    assert _at(v3.image, clip).max() <= WINDOW_TOP + 2  # white on white: not there
    assert _at(v4.image, clip).max() >= WINDOW_TOP + 6  # in the headroom

    def on_clip(spot: tuple[float, float, float]) -> bool:
        y, x, _lift = spot
        inside = [s.start * 256 / ROWS - 2 <= v <= s.stop * 256 / ROWS + 2
                  for s, v in zip(clip, (y, x), strict=True)]  # fmt: skip
        return all(inside)

    assert on_clip(v4.spots[0]) and v4.spots[0][2] > LIFT_FROM
    assert not on_clip(v3.spots[0])  # v3 ranks the specks above the clip
    plain = _phantom()
    box = _marker(plain, 3600)
    path = _file(tmp_path, plain, "plain.dcm")
    a, b = (
        render(path, size=256, pad=False, render="3"),
        render(path, size=256, pad=False, render="4"),
    )
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.patches, b.patches)
    assert _at(b.image, box).max() >= 240


def test_v5_adds_a_wider_set_that_shows_a_magnified_object_at_its_breast_size(tmp_path):
    """Rendering contract v5 carries v4's patches, then a set MAG_SCALE times as wide:
    there a 3-mm clip covers 1/MAG_SCALE as many patch pixels, as it would at contact."""
    from mammo_dagster.core.imaging.lift import MAG_SCALE, PATCH_CHANNELS, PATCH_PX, PATCHES

    img = _phantom()
    _marker(img, 4095)
    path = _file(tmp_path, img, "mag.dcm")
    v4, v5 = render(path, size=256, render="4"), render(path, size=256, render="5")
    assert v5.patches.shape == (2 * PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX)
    assert len(v5.spots) == 2 * PATCHES
    np.testing.assert_array_equal(v5.patches[:PATCHES], v4.patches)  # v4's set unchanged
    lift = PATCH_CHANNELS.index("lift")

    def length(patch: np.ndarray) -> int:  # the clip's extent along its columns
        profile = patch[lift].max(axis=0).astype(float)
        return int((profile >= 0.5 * profile.max()).sum())

    contact, wide = length(v5.patches[0]), length(v5.patches[PATCHES])
    assert contact >= 8
    assert wide / contact == pytest.approx(1 / MAG_SCALE, rel=0.25)
    # both sets centre on the clip
    assert v5.spots[0][:2] == pytest.approx(v5.spots[PATCHES][:2], abs=2.0)


def _line_and_clip() -> np.ndarray:
    """A lift grid: a long straight line at lift 1.1 (a speckled paddle edge) and, away
    from it, one dimmer compact clip at 0.6."""
    top = np.zeros((300, 200), np.float32)
    top[10:290, 40] = 1.1 + 0.05 * np.sin(np.arange(280) / 3.0)
    top[150:153, 140:143] = 0.6
    return top


def test_v6_spots_leave_a_long_line_two_and_find_the_dimmer_clip() -> None:
    """Before v6 a long straight line took every spot, and a dimmer clip elsewhere none."""
    from mammo_dagster.core.imaging.lift import OBJECT_SPOTS, PATCHES, _distinct_spots, _spots

    top = _line_and_clip()
    plain, distinct = _spots(top, 4), _distinct_spots(top, 4)
    assert all(x == 40 for _y, x in plain)  # the failure v6 fixes
    assert len(distinct) == PATCHES
    on_clip = [(y, x) for y, x in distinct if 150 <= y < 153 and 140 <= x < 143]
    assert len(on_clip) == 1
    assert distinct.index(on_clip[0]) == OBJECT_SPOTS  # right after the line's two
    assert len(set(distinct)) == PATCHES
    # the spots left over still go to the line, more than `apart` cells apart
    line = sorted(y for y, x in distinct if x == 40)
    assert len(line) == PATCHES - 1
    assert min(np.diff(line)) > 4


def test_v6_spots_are_v5s_when_no_object_holds_more_than_two() -> None:
    from mammo_dagster.core.imaging.lift import PATCHES, _distinct_spots, _spots

    rng = np.random.default_rng(0)
    top = np.zeros((120, 120), np.float32)
    for i in range(PATCHES + 3):  # compact blobs of distinct lifts, far apart
        y, x = divmod(i, 4)
        top[10 + 25 * y : 13 + 25 * y, 10 + 28 * x : 13 + 28 * x] = 0.4 + 0.05 * i
    top += rng.uniform(0, 0.02, top.shape).astype(np.float32)
    assert _distinct_spots(top, 3) == _spots(top, 3)


def test_v6_renders_two_sets_that_keep_a_paddle_edge_from_taking_every_spot(tmp_path):
    """A full-height bright edge beside a dimmer clip: v5 spends all 8 contact spots on
    the edge, v6 one of them on the clip, in both sets; the first spots stay v5's."""
    from mammo_dagster.core.imaging.lift import PATCHES

    img = _phantom()
    img[:, 200:203] = 3600  # a thin bright line down the whole image
    box = _marker(img, 2900, at=(600, 650))
    path = _file(tmp_path, img, "edge.dcm")
    v5 = render(path, size=256, pad=False, render="5")
    v6 = render(path, size=256, pad=False, render="6")
    assert v6.patches.shape == v5.patches.shape
    s = 256 / ROWS

    def on_clip(spot) -> bool:
        y, x, _ = spot
        return (box[0].start * s - 3 <= y <= box[0].stop * s + 3
                and box[1].start * s - 3 <= x <= box[1].stop * s + 3)  # fmt: skip

    for first in (0, PATCHES):  # the contact set, the wide set
        assert not any(on_clip(sp) for sp in v5.spots[first : first + PATCHES])
        assert any(on_clip(sp) for sp in v6.spots[first : first + PATCHES])
    assert v6.spots[0] == v5.spots[0]


def test_v7_lifts_no_metal_on_the_skin_line_and_keeps_a_clip_inside(tmp_path: Path) -> None:
    """A skin BB half over the air: v6 lifts it and spends a spot on it, v7 neither; a
    clip 20 mm inside the breast keeps its lift and its spot."""
    from mammo_dagster.core.imaging.lift import PATCHES, SKIN_MM

    img = _phantom()
    img[:, 800:] = 30  # air on the right: the skin line at column 800
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    bb = (yy - 300) ** 2 + (xx - 800) ** 2 <= 25**2  # a 5 mm bead centred on the skin
    img[bb] = 4095
    clip = _marker(img, 3900, at=(800, 500))  # a little dimmer than the bead
    path = _file(tmp_path, img, "skin.dcm")
    v6 = render(path, size=256, pad=False, render="6")
    v7 = render(path, size=256, pad=False, render="7")
    s = 256 / ROWS
    bead = (slice(275, 300), slice(775, 800))  # its half over the tissue
    assert _at(v6.image, bead).max() > 250
    assert _at(v7.image, bead).max() <= WINDOW_TOP  # no headroom on the skin line
    assert _at(v7.image, clip).max() >= 240

    def near(spot, y: float, x: float, r: float) -> bool:
        return abs(spot[0] - y * s) <= r and abs(spot[1] - x * s) <= r

    assert near(v6.spots[0], 300, 790, 4)  # v6's first spot: the bead
    skin = (SKIN_MM / SPACING) * s  # thumbnail pixels within SKIN_MM of the skin line
    for first in (0, PATCHES):
        assert not any(near(sp, 300, 800, skin) for sp in v7.spots[first : first + PATCHES])
        assert near(v7.spots[first], 803, 515, 4)  # the clip comes first
    # tissue farther in than SKIN_MM is lifted as before
    inside = (slice(0, ROWS), slice(0, 700))
    np.testing.assert_array_equal(v7.image[_thumb_slices(inside)], v6.image[_thumb_slices(inside)])


def _thumb_slices(box: tuple[slice, slice], size: int = 256) -> tuple[slice, slice]:
    s = size / ROWS
    return slice(int(box[0].start * s), int(box[0].stop * s)), slice(
        int(box[1].start * s), int(box[1].stop * s)
    )


def _distinct_spots_by_definition(top: np.ndarray, apart: int) -> list[tuple[int, int]]:
    """v6's spots as defined, one candidate and one path at a time (slow): the
    reference that the batched `lift._distinct_spots` must match."""
    from mammo_dagster.core.imaging.lift import OBJECT_SHARE, OBJECT_SPOTS, PATCHES

    h, w = top.shape
    padded = np.pad(top.astype(np.float32), 1, constant_values=-np.inf)

    def linked(a, b, floor) -> bool:
        n = max(abs(a[0] - b[0]), abs(a[1] - b[1]))
        t = np.arange(n + 1) / max(n, 1)
        rows = np.rint(a[0] + 1 + (b[0] - a[0]) * t).astype(np.intp)
        cols = np.rint(a[1] + 1 + (b[1] - a[1]) * t).astype(np.intp)
        near = [padded[rows + dy, cols + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        return bool(np.maximum.reduce(near).min() >= floor)

    flat = top.ravel()
    n = min(len(flat), 36 * PATCHES * 8)
    taken = np.zeros((h, w), bool)
    chosen, passed, objects, spots_of = [], [], [], []
    for i in np.argsort(-flat, kind="stable")[:n]:  # highest first, ties in raster order
        by, bx = divmod(int(i), w)
        if taken[by, bx]:
            continue
        taken[max(by - apart, 0) : by + apart + 1, max(bx - apart, 0) : bx + apart + 1] = True
        lift = float(top[by, bx])
        obj = next((o for (y, x), (o, v) in zip(chosen, objects, strict=True)
                    if linked((by, bx), (y, x), OBJECT_SHARE * min(lift, v))),
                   len(spots_of))  # fmt: skip
        if obj == len(spots_of):
            spots_of.append(0)
        if spots_of[obj] < OBJECT_SPOTS:
            spots_of[obj] += 1
            chosen.append((by, bx))
            objects.append((obj, lift))
            if len(chosen) == PATCHES:
                return chosen
        else:
            passed.append((by, bx))
    return chosen + passed[: PATCHES - len(chosen)]


def test_v6_batched_spots_are_the_definitions_spots() -> None:
    """Noise, compact blobs, long lines and air (lift 0): the fast spots are the defined ones."""
    from mammo_dagster.core.imaging.lift import _distinct_spots

    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(20, 120, 2))
        top = rng.normal(0, 0.05, (h, w)).astype(np.float32)
        for _blob in range(int(rng.integers(0, 6))):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            top[y : y + int(rng.integers(1, 4)), x : x + int(rng.integers(1, 4))] += rng.uniform(
                0.2, 2
            )
        if rng.random() < 0.6:
            top[:, int(rng.integers(0, w))] += rng.uniform(0.5, 1.5) + 0.1 * np.sin(np.arange(h))
        if rng.random() < 0.3:
            top[:, : w // 3] = 0
        for apart in (1, 3):
            assert _distinct_spots(top, apart) == _distinct_spots_by_definition(top, apart)


@pytest.mark.parametrize("seed", range(6))
def test_spots_rank_equal_lifts_in_raster_order_on_every_cpu(seed: int) -> None:
    """Candidates are ranked by lift, equal lifts in raster order: argpartition alone
    orders (and cuts) ties by the SIMD code numpy picks for the CPU, which moved the
    first spot along a uniform bright line between machines."""
    from mammo_dagster.core.imaging.lift import _ranked

    rng = np.random.default_rng(seed)
    flat = rng.integers(0, 6, 5000).astype(np.float32)  # hundreds of ties at every level
    for n in (1, 7, 288, 2304, 5000):
        np.testing.assert_array_equal(_ranked(flat, n), np.argsort(-flat, kind="stable")[:n])


def _components_by_flood(mask: np.ndarray) -> np.ndarray:
    """8-connected components by breadth-first flood fill (slow): each labelled with its
    smallest flat index, -1 off the mask."""
    h, w = mask.shape
    out = np.full((h, w), -1, np.int64)
    for start in np.flatnonzero(mask):  # raster order: a component's first cell is its smallest
        y0, x0 = divmod(int(start), w)
        if out[y0, x0] >= 0:
            continue
        out[y0, x0], todo = start, [(y0, x0)]
        while todo:
            y, x = todo.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < h and 0 <= u < w and mask[v, u] and out[v, u] < 0:
                        out[v, u] = start
                        todo.append((v, u))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_components_are_the_flood_fills_ones(seed: int) -> None:
    """Random blobs, long diagonal and zig-zag lines (the worst case for propagation)."""
    from mammo_dagster.core.imaging.lift import components

    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(5, 90, 2))
    mask = rng.random((h, w)) < rng.uniform(0.05, 0.6)
    i = np.arange(min(h, w))
    mask[i, i] = True  # a diagonal: connected only through corners
    mask[i[::2], (w - 1) - i[::2]] = True  # a dotted anti-diagonal: single cells
    np.testing.assert_array_equal(components(mask), _components_by_flood(mask))
    assert (components(np.zeros((h, w), bool)) == -1).all()


def _reach_by_bfs(mask: np.ndarray, seeds: np.ndarray, steps: int) -> np.ndarray:
    """The reference: breadth-first search from the mask's cells beside a seed."""
    h, w = mask.shape
    dist = np.full((h, w), -1)
    frontier = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        window = seeds[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
        if window.any():
            dist[y, x] = 1
            frontier.append((y, x))
    while frontier:
        nxt = []
        for y, x in frontier:
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and dist[ny, nx] < 0:
                        dist[ny, nx] = dist[y, x] + 1
                        nxt.append((ny, nx))
        frontier = nxt
    return (dist >= 1) & (dist <= steps)


@pytest.mark.parametrize("seed", range(6))
def test_reach_is_a_geodesic_dilation_of_at_most_steps(seed: int) -> None:
    """Random masks and seeds, and a long zig-zag channel from one seed cell: the cells of
    the mask within `steps` cells of a seed along the mask, no further."""
    from mammo_dagster.core.imaging.lift import reach

    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(8, 70, 2))
    mask = rng.random((h, w)) < rng.uniform(0.2, 0.6)
    seeds = rng.random((h, w)) < 0.02
    mask[1::4, 1:-1] = True  # rows joined at alternate ends: a long channel
    for r in range(1, h - 4, 8):
        mask[r + 1 : r + 4, -2] = True
        mask[r + 5 : r + 8, 1] = True
    mask[0, :] = False
    seeds[0, 0] = True
    seeds &= ~mask  # the seeds are the air, the mask the dark cells that are not
    for steps in (1, 3, 10, 400):
        np.testing.assert_array_equal(reach(mask, seeds, steps), _reach_by_bfs(mask, seeds, steps))
    assert not reach(mask, np.zeros_like(seeds), 10).any()


def test_reach_stops_after_steps_along_a_serpentine() -> None:
    """A serpentine channel from a seed in the corner: its far end is d steps away along
    it (far more than across it); reach gets there with d steps, not with d - 1."""
    from mammo_dagster.core.imaging.lift import reach

    mask = np.zeros((21, 20), bool)
    seeds = np.zeros_like(mask)
    seeds[0, 0] = True
    mask[1::4, :19] = True
    for r in range(1, 17, 8):
        mask[r : r + 5, 18] = True
        mask[r + 4 : r + 9, 0] = True
    dist = np.full(mask.shape, -1)
    for steps in range(1, 200):
        dist[reach(mask, seeds, steps) & (dist < 0)] = steps
    d = dist.max()
    assert d >= 80 and (dist >= 0).sum() == mask.sum()  # along the rows, every cell
    far = tuple(np.argwhere(dist == d)[0])
    assert not reach(mask, seeds, d - 1)[far]
    assert reach(mask, seeds, d)[far]
    np.testing.assert_array_equal(reach(mask, seeds, d), _reach_by_bfs(mask, seeds, d))


def test_object_shape_tells_round_from_long() -> None:
    from mammo_dagster.core.imaging.lift import object_shape

    yy, xx = np.mgrid[0:40, 0:40]
    ring = np.nonzero(np.abs(np.hypot(yy - 20, xx - 20) - 12) <= 1)
    length, width = object_shape(*ring)
    assert length == pytest.approx(width, rel=0.1) and length == pytest.approx(26, abs=1.5)
    half = np.nonzero((np.abs(np.hypot(yy - 20, xx - 20) - 12) <= 1) & (xx <= 20))
    length, width = object_shape(*half)  # a ring half over the air: twice as long as wide
    assert 1.6 <= length / width <= 2.2
    t = np.arange(30)
    length, width = object_shape(t, t // 3)  # a line at a slant
    assert length == pytest.approx(np.hypot(30, 10), abs=1.5) and width <= 2.5


def _ring_wire_and_clip() -> tuple[np.ndarray, tuple[slice, slice]]:
    """Tissue with the air on the right (skin line at column 800); a 12 mm skin ring
    centred on the skin line (a 6.7 mm BB ring seen in a 1.8x mag view: its far side 6 mm
    in, past SKIN_MM); a localization wire that crosses the skin and ends 25 mm in; a clip
    40 mm in."""
    img = _phantom()
    img[:, 800:] = 30
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    img[np.abs(np.hypot(yy - 300, xx - 800) - 60) <= 2.5] = 4095
    a, d = np.array([900.0, 950.0]), np.array([100.0, -400.0])
    t = np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / (d @ d), 0, 1)
    img[np.hypot(yy - a[0] - t * d[0], xx - a[1] - t * d[1]) <= 2.0] = 4095
    clip = _marker(img, 4095, at=(700, 400))
    return img, clip


@pytest.mark.parametrize("exact", [False, True])
def test_v8_lifts_no_skin_ring_deeper_than_skin_mm_and_keeps_a_wire_across_the_skin(
    tmp_path: Path, exact: bool
) -> None:
    """v7 gates pixels within SKIN_MM of the air, so a wider ring's far side stays lifted
    and takes spots; v8 gates the whole compact round object. The wire, which reaches the
    skin too but is long, keeps its lift and its spots in both; so does the clip."""
    from mammo_dagster.core.imaging.lift import PATCHES

    img, clip = _ring_wire_and_clip()
    path = _file(tmp_path, img, "ring.dcm")
    v7 = render(path, size=256, pad=False, render="7", exact=exact)
    v8 = render(path, size=256, pad=False, render="8", exact=exact)
    far = (slice(240, 360), slice(735, 765))  # the ring's far side, 3.5-6.5 mm in
    wire = (slice(960, 990), slice(640, 700))  # the wire, 10-16 mm in
    assert _at(v7.image, far).max() > 245
    assert _at(v8.image, far).max() <= WINDOW_TOP
    for thumb in (v7, v8):
        assert _at(thumb.image, wire).max() > 245
        assert _at(thumb.image, clip).max() > 245
    s = 256 / ROWS

    def on_ring(spot) -> bool:
        return abs(spot[0] - 300 * s) <= 70 * s and abs(spot[1] - 800 * s) <= 70 * s

    assert any(on_ring(sp) for sp in v7.spots[:PATCHES])
    assert not any(on_ring(sp) for sp in v8.spots)
    assert any(abs(sp[0] - 700 * s) <= 4 and abs(sp[1] - 415 * s) <= 4 for sp in v8.spots[:PATCHES])
    # away from the ring v8 is v7
    rest = (slice(400, ROWS), slice(0, COLS))
    np.testing.assert_array_equal(v8.image[_thumb_slices(rest)], v7.image[_thumb_slices(rest)])


@pytest.mark.parametrize("exact", [False, True])
def test_v8_sees_a_skin_bb_where_the_skin_line_runs_into_a_collimated_border(
    tmp_path: Path, exact: bool
) -> None:
    """A bright collimated border on the right; between it and the breast a sliver of air
    2 mm wide, which runs 16 mm from the air beyond the breast and ends where the skin line
    meets the border; a skin BB there. The background's opening and dilation leave no air
    in the sliver, so v7 lifts the BB and spends spots on it; v8 sees the air at each
    cell's darkest, joined to the background's air, and lifts it nowhere."""
    img = _phantom()
    img[:, 850:] = 3000  # the collimated border: bright, wider than the structuring element
    img[:120, 600:850] = 30  # the air beyond the breast (12 x 25 mm): the background's air
    img[:280, 830:850] = 30  # the sliver of air, ending at row 280
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    img[(yy - 300) ** 2 + (xx - 835) ** 2 <= 25**2] = 4095  # a 5 mm bead at the junction
    clip = _marker(img, 4095, at=(800, 400))
    path = _file(tmp_path, img, "junction.dcm")
    v7 = render(path, size=256, pad=False, render="7", exact=exact)
    v8 = render(path, size=256, pad=False, render="8", exact=exact)
    bead = (slice(285, 325), slice(810, 835))  # its side toward the breast
    assert _at(v7.image, bead).max() > 245
    assert _at(v8.image, bead).max() <= WINDOW_TOP
    assert _at(v8.image, clip).max() > 245
    s = 256 / ROWS

    def on_bead(spot) -> bool:
        return abs(spot[0] - 300 * s) <= 40 * s and abs(spot[1] - 835 * s) <= 40 * s

    assert any(on_bead(sp) for sp in v7.spots)
    assert not any(on_bead(sp) for sp in v8.spots)


@pytest.mark.parametrize("exact", [False, True])
def test_v8_keeps_a_round_clip_just_under_the_skin(tmp_path: Path, exact: bool) -> None:
    """A ribbon clip (5 x 3 mm) whose near end lies 4.5 mm under the skin line, beside the
    skin's darker rim: v7 lifts it, and so does v8, for it does not reach the skin line.
    (v8 with the skin zone of SKIN_MM gated it: a real clip in a demo view.)"""
    img = _phantom()
    img[:, 800:] = 30  # the air, right of the skin line
    img[:, 790:800] = 850  # the skin's rim, dark under the window: air at its darkest
    img[585:615, 705:755] = 4095  # the clip: 4.5 to 9.5 mm in
    clip = (slice(585, 615), slice(705, 755))
    path = _file(tmp_path, img, "under_skin.dcm")
    v7 = render(path, size=256, pad=False, render="7", exact=exact)
    v8 = render(path, size=256, pad=False, render="8", exact=exact)
    assert _at(v7.image, clip).max() > 245
    assert _at(v8.image, clip).max() > 245


def test_v8_keeps_a_round_clip_beside_dark_fat(tmp_path: Path) -> None:
    """A 10 mm pocket of fat at 0.06 of the window (tissue to the air gate, which starts at
    0.04, but air at its cells' darkest) and a 2.5-mm coil 1 mm from it, within
    OBJECT_SKIN_MM: v7 lifts the coil, and so does v8, for the pocket is not joined to the
    air beyond the breast. (The first v8 gated such a clip in a demo mag view.)"""
    img = _phantom()
    img[500:600, 300:400] = 944  # 800 (the window's bottom) + 0.06 x 2400
    img[610:635, 330:355] = 4095
    coil = (slice(610, 635), slice(330, 355))
    path = _file(tmp_path, img, "fat.dcm")
    assert _at(render(path, size=256, pad=False, render="7").image, coil).max() > 245
    assert _at(render(path, size=256, pad=False, render="8").image, coil).max() > 245

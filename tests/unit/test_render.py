"""Every vendor profile x photometric x VOI x transfer syntax round-trips and renders as expected.

Expectations are analytic: pydicom's own windowing (normalised to its output
range), the LUT table itself, or properties of the automatic window, never a
snapshot of our own output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.pixels.processing import apply_windowing

from mammo_dagster.core.imaging.decode import full_frame, reduced_frame
from mammo_dagster.core.imaging.dicom import open_dicom
from mammo_dagster.core.imaging.dicom_write import LOSSY_SYNTAXES, TRANSFER_SYNTAXES
from mammo_dagster.core.imaging.display import HEADROOM_GAMMA, WINDOW_TOP
from mammo_dagster.core.imaging.thumbnails import render, render_frame
from mammo_dagster.core.imaging.vendors import VENDOR_PROFILES
from tests.factory import make_file

ROWS, COLS = 64, 48
PAD_ROWS = 16
VOIS = ["LINEAR", "LINEAR_EXACT", "SIGMOID", "lut", "none"]
#: The syntaxes that must round-trip exactly (lossy ones are tested in test_lossy.py).
LOSSLESS = [n for n, uid in TRANSFER_SYNTAXES.items() if uid not in LOSSY_SYNTAXES]


def ramp(bits: int, padding: int | None, photometric: str = "MONOCHROME2") -> np.ndarray:
    """Stored values covering the whole range in row-major order, starting from the air
    end (low for MONOCHROME2, high for MONOCHROME1); with padding, a band of it in the top
    rows, next to the air as in real images."""
    top = (1 << bits) - 1
    first = PAD_ROWS if padding is not None else 0
    values = np.linspace(0, top, (ROWS - first) * COLS).round().astype(np.uint16)
    if photometric == "MONOCHROME1":
        values = values[::-1]
    img = np.empty((ROWS, COLS), dtype=np.uint16)
    img[first:] = values.reshape(ROWS - first, COLS)
    if padding is not None:
        img[:first] = padding
    return img


def expected_display(stored: np.ndarray, ds, voi: str) -> np.ndarray:
    """Display values in [0, 1] before inversion, by an implementation that is not ours."""
    if voi == "lut":
        item = ds.VOILUTSequence[0]
        table = np.frombuffer(item.LUTData, dtype="<u2")
        idx = np.clip(stored.astype(np.int64) - int(item.LUTDescriptor[1]), 0, len(table) - 1)
        return table[idx] / 4095.0
    y = apply_windowing(stored.astype(np.float64), ds)
    return y / ((1 << int(ds.BitsStored)) - 1)


def expected_8bit(y: np.ndarray, stored: np.ndarray, ds, voi: str, real: np.ndarray) -> np.ndarray:
    """The 8-bit contract (display.display8) from display values y in [0, 1], after
    inversion: the window to 0..WINDOW_TOP, then headroom toward the bright extreme of the
    stored values that are not padding (the ramp covers the whole stored range)."""
    v = stored.astype(np.float64)
    bright_high = y[real][np.argmax(v[real])] >= y[real][np.argmin(v[real])]
    extreme = v[real].max() if bright_high else v[real].min()
    if voi == "lut":  # where the table first reaches its top, over every stored value
        every = np.arange(1 << int(ds.BitsStored))
        ye = expected_display(every, ds, voi)
        ye = 1.0 - ye if ds.PhotometricInterpretation == "MONOCHROME1" else ye
        white = every[ye >= ye.max() - 0.5 / 255]
        top = white.min() if bright_high else white.max()
    else:
        c, w = (float(np.atleast_1d(ds[k].value)[0]) for k in ("WindowCenter", "WindowWidth"))
        top = c + w / 2 if bright_high else c - w / 2
    if (extreme - top) * (1 if bright_high else -1) <= 0:
        top = extreme - 1 if bright_high else extreme + 1
    t = np.clip((v - top) / (extreme - top), 0.0, 1.0) ** HEADROOM_GAMMA
    base = np.clip(y, 0.0, 1.0) * WINDOW_TOP
    return np.rint(base + (255.0 - base) * t).astype(np.int64)


@pytest.mark.parametrize("ts", LOSSLESS)
@pytest.mark.parametrize("voi", VOIS)
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("vendor", list(VENDOR_PROFILES))
def test_render_matrix(tmp_path: Path, vendor: str, photometric: str, voi: str, ts: str) -> None:
    profile = VENDOR_PROFILES[vendor]
    pad_value = None
    if profile.pixel_padding:
        pad_value = profile.max_stored if photometric == "MONOCHROME1" else 0
    stored = ramp(profile.bits_stored, pad_value, photometric)
    kind = voi if voi in ("lut", "none") else "window"
    function = voi if kind == "window" else "LINEAR"
    path = make_file(
        tmp_path / "x.dcm",
        stored,
        vendor,
        ts,
        photometric=photometric,
        voi=kind,
        voi_function=function,
        padding_value=pad_value,
    )

    dicom = open_dicom(path)
    assert dicom.facts.transfer_syntax_uid == TRANSFER_SYNTAXES[ts]
    assert dicom.facts.photometric == photometric
    np.testing.assert_array_equal(full_frame(dicom), stored)  # lossless round trip

    # reduced: the fast path (reduced decode / box average) stays close to the exact one
    # (rendering contract v2 here: the v3 lift needs an image of mammogram size to mean
    # anything, see test_lift.py)
    fast = render_frame(dicom, 0, 16, pad=False, render="2").image.astype(np.int64)
    exact = render_frame(dicom, 0, 16, pad=False, exact=True, render="2").image.astype(np.int64)
    assert fast.shape == exact.shape == (16, 12)
    assert np.abs(fast - exact).mean() <= 2.0
    if pad_value is not None:  # the padded band stays black (its last row borders tissue)
        band = PAD_ROWS * 16 // ROWS - 1
        assert (fast[:band] == 0).all() and (exact[:band] == 0).all()

    for exact in (False, True):
        thumb = render_frame(dicom, 0, max(ROWS, COLS), pad=False, exact=exact, render="2")
        img = thumb.image.astype(np.int64)
        assert img.shape == (ROWS, COLS)
        pad = np.zeros_like(stored, dtype=bool)
        if pad_value is not None:
            pad = stored == pad_value
            assert (img[pad] == 0).all(), "padding must stay black"
        if kind == "none":
            assert thumb.voi.kind == "auto"
            # a monotonic ramp in display space, brighter for higher values on MONOCHROME2
            line = img[~pad]  # the ramp runs from air (black) to dense (white)
            assert (np.diff(line) >= 0).all()
            assert line.min() == 0 and line.max() == 255
            continue
        y = expected_display(stored, dicom.ds, voi)
        if photometric == "MONOCHROME1":
            y = 1.0 - y
        want = expected_8bit(y, stored, dicom.ds, voi, ~pad)
        np.testing.assert_array_equal(img[~pad], want[~pad])
        assert img[~pad].max() == 255  # the stored extreme (metal) is white
        plain = render_frame(dicom, 0, max(ROWS, COLS), pad=False, exact=exact, render="1")
        np.testing.assert_array_equal(plain.image[~pad], np.rint(y * 255)[~pad])


@pytest.mark.parametrize("ts", LOSSLESS)
def test_signed_pixels(tmp_path: Path, ts: str) -> None:
    stored = np.linspace(-2048, 2047, ROWS * COLS).round().astype(np.int16).reshape(ROWS, COLS)
    path = make_file(
        tmp_path / "s.dcm",
        stored,
        "ge",
        ts,
        photometric="MONOCHROME2",
        signed=True,
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((0.0, 4096.0),),
    )
    dicom = open_dicom(path)
    np.testing.assert_array_equal(full_frame(dicom), stored)
    img = render_frame(dicom, 0, ROWS, pad=False, render="2").image.astype(np.int64)
    want = np.rint(((stored.astype(np.float64) - 0.0) / 4096 + 0.5).clip(0, 1) * WINDOW_TOP)
    want[stored == 2047] = 255  # the signed range's bright extreme
    np.testing.assert_array_equal(img, want)


def test_multi_frame_each_frame_its_own_image(tmp_path: Path) -> None:
    frames = np.stack([np.full((ROWS, COLS), v, dtype=np.uint16) for v in (500, 2000, 3500)])
    path = make_file(
        tmp_path / "mf.dcm",
        frames,
        "siemens",
        "explicit",
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((2048.0, 4096.0),),
        bits_stored=12,
    )
    dicom = open_dicom(path)
    assert dicom.facts.number_of_frames == 3
    levels = [int(render_frame(dicom, f, 32).image[16, 16]) for f in range(3)]
    assert levels[0] < levels[1] < levels[2]
    assert levels == [round((v / 4096) * WINDOW_TOP) for v in (500, 2000, 3500)]


def test_multi_frame_compressed(tmp_path: Path) -> None:
    frames = np.stack([np.full((ROWS, COLS), v, dtype=np.uint16) for v in (100, 4000)])
    path = make_file(
        tmp_path / "mf.dcm",
        frames,
        "hologic",
        "j2k",
        bits_stored=12,
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((2048.0, 4096.0),),
    )
    a, b = (render(path, f, 32).image[16, 16] for f in (0, 1))
    assert a < 10 and b > 0.95 * WINDOW_TOP


def test_high_bits_above_bits_stored_are_ignored(tmp_path: Path) -> None:
    stored = ramp(12, None)
    path = make_file(
        tmp_path / "g.dcm",
        stored,
        "siemens",
        "explicit",
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((2048.0, 4096.0),),
    )
    clean = render(path, size=ROWS, pad=False).image
    raw = bytearray(path.read_bytes())
    pixels = np.frombuffer(raw, dtype="<u2", count=ROWS * COLS, offset=len(raw) - ROWS * COLS * 2)
    garbage = (pixels | 0xF000).astype("<u2").tobytes()
    raw[len(raw) - len(garbage) :] = garbage
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(render(path, size=ROWS, pad=False).image, clean)
    np.testing.assert_array_equal(render(path, size=ROWS, pad=False, exact=True).image, clean)


@pytest.mark.parametrize(("rows", "cols"), [(1913, 300), (1914, 301), (999, 1001)])
def test_reduced_j2k_decode_at_awkward_sizes(tmp_path: Path, rows: int, cols: int) -> None:
    """Pillow and OpenJPEG disagree on some reduced sizes; those levels must be avoided."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    stored = (2048 + 1500 * np.sin(xx / 300) * np.cos(yy / 400)).astype(np.uint16)
    path = make_file(
        tmp_path / "j.dcm",
        stored,
        "ge",
        "j2k",
        bits_stored=12,
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((2048.0, 4096.0),),
    )
    dicom = open_dicom(path)
    for size in (32, 64, 128):
        reduced = reduced_frame(dicom, 0, size)
        assert reduced.factor > 1
        assert reduced.pixels.shape == (-(-rows // reduced.factor), -(-cols // reduced.factor))
        fast = render_frame(dicom, 0, size).image.astype(int)
        exact = render_frame(dicom, 0, size, exact=True).image.astype(int)
        assert np.abs(fast - exact)[exact > 0].mean() < 2.0


@pytest.mark.parametrize("bits", [12, 14, 15, 16])
def test_box_reduce_matches_float_reference(bits: int) -> None:
    from mammo_dagster.core.imaging.decode import box_reduce

    rng = np.random.default_rng(bits)
    top = (1 << bits) - 1
    a = rng.integers(0, top + 1, (37, 50)).astype(np.uint16)
    a[:3, :3] = top  # extremes at the top of the range must not overflow
    if bits < 16:
        a |= np.uint16(0xFFFF ^ top)  # garbage above BitsStored
    clean = (a & top).astype(np.float64)
    mean, ext = box_reduce(a, 2, bits)
    padded = np.pad(clean, ((0, 3), (0, 2)), mode="edge")  # 37 -> 40 rows, 50 -> 52 cols
    ref = padded
    for _ in range(2):  # halve twice, repeating the edge like box_reduce does
        h, w = ref.shape
        ref = np.floor(ref.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) + 0.5)
    assert mean.shape == (10, 13)
    np.testing.assert_array_equal(mean[:9, :12], ref[:9, :12])
    assert ext["max"].max() == top and ext["min"].min() == clean.min()

"""Thumbnails: aspect ratio, padding, small bright markers survive, atomic writes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammo_dagster.core.imaging.dicom import open_dicom
from mammo_dagster.core.imaging.display import VIEWING_LUT, WINDOW_TOP
from mammo_dagster.core.imaging.thumbnails import (
    KEEP_METAL,
    RENDER_VERSION,
    fit_size,
    render,
    render_frame,
    save_png,
    shrink,
    viewing_image,
    viewing_png,
)
from tests.factory import make_file

TISSUE = 1500  # mid-window stored value (window 0..4095 -> display ~82)


def phantom(rows: int, cols: int, marker_px: int, at: tuple[int, int]) -> np.ndarray:
    """Uniform tissue with one saturated square marker `marker_px` wide."""
    img = np.full((rows, cols), TISSUE, dtype=np.uint16)
    y, x = at
    img[y : y + marker_px, x : x + marker_px] = 4095
    return img


@pytest.mark.parametrize(
    ("vendor", "ts", "shape"),
    [
        ("hologic", "explicit", (4096, 3328)),
        ("ge", "j2k", (2294, 1914)),  # the reduced-resolution JPEG 2000 path
    ],
)
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_small_marker_survives_224px_thumbnail(
    tmp_path: Path, vendor: str, ts: str, shape: tuple[int, int], exact: bool, photometric: str
) -> None:
    rows, cols = shape
    at = (rows // 2 + 3, cols // 3 + 5)  # deliberately not aligned with any block grid
    stored = phantom(rows, cols, 4, at)
    if photometric == "MONOCHROME1":  # metal is the *lowest* stored value
        stored = 4095 - stored
    path = make_file(
        tmp_path / "m.dcm",
        stored,
        vendor,
        ts,
        bits_stored=12,
        photometric=photometric,
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((2048.0, 4096.0),),
    )
    thumb = render(path, size=224, pad=False, exact=exact, render="2").image  # v3: test_lift.py
    h, w = thumb.shape
    ty, tx = round(at[0] * h / rows), round(at[1] * w / cols)
    tissue = np.median(thumb)
    assert abs(tissue - TISSUE / 4096 * WINDOW_TOP) <= 1
    around = thumb[ty - 2 : ty + 3, tx - 2 : tx + 3]
    assert around.max() >= 240, "the marker must stay clearly bright"
    # a plain area average would have faded it into the tissue
    plain = np.asarray(
        Image.fromarray(render(path, size=rows, pad=False, exact=True, render="2").image).resize(
            (w, h), Image.Resampling.BOX
        )
    )
    assert plain[ty - 2 : ty + 3, tx - 2 : tx + 3].max() < tissue + 20
    # and nothing else got brighter
    mask = np.ones_like(thumb, dtype=bool)
    mask[ty - 2 : ty + 3, tx - 2 : tx + 3] = False
    assert thumb[mask].max() <= tissue + 1


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_metal_stays_brighter_than_tissue_that_clips_the_window(
    tmp_path: Path, photometric: str
) -> None:
    stored = np.full((1024, 800), 1500, np.uint16)  # window 500..2500
    stored[200:260, 200:260] = 3000  # dense tissue past the window
    stored[600:606, 400:406] = 4095  # a metal clip at the stored extreme
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    path = make_file(
        tmp_path / "m.dcm",
        stored,
        "siemens",
        "explicit",
        bits_stored=12,
        photometric=photometric,
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((1500.0 if photometric == "MONOCHROME2" else 2595.0, 2000.0),),
    )
    for exact in (False, True):
        thumb = render(path, size=256, pad=False, exact=exact, render="2")
        assert thumb.render == "2" != RENDER_VERSION
        dense, metal = thumb.image[52:63, 52:63], thumb.image[148:154, 98:104]
        assert WINDOW_TOP < int(np.median(dense)) < 235
        assert metal.max() >= 250
        plain = render(path, size=256, pad=False, exact=exact, render="1").image
        assert np.median(plain[52:63, 52:63]) == plain[148:154, 98:104].max() == 255


def test_people_see_the_radiologists_rendering_and_the_model_its_headroom(
    tmp_path: Path,
) -> None:
    """The stored thumbnail keeps headroom above the window (the model tells metal from
    dense tissue by it); what a person is shown is the plain PS3.3 window over 0..255,
    within one gray level, where both are white."""
    stored = np.full((512, 400), 1000, np.uint16)
    stored[:, 200:] = 1500  # window 500..2500 (LINEAR_EXACT): 0.25 and 0.5 of it
    stored[100:130, 100:130] = 3000  # dense tissue past the window
    stored[300:303, 200:203] = 4095  # a metal clip at the stored extreme
    window = {"voi": "window", "voi_function": "LINEAR_EXACT", "windows": ((1500.0, 2000.0),)}
    path = make_file(tmp_path / "v.dcm", stored, "siemens", "explicit", bits_stored=12, **window)
    thumb = render(path, size=512, pad=False)
    png = save_png(thumb.image, tmp_path / "t.png", thumb.render, thumb.patches, thumb.spots)
    model = thumb.image.astype(int)
    seen = np.asarray(viewing_image(png)).astype(int)
    assert seen.shape == model.shape
    assert np.median(model[100:130, 100:130]) < model[300:303, 200:203].max()  # headroom
    assert np.median(seen[100:130, 100:130]) == seen[300:303, 200:203].max() == 255
    for region, window in (((slice(400, 500), slice(20, 180)), 0.25),
                           ((slice(400, 500), slice(220, 380)), 0.5)):  # fmt: skip
        assert abs(np.median(seen[region]) - 255 * window) <= 1  # PS3.3 C.11.2.1.3.2
        assert abs(np.median(model[region]) - WINDOW_TOP * window) <= 1
    with Image.open(io.BytesIO(viewing_png(png))) as im:  # served without the patches
        assert np.array_equal(np.asarray(im), seen) and not im.info


def test_the_viewing_table_stretches_the_window_and_whitens_the_headroom() -> None:
    assert VIEWING_LUT[0] == 0 and VIEWING_LUT[WINDOW_TOP] == 255
    assert (VIEWING_LUT[WINDOW_TOP:] == 255).all()
    steps = np.diff(VIEWING_LUT[: WINDOW_TOP + 1].astype(int))
    assert steps.min() >= 1 and steps.max() <= 2  # monotonic, no level lost


def test_texture_is_not_sharpened() -> None:
    """Dense tissue, even where it clips the window (levels just past WINDOW_TOP), is not
    lifted to its local maxima."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(WINDOW_TOP, 8, (800, 600)), 0, KEEP_METAL - 7).astype(np.uint8)
    mean = np.asarray(Image.fromarray(img).resize((150, 200), Image.Resampling.BOX))
    assert np.abs(shrink(img, 200, 150).astype(int) - mean).max() <= 1


@pytest.mark.parametrize(("rows", "cols"), [(128, 64), (64, 128), (100, 100)])
def test_aspect_kept_and_padded_to_square(tmp_path: Path, rows: int, cols: int) -> None:
    stored = np.full((rows, cols), 3000, dtype=np.uint16)
    path = make_file(
        tmp_path / "a.dcm",
        stored,
        "siemens",
        "explicit",
        voi="window",
        voi_function="LINEAR_EXACT",
        windows=((2048.0, 4096.0),),
    )
    thumb = render_frame(open_dicom(path), 0, 32)
    assert thumb.image.shape == (32, 32)
    h, w = thumb.content_shape
    assert (h, w) == fit_size(rows, cols, 32) and max(h, w) == 32
    assert h / w == pytest.approx(rows / cols, rel=0.05)
    content = thumb.image > 0
    assert content.sum() == h * w  # everything else is black padding
    ys, xs = np.nonzero(content)
    assert ys.max() - ys.min() + 1 == h and xs.max() - xs.min() + 1 == w


def test_default_size_is_512(tmp_path: Path) -> None:
    path = make_file(tmp_path / "d.dcm", np.full((1024, 800), 2000, np.uint16), "ge", "explicit")
    assert render(path).image.shape == (512, 512)


def test_save_png_is_atomic_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = save_png(img, tmp_path / "sub" / "x.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), img)

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError):
        save_png(img[::-1], out)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), img)  # old file intact
    assert [p.name for p in out.parent.iterdir()] == ["x.png"]  # no temp left behind


@pytest.mark.parametrize("width", [1, 2])
def test_metal_over_tissue_at_the_window_top_survives_the_shrink(width: int) -> None:
    """Over tissue at WINDOW_TOP a clip can't stand out by CONTRAST_FROM levels; it is
    kept anyway, since only metal reaches the top of the headroom."""
    img = np.full((512, 512), WINDOW_TOP, np.uint8)
    img[300 : 300 + width, 100:140] = 255  # a wire or clip across dense tissue
    out = shrink(img, 224, 224)
    assert out.max() >= 250
    assert np.median(out) == WINDOW_TOP

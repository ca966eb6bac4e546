"""The VOI chain against the standard's formulas and pydicom's independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_windowing
from pydicom.sequence import Sequence

from mammo_dagster.core.imaging.display import (
    WINDOW_TOP,
    apply_lut,
    display8,
    display_lut,
    display_values,
    headroom,
    inverts,
    resolve_voi,
    stored_values,
)
from mammo_dagster.core.imaging.voi import Voi, auto_window, choose_voi, window_value


def ds_with(**kw) -> Dataset:
    ds = Dataset()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


# PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID),
# evaluated by hand for c=2048, w=1024 (output range 0..1).
@pytest.mark.parametrize(
    ("function", "x", "expected"),
    [
        ("LINEAR", 1535.0, 0.0),  # x <= c - 0.5 - (w-1)/2 = 1536.0 -> 0
        ("LINEAR", 1536.0, 0.0),
        ("LINEAR", 2047.5, 0.5),  # ((x - (c-0.5)) / (w-1) + 0.5)
        ("LINEAR", 2559.0, 1.0),  # x > c - 0.5 + (w-1)/2 = 2559.0 -> formula gives exactly 1
        ("LINEAR", 2560.0, 1.0),
        ("LINEAR_EXACT", 1536.0, 0.0),  # x <= c - w/2
        ("LINEAR_EXACT", 1792.0, 0.25),
        ("LINEAR_EXACT", 2048.0, 0.5),
        ("LINEAR_EXACT", 2560.0, 1.0),
        ("SIGMOID", 2048.0, 0.5),
        ("SIGMOID", 2048.0 + 1024 / 4, 1 / (1 + np.exp(-1.0))),
        ("SIGMOID", 2048.0 - 1024, 1 / (1 + np.exp(4.0))),
    ],
)
def test_window_value_matches_standard(function: str, x: float, expected: float) -> None:
    assert window_value(np.array([x]), 2048.0, 1024.0, function)[0] == pytest.approx(expected)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(
    ("bits", "signed", "center", "width"),
    [(12, 0, 2048.0, 1024.0), (14, 0, 6000.5, 9000.0), (12, 1, -100.0, 3000.0)],
)
def test_window_matches_pydicom(
    function: str, bits: int, signed: int, center: float, width: float
) -> None:
    ds = ds_with(
        BitsStored=bits,
        HighBit=bits - 1,
        PixelRepresentation=signed,
        WindowCenter=center,
        WindowWidth=width,
        VOILUTFunction=function,
    )
    lo = -(1 << (bits - 1)) if signed else 0
    x = np.arange(lo, lo + (1 << bits))
    theirs = apply_windowing(x.copy(), ds)
    y_min, y_max = lo, lo + (1 << bits) - 1
    theirs = (theirs - y_min) / (y_max - y_min)
    ours = display_values(x, ds, choose_voi(ds))
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


def test_voi_lut_sequence_and_bit_depth_mismatch() -> None:
    lut = np.linspace(0, 4095, 100).astype(np.uint16)  # 12-bit data, descriptor claims 16
    item = Dataset()
    item.LUTDescriptor = [100, 1000, 16]
    item.LUTData = lut.tobytes()
    item["LUTData"].VR = "OW"
    ds = ds_with(VOILUTSequence=Sequence([item]), WindowCenter=5, WindowWidth=10)
    voi = choose_voi(ds)
    assert voi is not None and voi.kind == "lut"  # the LUT wins over windows, as pydicom's default
    y = display_values(np.array([0, 1000, 1050, 1099, 4000]), ds, voi)
    # before first mapped -> first entry; after last -> last entry; normalised as 12 bit
    np.testing.assert_allclose(y, [0.0, 0.0, lut[50] / 4095, 1.0, 1.0])


def test_voi_lut_descriptor_zero_means_65536_entries() -> None:
    lut = (np.arange(65536) // 16).astype(np.uint16)  # a 12-bit identity-ish ramp
    item = Dataset()
    item.LUTDescriptor = [0, 0, 12]
    item.LUTData = lut.tobytes()
    item["LUTData"].VR = "OW"
    ds = ds_with(BitsStored=16, HighBit=15, VOILUTSequence=Sequence([item]))
    y = display_values(np.array([0, 32768, 65535]), ds, choose_voi(ds))
    np.testing.assert_allclose(y, [0.0, 2048 / 4095, 1.0])


def test_multi_valued_windows_first_by_default_and_selectable() -> None:
    ds = ds_with(WindowCenter=[1000, 2000, 3000], WindowWidth=[100, 200, 300])
    assert (choose_voi(ds).center, choose_voi(ds).width) == (1000, 100)
    assert choose_voi(ds, index=2).center == 3000
    assert choose_voi(ds, index=7).center == 1000  # out of range -> first


def test_invalid_window_falls_back_to_next_valid_or_auto() -> None:
    ds = ds_with(WindowCenter=[1000, 2000], WindowWidth=[0, 500])
    assert choose_voi(ds).center == 2000
    assert choose_voi(ds_with(WindowCenter=1000, WindowWidth=0)) is None


def test_window_from_shared_functional_groups() -> None:
    voi_item = Dataset()
    voi_item.WindowCenter, voi_item.WindowWidth, voi_item.VOILUTFunction = 1500, 800, "SIGMOID"
    group = Dataset()
    group.FrameVOILUTSequence = Sequence([voi_item])
    ds = ds_with(SharedFunctionalGroupsSequence=Sequence([group]))
    voi = choose_voi(ds)
    assert (voi.center, voi.width, voi.function) == (1500, 800, "SIGMOID")


def test_stored_values_drop_garbage_bits_and_sign_extend() -> None:
    raw = np.array([0xF000 | 0x0ABC, 0x0FFF, 0x0800], dtype=np.int64)
    np.testing.assert_array_equal(stored_values(raw, 12, signed=False), [0xABC, 4095, 2048])
    np.testing.assert_array_equal(stored_values(raw, 12, signed=True), [0xABC - 4096, -1, -2048])


def test_rescale_is_applied_before_windowing() -> None:
    ds = ds_with(
        RescaleSlope=2.0,
        RescaleIntercept=-100.0,
        WindowCenter=900.0,
        WindowWidth=400.0,
        VOILUTFunction="LINEAR_EXACT",
    )
    # stored 500 -> modality 900 = the window center
    assert display_values(np.array([500]), ds, choose_voi(ds))[0] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME1", None, True),
        ("MONOCHROME1", "INVERSE", True),  # one inversion, not two
        ("MONOCHROME2", "INVERSE", True),
    ],
)
def test_inversion(photometric: str, shape: str | None, inverted: bool) -> None:
    ds = ds_with(
        PhotometricInterpretation=photometric,
        WindowCenter=2048,
        WindowWidth=4096,
        VOILUTFunction="LINEAR_EXACT",
    )
    if shape:
        ds.PresentationLUTShape = shape
    assert inverts(ds) is inverted
    y = display_values(np.array([0, 4095]), ds, choose_voi(ds))
    assert bool(y[0] > y[1]) is inverted


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_padding_stays_black(photometric: str) -> None:
    ds = ds_with(PhotometricInterpretation=photometric, WindowCenter=2048, WindowWidth=4096)
    ds.add_new(0x00280120, "US", 4095 if photometric == "MONOCHROME1" else 0)
    y = display_values(np.array([0, 4095, 2000]), ds, choose_voi(ds))
    padded = 1 if photometric == "MONOCHROME1" else 0
    assert y[padded] == 0.0
    assert 0.0 < y[2] < 1.0
    ds.add_new(0x00280121, "US", 10)  # padding range limit
    if photometric == "MONOCHROME2":
        assert display_values(np.array([5]), ds, choose_voi(ds))[0] == 0.0


@pytest.mark.parametrize("signed", [0, 1])
def test_lut_equals_exact_per_pixel(signed: int) -> None:
    rng = np.random.default_rng(1)
    ds = ds_with(
        PixelRepresentation=signed,
        WindowCenter=[300.0],
        WindowWidth=[2500.0],
        VOILUTFunction="SIGMOID",
        PhotometricInterpretation="MONOCHROME1",
    )
    lo = -2048 if signed else 0
    values = rng.integers(lo, lo + 4096, size=(50, 40))
    voi = choose_voi(ds)
    exact = display8(values, ds, voi)
    plain = np.rint(display_values(values, ds, voi) * 255).astype(np.uint8)
    raw = values.astype(np.int16) if signed else values.astype(np.uint16)
    raw_with_garbage = raw.view(np.uint16) | np.uint16(0xF000 if not signed else 0)
    np.testing.assert_array_equal(apply_lut(raw_with_garbage, display_lut(ds, voi)), exact)
    np.testing.assert_array_equal(
        apply_lut(raw_with_garbage, display_lut(ds, voi, room=False)), plain
    )


@pytest.mark.parametrize(
    ("bits", "signed", "extra"),
    [
        (12, 0, {"PhotometricInterpretation": "MONOCHROME1", "VOILUTFunction": "SIGMOID"}),
        (14, 0, {"RescaleSlope": 2.0, "RescaleIntercept": -100.0}),
        (12, 1, {"PixelPaddingValue": -2048}),
        (16, 0, {}),
    ],
)
def test_lut_over_every_16_bit_pattern(bits: int, signed: int, extra: dict) -> None:
    """The table is computed over 2**BitsStored values and repeated: it must equal the
    display of every one of the 65,536 patterns computed one by one."""
    ds = ds_with(
        BitsStored=bits, HighBit=bits - 1, PixelRepresentation=signed,
        WindowCenter=[300.0], WindowWidth=[1500.0], **extra,
    )  # fmt: skip
    voi = choose_voi(ds)
    every = stored_values(np.arange(1 << 16), bits, bool(signed))
    np.testing.assert_array_equal(display_lut(ds, voi), display8(every, ds, voi))
    plain = np.rint(np.clip(display_values(every, ds, voi), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(display_lut(ds, voi, room=False), plain)


def test_headroom_keeps_metal_apart_from_tissue_past_the_window() -> None:
    ds = ds_with(WindowCenter=[1500.0], WindowWidth=[2000.0])  # 12 bit, window 500..2500
    voi = choose_voi(ds)
    inside, end, past, dense, metal = display8(np.array([1500, 2499, 2600, 3000, 4095]), ds, voi)
    assert inside == pytest.approx(WINDOW_TOP / 2, abs=1)
    assert end == WINDOW_TOP
    assert WINDOW_TOP <= past <= WINDOW_TOP + 1  # just past the window: barely brighter
    assert WINDOW_TOP < dense < 240
    assert metal == 255
    # without headroom, everything past the window is the same white
    assert set(display_lut(ds, voi, room=False)[[2600, 3000, 4095]]) == {255}
    whole = display8(np.arange(4096), ds, voi)
    assert (np.diff(whole.astype(int)) >= 0).all()


@pytest.mark.parametrize("function", ["LINEAR", "SIGMOID"])
def test_headroom_follows_the_bright_end_when_the_display_inverts(function: str) -> None:
    # MONOCHROME1: metal is the *lowest* stored value; a sigmoid never reaches white
    ds = ds_with(
        WindowCenter=[2500.0],
        WindowWidth=[2000.0],
        VOILUTFunction=function,
        PhotometricInterpretation="MONOCHROME1",
    )
    voi = choose_voi(ds)
    room = headroom(ds, voi)
    assert room is not None and room.top == 1500 and room.extreme == 0
    whole = display8(np.arange(4096), ds, voi).astype(int)
    assert whole[0] == 255
    assert whole[1400] < 240 if function == "LINEAR" else whole[1400] < 225
    assert (np.diff(whole) <= 0).all()  # brighter toward the low end, never a step back


def test_headroom_of_a_voi_lut_starts_where_it_reaches_white() -> None:
    item = Dataset()
    item.LUTDescriptor = [1000, 1000, 12]  # values 1000..1999 mapped; beyond: last entry
    item.LUTData = list(np.linspace(0, 4095, 1000).astype(int))
    ds = ds_with(VOILUTSequence=Sequence([item]))
    voi = choose_voi(ds)
    room = headroom(ds, voi)
    assert room is not None and 1990 <= room.top <= 1999 and room.extreme == 4095
    assert display8(np.array([1500, 2100, 4095]), ds, voi).tolist()[2] == 255


def test_padding_stays_black_even_at_the_bright_extreme() -> None:
    ds = ds_with(WindowCenter=[1500.0], WindowWidth=[2000.0], PixelPaddingValue=4095)
    voi = choose_voi(ds)
    room = headroom(ds, voi)
    assert room is not None and room.extreme == 4094  # padding is not the extreme
    assert display8(np.array([4095, 4094]), ds, voi).tolist() == [0, 255]


def test_auto_window_ignores_air_padding_and_markers() -> None:
    rng = np.random.default_rng(2)
    air = np.full(60_000, 40.0)
    breast = rng.uniform(1000, 3000, 40_000)
    marker = np.full(50, 4095.0)
    voi = auto_window(np.concatenate([air, breast, marker]), inverse_air=False)
    lo, hi = voi.center - voi.width / 2, voi.center + voi.width / 2
    assert 1000 <= lo < 1100 and 2900 < hi <= 3000
    # MONOCHROME1: air is the high end
    voi1 = auto_window(np.concatenate([4095 - air, 4095 - breast, 4095 - marker]), inverse_air=True)
    assert voi1.width == pytest.approx(voi.width, rel=0.02)


def test_resolve_voi_uses_header_when_present() -> None:
    ds = ds_with(WindowCenter=100, WindowWidth=50)
    assert resolve_voi(ds, np.arange(10)) == Voi(kind="window", center=100, width=50)
    assert resolve_voi(ds_with(), np.arange(4096)).kind == "auto"


def test_signed_padding_written_as_unsigned_still_matches() -> None:
    ds = ds_with(PixelRepresentation=1, WindowCenter=0, WindowWidth=4096)
    ds.add_new(0x00280120, "US", 0xF800)  # -2048 as a 12-bit signed value, written as US
    y = display_values(np.array([-2048, 0, 100]), ds, choose_voi(ds))
    assert y[0] == 0.0 and y[1] > 0.4


def test_voi_lut_declared_depth_is_kept_unless_four_bits_are_never_used() -> None:
    def lut_ds(top: int, declared: int) -> Dataset:
        item = Dataset()
        item.LUTDescriptor = [2, 0, declared]
        item.LUTData = np.array([0, top], dtype=np.uint16).tobytes()
        item["LUTData"].VR = "OW"
        return ds_with(VOILUTSequence=Sequence([item]))

    ds = lut_ds(32000, 16)  # a 16-bit LUT that doesn't reach the top is still 16-bit
    assert display_values(np.array([1]), ds, choose_voi(ds))[0] == pytest.approx(32000 / 65535)
    ds = lut_ds(4000, 16)  # the 16-declared / 12-used writer quirk
    assert display_values(np.array([1]), ds, choose_voi(ds))[0] == pytest.approx(4000 / 4095)


def test_signed_first_mapped_value_written_as_unsigned() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 65534, 12]  # first mapped = -2
    item.LUTData = np.array([0, 1000, 2000, 4095], dtype=np.uint16).tobytes()
    item["LUTData"].VR = "OW"
    ds = ds_with(VOILUTSequence=Sequence([item]), RescaleIntercept=-100.0, RescaleSlope=1.0)
    y = display_values(np.array([98, 99, 100, 101]), ds, choose_voi(ds))  # modality -2..1
    np.testing.assert_allclose(y, [0.0, 1000 / 4095, 2000 / 4095, 1.0])


def test_headroom_of_a_voi_lut_that_never_reaches_full_output() -> None:
    item = Dataset()
    item.LUTDescriptor = [1000, 1000, 12]
    item.LUTData = list(np.linspace(0, 4000, 1000).astype(int))  # tops out below 4095
    ds = ds_with(VOILUTSequence=Sequence([item]))
    voi = choose_voi(ds)
    room = headroom(ds, voi)
    assert room is not None and 1990 <= room.top <= 1999
    top, metal = display8(np.array([1999, 4095]), ds, voi).tolist()
    assert top == round(4000 / 4095 * WINDOW_TOP) and metal == 255


def test_a_window_outside_the_range_still_brightens_toward_the_right_end() -> None:
    # MONOCHROME1 with a window wholly below the stored range: the display is flat black,
    # and the headroom must still rise toward the low (bright) end, not toward air
    ds = ds_with(
        WindowCenter=[-3000.0], WindowWidth=[1000.0], PhotometricInterpretation="MONOCHROME1"
    )
    voi = choose_voi(ds)
    assert headroom(ds, voi) is None or headroom(ds, voi).extreme == 0
    levels = display8(np.array([0, 2000, 4095]), ds, voi).tolist()
    assert levels[0] >= levels[1] >= levels[2]

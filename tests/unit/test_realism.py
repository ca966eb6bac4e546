"""Realism options of the synthetic archive: each shift is what it says, and only that."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo_dagster.core.imaging.decode import full_frame
from mammo_dagster.core.imaging.dicom import open_dicom
from mammo_dagster.core.imaging.dicom_write import (
    LOSSY_SYNTAXES,
    TRANSFER_SYNTAXES,
    build_dataset,
    encode,
    write,
)
from mammo_dagster.core.imaging.vendors import DEFAULT_VENDORS, VENDOR_PROFILES
from mammo_dagster.core.synthetic.anatomy import synth_breast
from mammo_dagster.core.synthetic.archive import generate_archive, to_stored
from mammo_dagster.core.synthetic.drawing import MetalLayer
from mammo_dagster.core.synthetic.markers import add_implant, add_lead_letters, add_marker
from mammo_dagster.core.synthetic.realism import SHIFTS, Realism, parse_range
from tests.factory import header


def _breast(seed: int = 1, spacing: float = 0.4, mag: bool = False):
    rng = np.random.default_rng(seed)
    img, mask = synth_breast(rng, 600, 480, view="CC", laterality="L", mag=mag,
                             pixel_spacing_mm=spacing)  # fmt: skip
    return rng, img, mask


@pytest.mark.parametrize("level", [0.85, 0.93])
def test_metal_level_puts_the_plateau_below_the_extreme(level: float) -> None:
    rng, img, mask = _breast()
    layer = MetalLayer(img.shape)
    layer.level = level
    before = img.copy()
    add_marker(rng, img, mask, pixel_spacing_mm=0.4, kind="cylinder", layer=layer)
    core = (img >= 0.999) & (before < 0.9)
    profile = VENDOR_PROFILES["siemens"]  # MONOCHROME2, 12 bits
    stored = to_stored(img, mask, profile, np.random.default_rng(5), layer)
    plateau = stored[core] / profile.max_stored
    assert core.sum() > 20
    assert abs(float(np.median(plateau)) - level) < 0.03  # at the level, not at the extreme
    assert plateau.max() < 0.99
    # never darker than the tissue right beside it
    ring = np.zeros_like(core)
    ys, xs = np.nonzero(core)
    ring[max(ys.min() - 6, 0) : ys.max() + 7, max(xs.min() - 6, 0) : xs.max() + 7] = True
    ring &= img < 0.9
    assert np.median(plateau) > np.percentile(stored[ring] / profile.max_stored, 95)
    # without a layer (or at level 1) metal saturates exactly as before
    plain = to_stored(img, mask, profile, np.random.default_rng(5))
    assert (plain[core] == profile.max_stored).all()


def test_lead_letters_lie_in_the_air_and_are_no_biopsy_tool(tmp_path: Path) -> None:
    rng, img, mask = _breast(2)
    before = img.copy()
    assert add_lead_letters(rng, img, mask, "LCC", pixel_spacing_mm=0.4) == "letters"
    changed = img != before
    assert changed.sum() > 50 and not (changed & mask).any()
    assert img[changed].max() >= 0.999  # metal
    shift = Realism(distractors=("letters",))
    images = generate_archive(tmp_path / "a", studies=2, seed=4, realism=shift,
                              ground_truth=tmp_path / "t.csv")  # fmt: skip
    base = generate_archive(tmp_path / "b", studies=2, seed=4, ground_truth=tmp_path / "u.csv")
    assert [i.has_biopsy_tool for i in images] == [i.has_biopsy_tool for i in base]
    assert sum("letters" in i.marker_kind for i in images) >= len(images) // 2


def test_an_implant_is_large_bright_and_below_the_extreme() -> None:
    rng, img, mask = _breast(3)
    before = img.copy()
    assert add_implant(rng, img, mask, pixel_spacing_mm=0.4) == "implant"
    inside = (img - before) > 0.05
    assert inside.sum() > 0.1 * mask.sum()
    assert 0.85 < np.median(img[inside]) < 0.97 and img.max() < 0.97


def test_a_mag_view_without_paddle_band_differs_only_by_the_band() -> None:
    def view(band: bool) -> np.ndarray:
        img, _ = synth_breast(np.random.default_rng(9), 600, 480, view="CC", laterality="R",
                              mag=True, pixel_spacing_mm=0.4, paddle_band=band)  # fmt: skip
        return img

    with_band, without = view(True), view(False)
    diff = with_band - without
    assert diff.min() >= -1e-6 and 0.1 < diff.max() < 0.25  # only a bright band is gone
    assert (diff > 0.02).mean() < 0.05


def test_shifted_archives_hold_the_same_studies_under_uids_of_their_own(tmp_path: Path) -> None:
    base = generate_archive(tmp_path / "b", studies=3, seed=7, ground_truth=tmp_path / "b.csv")
    again = generate_archive(tmp_path / "a", studies=3, seed=7, realism=Realism(),
                             ground_truth=tmp_path / "a.csv")  # fmt: skip
    assert [i.sop_instance_uid for i in again] == [i.sop_instance_uid for i in base]
    for name in ("metal-low", "rescaled", "j2k-lossy"):
        shift = SHIFTS[name]
        shifted = generate_archive(
            tmp_path / name, studies=3, seed=7, realism=shift.realism,
            transfer_syntaxes=shift.transfer_syntaxes or None,
            ground_truth=tmp_path / f"{name}.csv",
        )  # fmt: skip
        key = [(i.has_biopsy_tool, i.has_mag_view, i.view, i.laterality, i.vendor) for i in base]
        assert [(i.has_biopsy_tool, i.has_mag_view, i.view, i.laterality, i.vendor)
                for i in shifted] == key  # fmt: skip
        assert not {i.sop_instance_uid for i in shifted} & {i.sop_instance_uid for i in base}


def test_rescaled_matrices_keep_the_field_of_view(tmp_path: Path) -> None:
    images = generate_archive(tmp_path / "r", studies=1, seed=2, vendors=["ge"],
                              realism=Realism(matrix_scale=0.7),
                              ground_truth=tmp_path / "r.csv")  # fmt: skip
    ds = pydicom.dcmread(images[0].path, stop_before_pixels=True)
    prof = VENDOR_PROFILES["ge"]
    assert ds.Rows == round(prof.rows // 8 * 0.7)
    assert float(ds.PixelSpacing[0]) * ds.Rows == pytest.approx(prof.pixel_spacing_mm * 8 * (
        prof.rows // 8), rel=0.01)  # fmt: skip


def test_declared_bits_change_the_header_not_the_values(tmp_path: Path) -> None:
    kw = {"studies": 1, "seed": 5, "vendors": ["siemens"], "transfer_syntaxes": ["explicit"]}
    a = generate_archive(tmp_path / "a", ground_truth=tmp_path / "a.csv", **kw)
    b = generate_archive(tmp_path / "b", ground_truth=tmp_path / "b.csv",
                         realism=Realism(declared_bits=16), **kw)  # fmt: skip
    da, db = pydicom.dcmread(a[0].path), pydicom.dcmread(b[0].path)
    assert (da.BitsStored, db.BitsStored, db.HighBit) == (12, 16, 15)
    np.testing.assert_array_equal(da.pixel_array, db.pixel_array)
    assert db.pixel_array.max() <= 4095
    assert da.VOILUTSequence[0].LUTDescriptor == db.VOILUTSequence[0].LUTDescriptor


@pytest.mark.parametrize("name", [n for n, u in TRANSFER_SYNTAXES.items() if u in LOSSY_SYNTAXES])
@pytest.mark.parametrize("vendor", ["hologic", "ge"])
def test_lossy_syntaxes_are_marked_lossy_and_decode_close(
    tmp_path: Path, name: str, vendor: str
) -> None:
    profile = VENDOR_PROFILES[vendor]
    rng, img, mask = _breast(4, spacing=0.2)
    stored = to_stored(img, mask, profile, rng)
    ds = build_dataset(stored, profile, header("lossy"))
    out = encode(ds, name, j2k_ratio=10, jpeg_quality=90)
    path = write(out, tmp_path / "x.dcm")
    dicom = open_dicom(path)
    assert dicom.facts.transfer_syntax_uid == TRANSFER_SYNTAXES[name]
    assert dicom.ds.LossyImageCompression == "01"
    assert float(dicom.ds.LossyImageCompressionRatio) > 2
    got = np.asarray(full_frame(dicom)).astype(np.float64)
    depth = {"jpeg-lossy": min(profile.bits_stored, 12), "jpeg8": 8}.get(name, profile.bits_stored)
    assert dicom.facts.bits_stored == depth
    want = stored.astype(np.float64) / (1 << (profile.bits_stored - depth))
    error = np.abs(got - want).mean() / (1 << depth)
    assert error < 0.01  # lossy, but close: under 1% of the range on average
    if depth < profile.bits_stored:  # the windows follow the values down
        c = float(np.atleast_1d(dicom.ds.WindowCenter)[0])
        assert c == pytest.approx(profile.windows[0][0] * ((1 << depth) - 1), rel=0.02)


def test_the_held_out_vendor_is_outside_the_default_mix(tmp_path: Path) -> None:
    assert "ims" in VENDOR_PROFILES and "ims" not in DEFAULT_VENDORS
    images = generate_archive(tmp_path / "i", studies=1, seed=3, vendors=["ims"],
                              ground_truth=tmp_path / "i.csv")  # fmt: skip
    ds = pydicom.dcmread(images[0].path, stop_before_pixels=True)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 13
    assert len(ds.VOILUTSequence) == 2 and len(ds.WindowCenter) == 2
    table = np.frombuffer(ds.VOILUTSequence[0].LUTData, "<u2").astype(float)
    n = len(table)
    steep = table[n // 2 + n // 20] - table[n // 2 - n // 20]
    flat = table[n // 10] - table[0]
    assert steep > 1.5 * flat  # an S-curve, not a straight line


def test_realism_options_are_checked() -> None:
    with pytest.raises(ValueError, match="metal_level"):
        Realism(metal_level=(0.9, 0.8))
    with pytest.raises(ValueError, match="unknown distractors"):
        Realism(distractors=("coins",))
    with pytest.raises(ValueError, match="matrix_scale"):
        Realism(matrix_scale=5)
    assert parse_range("0.85-0.95") == (0.85, 0.95) and parse_range("1") == (1.0, 1.0)
    with pytest.raises(ValueError, match="LO-HI"):
        parse_range("high")
    assert Realism().describe() == "base"
    assert "metal at 0.85-0.95" in SHIFTS["metal-low"].realism.describe()
    assert dataclasses.replace(Realism(), paddle_band=False).describe() == "no paddle band"


@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_named_shift_writes_a_readable_archive(tmp_path: Path, name: str) -> None:
    shift = SHIFTS[name]
    images = generate_archive(
        tmp_path / name, studies=1, seed=8, realism=shift.realism,
        vendors=shift.vendors or None, transfer_syntaxes=shift.transfer_syntaxes or None,
        ground_truth=tmp_path / "t.csv",
    )  # fmt: skip
    for im in images:
        assert np.asarray(full_frame(open_dicom(im.path))).size > 0


@pytest.mark.parametrize("vendor", sorted(VENDOR_PROFILES))
def test_an_implant_never_reaches_the_stored_extreme_but_a_marker_over_it_does(
    vendor: str,
) -> None:
    """Quantum noise must not put an implant on the extreme metal is stored at: a marker
    over it would be invisible in the pixel data, not merely hard to see."""
    profile = VENDOR_PROFILES[vendor]
    extreme = profile.max_stored if profile.photometric == "MONOCHROME2" else 0
    for seed in range(4):
        rng, img, mask = _breast(seed)
        add_implant(rng, img, mask, pixel_spacing_mm=0.4)
        implant = img > 0.87
        add_marker(rng, img, mask, pixel_spacing_mm=0.4, kind="cylinder")
        metal = img >= 0.999
        for noise in range(3):
            stored = to_stored(img, mask, profile, np.random.default_rng(noise))
            assert implant.sum() > 1000 and metal.sum() > 10
            assert (stored[metal] == extreme).all()
            assert not (stored[implant & ~metal] == extreme).any(), (seed, noise)

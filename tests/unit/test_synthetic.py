"""The synthetic archive: determinism, labels, vendors, pixel semantics, magnification cues."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo_dagster.core.imaging.decode import full_frame
from mammo_dagster.core.imaging.dicom import open_dicom
from mammo_dagster.core.imaging.dicom_write import TRANSFER_SYNTAXES
from mammo_dagster.core.imaging.vendors import DEFAULT_VENDORS, VENDOR_PROFILES
from mammo_dagster.core.synthetic.anatomy import synth_breast
from mammo_dagster.core.synthetic.archive import generate_archive, to_stored
from mammo_dagster.core.synthetic.markers import add_marker
from mammo_dagster.core.synthetic.plan import plan_labels
from mammo_dagster.core.synthetic.truth import (
    BIOPSY_KINDS,
    GROUND_TRUTH_COLUMNS,
    SynthImage,
    read_ground_truth,
)

ARCHIVE_STUDIES = 4
ARCHIVE_SEED = 0


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SynthImage]]:
    out = tmp_path_factory.mktemp("synth")
    seen: list[int] = []
    images = generate_archive(
        out, studies=ARCHIVE_STUDIES, seed=ARCHIVE_SEED, size="small", progress=seen.append
    )
    assert seen == list(range(1, len(images) + 1))
    return out, images


@pytest.fixture(scope="module")
def pixels(archive: tuple[Path, list[SynthImage]]) -> dict[str, tuple[pydicom.Dataset, np.ndarray]]:
    """Every image read back with pydicom: SOP UID -> (dataset, pixel_array)."""
    return {im.sop_instance_uid: _read(im.path) for im in archive[1]}


def _read(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = pydicom.dcmread(path)
    return ds, ds.pixel_array


def _attenuation(ds: pydicom.Dataset, arr: np.ndarray) -> np.ndarray:
    """Stored values as 0 (air) .. 1 (metal), undoing MONOCHROME1 inversion."""
    top = (1 << ds.BitsStored) - 1
    a = arr.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = top - a
    return a / top


def _straight_edge_score(a: np.ndarray) -> float:
    """Largest jump of a row/column mean relative to that mean's range: long straight edges
    (collimation, paddle) concentrate in one column; a curved skin line spreads out."""
    scores = []
    for m in (a.mean(axis=0), a.mean(axis=1)):
        scores.append(float(np.abs(np.diff(m)).max() / (m.max() - m.min() + 1e-6)))
    return max(scores)


def _paddle_band_score(a: np.ndarray, k: int = 4, delta: float = 0.06) -> float:
    """Largest fraction of a column (or row) that is a thin bright ridge (paddle edge band)."""
    best = 0.0
    for arr in (a, a.T):
        mid, left, right = arr[:, k:-k], arr[:, : -2 * k], arr[:, 2 * k :]
        ridge = (mid > left + delta) & (mid > right + delta)
        best = max(best, float(ridge.mean(axis=0).max()))
    return best


def test_ground_truth_csv_columns_and_values(archive):
    out, images = archive
    assert GROUND_TRUTH_COLUMNS == (
        "path", "sop_instance_uid", "study_instance_uid", "series_instance_uid", "patient_id",
        "has_biopsy_tool", "has_mag_view", "vendor", "transfer_syntax", "view", "laterality",
        "marker_kind", "header_mag_hint", "header_marker_hint", "marker_boxes",
    )  # fmt: skip
    with (out / "ground_truth.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == GROUND_TRUTH_COLUMNS
    assert len(rows) - 1 == len(images)
    for row in rows[1:]:
        rec = dict(zip(GROUND_TRUTH_COLUMNS, row, strict=True))
        assert (out / rec["path"]).is_file() and not Path(rec["path"]).is_absolute()
        for col in ("has_biopsy_tool", "has_mag_view", "header_mag_hint", "header_marker_hint"):
            assert rec[col] in ("0", "1")
        assert rec["view"] in ("CC", "MLO") and rec["laterality"] in ("L", "R")
        kinds = [k for k in rec["marker_kind"].split("+") if k]
        assert set(kinds) <= set(BIOPSY_KINDS) | {"skin_bb", "calcs"}
        assert (rec["has_biopsy_tool"] == "1") == any(k in BIOPSY_KINDS for k in kinds)
    back = read_ground_truth(out / "ground_truth.csv")
    assert [b.sop_instance_uid for b in back] == [i.sop_instance_uid for i in images]
    assert [b.has_mag_view for b in back] == [i.has_mag_view for i in images]
    assert [b.marker_boxes for b in back] == [i.marker_boxes for i in images]


def test_marker_boxes_hold_each_biopsy_marker(archive, pixels):
    """One box per biopsy marker, inside the matrix, around metal (Grad-CAM's ground truth)."""
    _, images = archive
    with_marker = [im for im in images if im.has_biopsy_tool]
    assert with_marker and all(im.marker_boxes == "" for im in images if not im.has_biopsy_tool)
    for im in with_marker:
        ds, arr = pixels[im.sop_instance_uid]
        a = _attenuation(ds, arr)
        kinds = [k for k in im.marker_kind.split("+") if k in BIOPSY_KINDS]
        boxes = [tuple(map(int, b.split())) for b in im.marker_boxes.split(";")]
        assert len(boxes) == len(kinds)
        for r0, c0, r1, c1 in boxes:
            assert 0 <= r0 < r1 <= ds.Rows and 0 <= c0 < c1 <= ds.Columns
            assert (r1 - r0) * (c1 - c0) < 0.5 * ds.Rows * ds.Columns  # a spot, not the image
            assert a[r0:r1, c0:c1].max() >= 0.95  # metal: at the stored extreme


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(studies=2, size="small", vendors=("ge", "fujifilm"),
              transfer_syntaxes=tuple(TRANSFER_SYNTAXES))  # fmt: skip
    a = generate_archive(tmp_path / "a", seed=11, **kw)
    b = generate_archive(tmp_path / "b", seed=11, **kw)
    c = generate_archive(tmp_path / "c", seed=12, **kw)
    assert (tmp_path / "a/ground_truth.csv").read_bytes() == (
        tmp_path / "b/ground_truth.csv"
    ).read_bytes()
    assert [x.path.relative_to(tmp_path / "a") for x in a] == [
        y.path.relative_to(tmp_path / "b") for y in b
    ]
    for x, y in zip(a, b, strict=True):
        assert x.path.read_bytes() == y.path.read_bytes()
    assert (tmp_path / "a/ground_truth.csv").read_bytes() != (
        tmp_path / "c/ground_truth.csv"
    ).read_bytes()
    pa, pc = _read(a[0].path)[1], _read(c[0].path)[1]
    assert pa.shape != pc.shape or not np.array_equal(pa, pc)
    # the requested vendors and every requested transfer syntax appear, and decode
    assert {x.vendor for x in a} == {"ge", "fujifilm"}
    assert {x.transfer_syntax for x in a} == {str(u) for u in TRANSFER_SYNTAXES.values()}
    for x in a:  # our decoder: pydicom's plugins refuse 12-bit JPEG Extended
        dicom = open_dicom(x.path)
        assert dicom.ds.file_meta.TransferSyntaxUID == x.transfer_syntax
        assert np.asarray(full_frame(dicom)).shape == (dicom.ds.Rows, dicom.ds.Columns)


def test_class_mix_and_study_sizes():
    labels = plan_labels(studies=20, seed=0)
    classes = Counter((lab["has_biopsy_tool"], lab["has_mag_view"]) for lab in labels)
    assert set(classes) == {(False, False), (True, False), (False, True), (True, True)}
    neither = classes[(False, False)] / len(labels)
    assert 0.35 < neither < 0.75
    per_study = Counter(lab["study_index"] for lab in labels)
    assert sorted(per_study) == list(range(20))
    assert all(4 <= n <= 8 for n in per_study.values())
    # over many studies the mix is near 55/20/15/10 % and patients have several studies
    many = plan_labels(studies=400, seed=1)
    mix = Counter((lab["has_biopsy_tool"], lab["has_mag_view"]) for lab in many)
    frac = {k: v / len(many) for k, v in mix.items()}
    assert abs(frac[(False, False)] - 0.55) < 0.07
    assert abs(frac[(True, False)] - 0.20) < 0.06
    assert abs(frac[(False, True)] - 0.15) < 0.05
    assert abs(frac[(True, True)] - 0.10) < 0.05
    studies_per_patient = defaultdict(set)
    for lab in many:
        studies_per_patient[lab["patient_id"]].add(lab["study_index"])
    assert max(len(s) for s in studies_per_patient.values()) >= 2
    assert all(4 <= n <= 8 for n in Counter(lab["study_index"] for lab in many).values())
    # headers hint only sometimes, and sometimes wrongly
    mag = [lab["header_mag_hint"] for lab in many if lab["has_mag_view"]]
    not_mag = [lab["header_mag_hint"] for lab in many if not lab["has_mag_view"]]
    assert 0.4 < np.mean(mag) < 0.9 and 0.0 < np.mean(not_mag) < 0.1
    tool = [lab["header_marker_hint"] for lab in many if lab["has_biopsy_tool"]]
    no_tool = [lab["header_marker_hint"] for lab in many if not lab["has_biopsy_tool"]]
    assert 0.2 < np.mean(tool) < 0.6 and np.mean(no_tool) < 0.06


def test_screening_mix_is_mostly_screening_with_rare_flags():
    # the default mix is the archive of every earlier version, draw for draw
    pinned = plan_labels(studies=40, seed=0, mix="enriched")
    digest = hashlib.sha256(json.dumps(pinned, sort_keys=True, default=str).encode())
    assert digest.hexdigest() == "fa8fb7bb130069c52cc29c4e27ae5d137e9aaec1ed5d7c6a1ca1bcbe41bb3b0a"
    enriched = plan_labels(studies=400, seed=1)
    labels = plan_labels(studies=400, seed=1, mix="screening")
    marker = np.mean([lab["has_biopsy_tool"] for lab in labels])
    mag = np.mean([lab["has_mag_view"] for lab in labels])
    assert 0.03 < marker < 0.10 and 0.02 < mag < 0.09
    assert marker < np.mean([lab["has_biopsy_tool"] for lab in enriched]) / 3
    assert mag < np.mean([lab["has_mag_view"] for lab in enriched]) / 3
    # most studies are the four standard screening views (enriched: under half)
    four = np.mean([n == 4 for n in Counter(lab["study_index"] for lab in labels).values()])
    assert four > 0.6
    assert np.mean([n == 4 for n in Counter(lab["study_index"] for lab in enriched).values()]) < 0.5
    with pytest.raises(ValueError, match="unknown study mix 'icu'"):
        plan_labels(studies=4, seed=1, mix="icu")


def test_mixes_of_one_seed_do_not_share_uids(tmp_path: Path) -> None:
    a = generate_archive(tmp_path / "a", studies=1, seed=3)
    b = generate_archive(tmp_path / "b", studies=1, seed=3, mix="screening")
    assert not {x.sop_instance_uid for x in a} & {x.sop_instance_uid for x in b}
    again = generate_archive(tmp_path / "c", studies=1, seed=3)
    assert [x.sop_instance_uid for x in again] == [x.sop_instance_uid for x in a]


def test_plan_matches_archive_and_study_layout(archive):
    out, images = archive
    labels = plan_labels(studies=ARCHIVE_STUDIES, seed=ARCHIVE_SEED)
    assert len(labels) == len(images)
    for lab, im in zip(labels, images, strict=True):
        for key in ("patient_id", "vendor", "view", "laterality", "has_biopsy_tool",
                    "has_mag_view", "header_mag_hint", "header_marker_hint"):  # fmt: skip
            assert lab[key] == getattr(im, key), key
    per_study = Counter(im.study_instance_uid for im in images)
    assert len(per_study) == ARCHIVE_STUDIES
    assert all(4 <= n <= 8 for n in per_study.values())
    assert len({im.sop_instance_uid for im in images}) == len(images)
    # real archives nest folders, often without an extension; no patient IDs in paths
    rel = [im.path.relative_to(out) for im in images]
    assert all(len(p.parts) >= 3 for p in rel)
    assert {p.suffix for p in rel} >= {"", ".dcm"}
    assert not any(im.patient_id in str(p) for im in images for p in rel)


def test_every_vendor_reads_back_with_its_header(archive, pixels):
    _, images = archive
    assert {im.vendor for im in images} == set(DEFAULT_VENDORS)
    for im in images:
        prof = VENDOR_PROFILES[im.vendor]
        ds, arr = pixels[im.sop_instance_uid]
        assert arr.shape == (prof.rows // 8, prof.columns // 8)
        assert ds.Manufacturer == prof.manufacturer
        assert ds.PhotometricInterpretation == prof.photometric
        # 1/8 of the matrix over the same breast: 8x the spacing
        assert float(ds.PixelSpacing[0]) == pytest.approx(prof.pixel_spacing_mm * 8)
        assert im.transfer_syntax in {str(TRANSFER_SYNTAXES[t]) for t in prof.transfer_syntaxes}
        assert ds.file_meta.TransferSyntaxUID == im.transfer_syntax
        assert ds.PatientID == im.patient_id and str(ds.PatientName).count("^") >= 1
        assert ds.ImageLaterality == im.laterality and ds.ViewPosition == im.view
        assert int(arr.max()) <= prof.max_stored
        if prof.pixel_padding:
            assert "PixelPaddingValue" in ds


def test_photometric_orientation_air_vs_tissue(archive, pixels):
    _, images = archive
    checked = Counter()
    for im in images:
        if im.has_mag_view:
            continue
        ds, arr = pixels[im.sop_instance_uid]
        rows, cols = arr.shape
        strip = max(2, cols // 30)
        chest = slice(0, strip) if im.laterality == "L" else slice(cols - strip, cols)
        far = slice(cols - strip, cols) if im.laterality == "L" else slice(0, strip)
        tissue = float(np.median(arr[int(rows * 0.4) : int(rows * 0.6), chest]))
        air = float(np.median(arr[:, far]))
        top = VENDOR_PROFILES[im.vendor].max_stored
        if ds.PhotometricInterpretation == "MONOCHROME2":
            assert tissue > air + 0.2 * top, im.path
        else:
            assert tissue < air - 0.2 * top, im.path
        checked[ds.PhotometricInterpretation] += 1
    assert checked["MONOCHROME1"] and checked["MONOCHROME2"]


def test_metal_saturates_and_plain_tissue_does_not(archive, pixels):
    _, images = archive
    n_tool = n_plain = 0
    for im in images:
        ds, arr = pixels[im.sop_instance_uid]
        top = VENDOR_PROFILES[im.vendor].max_stored
        extreme = (
            arr.max() >= 0.98 * top
            if ds.PhotometricInterpretation == "MONOCHROME2"
            else (arr.min() <= 0.02 * top)
        )
        if im.has_biopsy_tool:
            assert extreme, im.path
            n_tool += 1
        elif "skin_bb" not in im.marker_kind:  # a skin BB is metal too, but not a tool
            assert not extreme, im.path
            n_plain += 1
    assert n_tool >= 3 and n_plain >= 3


@pytest.mark.parametrize("kind", BIOPSY_KINDS)
@pytest.mark.parametrize("spacing", [0.07, 0.56])
def test_every_marker_kind_saturates_at_any_resolution(kind, spacing):
    rows, cols = int(230 / spacing), int(190 / spacing)
    rng = np.random.default_rng([3, BIOPSY_KINDS.index(kind), int(spacing * 100)])
    if spacing < 0.1:  # keep the test fast: a smaller detector at full resolution
        rows, cols = rows // 3, cols // 3
    img, mask = synth_breast(rng, rows, cols, view="CC", laterality="R", mag=False,
                             pixel_spacing_mm=spacing)  # fmt: skip
    assert img.dtype == np.float32 and img.min() >= 0.0 and img.max() < 0.9
    assert mask.any() and not mask.all()
    before = img.copy()
    assert add_marker(rng, img, mask, pixel_spacing_mm=spacing, kind=kind) == kind
    changed = img != before
    assert changed.any() and img.max() >= 0.999
    prof = VENDOR_PROFILES["ge"]  # MONOCHROME1: metal goes to 0
    stored = to_stored(img, mask, prof, rng)
    assert stored.dtype == np.uint16 and int(stored[changed].min()) <= 0.02 * prof.max_stored
    assert np.median(stored[mask]) < np.median(stored[~mask])


def test_mag_views_have_straight_collimation_and_paddle_edges(archive, pixels):
    _, images = archive
    mag, contact = [], []
    for im in images:
        a = _attenuation(*pixels[im.sop_instance_uid])
        if im.has_mag_view:
            mag.append((_straight_edge_score(a), _paddle_band_score(a)))
        elif not any(k in im.marker_kind for k in ("wire", "needle")):  # straight tools
            contact.append((_straight_edge_score(a), _paddle_band_score(a)))
    assert len(mag) >= 3 and len(contact) >= 5
    assert min(e for e, _ in mag) > 0.35 > 0.25 > max(e for e, _ in contact)
    assert min(b for _, b in mag) > 0.25 > 0.2 > max(b for _, b in contact)


def test_left_and_right_breasts_mirror():
    kw = dict(rows=256, cols=208, view="MLO", mag=False, pixel_spacing_mm=1.04)
    left, lmask = synth_breast(np.random.default_rng(5), laterality="L", **kw)
    right, rmask = synth_breast(np.random.default_rng(5), laterality="R", **kw)
    assert np.array_equal(left[:, ::-1], right) and np.array_equal(lmask[:, ::-1], rmask)
    assert lmask[:, 0].sum() > 0 and lmask[:, -1].sum() == 0  # chest wall on the left


def test_ground_truth_hints_agree_with_core_header_facts(tmp_path: Path) -> None:
    """The generator's record of what a header claims is what the core reads from it."""
    from mammo_dagster.core.imaging.dicom import open_dicom

    images = generate_archive(tmp_path / "a", studies=12, seed=5, size="small")
    for img in images:
        facts = open_dicom(img.path, pixels=False).facts
        assert (facts.header_mag_hint, facts.header_marker_hint) == (
            img.header_mag_hint,
            img.header_marker_hint,
        ), (img.path, facts.hint_reasons)
        assert facts.sop_instance_uid == img.sop_instance_uid
    assert any(i.header_mag_hint for i in images) and any(i.header_marker_hint for i in images)

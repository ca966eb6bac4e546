"""Header facts: read without pixels, hints, and a patient key that is never the ID."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.dicom import open_dicom
from mammo_dagster.core.imaging.header import patient_key
from tests.factory import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, header, make_file

PIXELS = np.full((64, 48), 1000, dtype=np.uint16)


def test_facts_from_header(tmp_path: Path) -> None:
    path = make_file(
        tmp_path / "x",
        PIXELS,
        "hologic",
        "j2k",
        tag="t1",
        header_kw={"laterality": "R", "view": "MLO"},
    )
    facts = open_dicom(path, pixels=False).facts
    h = header("t1")
    assert facts.sop_instance_uid == h.sop_instance_uid
    assert facts.study_instance_uid == h.study_instance_uid
    assert facts.series_instance_uid == h.series_instance_uid
    assert (facts.laterality, facts.view_position) == ("R", "MLO")
    assert facts.view_code == "medio-lateral oblique"
    assert facts.manufacturer == "HOLOGIC, Inc." and facts.model == "Selenia Dimensions"
    assert facts.transfer_syntax == "JPEG 2000 Image Compression (Lossless Only)"
    assert (facts.rows, facts.columns, facts.bits_stored) == (64, 48, 14)
    assert facts.presentation_intent_type == "FOR PRESENTATION"
    assert facts.window_count == 3 and facts.voi_function == "LINEAR"
    assert not facts.header_mag_hint and not facts.header_marker_hint


def test_header_read_does_not_touch_pixels(tmp_path: Path) -> None:
    path = make_file(tmp_path / "x", PIXELS, "ge", "explicit")
    dicom = open_dicom(path, pixels=False)
    assert "PixelData" not in dicom.ds


@pytest.mark.parametrize(
    ("kw", "mag", "marker"),
    [
        ({"mag_modifier": True}, True, False),
        ({"mag_factor": 1.8}, True, False),
        ({"mag_factor": 1.08}, False, False),  # a contact view's geometric factor
        ({"paddle": "7.5CM MAG"}, True, False),
        ({"paddle": "24x29 BIG"}, False, False),
        ({"spot_modifier": True}, False, False),
        ({"series_description": "L CC MAGNIFICATION"}, True, False),
        ({"series_description": "R MLO POST CLIP"}, False, True),
        ({"study_description": "MG STEREO BX LEFT"}, False, False),  # a study-level claim
        ({"series_description": "R CC MAG NEEDLE LOC"}, True, True),
        ({"series_description": "IMAGE MANAGEMENT"}, False, False),  # "MAG" inside a word
    ],
)
def test_header_hints(tmp_path: Path, kw: dict, mag: bool, marker: bool) -> None:
    facts = open_dicom(
        make_file(tmp_path / "x", PIXELS, "hologic", header_kw=kw), pixels=False
    ).facts
    assert (facts.header_mag_hint, facts.header_marker_hint) == (mag, marker), facts.hint_reasons
    assert bool(facts.hint_reasons) == (mag or marker or facts.study_marker_hint)


def test_study_description_is_a_study_level_hint(tmp_path: Path) -> None:
    kw = {"study_description": "MAMMO DIAG LEFT W MAG", "series_description": "L CC"}
    facts = open_dicom(make_file(tmp_path / "x", PIXELS, "ge", header_kw=kw), pixels=False).facts
    assert facts.study_mag_hint and not facts.header_mag_hint
    kw = {"study_description": "MG BREAST BIOPSY RIGHT"}
    facts = open_dicom(make_file(tmp_path / "y", PIXELS, "ge", header_kw=kw), pixels=False).facts
    assert facts.study_marker_hint and not facts.header_marker_hint


def test_patient_key_is_salted_hash_never_the_id(tmp_path: Path, monkeypatch) -> None:
    path = make_file(tmp_path / "x", PIXELS, "ge")
    assert open_dicom(path).facts.patient_key is None  # no key without the data folder's salt
    facts = open_dicom(path, salt="test-salt").facts
    dumped = json.dumps(facts.to_dict())
    assert FAKE_PATIENT_ID not in dumped and "DOE" not in dumped and "SECRET" not in dumped
    assert facts.patient_key == patient_key(FAKE_PATIENT_ID, "test-salt")
    assert facts.patient_key != patient_key(FAKE_PATIENT_ID, "other-salt")
    assert len(facts.patient_key) == 16
    assert patient_key("", "s") is None


def test_salt_file_created_once_and_private(tmp_path: Path, unsalted: Path) -> None:
    assert Home(tmp_path).patient_salt(create=False) is None and not list(tmp_path.iterdir())
    first = Home(tmp_path).patient_salt()
    assert Home(tmp_path).patient_salt() == first and len(first) == 32
    assert (tmp_path / ".patient_salt").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".patient_salt"]


def test_view_modifier_at_top_level_is_read(tmp_path: Path) -> None:
    path = make_file(tmp_path / "x", PIXELS, "siemens")
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        "R-102D6",
        "SRT",
        "Magnification",
    )
    ds.ViewModifierCodeSequence = [item]
    ds.save_as(path)
    facts = open_dicom(path, pixels=False).facts
    assert facts.view_modifiers == ("Magnification",) and facts.header_mag_hint
    assert FAKE_PATIENT_NAME not in str(facts)

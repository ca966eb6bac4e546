"""Tiny DICOM files with known pixel values, written the way vendors write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo_dagster.core.dicom_write import (
    VENDOR_PROFILES,
    ImageHeader,
    build_dataset,
    encode,
    stable_uid,
    write,
)

FAKE_PATIENT_ID = "PID-4242-SECRET"
FAKE_PATIENT_NAME = "DOE^JANE^SECRET"


def header(tag: str = "img", **kw) -> ImageHeader:
    return ImageHeader(
        sop_instance_uid=stable_uid("sop", tag),
        study_instance_uid=stable_uid("study", tag),
        series_instance_uid=stable_uid("series", tag),
        patient_id=FAKE_PATIENT_ID,
        patient_name=FAKE_PATIENT_NAME,
        **kw,
    )


def make_file(
    path: Path,
    stored: np.ndarray,
    vendor: str = "hologic",
    ts: str = "explicit",
    tag: str = "img",
    header_kw: dict | None = None,
    **kw,
) -> Path:
    """Write a tiny DICOM holding `stored` values with a vendor's header."""
    ds = build_dataset(stored, VENDOR_PROFILES[vendor], header(tag, **(header_kw or {})), **kw)
    ds = encode(ds, ts)
    return write(ds, path)

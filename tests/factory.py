"""Tiny DICOM files with known pixel values, written the way vendors write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo_dagster.core.imaging.dicom_write import (
    ImageHeader,
    build_dataset,
    encode,
    stable_uid,
    write,
)
from mammo_dagster.core.imaging.vendors import VENDOR_PROFILES

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


def labeled_home(home: Path, studies: int = 6, seed: int = 3) -> list:
    """A data folder with one indexed drop and its thumbnails (no Dagster), as the
    labeler finds it after ingest. Returns the synthetic images (with ground truth)."""
    from mammo_dagster.core.home import Home
    from mammo_dagster.core.imaging.batch import thumbnail_folder
    from mammo_dagster.core.imaging.index import ingest_drop
    from mammo_dagster.core.synthetic.archive import generate_archive

    drop = home / "incoming" / "d1"
    images = generate_archive(drop, studies=studies, seed=seed, size="small", ground_truth=None)
    ingest_drop(Home(home), "d1", workers=1)
    thumbnail_folder(drop, home / "thumbnails", size=64, workers=1)
    return images


def fake_catalog(home: Path, n: int, drop: str = "big", size: int = 8) -> list[str]:
    """`n` indexed frames with `size`-px thumbnails (textured, so PNGs weigh what real
    ones do), without DICOM files: for labeler load tests. Returns the image ids."""
    from mammo_dagster.core.imaging.thumbnails import save_png

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    from mammo_dagster.core.imaging.index import IndexRow, save_index
    from mammo_dagster.core.store.db import DB_NAME, Store

    thumbs = home / "thumbnails"
    thumbs.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sop = f"1.2.826.0.1.3680043.10.999.{i + 1}"
        rows.append(
            IndexRow(
                drop,
                f"f{i}",
                0,
                10,
                "x",
                "ok",
                sop_instance_uid=sop,
                study_instance_uid=f"1.2.3.{i // 4}",
                patient_key=f"p{i // 8}",
                manufacturer="HOLOGIC, Inc.",
                laterality="L",
                view_position="CC",
            )
        )
        texture = (xx * 0.3 + yy * 0.2 + i) % 200 + rng.integers(0, 40, (size, size))
        save_png(texture.astype(np.uint8), thumbs / f"{sop}_0.png")
    store = Store(home / DB_NAME)
    store.migrate()
    save_index(store, drop, rows)
    return [f"{r.sop_instance_uid}_0" for r in rows]


def fake_model(
    home: Path, image_ids: list[str], thresholds=(0.5, 0.5), version: str = "m0001"
) -> dict[str, tuple[float, float]]:
    """A current model (card and pointer, no network) whose predictions of the images
    are spread over 0..1, as `image_predictions` would hold them. Returns the probs."""
    from mammo_dagster.core.model.modelstore import CurrentModel, ModelCard, write_current
    from mammo_dagster.core.store.db import DB_NAME, Store

    folder = home / "models" / version
    folder.mkdir(parents=True)
    ModelCard(input_size=64, thresholds={"biopsy": thresholds[0], "mag": thresholds[1]}).write(
        folder
    )
    write_current(home / "models", CurrentModel(version, 0, 0))
    probs = {i: ((k * 0.37) % 1.0, (k * 0.61 + 0.05) % 1.0) for k, i in enumerate(image_ids)}

    def write(c) -> None:
        for image_id, (pb, pm) in probs.items():
            sop, frame = image_id.rsplit("_", 1)
            c.execute(
                "INSERT INTO image_predictions VALUES ('d1', ?, ?, ?, ?, ?, ?, ?, now())",
                [sop, int(frame), version, pb, pm, pb >= thresholds[0], pm >= thresholds[1]],
            )

    Store(home / DB_NAME).run(write)
    return probs

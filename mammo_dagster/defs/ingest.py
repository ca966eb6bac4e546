"""Ingest a drop: `dicom_index` (one row per frame) and `thumbnails` (the model's input)."""

import time
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
from PIL import Image

from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.batch import thumbnail_folder, thumbnail_name
from mammo_dagster.core.imaging.index import IndexRow, indexed_files, ingest_drop
from mammo_dagster.core.imaging.thumbnails import DEFAULT_SIZE, RENDER_VERSION, viewing_image
from mammo_dagster.core.store import queries
from mammo_dagster.core.store.db import Store

from .markdown import md_image, md_table, png_bytes
from .partitions import drops
from .resources import MammoHome, StoreResource


class IndexConfig(dg.Config):
    workers: int = 2


class ThumbnailConfig(dg.Config):
    size: int = DEFAULT_SIZE
    workers: int = 2


def _table(counter: Counter, key: str) -> dg.MetadataValue:
    rows = [[k or "(none)", v] for k, v in counter.most_common()]
    return dg.MetadataValue.md(md_table([key, "count"], rows))


def _drop_folder(home: Home, drop: str) -> Path:
    folder = home.drop(drop)
    if not folder.is_dir():
        raise dg.Failure(f"drop folder {folder} does not exist")
    return folder


FAILURE_RATE_WARN = 0.2
INDEX_CHECKS = [
    dg.AssetCheckSpec(
        "unique_sop_uids", asset="dicom_index", description="No frame indexed twice."
    ),
    dg.AssetCheckSpec(
        "failure_rate",
        asset="dicom_index",
        description=f"WARN when a drop's failure rate exceeds {FAILURE_RATE_WARN:.0%}.",
    ),
    dg.AssetCheckSpec(
        "has_new_frames",
        asset="dicom_index",
        description="WARN when the drop holds no new decodable frame (only duplicates of "
        "frames indexed before, or bad files): nothing in it will be predicted.",
    ),
]
THUMBNAIL_CHECKS = [
    dg.AssetCheckSpec(
        "every_frame_has_a_thumbnail",
        asset="thumbnails",
        description="Every indexed decodable frame has a thumbnail.",
    )
]


# The checks run inside their asset's step (check_specs), not as steps of their own:
# each step costs a run ~0.3 s of event-log writes, which small drops would feel.
# A drop made by the PACS sensor is first retrieved by `pacs_studies` (defs/pacs.py); a
# folder drop has no such step and is indexed as it lies.
@dg.asset(
    partitions_def=drops,
    group_name="ingest",
    kinds={"duckdb"},
    check_specs=INDEX_CHECKS,
    deps=["pacs_studies"],
)
def dicom_index(
    context: dg.AssetExecutionContext, config: IndexConfig, paths: MammoHome, store: StoreResource
) -> dg.MaterializeResult:
    """One row per image frame of the drop (header facts, hash, status); bad files are rows."""
    drop = context.partition_key
    home = paths.data
    _drop_folder(home, drop)  # a Failure when it is missing
    db = store.store()
    t0 = time.perf_counter()
    rows = ingest_drop(home, drop, workers=config.workers, store=db)
    ok = [r for r in rows if r.status == "ok"]
    elapsed = time.perf_counter() - t0
    return dg.MaterializeResult(
        metadata={
            "frames": len(ok),
            "files": len({r.path for r in rows}),
            "failed": sum(r.status == "error" for r in rows),
            "duplicates": sum(r.status == "duplicate" for r in rows),
            "studies": len({r.study_instance_uid for r in ok}),
            "patients": len({r.patient_key for r in ok}),
            "files_per_s": dg.MetadataValue.float(round(len(rows) / elapsed, 1) if elapsed else 0),
            "failures": _table(Counter(r.error_kind for r in rows if r.error_kind), "error"),
            "with_warnings": sum(bool(r.warnings) for r in rows if r.status != "error"),
            "warnings": _table(Counter(r.warnings for r in rows if r.warnings), "warnings"),
            "vendors": _table(Counter(r.manufacturer for r in ok), "manufacturer"),
            "transfer_syntaxes": _table(Counter(r.transfer_syntax for r in ok), "syntax"),
        },
        check_results=[unique_sop_uids(db), failure_rate(db), has_new_frames(rows, drop)],
    )


def _contact_sheet(pngs: list, n: int = 12, tile: int = 96) -> tuple[str, float]:
    """A small grid of thumbnails as a person sees them (`viewing_image`, not the model's
    headroom image) as a markdown image, and the thumbnails' mean gray level."""
    cols = 6
    chosen = pngs[:n]
    sheet = Image.new("L", (cols * tile, -(-len(chosen) // cols) * tile or tile))
    means = []
    for i, path in enumerate(chosen):
        with Image.open(path) as im:
            means.append(float(np.asarray(im).mean()))
        shown = viewing_image(path).resize((tile, tile))
        sheet.paste(shown, ((i % cols) * tile, (i // cols) * tile))
    return md_image(png_bytes(sheet), "contact sheet"), float(np.mean(means))


@dg.asset(
    partitions_def=drops,
    deps=[dicom_index],
    group_name="ingest",
    check_specs=THUMBNAIL_CHECKS,
    code_version=f"render-v{RENDER_VERSION}",  # the UI marks drops rendered before a change
)
def thumbnails(
    context: dg.AssetExecutionContext,
    config: ThumbnailConfig,
    paths: MammoHome,
    store: StoreResource,
) -> dg.MaterializeResult:
    """8-bit thumbnails of every decodable frame the index holds, cached by SOP Instance UID;
    resumable (a rerun renders only what is missing)."""
    home = paths.data
    folder = _drop_folder(home, context.partition_key)
    db = store.store()
    files = [folder / p for p in indexed_files(db, context.partition_key)]
    t0 = time.perf_counter()
    results = thumbnail_folder(
        folder, home.thumbnails, size=config.size, workers=config.workers, files=files
    )
    elapsed = time.perf_counter() - t0
    status = Counter(r.status for r in results)
    made = [home.thumbnails / r.thumbnail for r in results if r.status in ("ok", "cached")]
    sheet, mean_gray = _contact_sheet(made) if made else ("(none)", 0.0)
    return dg.MaterializeResult(
        metadata={
            "rendered": status["ok"],
            "cached": status["cached"],
            "failed": status["error"],
            "failures": _table(Counter(r.error_kind for r in results if r.error_kind), "error"),
            "rendered_with_warnings": sum(
                bool(r.warnings) for r in results if r.status in ("ok", "cached")
            ),
            "warnings": _table(Counter(r.warnings for r in results if r.warnings), "warnings"),
            "thumbnails_per_s": dg.MetadataValue.float(
                round(status["ok"] / elapsed, 1) if elapsed else 0.0
            ),
            "folder": dg.MetadataValue.path(str(home.thumbnails)),
            "contact_sheet": dg.MetadataValue.md(sheet),
            "mean_gray": dg.MetadataValue.float(mean_gray),
        },
        check_results=[every_frame_has_a_thumbnail(home.thumbnails, db)],
    )


def unique_sop_uids(db: Store) -> dg.AssetCheckResult:
    """No (SOP Instance UID, frame) is an `ok` row twice, across all drops."""
    dupes = queries.duplicate_frames(db)
    return dg.AssetCheckResult(
        asset_key="dicom_index",
        check_name="unique_sop_uids",
        passed=not dupes,
        metadata={"duplicates": len(dupes)},
    )


def failure_rate(db: Store) -> dg.AssetCheckResult:
    """WARN when any drop has more than FAILURE_RATE_WARN of its files failing."""
    rates = queries.failure_rates(db)
    bad = {drop: round(rate, 3) for drop, rate in rates if rate > FAILURE_RATE_WARN}
    return dg.AssetCheckResult(
        asset_key="dicom_index",
        check_name="failure_rate",
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        description=None  # shown beside the result (the JSON hides behind a click)
        if not bad
        else f"more than {FAILURE_RATE_WARN:.0%} of the files failed in "
        + ", ".join(f"{drop} ({rate:.0%})" for drop, rate in bad.items()),
        metadata={"drops_over_threshold": dg.MetadataValue.json(bad)},
    )


def has_new_frames(rows: list[IndexRow], drop: str) -> dg.AssetCheckResult:
    """WARN when none of the drop's rows is a new decodable frame (the description names
    the drop: the UI's check history has no partition column)."""
    status = Counter(r.status for r in rows)
    return dg.AssetCheckResult(
        asset_key="dicom_index",
        check_name="has_new_frames",
        passed=status["ok"] > 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if status["ok"]
        else f"nothing new in drop {drop}: {status['duplicate']} duplicate frames, "
        f"{status['error']} bad files",
        metadata={
            "new_frames": status["ok"],
            "duplicates": status["duplicate"],
            "bad_files": status["error"],
        },
    )


def every_frame_has_a_thumbnail(thumbs: Path, db: Store) -> dg.AssetCheckResult:
    """Every `ok` frame of the index has its thumbnail file."""
    frames = queries.ok_frames(db)
    missing = [
        f"{sop}_{frame}"
        for sop, frame in frames
        if not (thumbs / thumbnail_name(sop, frame)).exists()
    ]
    return dg.AssetCheckResult(
        asset_key="thumbnails",
        check_name="every_frame_has_a_thumbnail",
        passed=not missing,
        metadata={"frames": len(frames), "missing": len(missing)},
    )

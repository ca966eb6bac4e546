"""Thumbnail a whole folder in guarded worker processes; a bad file is a row, never a crash."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from PIL import Image

from .decode import DEFAULT_OVERSAMPLE
from .dicom import DicomError, Failure, open_dicom
from .guard import Notes, capture, init_worker
from .pool import run_guarded
from .thumbnails import (
    DEFAULT_SIZE,
    RENDER_VERSION,
    remove_stale_temps,
    render_frame,
    render_version,
    save_png,
)


@dataclass
class FrameResult:
    """One row per frame rendered, or per file that gave no frame."""

    path: str  # relative to the folder processed
    sop_instance_uid: str | None
    frame: int
    status: str  # "ok", "cached", "duplicate" or "error"
    error_kind: str | None = None
    error: str | None = None
    thumbnail: str | None = None
    manufacturer: str | None = None
    transfer_syntax: str | None = None
    #: what the codecs said while reading the file ("; " between notes): a damaged
    #: file that still rendered has its warnings here, not on stderr
    warnings: str | None = None


#: A file a sender writes last to say a drop is complete (not an image, never indexed).
READY_MARKER = "_READY"
#: Files a drop's source could not deliver (path, error_kind, error), written by a fetcher
#: such as `mammo pacs pull`; indexing turns each line into an error row.
FETCH_ERRORS = "_FETCH_ERRORS.csv"


def iter_files(root: Path, exclude: Path | None = None) -> Iterator[Path]:
    """Every file below `root` (any depth, any name, stable order), `exclude` left out.

    Symlinked folders are followed (archives are often mounted that way), each real
    folder once. Entries that aren't regular files (pipes, dangling links) are
    yielded too, so that they become error rows instead of vanishing.
    """
    seen: set[str] = set()
    skip = os.path.realpath(exclude) if exclude else None
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real == skip:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith(".") and name not in (READY_MARKER, FETCH_ERRORS):
                yield Path(dirpath) / name


def thumbnail_name(sop_instance_uid: str, frame: int) -> str:
    return f"{sop_instance_uid}_{frame}.png"


def _cached(out: Path, size: int, render: str) -> bool:
    """A finished thumbnail of this size and rendering version (PNGs are written whole,
    by rename)."""
    try:
        with Image.open(out) as im:
            return max(im.size) == size and render_version(im) == render
    except (OSError, ValueError):
        return False


def thumbnail_file(
    path: Path,
    out_dir: Path,
    size: int = DEFAULT_SIZE,
    oversample: int = DEFAULT_OVERSAMPLE,
    root: Path | None = None,
    render: str = RENDER_VERSION,
) -> list[FrameResult]:
    """Render every frame of one file into `out_dir` (keeping finished ones of the same
    rendering version; see `thumbnails.RENDER_VERSION`)."""
    with capture() as notes:
        rows = _thumbnail_rows(path, out_dir, size, oversample, root, render, notes)
    if notes.items:
        for row in rows:
            row.warnings = notes.text()
    return rows


def _thumbnail_rows(
    path: Path,
    out_dir: Path,
    size: int,
    oversample: int,
    root: Path | None,
    render: str,
    notes: Notes,
) -> list[FrameResult]:
    shown = str(path.relative_to(root)) if root else str(path)
    try:
        dicom = open_dicom(path)
    except DicomError as e:
        return [FrameResult(shown, None, 0, "error", e.kind.value, e.reason)]
    facts = dicom.facts
    for note in facts.warnings:
        notes.add(note)
    rows = []
    for frame in range(facts.number_of_frames):
        out = out_dir / thumbnail_name(facts.sop_instance_uid, frame)
        row = FrameResult(
            shown,
            facts.sop_instance_uid,
            frame,
            "cached",
            thumbnail=out.name,
            manufacturer=facts.manufacturer,
            transfer_syntax=facts.transfer_syntax,
        )
        if not _cached(out, size, render):
            try:
                thumb = render_frame(dicom, frame, size, oversample=oversample, render=render)
                save_png(thumb.image, out, thumb.render, thumb.patches, thumb.spots)
                row.status = "ok"
            except DicomError as e:
                row.status, row.error_kind, row.error = "error", e.kind.value, e.reason
                row.thumbnail = None
        rows.append(row)
    return rows


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Fresh worker processes (spawned, not forked: no inherited locks or threads), for
    benchmarks on trusted files; the pipeline decodes and indexes through
    `pool.run_guarded`, where one file can't take the pool down."""
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker)


def _error_row(path: Path, root: Path, kind: Failure, reason: str) -> FrameResult:
    return FrameResult(str(path.relative_to(root)), None, 0, "error", kind.value, reason)


def _job(
    path: Path, *, out_dir: Path, size: int, oversample: int, root: Path, render: str
) -> list[FrameResult]:
    try:
        return thumbnail_file(path, out_dir, size, oversample, root, render)
    except Exception as e:  # a bug must not take the batch down: record it and go on
        return [
            FrameResult(
                str(path.relative_to(root)),
                None,
                0,
                "error",
                "decode_error",
                f"unexpected {type(e).__name__}: {e}",
            )
        ]


def thumbnail_folder(
    root: Path,
    out_dir: Path,
    *,
    size: int = DEFAULT_SIZE,
    workers: int = 2,
    oversample: int = DEFAULT_OVERSAMPLE,
    progress: Callable[[int], None] | None = None,
    files: list[Path] | None = None,
    render: str = RENDER_VERSION,
) -> list[FrameResult]:
    """Thumbnails for every DICOM frame below `root`; idempotent and resumable.

    Files are decoded in `workers` guarded processes (`pool.run_guarded`: a codec
    that aborts, panics or hangs costs its file an error row, never the batch);
    ``workers=0`` decodes in this process, for trusted files only.

    Rows come back in file order. A SOP Instance UID seen in an earlier file is a
    "duplicate" row (its thumbnail is the first file's). `files` saves a caller that
    already listed the folder a second walk. `render` picks the rendering contract
    (older versions for comparisons, see `thumbnails.RENDERS`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    if files is None:
        files = list(iter_files(root, exclude=out_dir))  # OUT may sit inside the folder
    job = partial(_job, out_dir=out_dir, size=size, oversample=oversample, root=root, render=render)
    by_path: dict[str, list[FrameResult]] = {}

    def done(rows: list[FrameResult]) -> None:
        by_path[rows[0].path] = rows
        if progress:
            progress(1)

    run_guarded(
        files,
        job,
        lambda _path, rows: done(rows),
        lambda path, kind, reason: done([_error_row(path, root, kind, reason)]),
        workers=workers,
    )
    results = [r for f in files for r in by_path[str(f.relative_to(root))]]
    return _mark_duplicates(results)


def _mark_duplicates(results: list[FrameResult]) -> list[FrameResult]:
    """Later files with a (SOP Instance UID, frame) already seen become "duplicate" rows.
    Workers race for the shared thumbnail: when a duplicate's worker wrote it first, the
    first file found it "cached", but it was made in this run, so the first row says "ok"."""
    first: dict[tuple[str, int], FrameResult] = {}
    for r in results:
        if r.sop_instance_uid is None or r.status == "error":
            continue
        key = (r.sop_instance_uid, r.frame)
        if key in first:
            if r.status == "ok" and first[key].status == "cached":
                first[key].status = "ok"
            r.status, r.error = "duplicate", f"same SOP Instance UID as {first[key].path}"
        else:
            first[key] = r
    return results


def as_dicts(results: list[FrameResult]) -> list[dict]:
    return [asdict(r) for r in results]

"""Thumbnail a whole folder in worker processes; a bad file is a row, never a crash."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .decode import DEFAULT_OVERSAMPLE
from .dicom import DicomError, open_dicom
from .thumbnails import DEFAULT_SIZE, render_frame, save_png

#: glibc otherwise returns every 10-30 MB decode buffer to the OS and page-faults
#: it back for the next image: measured 41 -> 15 ms per reduced J2K decode.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "268435456", "OMP_NUM_THREADS": "1"}


@dataclass
class FrameResult:
    """One row per frame rendered, or per file that gave no frame."""

    path: str
    sop_instance_uid: str | None
    frame: int
    status: str  # "ok", "cached" or "error"
    error_kind: str | None = None
    error: str | None = None
    thumbnail: str | None = None
    manufacturer: str | None = None
    transfer_syntax: str | None = None


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file below `root`, any depth, any name, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def thumbnail_name(sop_instance_uid: str, frame: int) -> str:
    return f"{sop_instance_uid}_{frame}.png"


def thumbnail_file(
    path: Path, out_dir: Path, size: int = DEFAULT_SIZE, oversample: int = DEFAULT_OVERSAMPLE
) -> list[FrameResult]:
    """Render every frame of one file into `out_dir` (skipping ones already there)."""
    try:
        dicom = open_dicom(path)
    except DicomError as e:
        return [FrameResult(str(path), None, 0, "error", e.kind.value, e.reason)]
    facts = dicom.facts
    rows = []
    for frame in range(facts.number_of_frames):
        out = out_dir / thumbnail_name(facts.sop_instance_uid, frame)
        row = FrameResult(
            str(path),
            facts.sop_instance_uid,
            frame,
            "cached",
            thumbnail=str(out),
            manufacturer=facts.manufacturer,
            transfer_syntax=facts.transfer_syntax,
        )
        if not out.exists():
            try:
                save_png(render_frame(dicom, frame, size, oversample=oversample).image, out)
                row.status = "ok"
            except DicomError as e:
                row.status, row.error_kind, row.error, row.thumbnail = (
                    "error",
                    e.kind.value,
                    e.reason,
                    None,
                )
        rows.append(row)
    return rows


def _init_worker() -> None:
    import warnings

    warnings.filterwarnings("ignore", module="pydicom")


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes started fresh (not forked) so WORKER_ENV takes effect in them."""
    os.environ.update(WORKER_ENV)
    return ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
    )


def thumbnail_folder(
    root: Path,
    out_dir: Path,
    *,
    size: int = DEFAULT_SIZE,
    workers: int = 2,
    oversample: int = DEFAULT_OVERSAMPLE,
    progress: Callable[[int], None] | None = None,
) -> list[FrameResult]:
    """Thumbnails for every DICOM frame below `root`; idempotent and resumable."""
    files = list(iter_files(root))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[FrameResult] = []
    if workers <= 1:
        for f in files:
            results += thumbnail_file(f, out_dir, size, oversample)
            if progress:
                progress(1)
        return results
    with worker_pool(workers) as pool:
        chunk = max(1, min(16, len(files) // (workers * 8) or 1))
        n = len(files)
        for rows in pool.map(
            thumbnail_file, files, [out_dir] * n, [size] * n, [oversample] * n, chunksize=chunk
        ):
            results += rows
            if progress:
                progress(1)
    return results


def as_dicts(results: list[FrameResult]) -> list[dict]:
    return [asdict(r) for r in results]

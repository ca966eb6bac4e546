"""`mammo predict`: a DICOM folder -> the study CSV, with ONNX Runtime and no Dagster or torch.

Streaming: files are walked lazily and decoded in worker processes a block at a
time; each batch's image rows are appended (and fsynced) to
``<output>.images.csv`` as soon as the model has scored them, so memory stays
flat and an interrupted run resumes where it stopped. Files that give no image
go to ``<output>.errors.csv`` (never a crash). At the end the image rows are
aggregated into the study CSV (studies.py) by DuckDB, reading the file.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np

from ..imaging import preprocess
from ..imaging.batch import iter_files
from ..imaging.decode import DEFAULT_OVERSAMPLE
from ..imaging.dicom import DicomError, Failure, open_dicom
from ..imaging.guard import Notes, capture
from ..imaging.pool import run_guarded
from ..imaging.thumbnails import LIFT_RENDERS, RENDER_VERSION, RENDERS, render_frame
from ..store.studies import write_study_csv
from .onnx_model import OnnxModel

IMAGE_COLUMNS = (
    "path",
    "sop_instance_uid",
    "frame",
    "study_instance_uid",
    "prob_biopsy",
    "prob_mag",
    "flag_biopsy",
    "flag_mag",
    "header_mag_hint",
    "header_marker_hint",
    "model_version",
    "warnings",
)
ERROR_COLUMNS = ("path", "error_kind", "error")
BLOCK = 8192  # files per worker-pool round (paths only): bounds what is held in memory


@dataclass
class Frame:
    path: str
    sop_instance_uid: str | None = None
    frame: int = 0
    study_instance_uid: str | None = None
    header_mag_hint: bool | None = None
    header_marker_hint: bool | None = None
    image: np.ndarray | None = None
    patches: np.ndarray | None = None  # the second look (rendering contract v3)
    error_kind: str | None = None
    error: str | None = None
    warnings: str | None = None  # what the codecs said about a damaged file (guard.capture)


def decode_file(
    path: Path, *, root: Path, size: int, thumb: int, render: str = RENDER_VERSION
) -> list[Frame]:
    """Every frame of one file as a model input, via the thumbnail the pipeline would
    make (`thumb` px, rendering contract `render`, then the model's marker-keeping
    shrink); one error row if none. Codec messages go to the rows' `warnings`."""
    with capture() as notes:
        frames = _decode_frames(path, root, size, thumb, render, notes)
    if notes.items:
        for f in frames:
            f.warnings = notes.text()
    return frames


def _decode_frames(
    path: Path, root: Path, size: int, thumb: int, render: str, notes: Notes
) -> list[Frame]:
    rel = str(path.relative_to(root))
    try:
        dicom = open_dicom(path)
    except DicomError as e:
        return [Frame(rel, error_kind=e.kind.value, error=e.reason)]
    except Exception as e:  # a bug must not stop the archive
        return [Frame(rel, error_kind="decode_error", error=f"{type(e).__name__}: {e}")]
    f = dicom.facts
    for note in f.warnings:
        notes.add(note)
    out = []
    for frame in range(f.number_of_frames):
        row = Frame(
            rel, f.sop_instance_uid, frame, f.study_instance_uid,
            f.header_mag_hint or f.study_mag_hint, f.header_marker_hint or f.study_marker_hint,
        )  # fmt: skip
        try:
            rendered = render_frame(
                dicom, frame, thumb, oversample=DEFAULT_OVERSAMPLE, render=render
            )
            row.image = preprocess.prepare(rendered.image, size, render)
            row.patches = rendered.patches
        except DicomError as e:
            row.error_kind, row.error = e.kind.value, e.reason
        except Exception as e:
            row.error_kind, row.error = "decode_error", f"{type(e).__name__}: {e}"
        out.append(row)
    return out


def _failed(path: Path, root: Path, kind: Failure, reason: str) -> Frame:
    return Frame(str(path.relative_to(root)), error_kind=kind.value, error=reason)


class _Appender:
    """A CSV that grows a batch at a time and survives a kill (flush + fsync)."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        _cut_torn_line(path)
        new = not path.exists() or path.stat().st_size == 0
        self.f = path.open("a", newline="")
        self.w = csv.writer(self.f, lineterminator="\n")
        if new:
            self.w.writerow(columns)

    def add(self, rows: list[list]) -> None:
        if rows:
            self.w.writerows(rows)
            self.f.flush()
            os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _cut_torn_line(path: Path) -> None:
    """A run killed mid-write leaves half a row: cut the file back to its last newline."""
    if not path.exists():
        return
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(max(0, size - 65536))
        tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        f.truncate(size - len(tail) + cut + 1 if cut >= 0 else 0)


def _same_columns(images: Path) -> None:
    """Refuse to append to an image CSV an older version wrote with other columns."""
    if not images.exists() or images.stat().st_size == 0:
        return
    with images.open(newline="") as f:
        header = next(csv.reader(f), None)
    if header and tuple(header) != IMAGE_COLUMNS:
        raise ValueError(
            f"{images} was written by another version of mammo predict (other columns): "
            "pass --restart to start over"
        )


def _model_of(images: Path) -> str | None:
    if not images.exists():
        return None
    with images.open(newline="") as f:
        row = next(csv.DictReader(f), None)
    return row["model_version"] if row else None


def _done_paths(images: Path, errors: Path) -> set[str]:
    done: set[str] = set()
    for path in (images, errors):
        if path.exists():
            with path.open(newline="") as f:
                done.update(row["path"] for row in csv.DictReader(f) if row.get("path"))
    return done


@dataclass
class PredictReport:
    files: int
    images: int
    errors: int
    skipped: int  # done by an earlier, interrupted run
    studies: int
    output: Path
    images_csv: Path
    errors_csv: Path


def predict_folder(
    input_dir: Path,
    output: Path,
    model_path: Path,
    *,
    workers: int = 2,
    threads: int | None = None,
    batch: int = 32,
    thumb: int | None = None,
    progress: Callable[[int], None] | None = None,
    restart: bool = False,
) -> PredictReport:
    """Score every DICOM frame below `input_dir`; write the study CSV to `output`."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir} is not a folder")
    model = OnnxModel(model_path, threads=threads, spin=False)  # workers share the cores
    render = model.render or RENDER_VERSION  # images are rendered as the model learned them
    if render not in RENDERS:
        raise ValueError(
            f"model {model.version} was trained on thumbnails of rendering contract "
            f"v{render}, which this version of mammo-dagster can't render (it knows "
            f"{', '.join('v' + r for r in RENDERS)}): upgrade, or retrain the model"
        )
    if model.second_look and render not in LIFT_RENDERS:
        raise ValueError(
            f"model {model.version} takes patches (rendering contract "
            f"v{' or v'.join(LIFT_RENDERS)}) but its card says v{render}: its card and graph "
            "disagree; retrain or restore the card"
        )
    images_csv = output.with_name(output.name + ".images.csv")
    errors_csv = output.with_name(output.name + ".errors.csv")
    if restart:
        images_csv.unlink(missing_ok=True)
        errors_csv.unlink(missing_ok=True)
    for path in (images_csv, errors_csv):
        _cut_torn_line(path)
    done = _done_paths(images_csv, errors_csv)
    _same_columns(images_csv)
    earlier = _model_of(images_csv)
    if earlier and earlier != model.version:
        raise ValueError(
            f"{images_csv} holds an earlier run with model {earlier}, not {model.version}: "
            "pass --restart to start over with this model"
        )
    out_images, out_errors = (
        _Appender(images_csv, IMAGE_COLUMNS),
        _Appender(errors_csv, ERROR_COLUMNS),
    )
    # Rendered straight at the model's input size (the fast path's reduced decode makes
    # that far cheaper than a 512-px thumbnail first); README measures the difference.
    job = partial(
        decode_file, root=input_dir, size=model.size, thumb=thumb or model.size, render=render
    )
    pending: list[Frame] = []
    pending_errors: list[list] = []
    counts = {"files": 0, "images": 0, "errors": 0, "skipped": 0}

    def score() -> None:
        # A file's error rows are written with its scored frames, never before them:
        # a resumed run must not take a half-scored multi-frame file for done.
        if not pending:
            out_errors.add(pending_errors)
            pending_errors.clear()
            return
        patches = [f.patches for f in pending] if model.second_look else None
        probs = model.probs([f.image for f in pending], patches, batch=batch)
        flags = model.flags(probs)
        out_images.add(
            [
                [f.path, f.sop_instance_uid, f.frame, f.study_instance_uid,
                 round(float(p[0]), 6), round(float(p[1]), 6), int(fl[0]), int(fl[1]),
                 int(bool(f.header_mag_hint)), int(bool(f.header_marker_hint)), model.version,
                 f.warnings]
                for f, p, fl in zip(pending, probs, flags, strict=True)
            ]
        )  # fmt: skip
        out_errors.add(pending_errors)
        pending_errors.clear()
        counts["images"] += len(pending)
        pending.clear()

    def done_file(frames: list[Frame]) -> None:
        counts["files"] += 1
        bad = [f for f in frames if f.image is None]
        pending_errors.extend([f.path, f.error_kind, f.error] for f in bad)
        counts["errors"] += len(bad)
        pending.extend(f for f in frames if f.image is not None)
        if len(pending) >= batch or len(pending_errors) >= batch:
            score()
        if progress:
            progress(1)

    try:
        ours = {str(x.resolve()) for x in (output, images_csv, errors_csv)}
        files = (f for f in iter_files(input_dir) if str(f.resolve()) not in ours)
        for block in _blocks(files, input_dir, done, counts, progress):
            run_guarded(
                block,
                job,
                lambda _path, frames: done_file(frames),
                lambda path, kind, reason: done_file([_failed(path, input_dir, kind, reason)]),
                workers=workers,
            )
        score()
    finally:
        out_images.close()
        out_errors.close()
    import duckdb  # here: decoding workers import this module and never need it

    # DuckDB reads [ ] * ? in a path as a glob: read through a plainly named link
    plain = Path(tempfile.mkdtemp(prefix="mammo_predict_")) / "images.csv"
    plain.symlink_to(images_csv.resolve())
    conn = duckdb.connect()
    try:
        types = dict.fromkeys(IMAGE_COLUMNS, "VARCHAR") | {
            "frame": "INTEGER", "prob_biopsy": "DOUBLE", "prob_mag": "DOUBLE",
            "flag_biopsy": "INTEGER", "flag_mag": "INTEGER", "header_mag_hint": "INTEGER",
            "header_marker_hint": "INTEGER",
        }  # fmt: skip
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in types.items()) + "}"
        source = str(plain).replace("'", "''")
        images_sql = (
            f"SELECT * FROM read_csv('{source}', header=true, delim=',', quote='\"', "
            f"escape='\"', columns={columns})"
        )
        studies = write_study_csv(conn, images_sql, output)
    finally:
        conn.close()
        shutil.rmtree(plain.parent, ignore_errors=True)
    return PredictReport(
        counts["files"], counts["images"], counts["errors"], counts["skipped"], studies,
        output, images_csv, errors_csv,
    )  # fmt: skip


def _blocks(
    files: Iterator[Path],
    root: Path,
    done: set[str],
    counts: dict,
    progress: Callable[[int], None] | None,
) -> Iterator[list[Path]]:
    """Files not done yet, BLOCK at a time (a resumed run skips the rest)."""
    while block := list(islice(files, BLOCK)):
        todo = [path for path in block if str(path.relative_to(root)) not in done]
        counts["skipped"] += len(block) - len(todo)
        if progress and len(block) > len(todo):
            progress(len(block) - len(todo))
        if todo:
            yield todo

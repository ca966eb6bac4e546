"""Index a drop: one row per image frame (or per file that gives none), into the store."""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from ..home import Home
from ..store.db import Store
from .batch import FETCH_ERRORS, READY_MARKER, iter_files
from .dicom import DicomError, Failure, HeaderFacts, open_dicom
from .guard import capture
from .pool import run_guarded

_HASH_CHUNK = 1 << 20


@dataclass
class IndexRow:
    """A `dicom_index` row (see the schema in store.py)."""

    drop_name: str
    path: str
    frame: int
    file_size: int | None
    content_hash: str | None
    status: str  # ok | error | duplicate
    error_kind: str | None = None
    error: str | None = None
    duplicate_of: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    patient_key: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    laterality: str | None = None
    view_position: str | None = None
    view_modifiers: str | None = None
    transfer_syntax_uid: str | None = None
    transfer_syntax: str | None = None
    rows_: int | None = None
    columns_: int | None = None
    number_of_frames: int | None = None
    bits_stored: int | None = None
    photometric: str | None = None
    presentation_intent_type: str | None = None
    voi_function: str | None = None
    mag_factor: float | None = None
    paddle_description: str | None = None
    series_description: str | None = None
    header_mag_hint: bool | None = None
    header_marker_hint: bool | None = None
    study_mag_hint: bool | None = None
    study_marker_hint: bool | None = None
    warnings: str | None = None  # what the codecs said ("; " between notes)


COLUMNS = tuple(IndexRow.__dataclass_fields__)


def drop_state(folder: Path, quiet_s: float, now: float | None = None) -> tuple[bool, str, int]:
    """(complete, fingerprint, files) of a drop folder.

    Complete when it holds the ready marker, or no file changed for `quiet_s`
    seconds (never while files are still arriving). The fingerprint changes when
    any file is added, removed, resized or rewritten.
    """
    h = hashlib.blake2b(digest_size=12)
    newest, count = 0.0, 0
    for path in iter_files(folder):
        try:
            st = path.stat()
        except OSError:
            continue
        count += 1
        newest = max(newest, st.st_mtime)
        h.update(f"{path.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    marked = (folder / READY_MARKER).exists()
    now = time.time() if now is None else now
    complete = count > 0 and (marked or now - newest >= quiet_s)
    return complete, h.hexdigest(), count


def content_hash(path: Path) -> str:
    """blake2b (16 bytes) of the file's bytes, read in chunks."""
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _facts_columns(facts: HeaderFacts) -> dict:
    d = facts.to_dict()
    d["rows_"], d["columns_"] = d.pop("rows"), d.pop("columns")
    d["view_modifiers"] = "; ".join(d["view_modifiers"])
    return {k: v for k, v in d.items() if k in COLUMNS}


def index_file(path: Path, root: Path, drop_name: str, salt: str | None = None) -> list[IndexRow]:
    """Rows for one file: one per frame when it opens, else one error row. Never raises.
    Patient keys are salted with `salt`, the data folder's (None: rows without a key)."""
    rel = str(path.relative_to(root))
    try:
        size, digest = path.stat().st_size, content_hash(path)
    except OSError as e:
        return [
            IndexRow(
                drop_name,
                rel,
                0,
                None,
                None,
                "error",
                "unreadable",
                f"cannot read file: {e.strerror or e}",
            )
        ]
    with capture() as notes:
        try:
            facts = open_dicom(path, salt=salt).facts
        except DicomError as e:
            facts, error = None, e
    if facts is None:
        return [
            IndexRow(
                drop_name, rel, 0, size, digest, "error", error.kind.value, error.reason,
                warnings=notes.text(),
            )
        ]  # fmt: skip
    for note in facts.warnings:
        notes.add(note)
    columns = _facts_columns(facts) | {"warnings": notes.text()}
    return [
        IndexRow(drop_name, rel, frame, size, digest, "ok", **columns)
        for frame in range(facts.number_of_frames)
    ]


#: Below this many files a worker pool costs more (process start-up) than it saves.
PARALLEL_FROM = 64


def index_folder(
    folder: Path, drop_name: str, workers: int = 2, *, salt: str | None = None
) -> list[IndexRow]:
    """`index_file` for every file below `folder`, in worker processes for big drops.

    `salt`: the data folder's patient-key salt. The pipeline passes its Home's; None
    falls back to the salt of ``$MAMMO_HOME`` (or ``./data``), for scripts that don't
    name a data folder (`ingest_drop` takes a Home).
    """
    if salt is None:
        salt = Home.from_env().patient_salt()
    files = list(iter_files(folder))
    if workers <= 1 or len(files) < PARALLEL_FROM:
        return [r for f in files for r in index_file(f, folder, drop_name, salt)]
    by_path: dict[Path, list[IndexRow]] = {}

    def failed(path: Path, kind: Failure, reason: str) -> None:
        rel = str(path.relative_to(folder))
        by_path[path] = [IndexRow(drop_name, rel, 0, None, None, "error", kind.value, reason)]

    run_guarded(
        files,
        partial(index_file, root=folder, drop_name=drop_name, salt=salt),
        by_path.__setitem__,
        failed,
        workers=workers,
    )  # a header that hangs or crashes its reader costs its own row, as in decoding
    return [r for f in files for r in by_path[f]]


def fetch_error_rows(folder: Path, drop_name: str) -> list[IndexRow]:
    """Error rows for the files the drop's source could not deliver (its FETCH_ERRORS
    file: path, error_kind, error), but those that have arrived since."""
    listing = folder / FETCH_ERRORS
    if not listing.is_file():
        return []
    with listing.open(newline="") as f:
        return [
            IndexRow(drop_name, r["path"], 0, None, None, "error", r["error_kind"], r["error"])
            for r in csv.DictReader(f)
            if not (folder / r["path"]).exists()
        ]


def mark_duplicates(rows: Iterable[IndexRow], seen: dict[tuple[str, int], str]) -> list[IndexRow]:
    """Rows whose (SOP Instance UID, frame) is already in `seen` (other drops, or earlier in
    this one) become "duplicate" rows pointing at the first; `seen` is updated."""
    out = []
    for row in rows:
        if row.status == "ok" and row.sop_instance_uid:
            key = (row.sop_instance_uid, row.frame)
            first = seen.get(key)
            if first is not None:
                row.status, row.duplicate_of = "duplicate", first
            else:
                seen[key] = f"{row.drop_name}/{row.path}"
        out.append(row)
    return out


def seen_elsewhere(store: Store, drop_name: str) -> dict[tuple[str, int], str]:
    """(SOP UID, frame) -> "drop/path" of frames indexed from other drops."""
    rows = store.query(
        "SELECT sop_instance_uid, frame, drop_name || '/' || path FROM dicom_index "
        "WHERE status = 'ok' AND drop_name <> ? AND sop_instance_uid IS NOT NULL",
        [drop_name],
    )
    return {(sop, frame): where for sop, frame, where in rows}


def indexed_files(store: Store, drop_name: str) -> list[str]:
    """Paths (relative to the drop) of the drop's files with at least one new decodable frame."""
    rows = store.query(
        "SELECT DISTINCT path FROM dicom_index WHERE drop_name = ? AND status = 'ok' ORDER BY path",
        [drop_name],
    )
    return [path for (path,) in rows]


def save_drop_state(store: Store, drop_name: str, fingerprint: str, files: int) -> None:
    """Remember which state of a drop was indexed (the schedule compares against it)."""
    store.run(
        lambda c: c.execute(
            "INSERT OR REPLACE INTO drops VALUES (?, ?, ?, current_timestamp)",
            [drop_name, fingerprint, files],
        )
    )


def indexed_states(store: Store) -> dict[str, str]:
    """drop -> fingerprint of the state last indexed."""
    return dict(store.query("SELECT drop_name, fingerprint FROM drops"))


def save_index(store: Store, drop_name: str, rows: list[IndexRow]) -> int:
    """Replace the drop's rows in one transaction (re-indexing a drop is idempotent)."""
    placeholders = ", ".join("?" * len(COLUMNS))
    values = [list(asdict(r).values()) for r in rows]

    def write(conn) -> int:
        conn.execute("DELETE FROM dicom_index WHERE drop_name = ?", [drop_name])
        if values:
            conn.executemany(
                f"INSERT INTO dicom_index ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                values,
            )
        return len(values)

    return store.run(write)


def ingest_drop(
    home: Home, drop: str, *, workers: int = 2, store: Store | None = None
) -> list[IndexRow]:
    """Index one drop of `home` into its store, the one way it is done: the drop's state
    (fingerprint) as of now, a row per frame keyed with `home`'s patient salt, frames
    already indexed from other drops (or earlier in this one) marked duplicates, the
    drop's rows replaced and its indexed state saved; files its source could not deliver
    (FETCH_ERRORS) are error rows too. Returns the rows."""
    if store is None:
        store = Store(home.db)
        store.migrate()
    folder = home.drop(drop)
    _complete, fingerprint, files = drop_state(folder, quiet_s=0)
    rows = index_folder(folder, drop, workers, salt=home.patient_salt())
    rows += fetch_error_rows(folder, drop)
    rows = mark_duplicates(rows, seen_elsewhere(store, drop))
    save_index(store, drop, rows)
    save_drop_state(store, drop, fingerprint, files)
    return rows

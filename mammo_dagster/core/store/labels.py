"""Labels: append-only events in the store, the keys that make them, and the CSV format.

A label is never overwritten or deleted. Labeling appends a ``label`` event,
skipping a ``skip`` event, undo a ``retract`` event naming the event it undoes;
an image's current label is its newest label event that nothing retracts (the
``current_labels`` view in store.py). Every event carries an id made by its
writer, so writing the same event twice (a retry, a journal replay, the same
import) stores it once.

CSV (``mammo labels import|export``): ``sop_instance_uid,has_biopsy_tool,
has_mag_view,annotator`` first, then ``frame,source,model_version,labeled_at``.
Flags are written ``1``/``0`` and read from 1/0, true/false, yes/no, y/n.
"""

from __future__ import annotations

import csv
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..files import atomic_write
from .db import Store

#: Key -> (has_biopsy_tool, has_mag_view). One keypress labels and advances.
KEYS: dict[str, tuple[bool, bool]] = {
    "1": (True, False),
    "2": (False, True),
    "3": (False, False),
    "4": (True, True),
}
ACTIONS = ("label", "skip", "retract")
SOURCES = ("queue", "random", "holdout", "review", "import")
CSV_COLUMNS = (
    "sop_instance_uid",
    "has_biopsy_tool",
    "has_mag_view",
    "annotator",
    "frame",
    "source",
    "model_version",
    "labeled_at",
)
MAX_ANNOTATOR = 40
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def clean_annotator(name: str | None) -> str:
    """An annotator name fit for storage and display, or ValueError."""
    name = (name or "").strip()
    if not name or len(name) > MAX_ANNOTATOR:
        raise ValueError(f"annotator must be 1-{MAX_ANNOTATOR} characters")
    if not all(ch.isalnum() or ch in " ._-@" for ch in name):
        raise ValueError("annotator may use letters, digits, space and . _ - @")
    return name


@dataclass
class LabelEvent:
    """A row of `label_events` (see store.py); `seq` is set by the store."""

    sop_instance_uid: str
    action: str
    annotator: str
    source: str
    frame: int = 0
    has_biopsy_tool: bool | None = None
    has_mag_view: bool | None = None
    model_version: str | None = None
    retracts: str | None = None
    created_at: datetime = field(default_factory=now_utc)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.action == "label" and (self.has_biopsy_tool is None or self.has_mag_view is None):
            raise ValueError("a label event needs both flags")
        if self.action == "retract" and not self.retracts:
            raise ValueError("a retract event needs the event it undoes")

    @property
    def image(self) -> tuple[str, int]:
        return (self.sop_instance_uid, self.frame)

    def to_json(self) -> dict:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict) -> LabelEvent:
        d = dict(d)
        d["created_at"] = datetime.fromisoformat(d["created_at"])
        return cls(**d)


_EVENT_COLUMNS = tuple(c for c in LabelEvent.__dataclass_fields__ if c != "seq")


def append_events(store: Store, events: Iterable[LabelEvent]) -> int:
    """Store events in order, in one transaction; already-stored ids are skipped.

    Returns how many were new.
    """
    values = [[getattr(e, c) for c in _EVENT_COLUMNS] for e in events]
    if not values:
        return 0
    cols = ", ".join(_EVENT_COLUMNS)
    marks = ", ".join("?" * len(_EVENT_COLUMNS))

    def write(conn) -> int:
        before = conn.execute("SELECT count(*) FROM label_events").fetchone()[0]
        for row in values:  # one by one: seq follows the list's order
            conn.execute(f"INSERT OR IGNORE INTO label_events ({cols}) VALUES ({marks})", row)
        return conn.execute("SELECT count(*) FROM label_events").fetchone()[0] - before

    return store.run(write)


def load_events(store: Store, after_seq: int = 0) -> list[LabelEvent]:
    """Events stored after `after_seq`, in store order."""
    cols = ", ".join((*_EVENT_COLUMNS, "seq"))
    rows = store.query(f"SELECT {cols} FROM label_events WHERE seq > ? ORDER BY seq", [after_seq])
    return [LabelEvent(**dict(zip((*_EVENT_COLUMNS, "seq"), r, strict=True))) for r in rows]


class LabelBook:
    """Current labels, skips and undo stacks, folded from events in order (pure, in memory)."""

    def __init__(self, events: Iterable[LabelEvent] = ()) -> None:
        self.events: dict[str, LabelEvent] = {}
        self.retracted: set[str] = set()
        self.by_annotator: dict[str, list[str]] = {}
        self.by_image: dict[tuple[str, int], list[str]] = {}
        self.current: dict[tuple[str, int], LabelEvent] = {}
        self.last_skip: dict[tuple[str, int], datetime] = {}
        self.add(events)

    def add(self, events: Iterable[LabelEvent]) -> None:
        changed: set[tuple[str, int]] = set()
        for e in events:
            if e.event_id in self.events:
                if e.seq is not None:  # our own event, now stored
                    self.events[e.event_id].seq = e.seq
                continue
            self.events[e.event_id] = e
            if e.action == "retract":
                self.retracted.add(e.retracts)
                if undone := self.events.get(e.retracts):
                    changed.add(undone.image)
            else:
                self.by_annotator.setdefault(e.annotator, []).append(e.event_id)
                self.by_image.setdefault(e.image, []).append(e.event_id)
                changed.add(e.image)
        for image in changed:
            self._refresh(image)

    def _refresh(self, image: tuple[str, int]) -> None:
        live = [self.events[i] for i in self.by_image.get(image, []) if i not in self.retracted]
        # Store order (seq) decides, as in the current_labels view; events not stored
        # yet come after every stored one, in the order they were made.
        live.sort(key=lambda e: (e.seq is None, e.seq or 0))
        labels = [e for e in live if e.action == "label"]
        skips = [e for e in live if e.action == "skip"]
        if labels:
            self.current[image] = labels[-1]
        else:
            self.current.pop(image, None)
        if skips:
            self.last_skip[image] = skips[-1].created_at
        else:
            self.last_skip.pop(image, None)

    def undo_target(self, annotator: str) -> LabelEvent | None:
        """The annotator's newest label or skip that is not undone yet."""
        for event_id in reversed(self.by_annotator.get(annotator, [])):
            if event_id not in self.retracted:
                return self.events[event_id]
        return None

    def undo_depth(self, annotator: str) -> int:
        return sum(e not in self.retracted for e in self.by_annotator.get(annotator, []))


def current_label_rows(store: Store) -> list[dict]:
    """The current label of each labeled image, as CSV rows."""
    rows = store.query(
        "SELECT sop_instance_uid, has_biopsy_tool, has_mag_view, annotator, frame, source, "
        "model_version, created_at FROM current_labels ORDER BY sop_instance_uid, frame"
    )
    return [_csv_row(*r) for r in rows]


def _csv_row(sop, biopsy, mag, annotator, frame, source, model_version, created_at) -> dict:
    return {
        "sop_instance_uid": sop,
        "has_biopsy_tool": int(biopsy),
        "has_mag_view": int(mag),
        "annotator": annotator,
        "frame": frame,
        "source": source,
        "model_version": model_version or "",
        "labeled_at": created_at.isoformat(timespec="seconds") + "Z",
    }


def label_row(e: LabelEvent) -> dict:
    """A label event as a CSV row of the current-labels export."""
    return _csv_row(
        e.sop_instance_uid,
        e.has_biopsy_tool,
        e.has_mag_view,
        e.annotator,
        e.frame,
        e.source,
        e.model_version,
        e.created_at,
    )


#: A cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(...)).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(row: dict) -> dict:
    """`row` with text cells that a spreadsheet would run as formulas quoted by a leading
    apostrophe (OWASP's CSV injection advice); `csv_unsafe` undoes it on import."""
    return {
        k: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v
        for k, v in row.items()
    }


def csv_unsafe(value: str | None) -> str | None:
    """A cell as written before `csv_safe` quoted it."""
    if value and value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict]) -> None:
    """Write atomically (temp + rename): a reader never sees half a file. Text cells that
    would be spreadsheet formulas are quoted (`csv_safe`)."""
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(csv_safe(r) for r in rows)


def export_csv(store: Store, path: Path, *, history: bool = False) -> int:
    """Current labels (one row per image) or, with `history`, every event. Returns rows."""
    if not history:
        rows = current_label_rows(store)
        _write_csv(path, CSV_COLUMNS, rows)
        return len(rows)
    events = load_events(store)
    columns = ("seq", *_EVENT_COLUMNS)
    _write_csv(
        path,
        columns,
        (
            {
                **asdict(e),
                "created_at": e.created_at.isoformat(),
                "has_biopsy_tool": "" if e.has_biopsy_tool is None else int(e.has_biopsy_tool),
                "has_mag_view": "" if e.has_mag_view is None else int(e.has_mag_view),
            }
            for e in events
        ),
    )
    return len(events)


class LabelFileError(ValueError):
    """A label CSV that can't be imported; nothing of it was stored."""


def _flag(value: str | None, column: str, line: int) -> bool:
    v = (value or "").strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise LabelFileError(f"line {line}: {column} must be 1/0, true/false or yes/no, got {value!r}")


@dataclass
class ImportReport:
    rows: int
    added: int
    unchanged: int
    not_indexed: int


def read_label_csv(path: Path, default_annotator: str) -> list[LabelEvent]:
    """Parse and validate a whole label CSV, or raise LabelFileError listing the bad lines."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in CSV_COLUMNS[:3] if c not in header]
            if missing:
                raise LabelFileError(f"{path.name}: missing column(s) {', '.join(missing)}")
            reader.fieldnames = header
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelFileError(f"{path}: cannot read as CSV: {e}") from e
    events, errors, seen = [], [], {}
    for line, row in enumerate(rows, start=2):
        try:
            sop = (row.get("sop_instance_uid") or "").strip()
            if not sop or len(sop) > 64 or not all(ch.isdigit() or ch == "." for ch in sop):
                raise LabelFileError(f"line {line}: bad sop_instance_uid {sop!r}")
            frame = int((row.get("frame") or "0").strip() or 0)
            biopsy = _flag(row.get("has_biopsy_tool"), "has_biopsy_tool", line)
            mag = _flag(row.get("has_mag_view"), "has_mag_view", line)
            try:
                annotator = clean_annotator(csv_unsafe(row.get("annotator")) or default_annotator)
            except ValueError as e:
                raise LabelFileError(f"line {line}: {e}") from e
            if (sop, frame) in seen:
                raise LabelFileError(f"line {line}: image also on line {seen[(sop, frame)]}")
            seen[(sop, frame)] = line
            events.append(
                LabelEvent(
                    sop,
                    "label",
                    annotator,
                    "import",
                    frame=frame,
                    has_biopsy_tool=biopsy,
                    has_mag_view=mag,
                )
            )
        except (LabelFileError, ValueError) as e:
            errors.append(str(e) if isinstance(e, LabelFileError) else f"line {line}: {e}")
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise LabelFileError("; ".join(errors[:10]) + more)
    return events


def import_csv(store: Store, path: Path, default_annotator: str = "import") -> ImportReport:
    """Import a label CSV: all rows or none; importing the same file again adds nothing.

    A row whose image already has exactly that label adds no event. Images not
    (yet) indexed are imported too and counted, so labels can come before images.
    """
    events = read_label_csv(path, default_annotator)
    current = {
        (sop, frame): (bool(b), bool(m), event_id)
        for sop, frame, b, m, event_id in store.query(
            "SELECT sop_instance_uid, frame, has_biopsy_tool, has_mag_view, event_id "
            "FROM current_labels"
        )
    }
    indexed = set(
        store.query("SELECT DISTINCT sop_instance_uid FROM dicom_index WHERE status = 'ok'")
    )
    new = []
    for e in events:
        now = current.get(e.image)
        if now and now[:2] == (e.has_biopsy_tool, e.has_mag_view):
            continue
        # The id names the row and the label it replaces: two imports of one file racing
        # each other store it once, yet re-importing after a relabel applies it again.
        key = f"{e.sop_instance_uid}|{e.frame}|{e.has_biopsy_tool:d}{e.has_mag_view:d}|"
        key += f"{e.annotator}|{now[2] if now else ''}"
        e.event_id = "import-" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
        new.append(e)
    added = append_events(store, new)
    return ImportReport(
        rows=len(events),
        added=added,
        unchanged=len(events) - added,
        not_indexed=sum((e.sop_instance_uid,) not in indexed for e in events),
    )

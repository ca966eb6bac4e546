"""Never lose a keypress: events go to a local journal first, then to DuckDB in the background.

`EventWriter.submit` appends the event to a journal file (flushed and fsynced)
and returns at once, so the labeler answers while another process holds the
DuckDB lock. A background thread writes pending events to the store in order,
retrying for as long as it takes; the store ignores an event id it already has,
so a replay never doubles a label. A journal left behind by a labeler that died
is replayed at start-up (each journal is flock'ed by its live writer, so a
second labeler never takes over a live one's file).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

from mammo_dagster.core.store.db import Store
from mammo_dagster.core.store.labels import LabelEvent, append_events

log = logging.getLogger("labeler")
_ROTATE_BYTES = 1 << 20


class EventWriter:
    """Journal + background writer for one labeler process."""

    def __init__(
        self, store: Store, folder: Path, *, retry_s: float = 0.25, gather_s: float = 0.05
    ) -> None:
        self.store, self.folder, self.retry_s, self.gather_s = store, folder, retry_s, gather_s
        folder.mkdir(parents=True, exist_ok=True)
        self.pending: deque[LabelEvent] = deque()
        self.written = 0
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._file = self._new_journal()
        self._thread = threading.Thread(target=self._run, name="label-writer", daemon=True)

    def _new_journal(self):
        path = self.folder / f"journal-{os.getpid()}-{time.time_ns()}.jsonl"
        f = path.open("a", encoding="utf-8")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return f

    def recover(self) -> int:
        """Replay journals that dead labelers left behind; returns events newly stored."""
        stored = 0
        for path in sorted(self.folder.glob("journal-*.jsonl")):
            if path == Path(self._file.name):
                continue
            with path.open("r+", encoding="utf-8") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live labeler's journal
                events = []
                for n, line in enumerate(f, start=1):
                    try:
                        events.append(LabelEvent.from_json(json.loads(line)))
                    except (ValueError, TypeError, KeyError):
                        log.warning("%s line %d: unreadable journal entry kept aside", path, n)
                        bad = path.with_suffix(".bad")
                        with bad.open("a", encoding="utf-8") as out:
                            out.write(line if line.endswith("\n") else line + "\n")
                stored += append_events(self.store, events)
                path.unlink()
        return stored

    def start(self) -> None:
        self._thread.start()

    def submit(self, event: LabelEvent) -> None:
        """Durable once this returns (on disk in the journal); stored in DuckDB soon after."""
        line = json.dumps(event.to_json()) + "\n"
        with self._cond:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.pending.append(event)
            self._cond.notify()

    def _run(self) -> None:
        delay = self.retry_s
        while True:
            with self._cond:
                while not self.pending and not self._stop:
                    self._cond.wait()
                if not self.pending and self._stop:
                    return
            time.sleep(self.gather_s)  # fewer, bigger writes: others get the file lock too
            with self._cond:
                batch = list(self.pending)
            try:
                append_events(self.store, batch)
            except BaseException as e:  # busy or broken: keep the events, say so, try again
                with self._cond:
                    self.last_error = f"{type(e).__name__}: {e}"
                log.warning("label write failed (will retry): %s", self.last_error)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = self.retry_s
            with self._cond:
                for _ in batch:
                    self.pending.popleft()
                self.written += len(batch)
                self.last_error = None
                try:
                    if not self.pending and self._file.tell() > _ROTATE_BYTES:
                        self._rotate()
                except OSError as e:  # keep writing to the old journal
                    log.warning("journal rotation failed: %s", e)
                self._cond.notify_all()

    def _rotate(self) -> None:
        old = self._file
        self._file = self._new_journal()
        Path(old.name).unlink(missing_ok=True)  # before close: our flock still guards it
        old.close()

    def wait_stored(self, timeout: float) -> bool:
        """Block until every submitted event is in the store (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Store what is pending (up to `timeout`), stop; keep the journal if anything is left."""
        done = self.wait_stored(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self._file.close()
        if done and not self.pending:
            Path(self._file.name).unlink(missing_ok=True)
        else:
            log.warning(
                "%d label(s) not yet in the database stay in %s", len(self.pending), self._file.name
            )

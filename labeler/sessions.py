"""Signed-in sessions, each one revocable on its own.

A session cookie holds a random session id beside its signature; the book of live ids
is a JSON file in the labeler's folder (``sessions.json``, mode 600), read again when
another process (`mammo label --revoke`) changed it. A session lives until it expires
(`guard.SESSION_S`), signs out (``POST /logout``) or is revoked; changing the token
still signs everyone out. The book keeps no token and no patient data: an id, the
annotator it signed in as (if any), when it started and when it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mammo_dagster.core.files import atomic_write

BOOK = "sessions.json"
#: Characters of a session id that name it in listings and on the command line.
SHOWN = 8


@dataclass(frozen=True)
class Session:
    sid: str
    annotator: str | None
    started: float
    expires: float

    @property
    def short(self) -> str:
        return self.sid[:SHOWN]


class SessionBook:
    """The live sessions of one labeler folder, shared by every process that opens it."""

    def __init__(self, folder: Path, lifetime_s: float) -> None:
        self.path, self.lifetime_s = folder / BOOK, lifetime_s
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._live: dict[str, Session] = {}

    # -- reading -----------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _load(self) -> dict[str, Session]:
        """The book as on disk (cached until the file changes); a damaged book is empty,
        which signs everyone out rather than letting anyone in."""
        stamp = self._stamp()
        if stamp != self._seen:
            try:
                raw = json.loads(self.path.read_text()) if stamp else {}
                live = {s["sid"]: Session(**s) for s in raw.get("sessions", [])}
            except (OSError, ValueError, TypeError, KeyError):
                live = {}
            self._live, self._seen = live, stamp
        return self._live

    def valid(self, sid: object) -> bool:
        """Whether `sid` is a live session's id (known, not expired)."""
        if not isinstance(sid, str) or not sid:
            return False
        with self._lock:
            session = self._load().get(sid)
        return session is not None and session.expires > time.time()

    def sessions(self) -> list[Session]:
        """Live sessions, oldest first."""
        now = time.time()
        with self._lock:
            live = [s for s in self._load().values() if s.expires > now]
        return sorted(live, key=lambda s: s.started)

    # -- writing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Session]]:
        """The book under an exclusive file lock (other processes write it too), written
        back whole, without expired sessions."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._lock:
                self._seen = None  # read what is on disk now
                book = dict(self._load())
                yield book
                now = time.time()
                kept = [vars(s) for s in book.values() if s.expires > now]
                with atomic_write(self.path, "w") as f:
                    json.dump({"sessions": kept}, f, indent=1)
                os.chmod(self.path, 0o600)
                self._seen = None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def open(self, annotator: str | None = None) -> str:
        """A new session's id."""
        now = time.time()
        session = Session(secrets.token_urlsafe(24), annotator, now, now + self.lifetime_s)
        with self._editing() as book:
            book[session.sid] = session
        return session.sid

    def name(self, sid: object, annotator: str | None) -> None:
        """Record who labels in session `sid` (shown by `mammo label --sessions`)."""
        if not self.valid(sid):
            return
        with self._editing() as book:
            if (s := book.get(sid)) is not None:
                book[sid] = Session(s.sid, annotator, s.started, s.expires)

    def revoke(self, sid_or_prefix: str) -> list[Session]:
        """End the sessions whose id is or starts with `sid_or_prefix` (at least `SHOWN`
        characters, so that a short prefix can't end several by accident); ``all`` ends
        every one. Returns those ended."""
        with self._editing() as book:
            if sid_or_prefix == "all":
                ended = list(book.values())
            elif len(sid_or_prefix) < SHOWN:
                raise ValueError(f"name a session by at least {SHOWN} characters of its id")
            else:
                ended = [s for sid, s in book.items() if sid.startswith(sid_or_prefix)]
            for s in ended:
                del book[s.sid]
        return ended

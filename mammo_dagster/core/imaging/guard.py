"""The one place codecs run: their messages captured as data, their crashes contained.

Codecs are native code fed hostile bytes. What they can do, and what we do about it:

- *talk*: pydicom logs tracebacks, codecs warn through Python's `warnings`, and native
  libraries (GDCM, libjpeg) write to file descriptor 2. :func:`capture` collects all
  three while a file is read, as one-line notes that become the file's ``warnings``
  column, never stderr noise (``mammo --debug`` lets pydicom's log through).
- *panic*: a Rust decoder raises ``pyo3_runtime.PanicException``, a `BaseException`;
  the decode functions turn it into a typed ``decode_error`` (see `core.imaging.decode`).
- *abort or hang*: GDCM calls ``abort()`` on some damaged JPEG lossless data, which no
  ``except`` can catch. `pool.run_guarded` runs every file in a worker process that
  may die: a dead worker is that file's error row (``decode_error: codec crashed``)
  and a fresh worker takes the next file; a file that runs past the time limit
  (`limits`) is killed and recorded as ``timeout``. Workers (`worker_main`, here) die
  with their parent (``PR_SET_PDEATHSIG``, and a watchdog thread where that is
  missing), so a killed command leaves no orphans behind. `pool.isolated` is the same
  for one call (the single-file commands).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import faulthandler
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ..allocator import keep_freed_memory

#: Environment variable that lets the codecs' own log through (``mammo --debug``).
ENV_DEBUG = "MAMMO_DEBUG"
#: Notes kept per file, and characters per note.
MAX_NOTES, NOTE_CHARS = 5, 200
_CODEC_LOGGERS = ("pydicom",)
#: How long a fresh worker may take to start (imports) before its first file's clock runs.


def debug() -> bool:
    return os.environ.get(ENV_DEBUG, "") not in ("", "0")


class _Collector(logging.Handler):
    """Routes the codecs' log records into the notes being captured (else drops them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.notes: list[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.notes is not None and record.levelno >= logging.WARNING:
            self.notes.append(record.getMessage())


_collector = _Collector()
#: Native stderr lines that say nothing about the file.
NATIVE_NOISE = ("note: run with `RUST_BACKTRACE", "stack backtrace:")
_fd_capture = False  # set in worker processes: native stderr is captured per file
_err_path: str | None = None  # a worker's stderr file, which its parent reads if it dies


def quiet_codecs() -> None:
    """Send the codecs' loggers to the collector instead of stderr (idempotent)."""
    for name in _CODEC_LOGGERS:
        log = logging.getLogger(name)
        if _collector not in log.handlers:
            log.addHandler(_collector)
        log.propagate = debug()
        if not debug():
            log.setLevel(logging.WARNING)


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= NOTE_CHARS else line[: NOTE_CHARS - 1] + "…"


@dataclass
class Notes:
    """What the codecs said while one file was read: one-line, deduplicated."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        line = one_line(text)
        if line and line not in self.items and len(self.items) < MAX_NOTES:
            self.items.append(line)

    def text(self) -> str | None:
        """The notes as one cell ("; " between them), None when there are none."""
        return "; ".join(self.items) or None


@contextlib.contextmanager
def capture() -> Iterator[Notes]:
    """Collect Python warnings, codec log records and (in a guarded worker) native
    stderr while the block runs; they are in the yielded `Notes` after it."""
    quiet_codecs()
    notes = Notes()
    records: list[str] = []
    previous, _collector.notes = _collector.notes, records
    err = _redirect_stderr() if _fd_capture else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield notes
    finally:
        _collector.notes = previous
        native = _restore_stderr(err) if err else ""
        for text in records:
            notes.add(text)
        for w in caught:
            notes.add(str(w.message))
        for line in native.splitlines():
            if not line.startswith(NATIVE_NOISE):
                notes.add(line)


def _redirect_stderr() -> tuple[int, Any]:
    sys.stderr.flush()
    # a worker writes where its parent can read the last words of a crash
    tmp = open(_err_path, "w+b") if _err_path else tempfile.TemporaryFile()  # noqa: SIM115
    saved = os.dup(2)
    os.dup2(tmp.fileno(), 2)
    return saved, tmp


def _restore_stderr(err: tuple[int, Any]) -> str:
    saved, tmp = err
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    tmp.seek(0)
    text = tmp.read(64 * 1024).decode("utf-8", errors="replace")
    tmp.close()
    return text


# ---------------------------------------------------------------- worker processes


def _die_with_parent(parent: int) -> None:
    """Be killed when the parent dies: PR_SET_PDEATHSIG on Linux, else a watchdog."""
    libc = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the prctl took hold
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="mammo-parent-watch", daemon=True).start()


def init_worker() -> None:
    """What a decoding process sets up once: no codec noise, allocator tuning."""
    global _fd_capture
    _fd_capture = True
    faulthandler.disable()  # a crash here is reported by the parent, as one line
    os.environ["RUST_BACKTRACE"] = "0"  # a Rust panic: its message, not a stack
    warnings.filterwarnings("ignore", module="pydicom")
    quiet_codecs()
    keep_freed_memory()  # each file's frame buffers reuse the last one's memory


def worker_main(conn: Connection, job: Callable[[Any], Any], parent: int, err_path: str) -> None:
    global _err_path
    _err_path = err_path
    _die_with_parent(parent)
    init_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    conn.send(("ready", None))
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", job(item))
        except BaseException as e:  # a native panic included: it is this item's answer
            reply = ("raised", e)
        try:
            conn.send(reply)
        except Exception:  # the result or the exception can't be pickled
            e = reply[1]
            conn.send(("raised", RuntimeError(f"{type(e).__name__}: {one_line(str(e))}")))

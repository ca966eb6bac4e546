"""The one place codecs run: their messages captured as data, their crashes contained.

Codecs are native code fed hostile bytes. What they can do, and what we do about it:

- *talk*: pydicom logs tracebacks, codecs warn through Python's `warnings`, and native
  libraries (GDCM, libjpeg) write to file descriptor 2. :func:`capture` collects all
  three while a file is read, as one-line notes that become the file's ``warnings``
  column, never stderr noise (``mammo --debug`` lets pydicom's log through).
- *panic*: a Rust decoder raises ``pyo3_runtime.PanicException``, a `BaseException`;
  the decode functions turn it into a typed ``decode_error`` (see `core.imaging.decode`).
- *abort or hang*: GDCM calls ``abort()`` on some damaged JPEG lossless data, which no
  ``except`` can catch. :func:`run_guarded` runs every file in a worker process that
  may die: a dead worker is that file's error row (``decode_error: codec crashed``)
  and a fresh worker takes the next file; a file that runs past the time limit
  (`core.imaging.limits`) is killed and recorded as ``timeout``. Workers die with their parent
  (``PR_SET_PDEATHSIG``, and a watchdog thread where that is missing), so a killed
  command leaves no orphans behind. :func:`isolated` is the same for one call (the
  single-file commands).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import faulthandler
import logging
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from .dicom import DicomError, Failure
from .limits import Limits

T = TypeVar("T")
R = TypeVar("R")

#: Environment variable that lets the codecs' own log through (``mammo --debug``).
ENV_DEBUG = "MAMMO_DEBUG"
#: Notes kept per file, and characters per note.
MAX_NOTES, NOTE_CHARS = 5, 200
#: glibc otherwise returns every 10-30 MB decode buffer to the OS and page-faults
#: it back for the next image: measured 41 -> 15 ms per reduced J2K decode.
MMAP_THRESHOLD = 256 * 1024 * 1024
_CODEC_LOGGERS = ("pydicom",)
#: How long a fresh worker may take to start (imports) before its first file's clock runs.
STARTUP_S = 120.0


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
_NATIVE_NOISE = ("note: run with `RUST_BACKTRACE", "stack backtrace:")
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
            if not line.startswith(_NATIVE_NOISE):
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
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
            ctypes.CDLL(libc).mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def _worker_main(conn: Connection, job: Callable[[Any], Any], parent: int, err_path: str) -> None:
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


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    err: str  # its stderr while a file is decoded: a crash's last words
    item: Any = None
    deadline: float = 0.0
    busy: bool = False
    ready: bool = False  # it said so: imports done, the time limit applies from here


def _start(ctx: Any, job: Callable[[Any], Any], folder: str) -> _Worker:
    parent_end, child_end = ctx.Pipe()
    fd, err = tempfile.mkstemp(dir=folder, suffix=".err")
    os.close(fd)
    with _as_parent():  # the process copies its parent's settings when made
        proc = ctx.Process(
            target=_worker_main,
            args=(child_end, job, os.getpid(), err),
            name="mammo-decode",
            daemon=True,
        )
        proc.start()
    child_end.close()
    return _Worker(proc, parent_end, err)


@contextlib.contextmanager
def _as_parent() -> Iterator[None]:
    """Let a Celery prefork child start workers, as any process can.

    Scale-out runs a Dagster step in such a child: a daemon (multiprocessing refuses
    children to daemons, so that none outlive them; ours can't, `_die_with_parent`)
    and a `billiard` process whose auth key multiprocessing's spawn can't pickle. Both
    are lifted while a worker starts, then put back.
    """
    config = mp.current_process()._config
    saved = dict(config)
    config["daemon"] = False
    if "authkey" in config:
        config["authkey"] = mp.process.AuthenticationString(bytes(config["authkey"]))
    try:
        yield
    finally:
        config.clear()
        config.update(saved)


def _stop(w: _Worker, kill: bool = False) -> None:
    if not kill:
        with contextlib.suppress(Exception):
            w.conn.send(None)
        w.proc.join(2.0)
    if w.proc.is_alive():
        w.proc.kill()
        w.proc.join(5.0)
    w.conn.close()


def death_reason(exitcode: int | None) -> str:
    """Why a worker died, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if name == "SIGKILL":
            return "codec crashed (SIGKILL: killed, out of memory?)"
        return f"codec crashed ({name})"
    return f"codec crashed (its process exited with status {exitcode})"


def run_guarded(
    items: Iterable[T],
    job: Callable[[T], R],
    done: Callable[[T, R], None],
    failed: Callable[[T, Failure, str], None],
    *,
    workers: int = 2,
    timeout_s: float | None = None,
    context: str = "spawn",
) -> None:
    """Run `job` on every item in `workers` processes; `done(item, result)` as each ends.

    An item whose worker dies (an abort, a segfault, the OOM killer) gets
    ``failed(item, DECODE_ERROR, reason)``; one that runs past `timeout_s` (default:
    the configured limit) is killed and gets ``failed(item, TIMEOUT, reason)``; one whose
    job raises gets ``failed(item, DECODE_ERROR, ...)`` (a `DicomError` keeps its kind).
    The worker is replaced and the batch goes on. Workers are spawned (no inherited
    locks or threads) unless `context` says otherwise.
    """
    timeout_s = Limits.from_env().timeout_s if timeout_s is None else timeout_s
    with tempfile.TemporaryDirectory(prefix="mammo-guard-") as folder:
        _run(items, partial(_start, mp.get_context(context), job, folder), done, failed,
             workers, timeout_s)  # fmt: skip


def _run(
    items: Iterable[T],
    start: Callable[[], _Worker],
    done: Callable[[T, R], None],
    failed: Callable[[T, Failure, str], None],
    workers: int,
    timeout_s: float,
) -> None:
    queue = iter(items)
    pool: list[_Worker] = []
    exhausted = False
    try:
        while True:
            for i, w in enumerate(pool):
                if not w.proc.is_alive() and not w.busy:
                    _stop(w, kill=True)
                    pool[i] = start()
            while not exhausted and (len(pool) < workers or any(not w.busy for w in pool)):
                try:
                    item = next(queue)
                except StopIteration:
                    exhausted = True
                    break
                w = next((w for w in pool if not w.busy), None)
                if w is None:
                    w = start()
                    pool.append(w)
                grace = 0.0 if w.ready else STARTUP_S
                w.item, w.busy, w.deadline = item, True, time.monotonic() + timeout_s + grace
                with contextlib.suppress(OSError, ValueError):  # it died idle: replaced below
                    w.conn.send(item)
            busy = [w for w in pool if w.busy]
            if not busy:
                return
            left = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=left)
            for i, w in enumerate(pool):
                if w.busy:
                    fresh = _settle(w, done, failed, timeout_s)
                    if fresh:
                        pool[i] = start()
    finally:
        for w in pool:
            _stop(w, kill=w.busy)


def _settle(
    w: _Worker,
    done: Callable[[Any, Any], None],
    failed: Callable[[Any, Failure, str], None],
    timeout_s: float,
) -> bool:
    """Take `w`'s answer if it has one; True when `w` is gone and must be replaced."""
    item = w.item
    died = False
    while w.conn.poll():
        try:
            status, value = w.conn.recv()
        except (EOFError, OSError):
            died = True
            break
        if status == "ready":  # started: the item's time begins now
            w.ready, w.deadline = True, time.monotonic() + timeout_s
            continue
        w.busy, w.item = False, None
        if status == "ok":
            done(item, value)
        elif isinstance(value, DicomError):
            failed(item, value.kind, value.reason)
        else:
            failed(item, Failure.DECODE_ERROR, f"codec crashed: {_describe(value)}")
        return False
    if not died and w.proc.is_alive() and time.monotonic() < w.deadline:
        return False
    if died:  # its end of the pipe closed: it is exiting
        w.proc.join(5.0)
    if w.proc.is_alive():  # past its deadline
        _stop(w, kill=True)
        failed(item, Failure.TIMEOUT, f"no result after {timeout_s:g} s: killed")
    else:
        w.proc.join()
        reason = death_reason(w.proc.exitcode)
        if words := last_words(w.err):
            reason += f": {words}"
        _stop(w, kill=True)
        failed(item, Failure.DECODE_ERROR, reason)
    return True


def last_words(path: str) -> str:
    """What a dead worker last wrote to stderr (its first and last lines, one line)."""
    try:
        with open(path, "rb") as f:
            text = f.read(64 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(_NATIVE_NOISE)]
    if not lines:
        return ""
    return one_line("; ".join(dict.fromkeys([lines[0], lines[-1]])))


def _describe(e: BaseException) -> str:
    text = one_line(str(e))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def isolated(fn: Callable[..., R], *args: Any, timeout_s: float | None = None) -> R:
    """``fn(*args)`` in a child process: its result, or its `DicomError` re-raised; a
    crash or a timeout of the child becomes a `DicomError` too (``decode_error: codec
    crashed (SIGABRT)``, ``timeout``). For the single-file commands."""
    out: dict[str, Any] = {}

    def done(_item: Any, result: R) -> None:
        out["result"] = result

    def failed(_item: Any, kind: Failure, reason: str) -> None:
        out["error"] = DicomError(kind, reason)

    context = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    run_guarded([args], _Call(fn), done, failed, workers=1, timeout_s=timeout_s, context=context)
    if "error" in out:
        raise out["error"]
    return out["result"]


@dataclass
class _Call:
    fn: Callable[..., Any]

    def __call__(self, args: tuple) -> Any:
        return self.fn(*args)

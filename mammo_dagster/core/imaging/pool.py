"""The guarded pool, the parent's side: every file of a batch in a worker process that may
die. A dead worker is that file's error row (``decode_error: codec crashed (SIGABRT)``,
with the worker's last words), a file past the time limit is killed and recorded as
``timeout``, and a fresh worker takes the next file (`run_guarded`); `isolated` is
the same for one call. The worker's side (capture, init, the loop) is `guard`'s."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from .dicom import DicomError, Failure
from .guard import NATIVE_NOISE, one_line, worker_main
from .limits import Limits

T = TypeVar("T")
R = TypeVar("R")
STARTUP_S = 120.0


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
            target=worker_main,
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
    locks or threads) unless `context` says otherwise. `workers` <= 0 runs every job in
    this process, unguarded: only for files already trusted (tests).
    """
    if workers <= 0:
        for item in items:
            done(item, job(item))
        return
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
    lines = [ln for ln in lines if not ln.startswith(NATIVE_NOISE)]
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

"""Run the labeler as a child process (tests, benchmarks, `mammo dev`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mammo_dagster.core.home import Home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(home: Home | Path, port: int, *args: str, log: Path | None = None) -> subprocess.Popen:
    """A labeler on `home` (its settings, e.g. the retrain threshold, go in the environment)."""
    home = Home.of(home)
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "labeler", "--home", str(home.root), "--port", str(port), *args],
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stopped as a whole
        env=os.environ | home.env(),
    )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the labeler exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/stats", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the labeler did not answer on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM (the labeler stores what is pending and exits), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@contextmanager
def running(home: Home | Path, *args: str, log: Path | None = None) -> Iterator[str]:
    """A labeler on a free loopback port for the `with` block; yields its base URL."""
    port = free_port()
    proc = start(home, port, *args, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        stop(proc)

"""`mammo dev` (what `make dev` runs): Dagster's UI and the labeler up together, and
both gone after one Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labeler.process import free_port


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_dev_starts_both_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    dport, lport = free_port(), free_port()
    home = tmp_path / "home"
    log = tmp_path / "dev.log"  # a file, not a pipe: a pipe nobody reads fills up and blocks
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mammo_dagster.cli",
            "dev",
            "--home",
            str(home),
            "--dagster-port",
            str(dport),
            "--labeler-port",
            str(lport),
        ],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dagster, labeler = f"http://127.0.0.1:{dport}/server_info", f"http://127.0.0.1:{lport}/"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (_up(dagster) and _up(labeler)):
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert _up(dagster) and _up(labeler)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            code = proc.wait(timeout=90)  # each child gets 20 s to stop, then SIGKILL
        except subprocess.TimeoutExpired:
            tail = log.read_text()[-3000:]
            raise AssertionError(f"still running 90 s after Ctrl-C:\n{tail}") from None
        assert code == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1)
    assert not _up(dagster) and not _up(labeler)
    assert (tmp_path / "dagster" / "dagster.yaml").exists()


@pytest.mark.slow
def test_killing_dev_does_not_leave_servers_behind(tmp_path: Path) -> None:
    """kill -9 of `mammo dev` (no chance to clean up): its servers go with it."""
    dport, lport = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mammo_dagster.cli", "dev", "--home", str(tmp_path / "home"),
         "--dagster-port", str(dport), "--labeler-port", str(lport)],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")},
        stdout=(tmp_path / "dev.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    dagster, labeler = f"http://127.0.0.1:{dport}/server_info", f"http://127.0.0.1:{lport}/"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (_up(dagster) and _up(labeler)):
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            time.sleep(0.5)
        assert _up(dagster) and _up(labeler)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_up(dagster) or _up(labeler)):
        time.sleep(0.5)
    assert not _up(dagster) and not _up(labeler)

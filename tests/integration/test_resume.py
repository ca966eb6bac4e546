"""A Dagster ingest run killed with SIGKILL mid-thumbnails: the rerun finishes the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mammo_dagster.core.synthetic.archive import generate_archive
from mammo_dagster.pipeline import materialize_ingest

CHILD = """
import sys
from pathlib import Path
from mammo_dagster.pipeline import materialize_ingest
home = Path(sys.argv[1])
materialize_ingest(home, "d1", size=512, workers=1, dagster_home=home / "dagster")
"""


def _killed_mid_run(home: Path, total: int) -> int:
    """Start an ingest run in a child process and SIGKILL it once some thumbnails exist."""
    thumbs = home / "thumbnails"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if thumbs.is_dir() and len(list(thumbs.glob("*.png"))) >= 2:
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return len(list(thumbs.glob("*.png"))) if thumbs.is_dir() else 0


@pytest.mark.slow
def test_rerun_after_kill_finishes_the_rest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    drop = home / "incoming" / "d1"
    images = generate_archive(drop, studies=12, seed=8, size="small", ground_truth=None)
    done_before = _killed_mid_run(home, len(images))
    assert 0 < done_before < len(images), f"kill landed after {done_before}/{len(images)}"
    for png in (home / "thumbnails").glob("*.png"):  # nothing half-written
        with Image.open(png) as im:
            im.load()
    (home / "thumbnails" / ".stale.png.x.tmp").write_bytes(b"half")  # as a killed write leaves
    os.utime(home / "thumbnails" / ".stale.png.x.tmp", (0, 0))

    result = materialize_ingest(home, "d1", size=512, workers=1, dagster_home=home / "dagster")
    assert result.success
    md = result.asset_materializations_for_node("thumbnails")[0].metadata
    assert md["cached"].value >= done_before
    assert md["cached"].value + md["rendered"].value == len(images)
    assert len(list((home / "thumbnails").glob("*.png"))) == len(images)
    assert not list((home / "thumbnails").glob("*.tmp"))
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["every_frame_has_a_thumbnail"]

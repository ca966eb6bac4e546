"""Folder thumbnailing: worker crashes, duplicates, cache validity, relative paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mammo_dagster.core.imaging.batch import FrameResult, thumbnail_folder
from mammo_dagster.core.imaging.pool import run_guarded
from mammo_dagster.core.imaging.thumbnails import RENDER_VERSION, render_version
from tests.factory import make_file

PX = np.full((64, 48), 1500, dtype=np.uint16)


class CrashOn:
    """A job that kills its worker process on one file, like a segfaulting codec."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, path: Path) -> list[FrameResult]:
        if path.name == self.name:
            os._exit(139)
        return [FrameResult(path.name, "1.2.3", 0, "ok")]


def test_a_crashing_worker_costs_one_row_not_the_run(tmp_path: Path) -> None:
    files = []
    for i in range(10):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(b"x")
    rows: list[FrameResult] = []
    run_guarded(
        files,
        CrashOn("f3"),
        lambda _path, result: rows.extend(result),
        lambda path, kind, reason: rows.append(
            FrameResult(path.name, None, 0, "error", kind.value, reason)
        ),
        workers=2,
    )
    by_name = {r.path: r for r in rows}
    assert sorted(by_name) == sorted(f.name for f in files)  # every file has exactly one row
    assert len(rows) == len(files)
    assert by_name["f3"].status == "error" and "crashed" in by_name["f3"].error
    assert all(r.status == "ok" for n, r in by_name.items() if n != "f3")


def test_duplicates_relative_paths_and_cache(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    make_file(drop / "a" / "IM1", PX, "ge", tag="same")
    make_file(drop / "b" / "IM1", PX, "ge", tag="same")  # the same SOP Instance UID again
    make_file(drop / "c" / "IM1", PX, "hologic", "j2k", tag="other")
    out = tmp_path / "thumbs"
    rows = thumbnail_folder(drop, out, size=32, workers=2)
    assert [(r.path, r.status) for r in rows] == [
        ("a/IM1", "ok"),
        ("b/IM1", "duplicate"),
        ("c/IM1", "ok"),
    ]
    assert "a/IM1" in rows[1].error
    assert len(list(out.glob("*.png"))) == 2

    # a thumbnail of another size is not a cache hit; a broken one is redone
    other = out / rows[2].thumbnail
    other.write_bytes(b"")
    rows = thumbnail_folder(drop, out, size=48, workers=1)
    assert [r.status for r in rows] == ["ok", "duplicate", "ok"]
    assert all(Image.open(p).size == (48, 48) for p in out.glob("*.png"))
    rows = thumbnail_folder(drop, out, size=48, workers=1)
    assert [r.status for r in rows] == ["cached", "duplicate", "cached"]


def test_a_thumbnail_of_another_rendering_version_is_redone(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    make_file(drop / "IM1", PX, "siemens", tag="v")
    out = tmp_path / "thumbs"
    rows = thumbnail_folder(drop, out, size=32, workers=1, render="1")  # version 1
    assert [r.status for r in rows] == ["ok"]
    png = out / rows[0].thumbnail
    with Image.open(png) as im:
        assert render_version(im) == "1"
    assert [r.status for r in thumbnail_folder(drop, out, size=32, workers=1)] == ["ok"]
    with Image.open(png) as im:
        assert render_version(im) == RENDER_VERSION != "1"
    assert [r.status for r in thumbnail_folder(drop, out, size=32, workers=1)] == ["cached"]


def test_the_first_file_says_ok_when_its_duplicate_rendered_the_shared_thumbnail() -> None:
    """Two workers race for one SOP UID's thumbnail: the later file's worker wrote it, so
    the first file found it cached; it was still made in this run."""
    from mammo_dagster.core.imaging.batch import _mark_duplicates

    rows = [
        FrameResult("a/IM1", "1.2.3", 0, "cached"),
        FrameResult("b/IM1", "1.2.3", 0, "ok"),
        FrameResult("c/IM1", "1.2.4", 0, "ok"),
    ]
    assert [(r.path, r.status) for r in _mark_duplicates(rows)] == [
        ("a/IM1", "ok"),
        ("b/IM1", "duplicate"),
        ("c/IM1", "ok"),
    ]
    again = [FrameResult("a/IM1", "1.2.3", 0, "cached"), FrameResult("b/IM1", "1.2.3", 0, "cached")]
    assert [r.status for r in _mark_duplicates(again)] == ["cached", "duplicate"]  # a rerun

"""Hostile input (issue 18): native panics and aborts, hangs, absurd headers and codec
chatter each end as one typed row or one line, never a traceback, a crash or a hang."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mammo_dagster.core.imaging.batch import thumbnail_folder
from mammo_dagster.core.imaging.dicom import DicomError, Failure, open_dicom
from mammo_dagster.core.imaging.guard import capture
from mammo_dagster.core.imaging.index import index_file
from mammo_dagster.core.imaging.pool import isolated, run_guarded
from mammo_dagster.core.imaging.thumbnails import render
from tests.fuzz import (
    SAID,
    gdcm_abort,
    good,
    huge_claim,
    implicit_claiming_explicit,
    j2k_header_smashed,
    rle_panic,
    set_raw,
)

ROOT = Path(__file__).resolve().parents[2]
GDCM_SAID = "codec crashed (SIGABRT): terminate called after throwing an instance of 'gdcm::"


def mammo(*args: str, cwd: Path | None = None, env: dict | None = None):
    environment = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "mammo_dagster.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=300,
    )


# ---------------------------------------------------------------- the guarded pool


class Hostile:
    """A job that does to its worker what a bad codec does, by file name."""

    def __call__(self, path: Path) -> str:
        if path.name == "abort":
            os.abort()
        if path.name == "panic":

            class PanicException(BaseException):  # local: can't be pickled, as pyo3's can't
                pass

            raise PanicException("index out of bounds")
        if path.name == "hang":
            time.sleep(600)
        if path.name == "exit":
            sys.exit(3)
        if path.name == "typed":
            raise DicomError(Failure.INVALID_HEADER, "a typed error crosses over intact")
        return f"ok {path.name}"


def test_one_file_can_neither_kill_nor_hang_the_batch(tmp_path: Path) -> None:
    names = ["a", "abort", "b", "panic", "c", "hang", "d", "exit", "typed", "e"]
    done: dict[str, str] = {}
    failed: dict[str, tuple[str, str]] = {}
    run_guarded(
        [tmp_path / n for n in names],
        Hostile(),
        lambda path, result: done.__setitem__(path.name, result),
        lambda path, kind, reason: failed.__setitem__(path.name, (kind.value, reason)),
        workers=2,
        timeout_s=2,
    )
    assert done == {n: f"ok {n}" for n in "abcde"}  # no good file lost
    assert failed["abort"] == ("decode_error", "codec crashed (SIGABRT)")
    assert failed["panic"][0] == "decode_error" and "PanicException" in failed["panic"][1]
    assert failed["hang"] == ("timeout", "no result after 2 s: killed")
    assert failed["exit"][0] == "decode_error" and "SystemExit" in failed["exit"][1]
    assert failed["typed"] == ("invalid_header", "a typed error crosses over intact")
    assert len(done) + len(failed) == len(names)


def _guarded_in(names: list[str], folder: str, out) -> None:
    done: dict[str, str] = {}
    failed: dict[str, str] = {}
    try:
        run_guarded(
            [Path(folder) / n for n in names],
            Hostile(),
            lambda path, result: done.__setitem__(path.name, result),
            lambda path, kind, reason: failed.__setitem__(path.name, kind.value),
            workers=2,
            timeout_s=30,
        )
    except BaseException as e:  # the parent asserts on it, not on a missing answer
        out.put(repr(e))
    else:
        out.put((done, failed))


@pytest.mark.parametrize("library", ["multiprocessing", "billiard"])
def test_the_guarded_pool_runs_inside_a_celery_worker_child(tmp_path: Path, library: str) -> None:
    """A Celery prefork child (where a Dagster step runs in scale-out) is a daemonic
    `billiard` process: multiprocessing refuses children to daemons and can't pickle
    billiard's auth key. The guarded pool must run there too."""
    import importlib

    ctx = importlib.import_module(library).get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_guarded_in, args=(["a", "abort", "b"], str(tmp_path), out),
                       daemon=True)  # fmt: skip
    proc.start()
    try:
        answer = out.get(timeout=120)
    finally:
        proc.join(30)
    assert isinstance(answer, tuple), answer
    done, failed = answer
    assert proc.exitcode == 0
    assert done == {"a": "ok a", "b": "ok b"}
    assert failed == {"abort": "decode_error"}


def test_isolated_reraises_typed_errors_and_contains_aborts(tmp_path: Path) -> None:
    assert isolated(Hostile(), tmp_path / "fine") == "ok fine"
    with pytest.raises(DicomError) as e:
        isolated(Hostile(), tmp_path / "abort")
    assert (e.value.kind, e.value.reason) == (Failure.DECODE_ERROR, "codec crashed (SIGABRT)")
    with pytest.raises(DicomError) as e:
        isolated(Hostile(), tmp_path / "hang", timeout_s=2)
    assert e.value.kind == Failure.TIMEOUT


def test_no_workers_runs_every_job_in_this_process_in_order() -> None:
    """workers=0 (trusted files, tests): each job's result reaches `done` in item order,
    in this process, and nothing is reported failed."""
    done, failed = [], []
    run_guarded([3, 1, 2], lambda n: (n * 2, os.getpid()), lambda i, r: done.append((i, r)),
                lambda *a: failed.append(a), workers=0)  # fmt: skip
    assert done == [(3, (6, os.getpid())), (1, (2, os.getpid())), (2, (4, os.getpid()))]
    assert failed == []


# ---------------------------------------------------------------- real codec failures


def test_an_rle_panic_is_a_typed_decode_error_in_process_and_in_a_batch(tmp_path: Path) -> None:
    bad = rle_panic(tmp_path / "drop" / "panic.dcm")
    good(tmp_path / "drop" / "fine.dcm", "rle")
    with pytest.raises(DicomError) as e:
        render(bad)
    assert e.value.kind == Failure.DECODE_ERROR
    assert "codec crashed (PanicException: index out of bounds" in e.value.reason
    rows = {r.path: r for r in thumbnail_folder(tmp_path / "drop", tmp_path / "t", workers=1)}
    assert rows["fine.dcm"].status == "ok"
    assert rows["panic.dcm"].error_kind == "decode_error"
    assert "PanicException" in rows["panic.dcm"].error


def test_a_gdcm_abort_costs_one_row_even_with_one_worker(tmp_path: Path) -> None:
    gdcm_abort(tmp_path / "drop" / "abort.dcm")
    good(tmp_path / "drop" / "fine.dcm", "jpeg-lossy")
    rows = {r.path: r for r in thumbnail_folder(tmp_path / "drop", tmp_path / "t", workers=1)}
    assert rows["fine.dcm"].status == "ok"
    assert rows["abort.dcm"].error_kind == "decode_error"
    assert rows["abort.dcm"].error.startswith(GDCM_SAID)  # its last words, one line
    assert "\n" not in rows["abort.dcm"].error


@pytest.mark.parametrize("make", [gdcm_abort, rle_panic], ids=["gdcm-abort", "rle-panic"])
def test_single_file_commands_say_codec_crashed_in_one_line(tmp_path: Path, make) -> None:
    bad = make(tmp_path / "bad.dcm")
    out = mammo("thumbnail", str(bad), str(tmp_path / "bad.png"))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"mammo thumbnail: {bad}: decode_error: ")
    assert "codec crashed" in out.stderr
    if make is gdcm_abort:
        assert GDCM_SAID in out.stderr
    out = mammo("inspect", str(bad))
    assert out.returncode == 1 and out.stderr == ""
    assert "codec crashed" in out.stdout


# ---------------------------------------------------------------- header sanity


@pytest.mark.parametrize(
    ("keyword", "vr", "value", "kind", "says"),
    [
        ("NumberOfFrames", "IS", "1000000", "too_large", "NumberOfFrames 1000000 is over"),
        ("NumberOfFrames", "IS", "99999999", "too_large", "MAMMO_MAX_FRAMES"),
        ("NumberOfFrames", "IS", "1e9", "too_large", "NumberOfFrames 1000000000"),
        ("PixelRepresentation", "US", 2, "invalid_header", "PixelRepresentation 2"),
        ("RescaleSlope", "DS", "0", "invalid_header", "RescaleSlope 0"),
        ("RescaleSlope", "DS", "nan", "invalid_header", "RescaleSlope nan"),
        ("RescaleSlope", "DS", "inf", "invalid_header", "RescaleSlope inf"),
        ("RescaleIntercept", "DS", "nan", "invalid_header", "RescaleIntercept nan"),
        ("RescaleIntercept", "DS", "1e308", "invalid_header", "nonsense"),
    ],
)
@pytest.mark.parametrize("ts", ["explicit", "rle"])
def test_nonsense_headers_are_refused_before_decoding(
    tmp_path: Path, keyword: str, vr: str, value: str | int, kind: str, says: str, ts: str
) -> None:
    path = set_raw(good(tmp_path / "f.dcm", ts), keyword, vr, value)
    for pixels in (True, False):  # the index (header only) refuses it too
        with pytest.raises(DicomError) as e:
            open_dicom(path, pixels=pixels)
        assert (e.value.kind.value, says in e.value.reason) == (kind, True), e.value.reason
    rows = index_file(path, tmp_path, "d1")
    assert len(rows) == 1 and rows[0].error_kind == kind  # not a million rows


def test_a_huge_image_claim_is_refused_before_any_allocation(tmp_path: Path) -> None:
    """A small RLE file declaring 65535 x 65535 (8 GiB of pixels)."""
    with pytest.raises(DicomError) as e:
        render(huge_claim(tmp_path / "f.dcm"))
    assert e.value.kind == Failure.TOO_LARGE
    assert "65535 x 65535 pixels of 2 bytes is 8,192 MiB per frame" in e.value.reason
    assert "MAMMO_MAX_FRAME_MB" in e.value.reason


def test_limits_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    path = set_raw(good(tmp_path / "f.dcm"), "NumberOfFrames", "IS", "1")
    monkeypatch.setenv("MAMMO_MAX_FRAME_MB", "0.001")
    with pytest.raises(DicomError) as e:
        open_dicom(path)
    assert e.value.kind == Failure.TOO_LARGE
    monkeypatch.setenv("MAMMO_MAX_FRAME_MB", "1")
    assert open_dicom(path).facts.rows == 40


def test_frames_beyond_the_compressed_fragments_are_an_invalid_header(tmp_path: Path) -> None:
    path = set_raw(good(tmp_path / "f.dcm", "j2k"), "NumberOfFrames", "IS", "40")
    with pytest.raises(DicomError) as e:
        open_dicom(path)
    assert e.value.kind == Failure.INVALID_HEADER
    assert "NumberOfFrames 40, but the compressed Pixel Data holds 1 fragment" in e.value.reason


# ---------------------------------------------------------------- warnings are data


def test_a_file_read_with_warnings_renders_with_them_recorded(tmp_path: Path) -> None:
    path = implicit_claiming_explicit(tmp_path / "drop" / "f.dcm")
    with capture() as notes:
        render(path)
    assert notes.items == [SAID]
    (row,) = thumbnail_folder(tmp_path / "drop", tmp_path / "t", workers=1)
    assert (row.status, row.warnings) == ("ok", SAID)
    out = mammo("thumbnails", "-q", str(tmp_path / "drop"), str(tmp_path / "t2"))
    assert out.returncode == 0 and out.stderr == ""  # it was printed as "mammo: Expected ..."
    assert "1 rendered with warnings" in out.stdout
    (saved,) = csv.DictReader((tmp_path / "t2" / "thumbnails.csv").open())
    assert saved["warnings"] == SAID
    out = mammo("thumbnail", str(path), str(tmp_path / "one.png"))
    assert out.returncode == 0 and out.stderr == ""
    assert f"(rendered with warnings: {SAID})" in out.stdout
    out = mammo("inspect", str(path))
    assert out.returncode == 0 and out.stderr == ""
    assert json.loads(out.stdout)["warnings"] == [SAID]


def test_a_clean_file_has_no_warnings(tmp_path: Path) -> None:
    for ts in ("explicit", "j2k", "rle", "jpeg-lossless", "jpeg-lossy"):
        good(tmp_path / "drop" / f"{ts}.dcm", ts)
    rows = thumbnail_folder(tmp_path / "drop", tmp_path / "t", workers=1)
    assert [(r.status, r.warnings) for r in rows] == [("ok", None)] * 5


def test_codec_chatter_never_reaches_stderr(tmp_path: Path) -> None:
    """A corrupt JPEG 2000 codestream: pydicom logs a traceback, the codec a message."""
    path = j2k_header_smashed(tmp_path / "f.dcm")
    out = mammo("thumbnail", str(path), str(tmp_path / "x.png"))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"mammo thumbnail: {path}: decode_error: ")


# ---------------------------------------------------------------- side effects


def test_single_file_commands_create_nothing_in_the_working_folder(tmp_path: Path) -> None:
    path = good(tmp_path / "in" / "f.dcm")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"MAMMO_HOME": "", "MAMMO_PATIENT_SALT": ""}
    assert mammo("thumbnail", str(path), str(tmp_path / "x.png"), cwd=cwd, env=env).returncode == 0
    assert mammo("inspect", str(path), cwd=cwd, env=env).returncode == 0
    out = mammo("thumbnails", "-q", str(tmp_path / "in"), str(tmp_path / "o"), cwd=cwd, env=env)
    assert out.returncode == 0
    assert list(cwd.iterdir()) == []  # no ./data/.patient_salt


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        kids |= {int(k) for k in text.split()}
    return kids


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_killing_a_batch_leaves_no_orphan_workers(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    for i in range(400):
        good(drop / f"f{i:03d}.dcm", "j2k")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mammo_dagster.cli",
            "thumbnails",
            "-q",
            str(drop),
            str(tmp_path / "o"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kids: set[int] = set()
    deadline = time.monotonic() + 120
    while len(kids) < 3 and proc.poll() is None and time.monotonic() < deadline:
        kids |= _children(proc.pid)  # two workers and the resource tracker
        time.sleep(0.05)
    assert proc.poll() is None and len(kids) >= 3, "the batch ended before it could be killed"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [k for k in kids if _alive(k)] == []


def test_the_index_keeps_warnings_and_refuses_absurd_frame_counts(tmp_path: Path) -> None:
    from mammo_dagster.core.home import Home
    from mammo_dagster.core.imaging.index import ingest_drop

    home = Home(tmp_path / "home")
    drop = home.drop("d1")
    implicit_claiming_explicit(drop / "warned.dcm")
    set_raw(good(drop / "frames.dcm"), "NumberOfFrames", "IS", "99999999")
    rows = {r.path: r for r in ingest_drop(home, "d1", workers=1)}
    assert len(rows) == 2  # one row each: not 99,999,999 frames
    assert (rows["warned.dcm"].status, rows["warned.dcm"].warnings) == ("ok", SAID)
    assert rows["frames.dcm"].error_kind == "too_large"
    from mammo_dagster.core.store.db import Store

    stored = Store(home.db).query("SELECT path, warnings FROM dicom_index ORDER BY path")
    assert stored == [("frames.dcm", None), ("warned.dcm", SAID)]


def test_a_pixel_attribute_read_through_a_swapped_vr_is_an_invalid_header(tmp_path: Path) -> None:
    """PixelRepresentation written with VR AT: pydicom reads an empty list, which the
    display code met as `int(MultiValue)` (a TypeError rendered as 'cannot render')."""
    path = good(tmp_path / "f.dcm")
    data = bytearray(path.read_bytes())
    at = data.index(b"\x28\x00\x03\x01US")
    data[at + 4 : at + 6] = b"AT"
    path.write_bytes(bytes(data))
    for pixels in (True, False):
        with pytest.raises(DicomError) as e:
            open_dicom(path, pixels=pixels)
        assert e.value.kind == Failure.INVALID_HEADER
        assert e.value.reason == "PixelRepresentation is not one whole number: []"


FAULTS_AFTER_INIT = """
import resource
import numpy as np
from mammo_dagster.core.imaging.guard import init_worker
init_worker()
for _ in range(2):  # a frame's buffer and a smaller one after it, as a render makes
    a = np.ones(8 << 20, np.uint16); b = np.ones(1 << 20, np.uint16); del a, b
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    a = np.ones(8 << 20, np.uint16); b = np.ones(1 << 20, np.uint16); del a, b
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_worker_keeps_freed_frame_buffers_instead_of_faulting_them_back() -> None:
    """A decoding worker reuses the memory of the last frame for the next: five more
    frames' buffers (16 MB and 2 MB) fault fewer pages than one 2 MB buffer holds (512),
    where glibc, with only its mmap threshold raised, trimmed the freed memory back to the
    OS and faulted ~1,000 pages back in per frame."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FAULTS_AFTER_INIT], capture_output=True,
                         text=True, check=True, env=env)  # fmt: skip
    assert int(out.stdout.strip()) < 512

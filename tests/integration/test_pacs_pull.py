"""Pulling MG studies from a real Orthanc (DICOMweb plugin) into drops: counts, the
cursor, a broken instance, a server lost mid-pull, wrong credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from mammo_dagster.cli import main
from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.batch import FETCH_ERRORS, READY_MARKER, iter_files
from mammo_dagster.core.imaging.index import ingest_drop
from mammo_dagster.core.pacs.pull import plan_pull, pull
from mammo_dagster.core.pacs.source import PacsError, PacsSource
from mammo_dagster.core.store.db import Store
from mammo_dagster.core.synthetic.archive import generate_archive
from tests.factory import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, make_file
from tests.orthanc import Orthanc, for_mammo


@pytest.fixture
def orthanc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orthanc]:
    """A fresh Orthanc; the environment points `mammo pacs` at it (basic auth)."""
    with for_mammo(tmp_path / "orthanc", monkeypatch) as server:
        yield server


def upload_archive(server: Orthanc, folder: Path, studies: int, seed: int) -> dict[str, str]:
    """Synthetic studies uploaded over REST; returns SOP UID -> Orthanc id."""
    generate_archive(folder, studies=studies, seed=seed, size="small",
                     ground_truth=folder.parent / f"{folder.name}.csv")  # fmt: skip
    ids = {}
    for f in iter_files(folder):
        ids[str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)] = server.upload(f)
    return ids


def drop_sops(home: Home, drop: str) -> list[str]:
    folder = home.drop(drop)
    return sorted(
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in iter_files(folder)
    )


def test_pull_fetches_new_studies_once_and_prints_counts(
    orthanc: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = Home.from_env()
    first = upload_archive(orthanc, tmp_path / "a", studies=3, seed=1)

    assert main(["pacs", "pull", "-q"]) == 0
    out = capsys.readouterr().out
    drops = sorted(p.name for p in home.incoming.iterdir())
    assert len(drops) == 1 and drops[0].startswith("pacs-") and drops[0].endswith("-001")
    assert f"3 studies, {len(first)} instances fetched into drop {drops[0]}" in out
    assert drop_sops(home, drops[0]) == sorted(first)
    assert (home.drop(drops[0]) / READY_MARKER).exists()

    assert main(["pacs", "pull", "-q"]) == 0  # nothing new: no drop, nothing fetched
    assert "0 studies, 0 instances fetched" in capsys.readouterr().out
    assert len(list(home.incoming.iterdir())) == 1

    second = upload_archive(orthanc, tmp_path / "b", studies=2, seed=2)
    assert main(["pacs", "pull", "-q", "--drop", "later"]) == 0
    assert f"2 studies, {len(second)} instances fetched into drop later" in (
        capsys.readouterr().out
    )
    assert drop_sops(home, "later") == sorted(second)

    rows = ingest_drop(home, drops[0], workers=1) + ingest_drop(home, "later", workers=1)
    assert sorted(r.sop_instance_uid for r in rows if r.status == "ok") == sorted([*first, *second])
    # the drop holds UIDs for names, never a patient's name or ID
    for f in iter_files(home.incoming):
        assert FAKE_PATIENT_ID not in str(f) and "DOE" not in str(f)


def test_since_selects_by_study_date(orthanc: Orthanc, tmp_path: Path) -> None:
    old = make_file(tmp_path / "o.dcm", _pixels(), tag="o", header_kw={"study_date": "20190101"})
    new = make_file(tmp_path / "n.dcm", _pixels(), tag="n", header_kw={"study_date": "20240101"})
    orthanc.upload(old)
    orthanc.upload(new)
    home = Home.from_env()
    report = pull(home, PacsSource.from_env(), since="20230101", drop="recent")
    assert (report.studies, report.instances) == (1, 1)
    assert drop_sops(home, "recent") == [str(pydicom.dcmread(new).SOPInstanceUID)]


def _pixels():
    import numpy as np

    return (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 7) % 4000


def test_a_broken_and_a_vanished_instance_become_error_rows(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    ids = upload_archive(orthanc, tmp_path / "a", studies=2, seed=4)
    sops = sorted(ids)
    broken, vanished = sops[0], sops[1]
    stored = orthanc.attachment_file(ids[broken])  # Orthanc serves what it stored
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])
    home = Home.from_env()
    store = Store(home.db)
    store.migrate()
    source = PacsSource.from_env()
    plan = plan_pull(source, store)
    requests.delete(f"{orthanc.rest}/instances/{ids[vanished]}", auth=orthanc.auth)

    report = pull(home, source, plan=plan, drop="d", store=store)

    rows = {r.path: r for r in ingest_drop(home, "d", workers=1, store=store)}
    by_sop = {p.rsplit("/", 1)[1][:-4]: r for p, r in rows.items()}
    assert by_sop[vanished].status == "error" and by_sop[vanished].error_kind == "http_404"
    assert by_sop[broken].status == "error"
    assert by_sop[broken].error_kind in {"truncated", "http_500", "not_dicom", "no_pixel_data"}
    assert all(r.status == "ok" for s, r in by_sop.items() if s not in (broken, vanished))
    assert report.failed >= 1 and (home.drop("d") / FETCH_ERRORS).exists()


def test_orthanc_stopped_mid_pull_then_rerun_completes_without_duplicates(
    orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mammo_dagster.core.pacs import pull as pacs

    ids = upload_archive(orthanc, tmp_path / "a", studies=3, seed=5)
    home = Home.from_env()
    source = PacsSource.from_env()
    real_fetch, calls = pacs.fetch_instance, []

    def fetch_then_lose_the_server(*args, **kw):
        calls.append(1)
        if len(calls) == 6:  # five instances are in; the server goes away before the sixth
            orthanc.stop()
        return real_fetch(*args, **kw)

    monkeypatch.setattr(pacs, "fetch_instance", fetch_then_lose_the_server)
    with pytest.raises(PacsError, match="rerun to resume"):
        pull(home, source, workers=1, retry=pacs.Retry(attempts=2, base_s=0.1))
    monkeypatch.setattr(pacs, "fetch_instance", real_fetch)
    (drop,) = [p.name for p in home.incoming.iterdir()]
    assert not (home.drop(drop) / READY_MARKER).exists()  # the drop is not complete
    assert len(list(iter_files(home.drop(drop)))) == 5

    orthanc.start()
    report = pull(home, source, workers=2)
    assert report.drop == drop and report.resumed
    assert (home.drop(drop) / READY_MARKER).exists()
    assert drop_sops(home, drop) == sorted(ids)  # each instance once
    rows = ingest_drop(home, drop, workers=1)
    assert sorted(r.sop_instance_uid for r in rows) == sorted(ids)
    assert {r.status for r in rows} == {"ok"}
    assert pull(home, source).drop is None  # and then nothing is left to fetch


def test_wrong_credentials_fail_clearly_and_leave_no_drop(
    orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    upload_archive(orthanc, tmp_path / "a", studies=1, seed=6)
    monkeypatch.setenv("MAMMO_DICOMWEB_PASSWORD", "not-the-password")
    assert main(["pacs", "pull", "-q"]) == 1
    err = capsys.readouterr().err
    assert "refused the credentials (HTTP 401" in err
    assert "not-the-password" not in err
    assert not Home.from_env().incoming.exists()


def test_patient_identifiers_never_reach_the_output(
    orthanc: Orthanc, tmp_path: Path, capsys, caplog
) -> None:
    orthanc.upload(make_file(tmp_path / "x.dcm", _pixels(), tag="x"))
    with caplog.at_level("DEBUG"):
        assert main(["pacs", "pull"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert FAKE_PATIENT_ID not in text and FAKE_PATIENT_NAME not in text

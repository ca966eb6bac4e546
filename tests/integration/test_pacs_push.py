"""Write-back: Key Object Selection + Comprehensive SR per flagged study, to a folder and
to a real Orthanc; deterministic UIDs, reruns that send nothing, a new model version
that supersedes, studies not fully classified left alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mammo_dagster.cli import main
from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.batch import iter_files
from mammo_dagster.core.imaging.index import ingest_drop
from mammo_dagster.core.model.modelstore import CurrentModel, ModelCard, write_current
from mammo_dagster.core.pacs.documents import (
    COMPREHENSIVE_SR_CLASS,
    KOS_CLASS,
    REJECTION_TITLES,
    object_uids,
    referenced_sops,
)
from mammo_dagster.core.pacs.pull import pull
from mammo_dagster.core.pacs.push import push
from mammo_dagster.core.pacs.source import PacsSource
from mammo_dagster.core.store.db import Store
from mammo_dagster.core.synthetic.archive import generate_archive
from tests.orthanc import Orthanc, for_mammo

THRESHOLDS = {"biopsy": 0.5, "mag": 0.6}


def use_model(home: Home, version: str, probs) -> dict[str, tuple[float, float]]:
    """Make `version` the current model and give every indexed frame its predictions:
    `probs(i, sop)` -> (prob_biopsy, prob_mag), flagged at THRESHOLDS (what
    `image_predictions` writes). Returns sop -> probs."""
    folder = home.models / version
    folder.mkdir(parents=True)
    ModelCard(input_size=64, thresholds=THRESHOLDS).write(folder)
    write_current(home.models, CurrentModel(version, 0, 0))
    store = Store(home.db)
    frames = store.query(
        "SELECT drop_name, sop_instance_uid, frame FROM indexed_frames ORDER BY 2, 3"
    )
    out = {}
    rows = []
    for i, (drop, sop, frame) in enumerate(frames):
        pb, pm = probs(i, sop)
        out[sop] = (pb, pm)
        rows.append([drop, sop, frame, version, pb, pm, pb >= 0.5, pm >= 0.6])
    store.run(
        lambda c: c.executemany(
            "INSERT INTO image_predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, now())", rows
        )
    )
    return out


def studies_of(home: Home) -> dict[str, list[str]]:
    rows = Store(home.db).query("SELECT study_instance_uid, sop_instance_uid FROM indexed_frames")
    out: dict[str, list[str]] = {}
    for study, sop in rows:
        out.setdefault(study, []).append(sop)
    return out


@pytest.fixture
def folder_home(tmp_path: Path) -> Home:
    """Four synthetic studies in an indexed folder drop."""
    home = Home.from_env()
    generate_archive(home.drop("d1"), studies=4, seed=7, size="small",
                     ground_truth=tmp_path / "gt.csv")  # fmt: skip
    ingest_drop(home, "d1", workers=1)
    return home


def _first_image_flagged(studies: dict[str, list[str]], flag_studies: set[str]):
    """Probabilities where, in each study of `flag_studies`, its first image is a
    biopsy tool (0.9) and its second a mag view (0.7); all else low."""
    first = {sorted(sops)[0] for s, sops in studies.items() if s in flag_studies}
    second = {sorted(sops)[1] for s, sops in studies.items() if s in flag_studies}

    def probs(i: int, sop: str) -> tuple[float, float]:
        return (0.9 if sop in first else 0.1, 0.7 if sop in second else 0.2)

    return probs


def test_dry_run_writes_an_of_interest_kos_and_an_sr_per_flagged_study(
    folder_home: Home, tmp_path: Path, capsys
) -> None:
    home = folder_home
    studies = studies_of(home)
    flagged, quiet, unclassified = sorted(studies)[:2], sorted(studies)[2], sorted(studies)[3]
    probs = use_model(home, "m0001", _first_image_flagged(studies, set(flagged) | {unclassified}))
    # one image of a flagged-looking study was never classified: nothing about that study
    Store(home.db).run(lambda c: c.execute(
        "DELETE FROM image_predictions WHERE sop_instance_uid = ?",
        [sorted(studies[unclassified])[-1]],
    ))  # fmt: skip

    out = tmp_path / "objects"
    assert main(["pacs", "push", "-q", "--dry-run", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 studies (4 documents) written to" in printed
    assert "1 not flagged" in printed and "1 not fully classified" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(flagged)
    assert not (out / quiet).exists() and not (out / unclassified).exists()

    for study in flagged:
        kos = pydicom.dcmread(out / study / "kos-m0001.dcm")
        sr = pydicom.dcmread(out / study / "sr-m0001.dcm")
        uids = object_uids(study, "m0001")
        assert (kos.SOPClassUID, kos.SOPInstanceUID) == (KOS_CLASS, uids["kos"])
        assert (sr.SOPClassUID, sr.SOPInstanceUID) == (COMPREHENSIVE_SR_CLASS, uids["sr"])
        source = pydicom.dcmread(home.drop("d1") / _path_of(home, studies[study][0]),
                                 stop_before_pixels=True)  # fmt: skip
        for doc in (kos, sr):
            assert doc.StudyInstanceUID == study
            assert doc.PatientID == source.PatientID != ""  # copied, as the standard requires
            assert doc.PatientName == source.PatientName
            assert source.PatientID not in printed  # and never printed
        title = kos.ConceptNameCodeSequence[0]
        assert (title.CodeValue, title.CodingSchemeDesignator) == ("113000", "DCM")
        assert title.CodeMeaning == "Of Interest"
        first, second = sorted(studies[study])[:2]
        assert referenced_sops(kos) == {first, second}  # exactly the flagged images
        text = _texts(kos)
        assert any("biopsy tool/marker (1 image)" in t and "m0001" in t for t in text)
        assert any("magnification view (1 image)" in t for t in text)
        assert referenced_sops(sr) == set(studies[study])  # every image, with its numbers
        nums = _nums(sr)
        assert nums[("THR-BIOPSY", None)] == 0.5 and nums[("THR-MAG", None)] == 0.6
        for sop in studies[study]:
            assert nums[("P-BIOPSY", sop)] == pytest.approx(probs[sop][0])
            assert nums[("P-MAG", sop)] == pytest.approx(probs[sop][1])
        assert "m0001" in _texts(sr)

    # deterministic: a rerun writes nothing, the files are unchanged
    before = {p: p.read_bytes() for p in out.rglob("*.dcm")}
    assert main(["pacs", "push", "-q", "--dry-run", str(out)]) == 0
    assert "0 studies (0 documents)" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*.dcm")} == before


def test_no_document_ever_carries_a_rejection_title(folder_home: Home, tmp_path: Path) -> None:
    home = folder_home
    use_model(home, "m0001", lambda i, sop: (0.95, 0.95))  # every image flagged for both
    out = tmp_path / "objects"
    report = push(home, folder=out)
    assert report.sent == 4
    codes = set()
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        codes |= _all_codes(ds)
        if ds.SOPClassUID == KOS_CLASS:
            assert ds.ConceptNameCodeSequence[0].CodeValue == "113000"
    assert codes and not codes & REJECTION_TITLES  # 113001/113037/113038/113039 nowhere
    assert "113000" in codes


def _path_of(home: Home, sop: str) -> str:
    row = Store(home.db).one("SELECT path FROM indexed_frames WHERE sop_instance_uid = ?", [sop])
    return row[0]


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _texts(ds) -> list[str]:
    return [str(i.TextValue) for i in _walk(ds.ContentSequence) if "TextValue" in i]


def _nums(ds) -> dict[tuple[str, str | None], float]:
    """(code value, the SOP UID of the image container it sits in) -> numeric value."""
    out = {}

    def visit(items, sop):
        for item in items:
            refs = [
                str(r.ReferencedSOPInstanceUID)
                for c in item.get("ContentSequence", [])
                for r in c.get("ReferencedSOPSequence", [])
            ]
            if "MeasuredValueSequence" in item:
                code = item.ConceptNameCodeSequence[0].CodeValue
                out[(code, sop)] = float(item.MeasuredValueSequence[0].NumericValue)
            visit(item.get("ContentSequence", []), refs[0] if refs else sop)

    visit(ds.ContentSequence, None)
    return out


def _all_codes(ds) -> set[str]:
    codes = set()
    for elem in ds.iterall():
        if elem.keyword == "CodeValue":
            codes.add(str(elem.value))
    return codes


# -- against a real Orthanc -------------------------------------------------------------


@pytest.fixture
def orthanc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orthanc]:
    with for_mammo(tmp_path / "orthanc", monkeypatch) as server:
        yield server


def _documents(server: Orthanc, study: str) -> dict[str, pydicom.Dataset]:
    """SOP UID -> dataset of the SR-family instances Orthanc holds for `study` (WADO-RS)."""
    client = PacsSource.from_env().client()
    found = client.search_for_instances(study_instance_uid=study)
    out = {}
    for item in found:
        cls = item["00080016"]["Value"][0]
        if cls in (KOS_CLASS, COMPREHENSIVE_SR_CLASS):
            sop, series = item["00080018"]["Value"][0], item["0020000E"]["Value"][0]
            out[sop] = client.retrieve_instance(study, series, sop)
    return out


def test_pull_predict_push_to_orthanc_rerun_and_supersede(
    orthanc: Orthanc, tmp_path: Path, capsys
) -> None:
    src = tmp_path / "archive"
    generate_archive(src, studies=3, seed=8, size="small", ground_truth=tmp_path / "gt.csv")
    for f in iter_files(src):
        orthanc.upload(f)
    home = Home.from_env()
    report = pull(home, PacsSource.from_env())
    ingest_drop(home, report.drop, workers=1)
    studies = studies_of(home)
    flagged = sorted(studies)[0]
    use_model(home, "m0001", _first_image_flagged(studies, {flagged}))

    assert main(["pacs", "push", "-q"]) == 0
    assert "1 study (2 documents) sent to" in capsys.readouterr().out
    docs = _documents(orthanc, flagged)
    uids = object_uids(flagged, "m0001")
    assert set(docs) == {uids["kos"], uids["sr"]}
    kos, sr = docs[uids["kos"]], docs[uids["sr"]]
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"
    assert referenced_sops(kos) == set(sorted(studies[flagged])[:2])
    assert referenced_sops(sr) == set(studies[flagged])
    source = pydicom.dcmread(next(home.drop(report.drop).rglob(f"{flagged}/*/*.dcm")))
    assert kos.PatientID == source.PatientID and kos.PatientName == source.PatientName
    for other in sorted(studies)[1:]:
        assert _documents(orthanc, other) == {}  # nothing about unflagged studies
    instances = len(orthanc.get("/instances"))

    # a rerun sends nothing new
    assert main(["pacs", "push", "-q"]) == 0
    assert "0 studies (0 documents) sent" in capsys.readouterr().out
    assert len(orthanc.get("/instances")) == instances

    # a later pull does not bring our own documents back as images
    assert pull(home, PacsSource.from_env()).drop is None

    # a new model version supersedes: new documents, the SR names its predecessor
    use_model(home, "m0002", _first_image_flagged(studies, {flagged}))
    assert main(["pacs", "push", "-q"]) == 0
    docs = _documents(orthanc, flagged)
    new = object_uids(flagged, "m0002")
    assert set(docs) == {uids["kos"], uids["sr"], new["kos"], new["sr"]}
    predecessors = {
        str(ref.ReferencedSOPInstanceUID)
        for st in docs[new["sr"]].PredecessorDocumentsSequence
        for se in st.ReferencedSeriesSequence
        for ref in se.ReferencedSOPSequence
    }
    assert predecessors == {uids["sr"]}
    assert len(orthanc.get("/instances")) == instances + 2

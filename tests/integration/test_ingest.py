"""The ingest assets materialized in-process on a small synthetic drop with bad files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mammo_dagster.core.imaging.index import index_file, save_index
from mammo_dagster.core.synthetic.archive import generate_archive
from mammo_dagster.defs.ingest import dicom_index, failure_rate, thumbnails
from mammo_dagster.defs.resources import MammoHome, StoreResource
from tests.factory import FAKE_PATIENT_ID


def test_ingest_a_drop(tmp_path: Path, drops_instance) -> None:
    home = tmp_path / "home"
    drop = home / "incoming" / "d1"
    images = generate_archive(
        drop, studies=2, seed=4, size="small", ground_truth=tmp_path / "truth.csv"
    )
    (drop / "notes.txt").write_text("scanner log")
    (drop / "empty").write_bytes(b"")
    instance = drops_instance("d1")
    store = StoreResource(path=str(home / "mammo.duckdb"))
    result = dg.materialize(
        [dicom_index, thumbnails],
        partition_key="d1",
        instance=instance,
        resources={"paths": MammoHome(home=str(home)), "store": store},
        run_config={"ops": {"thumbnails": {"config": {"size": 64, "workers": 1}}}},
    )
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["unique_sop_uids"].passed and checks["every_frame_has_a_thumbnail"].passed
    assert checks["failure_rate"].passed  # 2 junk files among a dozen images
    assert checks["failure_rate"].severity == dg.AssetCheckSeverity.WARN
    assert checks["has_new_frames"].passed

    index_md = result.asset_materializations_for_node("dicom_index")[0].metadata
    assert index_md["frames"].value == len(images)
    assert index_md["failed"].value == 2
    assert "not_dicom" in index_md["failures"].value and "empty_file" in index_md["failures"].value
    thumbs_md = result.asset_materializations_for_node("thumbnails")[0].metadata
    assert thumbs_md["rendered"].value == len(images)
    assert thumbs_md["contact_sheet"].value.startswith("![contact sheet](data:image/png;base64,")
    assert len(list((home / "thumbnails").glob("*.png"))) == len(images)
    rows = store.store().run(
        lambda c: c.execute(
            "SELECT status, count(*) FROM dicom_index GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    )
    assert rows == [("error", 2), ("ok", len(images))]
    dump = store.store().run(lambda c: str(c.execute("SELECT * FROM dicom_index").fetchall()))
    assert FAKE_PATIENT_ID not in dump and images[0].patient_id not in dump

    junk = home / "incoming" / "junk"  # a drop that is mostly not DICOM
    for i in range(3):
        (junk / f"f{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (junk / f"f{i}.txt").write_text("x")
    rows = [r for f in sorted(junk.iterdir()) for r in index_file(f, junk, "junk")]
    save_index(store.store(), "junk", rows)
    warned = failure_rate(store.store())
    assert not warned.passed and warned.metadata["drops_over_threshold"].value == {"junk": 1.0}
    assert warned.description == "more than 20% of the files failed in junk (100%)"


def test_a_duplicate_only_drop_warns_and_indexes_nothing_new(
    tmp_path: Path, drops_instance
) -> None:
    import shutil

    home = tmp_path / "home"
    first = home / "incoming" / "d1"
    images = generate_archive(
        first, studies=1, seed=4, size="small", ground_truth=tmp_path / "truth.csv"
    )
    shutil.copytree(first, home / "incoming" / "again")  # the same images re-sent
    instance = drops_instance("d1", "again")
    resources = {"paths": MammoHome(home=str(home)), "store": StoreResource(
        path=str(home / "mammo.duckdb"))}  # fmt: skip
    checks = {}
    for drop in ("d1", "again"):
        result = dg.materialize(
            [dicom_index], partition_key=drop, instance=instance, resources=resources
        )
        assert result.success  # a warning, never a failed run
        checks[drop] = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["d1"]["has_new_frames"].passed
    warned = checks["again"]["has_new_frames"]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    n = len(images)
    assert warned.metadata["duplicates"].value == n and warned.metadata["new_frames"].value == 0
    assert warned.description == f"nothing new in drop again: {n} duplicate frames, 0 bad files"

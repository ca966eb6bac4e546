"""The PACS in Dagster: `pacs_sensor` (off by default) makes drops of new studies that
`pacs_ingest_drop` retrieves and ingests; `pacs_flags` writes flags back, with its check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.batch import iter_files
from mammo_dagster.core.store.db import Store
from mammo_dagster.core.synthetic.archive import generate_archive
from mammo_dagster.defs.ingest import dicom_index, thumbnails
from mammo_dagster.defs.pacs import pacs_flags, pacs_sensor, pacs_studies
from mammo_dagster.defs.resources import PacsResource, resources_for
from tests.integration.test_pacs_push import _first_image_flagged, studies_of, use_model
from tests.orthanc import Orthanc, for_mammo

RUN_CONFIG = {"ops": {"dicom_index": {"config": {"workers": 1}},
                      "thumbnails": {"config": {"size": 64, "workers": 1}}}}  # fmt: skip


def resources(home: Home, url: str = "") -> dict:
    """The synthetic studies are years old: no lookback window."""
    return resources_for(home) | {"pacs": PacsResource(url=url, lookback_days=0)}


def tick(home: Home, instance: dg.DagsterInstance, url: str = ""):
    context = dg.build_sensor_context(instance=instance, resources=resources(home, url))
    result = pacs_sensor(context)
    for request in getattr(result, "dynamic_partitions_requests", None) or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_the_lookback_window_bounds_the_search() -> None:
    from datetime import date, timedelta

    week = (date.today() - timedelta(days=7)).strftime("%Y%m%d")
    assert PacsResource().since == week  # the default: a week of StudyDates
    assert PacsResource(lookback_days=0).since is None


def test_the_sensor_is_off_by_default_and_skips_without_a_source(monkeypatch) -> None:
    monkeypatch.delenv("MAMMO_DICOMWEB_URL", raising=False)
    assert pacs_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    result = tick(Home.from_env(), dg.DagsterInstance.ephemeral())
    assert isinstance(result, dg.SkipReason) and "MAMMO_DICOMWEB_URL" in result.skip_message


@pytest.fixture
def orthanc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orthanc]:
    with for_mammo(tmp_path / "orthanc", monkeypatch, url=False) as server:
        yield server


def upload(server: Orthanc, folder: Path, studies: int, seed: int) -> None:
    generate_archive(folder, studies=studies, seed=seed, size="small",
                     ground_truth=folder.parent / f"{folder.name}.csv")  # fmt: skip
    for f in iter_files(folder):
        server.upload(f)


def ingest(
    home: Home, instance: dg.DagsterInstance, drop: str, url: str
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [pacs_studies, dicom_index, thumbnails], partition_key=drop, instance=instance,
        resources=resources(home, url), run_config=RUN_CONFIG,
    )  # fmt: skip


def test_sensor_finds_exactly_the_new_studies_and_the_job_ingests_them(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    home, instance = Home.from_env(), dg.DagsterInstance.ephemeral()
    upload(orthanc, tmp_path / "a", studies=2, seed=11)

    first = tick(home, instance, orthanc.url)
    assert not isinstance(first, dg.SkipReason), first.skip_message
    (request,) = first.run_requests
    drop = request.partition_key
    assert drop.startswith("pacs-") and drop.endswith("-001") and request.run_key == drop
    # a second tick before the run: the drop is reserved, not made twice
    assert isinstance(tick(home, instance, orthanc.url), dg.SkipReason)

    result = ingest(home, instance, drop, orthanc.url)
    assert result.success
    meta = result.asset_materializations_for_node("pacs_studies")[0].metadata
    assert meta["studies"].value == 2 and meta["failed"].value == 0
    first_studies = set(studies_of(home))
    assert len(first_studies) == 2

    again = tick(home, instance, orthanc.url)
    assert isinstance(again, dg.SkipReason) and "no new MG instances" in again.skip_message

    upload(orthanc, tmp_path / "b", studies=1, seed=12)
    third = tick(home, instance, orthanc.url)
    (request,) = third.run_requests
    assert request.partition_key.endswith("-002")
    assert ingest(home, instance, request.partition_key, orthanc.url).success
    new = Store(home.db).query(
        "SELECT DISTINCT study_instance_uid FROM dicom_index WHERE drop_name = ?",
        [request.partition_key],
    )
    assert len(new) == 1 and new[0][0] not in first_studies


def test_pacs_flags_sends_once_and_reports_with_its_check(orthanc: Orthanc, tmp_path: Path) -> None:
    home, instance = Home.from_env(), dg.DagsterInstance.ephemeral()
    upload(orthanc, tmp_path / "a", studies=2, seed=13)
    (request,) = tick(home, instance, orthanc.url).run_requests
    assert ingest(home, instance, request.partition_key, orthanc.url).success
    studies = studies_of(home)
    use_model(home, "m0001", _first_image_flagged(studies, {sorted(studies)[0]}))

    def materialize() -> dict:
        result = dg.materialize([pacs_flags], instance=instance,
                                resources=resources(home, orthanc.url))  # fmt: skip
        assert result.success
        (check,) = result.get_asset_check_evaluations()
        assert check.check_name == "every_flagged_study_written_back" and check.passed
        meta = result.asset_materializations_for_node("pacs_flags")[0].metadata
        return {k: meta[k].value for k in ("sent", "skipped", "failed", "documents")}

    assert materialize() == {"sent": 1, "skipped": 1, "failed": 0, "documents": 2}
    assert materialize() == {"sent": 0, "skipped": 2, "failed": 0, "documents": 0}


def untrained_model(home: Home, version: str = "m0001", size: int = 64) -> dict:
    """A current model that is a real ONNX graph (an untrained network of the current
    rendering contract: its numbers are arbitrary, its path is the real one), flagging
    every image as a biopsy tool (threshold 0) and none as a mag view (above 1)."""
    import contextlib
    import io
    import json

    import torch

    from mammo_dagster.core.imaging.preprocess import CONTRACT
    from mammo_dagster.core.model.export import export_onnx
    from mammo_dagster.core.model.modelstore import CurrentModel, write_current
    from mammo_dagster.core.model.network import ExportModel, network

    torch.manual_seed(0)
    folder = home.models / version
    folder.mkdir(parents=True)
    with contextlib.redirect_stdout(io.StringIO()):
        export_onnx(ExportModel.wrap(network()), folder / "model.onnx", size)
    card = {"input_size": size, "version": version, "preprocessing": CONTRACT,
            "thresholds": {"biopsy": 0.0, "mag": 1.01}}  # fmt: skip
    (folder / "card.json").write_text(json.dumps(card))
    write_current(home.models, CurrentModel(version, 0, 0))
    return card


@pytest.mark.slow
def test_end_to_end_sensor_ingest_predict_write_back(orthanc: Orthanc, tmp_path: Path) -> None:
    """Studies uploaded to Orthanc come back as KOS + SR after the sensor, the ingest job,
    ONNX predictions (a real graph) and `pacs_flags`, with the predicted numbers."""
    from mammo_dagster.core.pacs.documents import KOS_CLASS, object_uids, referenced_sops
    from mammo_dagster.core.pacs.source import PacsSource
    from mammo_dagster.defs.model import image_predictions, study_predictions

    home, instance = Home.from_env(), dg.DagsterInstance.ephemeral()
    upload(orthanc, tmp_path / "a", studies=2, seed=21)
    untrained_model(home)
    (request,) = tick(home, instance, orthanc.url).run_requests
    drop = request.partition_key
    assert ingest(home, instance, drop, orthanc.url).success
    res = resources(home, orthanc.url)
    config = {"ops": {"image_predictions": {"config": {"threads": 1, "int8": False}}}}
    assert dg.materialize([image_predictions], partition_key=drop, instance=instance,
                          resources=res, run_config=config).success  # fmt: skip
    assert dg.materialize([study_predictions], instance=instance, resources=res).success
    result = dg.materialize([pacs_flags], instance=instance, resources=res)
    assert result.success
    meta = result.asset_materializations_for_node("pacs_flags")[0].metadata
    assert (meta["sent"].value, meta["failed"].value) == (2, 0)

    store = Store(home.db)
    predicted = dict(store.query(
        "SELECT sop_instance_uid, prob_biopsy FROM image_predictions WHERE drop_name = ?", [drop]
    ))  # fmt: skip
    client = PacsSource.from_env(orthanc.url).client()
    for study, sops in studies_of(home).items():
        uids = object_uids(study, "m0001")
        found = {
            item["00080018"]["Value"][0]: item["0020000E"]["Value"][0]
            for item in client.search_for_instances(study_instance_uid=study)
        }
        kos = client.retrieve_instance(study, found[uids["kos"]], uids["kos"])
        sr = client.retrieve_instance(study, found[uids["sr"]], uids["sr"])
        assert kos.SOPClassUID == KOS_CLASS and referenced_sops(kos) == set(sops)
        values = {}
        for item in sr.ContentSequence:
            refs = [r.ReferencedSOPInstanceUID for c in item.get("ContentSequence", [])
                    for r in c.get("ReferencedSOPSequence", [])]  # fmt: skip
            for c in item.get("ContentSequence", []):
                if refs and c.ConceptNameCodeSequence[0].CodeValue == "P-BIOPSY":
                    values[refs[0]] = float(c.MeasuredValueSequence[0].NumericValue)
        assert values == pytest.approx({s: round(predicted[s], 6) for s in sops}, abs=1e-6)

"""The model lineage on a tiny synthetic set: train in seconds, ONNX parity, int8 check,
current pointer, image and study predictions, and `mammo predict` on a folder with junk."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from PIL import Image

from mammo_dagster.core import metrics
from mammo_dagster.core.imaging import preprocess
from mammo_dagster.core.model.dataset import load_snapshot
from mammo_dagster.core.model.modelstore import read_current
from mammo_dagster.core.prediction.predict import predict_folder
from mammo_dagster.core.store.db import DB_NAME, Store
from mammo_dagster.core.store.labels import LabelEvent, append_events
from mammo_dagster.core.store.studies import CONTRACT_COLUMNS, write_study_csv
from mammo_dagster.core.synthetic.truth import truth_labels
from mammo_dagster.defs.model import (
    image_predictions,
    labels,
    onnx_model,
    study_predictions,
    trained_model,
    training_set,
)
from mammo_dagster.defs.resources import MammoHome, StoreResource, resources_for
from tests.factory import labeled_home

TINY = {"size": 64, "epochs": 2, "batch_size": 16, "patience": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A data folder after ingest, labels from the ground truth, and one training run."""
    home = tmp_path_factory.mktemp("model") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMMO_HOME", str(home))
        mp.setenv("MAMMO_PATIENT_SALT", "test-salt")
        images = labeled_home(home, studies=10, seed=6)
        store = Store(home / DB_NAME)
        append_events(store, truth_labels(images))
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("drops", ["d1"])
        resources = {"paths": MammoHome(home=str(home)), "store": StoreResource()}
        result = dg.materialize(
            [labels, training_set, trained_model, onnx_model],
            instance=instance,
            resources=resources,
            run_config={"ops": {"trained_model": {"config": TINY}}},
            selection=["training_set", "trained_model", "onnx_model"],
        )
        assert result.success
        predicted = dg.materialize(
            [image_predictions, study_predictions],
            instance=instance,
            resources=resources,
            partition_key="d1",
            selection=["image_predictions"],
        )
        assert predicted.success
        studies = dg.materialize([study_predictions], instance=instance, resources=resources)
        assert studies.success
        said = instance.all_logs(result.run_id)
    return home, images, result, predicted, studies, said


def test_training_never_sees_the_holdout(trained) -> None:
    home, images, result, *_ = trained
    snapshot = load_snapshot(home / "training_sets" / "current.csv")
    held = {e.patient_key for e in snapshot.split("holdout")}
    trained_on = {e.patient_key for e in snapshot.split("train") + snapshot.split("valid")}
    assert held and trained_on and not held & trained_on
    card = json.loads((home / "models" / "m0001" / "card.json").read_text())
    assert card["holdout_images"] == len(snapshot.split("holdout")) > 0
    assert card["train_images"] + card["valid_images"] + card["holdout_images"] == len(images)
    assert card["pretrained"] is False and "from scratch" in card["pretrained_note"]
    assert set(card["thresholds"]) == {"biopsy", "mag"}
    assert card["holdout"]["mag"]["n"] == card["holdout_images"]
    assert card["preprocessing"]["S"] == TINY["size"]
    md = result.asset_materializations_for_node("trained_model")[0].metadata
    assert md["curves"].value.startswith("![curves](data:image/png;base64,")
    for flag in ("biopsy", "mag"):  # plain numbers, so the Plots tab compares model versions
        assert md[f"threshold_{flag}"].value == round(card["thresholds"][flag], 4)
        for key in ("auc", "recall", "accuracy"):  # None (no positive held out): left out
            want = card["holdout"][flag][key]
            name = f"holdout_{flag}_{key}"
            assert (md[name].value == round(want, 4)) if want is not None else name not in md
        assert isinstance(md[f"holdout_{flag}_accuracy"].value, float)
    for split in ("validation", "holdout"):  # narrow tables: the UI's Overview shows them whole
        rows = md[f"metrics_{split}"].value.splitlines()
        assert rows[0] == "| flag | n | pos | AUC | prec. | recall | F1 |"
        assert [r.split(" | ")[0] for r in rows[2:]] == ["| biopsy", "| mag"]
        assert f"| mag | {card[split]['mag']['n']} | " in md[f"metrics_{split}"].value
    confusion = md["confusion"].value.splitlines()
    assert confusion[0] == "| split | flag | tp | fp | fn | tn |"
    c = card["holdout"]["mag"]["confusion"]
    assert f"| holdout | mag | {c['tp']} | {c['fp']} | {c['fn']} | {c['tn']} |" in confusion
    for flag in ("biopsy", "mag"):  # the same counted in studies
        for key in ("auc", "recall"):
            want = card["holdout"][flag]["studies"][key]
            name = f"holdout_{flag}_study_{key}"
            assert (md[name].value == round(want, 4)) if want is not None else name not in md
    assert any(k.startswith("holdout_") and "_study_" in k for k in md)
    said = trained[-1]  # a retrain tells the run's log where it is, epoch by epoch
    epochs = [e.user_message for e in said if e.user_message.startswith("image network: epoch ")]
    assert epochs and epochs[0].startswith(f"image network: epoch 1/{TINY['epochs']} (train loss ")
    events = [e.dagster_event for e in said if e.dagster_event]
    seen = [
        e.asset_key.to_user_string() for e in events if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert seen == ["labels"]  # observed by the build, not "Never observed" in the UI


def test_thresholds_count_studies_and_the_card_reports_both(trained) -> None:
    """The target recall counts studies (as the study CSV flags them); the card reports
    every split per image and per study, and what the rule counting images would pick."""
    home, images, *_ = trained
    card = json.loads((home / "models" / "m0001" / "card.json").read_text())
    snapshot = load_snapshot(home / "training_sets" / "current.csv")
    held = snapshot.split("holdout")
    for flag in ("biopsy", "mag"):
        r, studies = card["holdout"][flag], card["holdout"][flag]["studies"]
        assert r["n"] == len(held)
        assert studies["n"] == len({e.study_instance_uid for e in held}) < r["n"]
        positive = {e.study_instance_uid for e in held if getattr(e, flag)}
        assert studies["positives"] == len(positive) <= r["positives"]
        for rule in ("biopsy", "mag"):  # validation: out of fold (biopsy) or its split (mag)
            v = card["validation"][rule]
            assert 0 < v["studies"]["n"] < v["n"] and v["studies"]["positives"] <= v["positives"]
    assert card["config"]["recall_of"] == "auto"
    assert set(card["image_rule_thresholds"]) == {"biopsy", "mag"}
    # auto: studies where the threshold comes from out-of-fold scores, images on validation
    assert card["threshold_rule"]["mag"].startswith("98% recall of images on validation")
    assert card["thresholds"]["mag"] == card["image_rule_thresholds"]["mag"]
    oof = np.load(home / "models" / "m0001" / "out_of_fold.npz")
    assert card["threshold_rule"]["biopsy"].startswith("98% recall of studies on out-of-fold")
    y, scores = oof["labels"][:, 0] > 0.5, oof["biopsy"]
    assert len(y) == card["train_images"] + card["valid_images"]
    by_study = metrics.threshold_for_recall(y, scores, 0.98, groups=oof["study_instance_uid"])
    valid = card["validation_thresholds"]["biopsy"]
    assert card["thresholds"]["biopsy"] == pytest.approx(min(by_study, valid))  # capped
    assert ("capped at validation's" in card["threshold_rule"]["biopsy"]) == (valid < by_study)
    assert card["image_rule_thresholds"]["biopsy"] == pytest.approx(
        metrics.threshold_for_recall(y, scores, 0.98)
    )
    # a note on each threshold that stands on little, from what it was chosen on; ten
    # studies leave few positives, so mag's (its validation split) has one
    valid = np.load(home / "models" / "m0001" / "validation.npz")
    want = [
        metrics.threshold_note("biopsy", y, scores, card["thresholds"]["biopsy"],
                               "out-of-fold scores", oof["study_instance_uid"]),
        metrics.threshold_note("mag", valid["labels"][:, 1] > 0.5, valid["torch_probs"][:, 1],
                               card["thresholds"]["mag"], "the validation split"),
    ]  # fmt: skip
    notes = [n for n in want if n]
    assert want[1] is not None and card["threshold_notes"][: len(notes)] == notes
    # every patch network's fits, each ranking its own training images; another fit only
    # after one below the floor, and a warning where the shipped one never reached it
    fits = card["second_look_fits"]
    assert list(fits) == ["fold 1", "fold 2", "fold 3", "shipped"]
    for aucs in fits.values():
        assert 1 <= len(aucs) <= 3 and all(a < 0.9 for a in aucs[:-1])
    weak = [n for n in card["threshold_notes"] if "second look's network ranks" in n]
    assert len(card["threshold_notes"]) == len(notes) + len(weak)
    assert bool(weak) == (max(fits["shipped"]) < 0.9)
    md = trained[2].asset_materializations_for_node("trained_model")[0].metadata
    assert md["threshold_notes"].value == "\n".join(f"- {n}" for n in card["threshold_notes"])
    warned = [e.user_message for e in trained[-1] if e.level == logging.WARNING]
    assert all(n in warned for n in card["threshold_notes"])  # and the run's log says so


def test_training_refuses_an_unknown_recall_unit(tmp_path: Path) -> None:
    from mammo_dagster.core.model.dataset import Snapshot
    from mammo_dagster.core.model.train import TrainConfig, train

    with pytest.raises(
        ValueError, match="recall_of must be one of auto, studies, images, not 'exa"
    ):
        train(Snapshot([], 0, 0, 0), tmp_path, TrainConfig(recall_of="exams"))


def test_two_seeds_mag_networks_train_export_and_reload(trained, tmp_path: Path) -> None:
    """`mag_nets` 2: a second image network from another seed; the shipped graph's mag is
    the mean of both logits, ONNX agrees, and Grad-CAM reloads both."""
    import torch

    from mammo_dagster.core.model.gradcam import gradcam, load_torch_model
    from mammo_dagster.core.model.network import MeanNet
    from mammo_dagster.core.model.train import TrainConfig, _torch_probs, train
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    home, *_ = trained
    said: list[str] = []
    card = train(load_snapshot(home / "training_sets" / "current.csv"), tmp_path,
                 TrainConfig(**TINY, mag_nets=2), said.append)  # fmt: skip
    assert len(card["mag_net_best_epochs"]) == 2 and "2 seeds' mean logit" in card["architecture"]
    assert any(line.startswith("image network 2/2: epoch 2/2") for line in said)
    shipped = load_torch_model(tmp_path)
    nets = shipped.image_net.nets
    assert isinstance(shipped.image_net, MeanNet) and len(nets) == 2
    pairs = list(zip(nets[0].parameters(), nets[1].parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in pairs)  # two trainings, not one twice
    data = np.load(tmp_path / "validation.npz")
    images, patches = data["images"][:4], data["patches"][:4]
    again = _torch_probs(shipped, images, patches)  # the reloaded graph is the trained one
    assert np.max(np.abs(again - data["torch_probs"][:4])) < 1e-5
    onnx = OnnxModel(tmp_path / "model.onnx").probs(list(images), list(patches))
    np.testing.assert_allclose(onnx, data["torch_probs"][:4], atol=1e-4)
    cam = gradcam(shipped, images[0], "mag")
    assert cam.shape == images[0].shape and cam.max() == pytest.approx(1.0)


def test_onnx_matches_pytorch_and_becomes_current(trained) -> None:
    home, _, result, *_ = trained
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["onnx_matches_pytorch"].passed
    assert checks["onnx_matches_pytorch"].metadata["max_abs_diff"].value <= 1e-4
    int8 = checks["int8_agrees_with_fp32"]
    agreement = int8.metadata["decision_agreement"].value
    assert 0.0 <= agreement <= 1.0 and int8.severity == dg.AssetCheckSeverity.WARN
    if agreement < 0.995:
        assert not int8.passed
    current = read_current(home / "models")
    assert current is not None and current.version == "m0001"
    folder = home / "models" / "m0001"
    name = "model.int8.onnx" if int8.passed else "model.int8.rejected.onnx"
    assert (folder / name).stat().st_size < (folder / "model.onnx").stat().st_size / 2


def test_study_csv_has_the_contract_columns_and_any_image_flags_its_study(trained) -> None:
    home, images, _, predicted, studies, _ = trained
    out = home / "predictions" / "study_predictions.csv"
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[: len(CONTRACT_COLUMNS)] == list(CONTRACT_COLUMNS)
    assert len(rows) == len({i.study_instance_uid for i in images})
    assert sum(int(r["image_count"]) for r in rows) == len(images)
    store = Store(home / DB_NAME)
    per_study = store.run(
        lambda c: c.execute(
            "SELECT i.study_instance_uid, bool_or(flag_biopsy), bool_or(flag_mag), "
            "max(prob_biopsy) FROM image_predictions p JOIN dicom_index i "
            "USING (drop_name, sop_instance_uid, frame) GROUP BY ALL"
        ).fetchall()
    )
    by_id = {r["study_id"]: r for r in rows}
    for study, biopsy, mag, pmax in per_study:
        assert by_id[study]["has_biopsy_tool"] == str(int(biopsy))
        assert by_id[study]["has_mag_view"] == str(int(mag))
        assert abs(float(by_id[study]["max_prob_biopsy"]) - pmax) < 1e-4
    md = studies.asset_materializations_for_node("study_predictions")[0].metadata
    assert md["csv"].value == str(out) and md["studies"].value == len(rows)


def test_study_aggregation_rule(tmp_path: Path) -> None:
    conn = duckdb.connect()
    images = """SELECT * FROM (VALUES
        ('s1', 0.1, 0.2, false, false, false, false, 'm1'),
        ('s1', 0.9, 0.1, true, false, false, false, 'm1'),
        ('s2', 0.2, 0.7, false, true, true, false, 'm1'),
        ('s3', 0.3, 0.3, false, false, false, true, 'm1'))
        AS t(study_instance_uid, prob_biopsy, prob_mag, flag_biopsy, flag_mag,
             header_mag_hint, header_marker_hint, model_version)"""
    out = tmp_path / "s.csv"
    assert write_study_csv(conn, images, out) == 3
    lines = out.read_text().splitlines()
    assert lines[0].startswith(",".join(CONTRACT_COLUMNS))
    assert lines[1].startswith("s1,1,0,0.9,0.2,2,1,0")
    assert lines[2].startswith("s2,0,1,0.2,0.7,1,0,1,1,0")
    assert lines[3].startswith("s3,0,0,0.3,0.3,1,0,0,0,1")


def test_predict_a_folder_with_bad_files_and_resume(trained, tmp_path: Path) -> None:
    home, images, _, predicted, *_ = trained
    folder = tmp_path / "archive"
    shutil.copytree(home / "incoming" / "d1", folder)
    (folder / "notes.txt").write_text("not an image")
    (folder / "deep" / "er").mkdir(parents=True)
    (folder / "deep" / "er" / "IM0001").write_bytes(b"DICM" * 10)
    model = home / "models" / "m0001" / "model.onnx"
    out = tmp_path / "out" / "results.csv"
    out.parent.mkdir()
    first = predict_folder(folder, out, model, workers=2, thumb=64)  # as labeled_home made them
    assert first.images == len(images) and first.errors == 3 and first.studies > 0
    errors = {e["path"]: e["error_kind"] for e in csv.DictReader(first.errors_csv.open())}
    assert errors == {  # the generator's CSV sits in the drop too
        "deep/er/IM0001": "truncated",
        "notes.txt": "not_dicom",
        "ground_truth.csv": "not_dicom",
    }
    reference = out.read_text()

    # the same probabilities as the Dagster path (thumbnail PNG -> model input)
    by_sop = {r["sop_instance_uid"]: r for r in csv.DictReader(first.images_csv.open())}
    store = Store(home / DB_NAME)
    dagster = store.run(
        lambda c: c.execute(
            "SELECT sop_instance_uid, prob_biopsy FROM image_predictions"
        ).fetchall()
    )
    # Dagster used the int8 model when it passed; compare like with like via fp32 here
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    fp32 = OnnxModel(model)
    p = fp32.thumbnail_probs([home / "thumbnails" / f"{s}_0.png" for s, _ in dagster])[:, 0]
    assert np.max(np.abs(p - [float(by_sop[s]["prob_biopsy"]) for s, _ in dagster])) < 1e-4

    # an interrupted run: only the first few files were done
    lines = first.images_csv.read_text().splitlines()
    first.images_csv.write_text("\n".join(lines[:6]) + "\n")
    first.errors_csv.unlink()
    out.unlink()
    again = predict_folder(folder, out, model, workers=1, thumb=64)
    assert again.skipped == 5 and again.images == len(images) - 5
    assert out.read_text() == reference


def test_predict_resumes_after_a_torn_write_and_refuses_another_model(
    trained, tmp_path: Path
) -> None:
    home, images, *_ = trained
    folder = tmp_path / "in[1]"  # glob characters in paths must not matter
    shutil.copytree(home / "incoming" / "d1", folder)
    model = home / "models" / "m0001" / "model.onnx"
    out = tmp_path / "out[*]" / "results.csv"
    out.parent.mkdir()
    first = predict_folder(folder, out, model, workers=1, thumb=64)
    reference = out.read_text()
    text = first.images_csv.read_text()
    first.images_csv.write_text(text[: text.index("\n", len(text) // 2) + 25])  # half a row
    again = predict_folder(folder, out, model, workers=1, thumb=64)
    assert again.images + again.skipped == len(images) + 1  # + ground_truth.csv (an error)
    assert out.read_text() == reference
    card = json.loads((home / "models" / "m0001" / "card.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(model, other / "model.onnx")
    (other / "card.json").write_text(json.dumps(card | {"version": "m9999"}))
    with pytest.raises(ValueError, match="--restart"):
        predict_folder(folder, out, other / "model.onnx", workers=1, thumb=64)
    assert predict_folder(folder, out, other / "model.onnx", workers=1, thumb=64, restart=True)


def test_a_model_and_its_thumbnails_must_share_the_rendering_contract(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mammo_dagster.core.imaging.thumbnails import RENDER_VERSION, save_png
    from mammo_dagster.core.prediction import predict as predict_module
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    home, *_ = trained
    card = json.loads((home / "models" / "m0001" / "card.json").read_text())
    assert card["preprocessing"]["render"] == RENDER_VERSION
    thumb = next((home / "thumbnails").glob("*.png"))
    old = tmp_path / "old.png"
    save_png(np.asarray(Image.open(thumb)), old, render="1")
    model = OnnxModel(home / "models" / "m0001" / "model.onnx")
    assert model.render == RENDER_VERSION
    assert model.thumbnail_probs([thumb]).shape == (1, 2)
    with pytest.raises(preprocess.RenderMismatch, match="re-run the thumbnails"):
        model.thumbnail_probs([thumb, old])
    with pytest.raises(preprocess.RenderMismatch, match="several rendering versions"):
        preprocess.thumbnail_render([thumb, old])
    # `mammo predict` renders as the model learned: a model from before the headroom
    # contract (its card has no version) sees plain-window images; an unknown one is refused
    seen: list[str] = []
    real_decode = predict_module.decode_file
    monkeypatch.setattr(
        predict_module,
        "decode_file",
        lambda *a, **kw: seen.append(kw["render"]) or real_decode(*a, **kw),
    )
    from mammo_dagster.core.model.export import export_onnx
    from mammo_dagster.core.model.network import ExportModel, network

    for name, render in (("legacy", None), ("future", "9")):
        folder = tmp_path / name
        folder.mkdir()
        if render is None:  # a one-input graph, as models before the second look were
            old_net = ExportModel.wrap(network(metal=True, second_look=False))
            with contextlib.redirect_stdout(io.StringIO()):
                export_onnx(old_net, folder / "model.onnx", card["input_size"])
        else:
            shutil.copy(home / "models" / "m0001" / "model.onnx", folder / "model.onnx")
        pre = {k: v for k, v in card["preprocessing"].items() if k != "render"}
        pre |= {"render": render} if render else {}
        (folder / "card.json").write_text(json.dumps(card | {"preprocessing": pre}))
    assert OnnxModel(tmp_path / "legacy" / "model.onnx").render == "1"
    drop = home / "incoming" / "d1"
    legacy = tmp_path / "legacy" / "model.onnx"
    report = predict_folder(drop, tmp_path / "r.csv", legacy, workers=0)  # in this process: seen
    assert report.images > 0 and set(seen) == {"1"}
    with pytest.raises(ValueError, match="can't render"):
        predict_folder(drop, tmp_path / "f.csv", tmp_path / "future" / "model.onnx", workers=1)
    mixed = tmp_path / "mixed"  # a second-look graph whose card says another contract
    shutil.copytree(tmp_path / "future", mixed)
    pre = card["preprocessing"] | {"render": "2"}
    (mixed / "card.json").write_text(json.dumps(card | {"preprocessing": pre}))
    with pytest.raises(ValueError, match="takes patches"):
        predict_folder(drop, tmp_path / "m.csv", mixed / "model.onnx", workers=1)


def test_training_refuses_thumbnails_of_an_older_rendering_contract(
    trained, tmp_path: Path
) -> None:
    from mammo_dagster.core.imaging.thumbnails import save_png
    from mammo_dagster.core.model.dataset import build_snapshot
    from mammo_dagster.core.model.train import TrainConfig, train

    home, *_ = trained
    old = tmp_path / "thumbs"
    old.mkdir()
    for png in (home / "thumbnails").glob("*.png"):  # as the previous version left them
        save_png(np.asarray(Image.open(png)), old / png.name, render="1")
    snapshot = build_snapshot(Store(home / DB_NAME), old)
    with pytest.raises(preprocess.RenderMismatch, match="backfill thumbnails"):
        train(snapshot, tmp_path / "m", TrainConfig(**TINY))
    assert not (tmp_path / "m" / "model.onnx").exists()


def test_labeling_queue_ranks_unlabeled_images_outside_the_holdout(trained) -> None:
    from mammo_dagster.core.model.splits import split_of
    from mammo_dagster.core.store.labels import load_events
    from mammo_dagster.defs.active import labeling_queue

    home, images, *_ = trained
    store = Store(home / DB_NAME)
    train = {
        e.sop_instance_uid
        for e in load_snapshot(home / "training_sets" / "current.csv").split("train")
    }
    held = [e for e in load_events(store) if e.sop_instance_uid not in train][:3]
    events = [e for e in load_events(store) if e.sop_instance_uid in train][:12] + held
    # take back a dozen labels (and a few of hold-out or validation images)
    append_events(
        store,
        [LabelEvent(e.sop_instance_uid, "retract", "truth", "import", retracts=e.event_id)
         for e in events],
    )  # fmt: skip
    result = dg.materialize(
        [labeling_queue],
        resources=resources_for(home),
        run_config={"ops": {"labeling_queue": {"config": {"size": 8, "explore": 0.25}}}},
    )
    assert result.success
    queue = store.run(
        lambda c: c.execute(
            "SELECT q.sop_instance_uid, q.rank, q.reason, q.model_version, i.patient_key, "
            "i.study_instance_uid FROM labeling_queue q JOIN dicom_index i USING "
            "(sop_instance_uid, frame) ORDER BY rank"
        ).fetchall()
    )
    unlabeled = {e.sop_instance_uid for e in events}
    assert len(queue) == 8 and {q[0] for q in queue} <= unlabeled
    assert [q[1] for q in queue] == list(range(1, len(queue) + 1))
    assert all(split_of(q[4], q[5]) != "holdout" for q in queue)
    assert {q[3] for q in queue} == {"m0001"} and {q[2] for q in queue} <= {"uncertain", "explore"}
    md = result.asset_materializations_for_node("labeling_queue")[0].metadata
    assert md["queued"].value == len(queue) and md["unlabeled_pool"].value >= len(queue)
    append_events(  # put the labels back for the other tests
        store,
        [LabelEvent(e.sop_instance_uid, "label", "truth", "import",
                    has_biopsy_tool=e.has_biopsy_tool, has_mag_view=e.has_mag_view)
         for e in events],
    )  # fmt: skip


def test_header_audit_and_the_header_rule_baseline(trained) -> None:
    import csv as _csv

    from mammo_dagster.defs.audit import header_audit

    home, images, *_ = trained
    card = json.loads((home / "models" / "m0001" / "card.json").read_text())
    rule = card["header_baseline"]["holdout"]["mag"]
    assert rule["n"] == card["holdout_images"] and rule["accuracy"] is not None
    result = dg.materialize(
        [header_audit],
        resources=resources_for(home),
    )
    assert result.success
    rows = list(_csv.DictReader((home / "predictions" / "header_audit.csv").open()))
    assert len(rows) == len(images)
    truth = {i.sop_instance_uid: i for i in images}
    for r in rows:  # the header columns are what the generator wrote into the headers
        assert (r["header_mag"] == "true") == truth[r["sop_instance_uid"]].header_mag_hint
        assert r["label_mag"] in ("true", "false") and r["model_mag"] in ("true", "false")
    md = result.asset_materializations_for_node("header_audit")[0].metadata
    flagged = sum(r["mag_disagrees"] == "true" or r["marker_disagrees"] == "true" for r in rows)
    assert md["images"].value == len(images) and md["disagreements"].value == flagged
    assert "mag_header_vs_label" in md["rates_by_vendor"].value


def test_gradcam_heatmaps_for_flagged_images(trained) -> None:
    from mammo_dagster.core.model.gradcam import gradcam, load_torch_model
    from mammo_dagster.defs.gradcam import gradcam as gradcam_asset

    home, *_ = trained
    folder = home / "models" / "m0001"
    shipped = load_torch_model(folder)
    data = np.load(folder / "validation.npz")
    # the reloaded network is the one that was trained (same probabilities)
    from mammo_dagster.core.model.train import _torch_probs

    again = _torch_probs(shipped, data["images"][:4], data["patches"][:4])
    assert np.max(np.abs(again - data["torch_probs"][:4])) < 1e-5
    cam = gradcam(shipped, data["images"][0], "mag")
    assert cam.shape == data["images"][0].shape and cam.min() >= 0.0 and cam.max() <= 1.0
    result = dg.materialize(
        [gradcam_asset],
        resources=resources_for(home),
        run_config={"ops": {"gradcam": {"config": {"limit": 3}}}},
    )
    assert result.success
    md = result.asset_materializations_for_node("gradcam")[0].metadata
    pngs = sorted((home / "gradcam" / "m0001").glob("*.png"))
    assert md["heatmaps"].value == len(pngs) > 0
    assert all(p.stem.rsplit("_", 1)[1] in ("biopsy", "mag") for p in pngs)
    # the labeler's review mode serves the asset's files, and makes missing ones itself
    from labeler.state import LabelerState, Settings

    state = LabelerState(Settings(home=home, refresh_s=3600))
    try:
        made = {p.name for p in pngs}
        image_id = next(i for i in sorted(state.images) if f"{i}_mag.png" not in made)
        path = state.cam(image_id, "mag")
        thumb = Image.open(state.thumbnail(image_id))
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == thumb.size  # drawn at thumbnail size
        assert state.cam(image_id, "mag") == path
        asset_made = pngs[0].stem.rsplit("_", 1)
        assert state.cam(asset_made[0], asset_made[1]) == pngs[0]
    finally:
        state.close()


def test_the_metal_channel_marks_only_the_brightest_levels() -> None:
    import torch
    from torch import nn

    from mammo_dagster.core.model.train import METAL_LEVEL, metal_stem

    img = np.full((1, 1, 16, 16), 120, np.float32)
    img[0, 0, 4, 4] = 255  # a 1-px clip (the stored extreme)
    img[0, 0, 10, 10] = METAL_LEVEL - 12  # bright tissue / a calcification in the headroom
    x = (torch.from_numpy(img / 255.0) - preprocess.MEAN) / preprocess.STD
    seen = {}
    probe = nn.Identity()
    probe.register_forward_hook(lambda _m, i, _o: seen.setdefault("in", i[0]))
    out = metal_stem(probe)(x)
    image, metal = out[0, 0], out[0, 1]
    torch.testing.assert_close(image, x[0, 0])  # the image passes through unchanged
    high = (metal > 0).nonzero().tolist()
    assert sorted(high) == [[y, x_] for y in (3, 4, 5) for x_ in (3, 4, 5)]  # spread 3 x 3
    assert float(metal.max()) == 2.0 and float(metal.min()) == -2.0
    assert seen["in"].shape == (1, 2, 16, 16)

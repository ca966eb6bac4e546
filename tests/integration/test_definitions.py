"""The Dagster code location that workspace.yaml names loads."""

from __future__ import annotations

import importlib
from pathlib import Path

import dagster as dg
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_workspace_code_location_loads() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module_name = workspace["load_from"][0]["python_module"]["module_name"]
    module = importlib.import_module(module_name)
    defs = module.defs() if callable(module.defs) else module.defs
    assert isinstance(defs, dg.Definitions)
    assert isinstance(yaml.safe_load((ROOT / "dagster.yaml").read_text()), dict)


def test_every_asset_and_check_is_defined() -> None:
    from mammo_dagster.definitions import defs

    d = defs() if callable(defs) else defs
    keys = {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "dicom_index", "thumbnails", "labels", "training_set", "trained_model",
        "onnx_model", "image_predictions", "study_predictions",
    } <= keys  # fmt: skip
    checks = {c.name for c in d.resolve_asset_graph().asset_check_keys}
    assert {"onnx_matches_pytorch", "int8_agrees_with_fp32", "unique_sop_uids"} <= checks


def test_no_description_loses_a_placeholder_to_html() -> None:
    """Dagster renders descriptions as markdown, where a bare <version> is an HTML tag and
    vanishes ('gradcam//.png'): placeholders belong in `code`."""
    import re

    from mammo_dagster.definitions import defs

    d = defs() if callable(defs) else defs
    graph = d.resolve_asset_graph()
    texts = {k.to_user_string(): graph.get(k).description or "" for k in graph.get_all_asset_keys()}
    assert texts["gradcam"].count("`gradcam/<version>/") == 1
    for name, text in texts.items():
        outside_code = re.sub(r"`[^`]*`", "", text)
        assert not re.search(r"<[A-Za-z_][\w]*>", outside_code), (name, text)


def test_definitions_inventory() -> None:
    """Every asset, asset check, sensor, schedule and job of the code location, by its
    exact name: they are contracts (runs, run keys, the UI, deploy/ name them), so a
    rename, a loss or an addition fails here and is made on purpose."""
    from mammo_dagster.definitions import defs

    d = defs() if callable(defs) else defs
    graph = d.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "dicom_index", "thumbnails", "labels", "training_set", "trained_model", "onnx_model",
        "image_predictions", "study_predictions", "labeling_queue", "gradcam", "header_audit",
        "pacs_studies", "pacs_flags",
    }  # fmt: skip
    assert {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys} == {
        ("dicom_index", "unique_sop_uids"),
        ("dicom_index", "failure_rate"),
        ("dicom_index", "has_new_frames"),
        ("thumbnails", "every_frame_has_a_thumbnail"),
        ("onnx_model", "onnx_matches_pytorch"),
        ("onnx_model", "int8_agrees_with_fp32"),
        ("pacs_flags", "every_flagged_study_written_back"),
    }
    assert {s.name for s in d.sensors} == {
        "dicom_drop_sensor", "active_learning_sensor", "new_model_sensor", "pacs_sensor",
    }  # fmt: skip
    assert {s.name for s in d.schedules} == {"nightly_drop_sweep"}
    jobs = {j.name for j in d.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert jobs == {"ingest_drop", "process_drop", "predict_drop", "retrain", "study_csv",
                    "pacs_ingest_drop"}  # fmt: skip
    assert set(d.resources) >= {"paths", "store", "pacs"}

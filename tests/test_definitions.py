"""The Dagster code location that workspace.yaml names loads."""

from __future__ import annotations

import importlib
from pathlib import Path

import dagster as dg
import yaml

ROOT = Path(__file__).parent.parent


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

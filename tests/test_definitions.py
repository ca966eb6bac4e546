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

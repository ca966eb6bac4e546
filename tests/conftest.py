"""Shared fixtures: every test runs against its own MAMMO_HOME and a fixed salt."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path_factory.mktemp("mammo_home")
    monkeypatch.setenv("MAMMO_HOME", str(home))
    monkeypatch.setenv("MAMMO_PATIENT_SALT", "test-salt")
    warnings.filterwarnings("ignore", module="pydicom")
    return home
